"""The pure retry decisions: what is retryable, what the provider asked for, how long to wait, when to give up."""

from __future__ import annotations

import math
import random
from typing import Any

import httpx2
import pytest
import tenacity
from pydantic import BaseModel, ValidationError
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelContextWindowExceededError,
    ModelHTTPError,
    ModelNotFoundError,
    ModelOverloadedError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestRejectedError,
    ModelRequestTimeout,
    ModelServerError,
    ModelTimeoutError,
    ModelUnavailableError,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
)

from pyai_caching import ConfigurationError, RetryPolicy
from pyai_caching.retry import (
    DEFAULT_INITIAL_WAIT,
    DEFAULT_MAX_WAIT,
    is_retryable,
    next_wait,
    resolve_retry,
    retry_after_of,
)


def _http(status: int, category: Any = None, **kwargs: Any) -> ModelHTTPError:
    return ModelHTTPError.for_category(category, status_code=status, model_name="m", **kwargs)


def _validation_error() -> ValidationError:
    class M(BaseModel):
        x: int

    try:
        M.model_validate({"x": "nope"})
    except ValidationError as e:
        return e
    raise AssertionError("unreachable")


RETRYABLE = [
    pytest.param(_http(429, ModelRateLimitError), id="categorized-429"),
    pytest.param(_http(503, ModelUnavailableError), id="categorized-503"),
    pytest.param(_http(529, ModelOverloadedError), id="categorized-529"),
    pytest.param(_http(500, ModelServerError), id="categorized-500"),
    pytest.param(_http(429), id="plain-429"),
    pytest.param(_http(408), id="plain-408"),
    pytest.param(_http(500), id="plain-500"),
    pytest.param(_http(502), id="plain-502"),
    pytest.param(_http(503), id="plain-503"),
    pytest.param(_http(504), id="plain-504"),
    pytest.param(_http(529), id="plain-529"),
    pytest.param(ModelRateLimitError("m", "throttled"), id="rate-limit-no-http"),
    pytest.param(ModelConnectionError("m", "refused", phase="connect"), id="connection"),
    pytest.param(ModelTimeoutError("m", "timed out", phase="read"), id="transport-timeout"),
    pytest.param(ConnectionRefusedError("refused"), id="builtin-connection-error"),
    pytest.param(httpx2.ConnectError("refused"), id="httpx2-connect-error"),
    pytest.param(httpx2.ReadTimeout("slow"), id="httpx2-read-timeout"),
]

NOT_RETRYABLE = [
    pytest.param(_http(429, ModelQuotaExceededError), id="quota-429"),
    pytest.param(_http(402, ModelQuotaExceededError), id="quota-402"),
    pytest.param(ModelQuotaExceededError("m", "out of credit"), id="quota-no-http"),
    pytest.param(_http(429, provider_error_code="insufficient_quota"), id="plain-429-insufficient-quota"),
    pytest.param(_http(429, headers={"x-should-retry": "false"}), id="plain-429-should-retry-false"),
    pytest.param(_http(400), id="plain-400"),
    pytest.param(_http(401), id="plain-401"),
    pytest.param(_http(404), id="plain-404"),
    pytest.param(_http(422), id="plain-422"),
    pytest.param(_http(501), id="plain-501"),
    pytest.param(_http(400, ModelRequestRejectedError), id="rejected-400"),
    pytest.param(_http(400, ModelContextWindowExceededError), id="context-window"),
    pytest.param(_http(401, ModelAuthenticationError), id="auth-401"),
    pytest.param(_http(404, ModelNotFoundError), id="not-found-404"),
    pytest.param(ModelRequestTimeout("m", 30.0), id="callers-own-deadline"),
    pytest.param(ModelAPIError("m", "something"), id="uncategorized-api-error"),
    pytest.param(UsageLimitExceeded("request_limit of 3"), id="usage-limit"),
    pytest.param(UnexpectedModelBehavior("bad tool call"), id="unexpected-behaviour"),
    pytest.param(_validation_error(), id="validation-error"),
    pytest.param(ValueError("bad"), id="value-error"),
    pytest.param(httpx2.UnsupportedProtocol("ftp"), id="httpx2-unsupported-protocol"),
]


@pytest.mark.parametrize("error", RETRYABLE)
def test_retryable(error: BaseException) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize("error", NOT_RETRYABLE)
def test_not_retryable(error: BaseException) -> None:
    assert not is_retryable(error)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(_http(429, headers={"Retry-After": "7"}), 7.0, id="retry-after-seconds"),
        pytest.param(_http(429, headers={"retry-after-ms": "250"}), 0.25, id="retry-after-ms"),
        pytest.param(_http(429, retry_after=1.5), 1.5, id="explicit-retry-after"),
        pytest.param(_http(429, body={"retry_after": 3}), 3.0, id="body-top-level"),
        pytest.param(_http(429, body={"error": {"retry-after": "2.5"}}), 2.5, id="body-under-error"),
        pytest.param(_http(429, body={"retryAfter": 4}), 4.0, id="body-camel-case"),
        pytest.param(_http(429), None, id="no-hint"),
        pytest.param(_http(429, body={"retry_after": -1}), None, id="negative-ignored"),
        pytest.param(_http(429, body={"retry_after": "soon"}), None, id="garbage-ignored"),
        pytest.param(_http(429, body={"retry_after": True}), None, id="bool-ignored"),
        pytest.param(_http(429, body="Retry-After: 5"), None, id="text-body-ignored"),
        pytest.param(ValueError("x"), None, id="not-a-provider-error"),
    ],
)
def test_retry_after_of(error: BaseException, expected: float | None) -> None:
    assert retry_after_of(error) == expected


def _top(low: float, high: float) -> float:
    """A deterministic stand-in for random.uniform: always the top of the window."""
    return high


def test_backoff_doubles_from_initial_wait_up_to_the_cap() -> None:
    policy = RetryPolicy(max_wait=1000, initial_wait=0.5, max_wait_per_attempt=3)
    error = _http(429)
    waits = [next_wait(policy, attempt=n, elapsed=0, error=error, uniform=_top) for n in range(1, 7)]
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_backoff_is_full_jitter_within_the_window() -> None:
    policy = RetryPolicy(max_wait=1000, initial_wait=2)
    rng = random.Random(1234)
    waits = [next_wait(policy, attempt=3, elapsed=0, error=_http(503), uniform=rng.uniform) for _ in range(200)]
    assert all(w is not None and 0 <= w <= 8 for w in waits)
    assert len({round(w or 0, 6) for w in waits}) > 150  # jittered, not a constant


def test_wait_is_capped_by_what_is_left_of_max_wait() -> None:
    policy = RetryPolicy(max_wait=10, initial_wait=8)
    assert next_wait(policy, attempt=1, elapsed=7.5, error=_http(429), uniform=_top) == pytest.approx(2.5)


def test_gives_up_when_max_wait_is_spent() -> None:
    policy = RetryPolicy(max_wait=10)
    assert next_wait(policy, attempt=4, elapsed=10.0, error=_http(429), uniform=_top) is None
    assert next_wait(policy, attempt=4, elapsed=12.0, error=_http(429), uniform=_top) is None


def test_zero_max_wait_means_one_attempt() -> None:
    assert next_wait(RetryPolicy(max_wait=0), attempt=1, elapsed=0.0, error=_http(429), uniform=_top) is None


def test_never_waits_for_a_non_retryable_error() -> None:
    policy = RetryPolicy()
    assert next_wait(policy, attempt=1, elapsed=0, error=_http(400), uniform=_top) is None
    assert next_wait(policy, attempt=1, elapsed=0, error=_http(429, ModelQuotaExceededError), uniform=_top) is None


def test_provider_hint_wins_over_backoff() -> None:
    policy = RetryPolicy(max_wait=60, initial_wait=0.1, max_wait_per_attempt=0.2)
    error = _http(429, headers={"Retry-After": "5"})
    assert next_wait(policy, attempt=1, elapsed=0, error=error, uniform=_top) == 5.0


def test_provider_hint_is_capped_by_what_is_left() -> None:
    policy = RetryPolicy(max_wait=6)
    error = _http(429, headers={"Retry-After": "30"})
    assert next_wait(policy, attempt=2, elapsed=4.0, error=error, uniform=_top) == pytest.approx(2.0)


def test_provider_hint_can_be_ignored() -> None:
    policy = RetryPolicy(max_wait=60, initial_wait=0.1, honor_retry_after=False)
    error = _http(429, headers={"Retry-After": "5"})
    assert next_wait(policy, attempt=1, elapsed=0, error=error, uniform=_top) == pytest.approx(0.1)


def test_defaults_are_documented_values() -> None:
    policy = RetryPolicy()
    assert (policy.max_wait, policy.initial_wait) == (DEFAULT_MAX_WAIT, DEFAULT_INITIAL_WAIT) == (60.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_wait": -1}, "max_wait"),
        ({"max_wait": math.nan}, "max_wait"),
        ({"max_wait": math.inf}, "max_wait"),
        ({"max_wait": True}, "max_wait"),
        ({"max_wait": "60"}, "max_wait"),
        ({"initial_wait": -0.5}, "initial_wait"),
        ({"max_wait_per_attempt": 0}, "max_wait_per_attempt"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"honor_retry_after": "yes"}, "honor_retry_after"),
        ({"retrying": tenacity.Retrying()}, "AsyncRetrying"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        RetryPolicy(**kwargs)


def test_resolve_retry_builds_the_policy_from_the_call_options() -> None:
    assert resolve_retry(None, None, None) == RetryPolicy()
    assert resolve_retry(True, 5, 0.25) == RetryPolicy(max_wait=5, initial_wait=0.25)
    assert resolve_retry(False, None, None) is None
    policy = RetryPolicy(max_wait=3)
    assert resolve_retry(policy, None, None) is policy
    custom = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(2))
    resolved = resolve_retry(custom, None, None)
    assert resolved is not None
    assert resolved.retrying is custom


@pytest.mark.parametrize(
    ("retry", "max_wait", "initial_wait", "fragment"),
    [
        (RetryPolicy(), 5, None, "max_wait"),
        (RetryPolicy(), None, 2, "initial_wait"),
        (False, 5, None, "retry=False"),
        ("fast", None, None, "retry must be"),
        (None, -1, None, "max_wait"),
    ],
)
def test_resolve_retry_rejects_conflicts(retry: Any, max_wait: Any, initial_wait: Any, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        resolve_retry(retry, max_wait, initial_wait)


def test_custom_retrying_is_copied_per_request() -> None:
    custom = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(2))
    policy = RetryPolicy(retrying=custom)
    first, second = policy.new_retrying(), policy.new_retrying()
    assert first is not custom
    assert second is not first
    assert first.stop is custom.stop
