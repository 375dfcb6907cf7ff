"""Retrying one model request at a time when the provider rate-limits it or is briefly unavailable.

```python
await cached_agent_run(agent, prompt, "summarize", max_wait=120, initial_wait=2)
```

Two layers that never mix:

* **decisions** (pure, no I/O): `is_retryable(error)` says whether waiting can fix an error, `retry_after_of(error)`
  reads the provider's hint, and `next_wait(policy, ...)` says how long to wait before the next attempt, or that it
  is time to give up;
* **the loop**: `RetryingModel`, a pydantic-ai `WrapperModel` that `ResponseCache` puts around the model of each
  request it lets through (a cache miss). It calls `tenacity.AsyncRetrying` around `wrapped.request(...)` and around
  opening `wrapped.request_stream(...)`, so only the failed request is sent again: the earlier requests of the run
  and its tools are never repeated, and a cache hit never reaches it.

When the budget (`max_wait`) runs out, `pyai_caching.exceptions.RateLimitError` is raised with the provider's last
error as `__cause__`. Errors that waiting cannot fix (`ModelQuotaExceededError`, other 4xx, validation errors,
`UsageLimitExceeded`, ...) propagate unchanged after one attempt.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import tenacity
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelHTTPError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelRequestRejectedError,
    ModelRequestTimeout,
    ModelServerError,
    ModelUnavailableError,
)
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext

from pyai_caching.exceptions import ConfigurationError, RateLimitError

__all__ = [
    "DEFAULT_INITIAL_WAIT",
    "DEFAULT_MAX_WAIT",
    "RetryPolicy",
    "RetryingModel",
    "is_retryable",
    "next_wait",
    "resolve_retry",
    "retry_after_of",
]

logger = logging.getLogger("pyai_caching")

DEFAULT_MAX_WAIT = 60.0
"""Default `max_wait`: a request is retried for up to a minute before `RateLimitError`."""

DEFAULT_INITIAL_WAIT = 1.0
"""Default `initial_wait`: the first backoff is drawn from 0 to 1 second."""

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
"""HTTP statuses of an uncategorized `ModelHTTPError` that waiting can fix (timeouts, rate limits, server trouble)."""

_QUOTA_CODES = frozenset({"insufficient_quota", "billing_error", "billing_hard_limit_reached", "quota_exceeded"})
"""Provider error codes/types that mean the account is out of credit: no amount of waiting helps."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How long and how often one model request is retried after a rate limit or a transient provider failure.

    The wait before attempt *n + 1* is the provider's `retry_after` hint when the error carries one, otherwise a
    random number of seconds between 0 and `min(max_wait_per_attempt, initial_wait * multiplier ** (n - 1))`
    ("full jitter" exponential backoff). Every wait is capped by what is left of `max_wait`; when nothing is left,
    `RateLimitError` is raised.
    """

    max_wait: float = DEFAULT_MAX_WAIT
    """Total seconds one request may spend being retried, counted from its first attempt. Once spent, the last
    attempt's error is raised as the `__cause__` of `RateLimitError`. The call returns within `max_wait` plus the
    duration of the last attempt. `0` means one attempt and no waiting."""
    initial_wait: float = DEFAULT_INITIAL_WAIT
    """Upper bound in seconds of the first backoff (the first wait is drawn from 0 to this)."""
    max_wait_per_attempt: float = 30.0
    """Upper bound in seconds of one exponential backoff (the provider's own `retry_after` is not capped by it)."""
    multiplier: float = 2.0
    """Growth factor of the backoff window from one attempt to the next (>= 1)."""
    honor_retry_after: bool = True
    """Wait what the provider asked for (`retry_after`, read by pydantic-ai from `retry-after-ms` / `Retry-After`
    headers or the error body) instead of the computed backoff, capped by what is left of `max_wait`."""
    retrying: tenacity.AsyncRetrying | None = None
    """Full control: a `tenacity.AsyncRetrying` used instead of every field above (copied for each request). Its
    `retry`, `stop` and `wait` decide everything; `pyai_caching.retry.is_retryable` is a ready-made `retry`
    predicate (`tenacity.retry_if_exception(is_retryable)`). When it gives up with `tenacity.RetryError`, that is
    turned into `RateLimitError`; with `reraise=True` the provider's error is raised unchanged."""

    def __post_init__(self) -> None:
        for name in ("max_wait", "initial_wait"):
            value = getattr(self, name)
            if not _is_number(value) or math.isnan(value) or math.isinf(value) or value < 0:
                raise ConfigurationError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        value = self.max_wait_per_attempt
        if not _is_number(value) or math.isnan(value) or value <= 0:
            raise ConfigurationError(f"max_wait_per_attempt must be a positive number of seconds, got {value!r}")
        if not _is_number(self.multiplier) or math.isnan(self.multiplier) or self.multiplier < 1:
            raise ConfigurationError(f"multiplier must be a number >= 1, got {self.multiplier!r}")
        if not isinstance(self.honor_retry_after, bool):
            raise ConfigurationError(f"honor_retry_after must be True or False, got {self.honor_retry_after!r}")
        if self.retrying is not None and not isinstance(self.retrying, tenacity.AsyncRetrying):
            raise ConfigurationError(
                f"retrying must be a tenacity.AsyncRetrying (the async form: requests are awaited), "
                f"got {type(self.retrying).__name__}"
            )

    def new_retrying(self) -> tenacity.AsyncRetrying:
        """A fresh `AsyncRetrying` for one request (tenacity keeps per-object statistics, so never share one)."""
        if self.retrying is not None:
            return self.retrying.copy()
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(is_retryable),
            wait=_PolicyWait(self),
            stop=_PolicyStop(),
            before_sleep=_log_retry,
            reraise=False,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- decisions (pure) ----------------------------------------------------------------------------------------------


def is_retryable(error: BaseException) -> bool:
    """Whether waiting and sending the same request again can succeed.

    Yes for pydantic-ai's `ModelRateLimitError` (429), `ModelUnavailableError` / `ModelOverloadedError` (503, 529),
    `ModelServerError` (other 5xx), `ModelConnectionError` / `ModelTimeoutError` (the provider could not be reached
    or its answer could not be read), an uncategorized `ModelHTTPError` with status 408, 425, 429 or a server error
    status, and raw connection errors (`ConnectionError`, httpx's network and timeout errors) from custom models.

    No for everything else, in particular `ModelQuotaExceededError` (the account is out of credit), other 4xx
    (`ModelRequestRejectedError` and subclasses), `ModelRequestTimeout` (the caller's own deadline),
    `UsageLimitExceeded`, `UnexpectedModelBehavior` and validation errors; also for an HTTP error whose provider
    said `x-should-retry: false` or whose error code says the quota is exhausted.
    """
    if isinstance(error, ModelAPIError):
        if isinstance(error, ModelQuotaExceededError | ModelRequestRejectedError | ModelRequestTimeout):
            return False
        if _says_quota(error):
            return False
        if isinstance(error, ModelHTTPError) and error.provider_retry_hint is False:
            return False
        if isinstance(error, ModelRateLimitError | ModelUnavailableError | ModelServerError | ModelConnectionError):
            return True
        if isinstance(error, ModelHTTPError):
            return error.status_code in _RETRYABLE_STATUS or (
                500 <= error.status_code < 600 and error.status_code not in (501, 505)
            )
        return False
    if isinstance(error, ConnectionError):
        return True
    return _is_transport_error(error)


def _says_quota(error: ModelAPIError) -> bool:
    for value in (error.provider_error_code, error.provider_error_type):
        if isinstance(value, str) and value.lower() in _QUOTA_CODES:
            return True
    return False


def _transport_error_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        for name in ("NetworkError", "TimeoutException", "RemoteProtocolError"):
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


_TRANSPORT_ERRORS: tuple[type[BaseException], ...] | None = None


def _is_transport_error(error: BaseException) -> bool:
    global _TRANSPORT_ERRORS
    if _TRANSPORT_ERRORS is None:
        _TRANSPORT_ERRORS = _transport_error_types()
    return isinstance(error, _TRANSPORT_ERRORS)


def retry_after_of(error: BaseException) -> float | None:
    """Seconds the provider asked to wait before retrying, or `None` if it did not say.

    pydantic-ai reads `retry-after-ms` / `Retry-After` headers (and Google's `RetryInfo`) into
    `ModelAPIError.retry_after`; failing that, a `retry_after` / `retry-after` / `retryAfter` value in the error
    body (at the top level or under `"error"`) is used. Negative or non-finite values are ignored.
    """
    if not isinstance(error, ModelAPIError):
        return None
    if error.retry_after is not None:
        return _seconds(error.retry_after)
    body = error.body
    for container in (body, body.get("error") if isinstance(body, Mapping) else None):
        if isinstance(container, Mapping):
            for name in ("retry_after", "retry-after", "retryAfter"):
                if name in container:
                    return _seconds(container[name])
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        return None
    return seconds


def next_wait(
    policy: RetryPolicy,
    *,
    attempt: int,
    elapsed: float,
    error: BaseException,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or `None` to stop retrying.

    Args:
        policy: The retry policy.
        attempt: The number of the attempt that just failed (1 for the first).
        elapsed: Seconds since the first attempt started.
        error: The error the attempt failed with.
        uniform: Draws the jitter (`random.uniform`); pass a fixed function to make the result deterministic.

    Returns `None` when the error is not retryable or `max_wait` is spent. Otherwise the provider's `retry_after`
    (when `honor_retry_after`) or a full-jitter exponential backoff, capped by what is left of `max_wait`.
    """
    if not is_retryable(error):
        return None
    remaining = policy.max_wait - elapsed
    if remaining <= 0:
        return None
    hint = retry_after_of(error) if policy.honor_retry_after else None
    if hint is not None:
        return min(hint, remaining)
    window = min(policy.max_wait_per_attempt, policy.initial_wait * policy.multiplier ** max(attempt - 1, 0))
    return min(max(uniform(0.0, window), 0.0), remaining)


# --- tenacity adapters ---------------------------------------------------------------------------------------------


class _PolicyWait(tenacity.wait.wait_base):
    """`next_wait` as a tenacity wait; `math.inf` means "give up" (read by `_PolicyStop`, which runs next)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        if error is None:
            return math.inf
        wait = next_wait(
            self.policy,
            attempt=retry_state.attempt_number,
            elapsed=retry_state.seconds_since_start or 0.0,
            error=error,
        )
        return math.inf if wait is None else wait


class _PolicyStop(tenacity.stop.stop_base):
    """Stop when `_PolicyWait` decided to give up."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        upcoming = retry_state.upcoming_sleep
        return upcoming is None or math.isinf(upcoming)


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    logger.info(
        "%s on attempt %d; retrying in %.2fs",
        _describe(error),
        retry_state.attempt_number,
        retry_state.upcoming_sleep,
    )


def _describe(error: BaseException | None) -> str:
    """A short description of a provider error that never includes its body (it may echo request content)."""
    if error is None:
        return "no error"
    name = type(error).__name__
    if isinstance(error, ModelHTTPError):
        return f"{name} (HTTP {error.status_code}) from {error.model_name}"
    if isinstance(error, ModelAPIError):
        return f"{name} from {error.model_name}"
    return name


# --- the loop ------------------------------------------------------------------------------------------------------

RetryReport = Callable[[int, float], None]
"""Called after each request with the attempts made and the seconds waited between them."""


@dataclass(init=False)
class RetryingModel(WrapperModel):
    """A model that retries each request of the model it wraps according to a `RetryPolicy`.

    `ResponseCache` wraps the model of every request it sends (`get_wrapper_model`), so cache hits never reach it.
    Use it directly to retry without caching: `Agent(RetryingModel(model, RetryPolicy(max_wait=30)))`.

    A streamed request is retried only while it is being opened: once the stream has been handed to pydantic-ai
    (after the first event arrived), an error propagates unchanged.
    """

    policy: RetryPolicy
    """How long and how often to retry."""

    def __init__(
        self, wrapped: Model | str, policy: RetryPolicy | None = None, *, report: RetryReport | None = None
    ) -> None:
        super().__init__(wrapped)
        self.policy = policy if policy is not None else RetryPolicy()
        self._report = report

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        retrying = self.policy.new_retrying()
        try:
            response: ModelResponse = await retrying(
                self.wrapped.request, messages, model_settings, model_request_parameters
            )
        except tenacity.RetryError as exhausted:
            raise self._exhausted(retrying, exhausted) from exhausted.last_attempt.exception()
        finally:
            self._report_stats(retrying)
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        async def open_stream() -> tuple[AsyncExitStack, StreamedResponse]:
            stack = AsyncExitStack()
            stream = await stack.enter_async_context(
                self.wrapped.request_stream(messages, model_settings, model_request_parameters, run_context)
            )
            return stack, stream

        retrying = self.policy.new_retrying()
        try:
            opened: tuple[AsyncExitStack, StreamedResponse] = await retrying(open_stream)
            stack, stream = opened
        except tenacity.RetryError as exhausted:
            raise self._exhausted(retrying, exhausted) from exhausted.last_attempt.exception()
        finally:
            self._report_stats(retrying)
        async with stack:
            yield stream

    def _report_stats(self, retrying: tenacity.AsyncRetrying) -> None:
        if self._report is None:
            return
        stats = retrying.statistics
        self._report(int(stats.get("attempt_number", 1)), float(stats.get("idle_for", 0.0)))

    def _exhausted(self, retrying: tenacity.AsyncRetrying, exhausted: tenacity.RetryError) -> RateLimitError:
        attempts = exhausted.last_attempt.attempt_number
        waited = float(retrying.statistics.get("idle_for", 0.0))
        last = exhausted.last_attempt.exception()
        budget = "" if self.policy.retrying is not None else f" (max_wait={self.policy.max_wait:g}s)"
        return RateLimitError(
            f"model {self.wrapped.model_name!r} still failing after {attempts} attempt(s) and {waited:.2f}s of "
            f"waiting{budget}; last error: {_describe(last)}. Raise max_wait (or pass retry=RetryPolicy(...)) to "
            f"wait longer, or lower the request rate.",
            attempts=attempts,
            waited=waited,
        )


def resolve_retry(retry: Any, max_wait: float | None, initial_wait: float | None) -> RetryPolicy | None:
    """The policy of a `cached_agent_run` call from its `retry=`, `max_wait=` and `initial_wait=` arguments.

    `retry=None` (default) or `True`: a `RetryPolicy` with `max_wait` (default 60 s) and `initial_wait` (default
    1 s). `retry=False`: no retrying (provider errors propagate unchanged). A `RetryPolicy` or a
    `tenacity.AsyncRetrying`: used as is, and then `max_wait`/`initial_wait` must not be given.
    """
    explicit = [name for name, value in (("max_wait", max_wait), ("initial_wait", initial_wait)) if value is not None]
    if retry is None or retry is True:
        return RetryPolicy(
            max_wait=DEFAULT_MAX_WAIT if max_wait is None else max_wait,
            initial_wait=DEFAULT_INITIAL_WAIT if initial_wait is None else initial_wait,
        )
    if explicit and retry is False:
        raise ConfigurationError(
            f"retry=False turns retrying off, so {' and '.join(explicit)} would be ignored: drop it"
        )
    if explicit:
        raise ConfigurationError(
            f"pass {' and '.join(explicit)} either as {'/'.join(explicit)}= or inside retry=RetryPolicy(...), not "
            f"both (retry={retry!r})"
        )
    if retry is False:
        return None
    if isinstance(retry, RetryPolicy):
        return retry
    if isinstance(retry, tenacity.AsyncRetrying):
        return RetryPolicy(retrying=retry)
    raise ConfigurationError(
        f"retry must be a RetryPolicy, a tenacity.AsyncRetrying, True/None (default policy) or False (off), "
        f"got {type(retry).__name__}"
    )
