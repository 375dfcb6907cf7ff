"""Pricing: the caller's prices (exact Decimals), costs pydantic-ai already knows, genai-prices, unknown models."""

from __future__ import annotations

import logging
import socket
import uuid
from decimal import Decimal
from typing import Any

import pytest
from pydantic_ai.usage import RequestUsage, RunUsage

from pyai_caching import ConfigurationError, ModelCosts
from pyai_caching.spend.costs import check_custom_costs, find_custom_costs, price

SONNET_LIKE = ModelCosts(
    3, 15, cost_per_million_caching_input_tokens="3.75", cost_per_million_caching_hit_tokens="0.30"
)


def test_custom_costs_price_cache_reads_and_writes_exactly() -> None:
    # 10,000 input tokens, of which 3,000 read from the cache and 2,000 written to it: 5,000 uncached.
    usage = RequestUsage(input_tokens=10_000, cache_read_tokens=3_000, cache_write_tokens=2_000, output_tokens=1_500)
    expected = (5_000 * Decimal(3) + 2_000 * Decimal("3.75") + 3_000 * Decimal("0.30") + 1_500 * Decimal(15)) / 10**6
    assert expected == Decimal("0.0459")
    assert SONNET_LIKE.price(usage) == Decimal("0.0459")
    assert price(usage, "my-model", {"my-model": SONNET_LIKE}) == Decimal("0.0459")


def test_custom_costs_without_cache_rates_price_cache_tokens_as_input() -> None:
    costs = ModelCosts(2, 8)
    usage = RequestUsage(input_tokens=1_000, cache_read_tokens=400, cache_write_tokens=100, output_tokens=10)
    assert costs.cost_per_million_caching_input_tokens == costs.cost_per_million_caching_hit_tokens == Decimal(2)
    assert costs.price(usage) == Decimal("0.00208")


def test_custom_costs_price_a_run_usage() -> None:
    usage = RunUsage(requests=3, input_tokens=3_000, cache_read_tokens=1_000, output_tokens=300)
    # 2,000 uncached at $3, 1,000 cache reads at $0.30, 300 output at $15.
    assert SONNET_LIKE.price(usage) == Decimal("0.0108")


@pytest.mark.parametrize("value", [1, 1.25, "1.25", Decimal("1.25")])
def test_model_costs_accepts_numbers_strings_and_decimals(value: Any) -> None:
    costs = ModelCosts(value, value, value, value)
    expected = Decimal(1) if value == 1 else Decimal("1.25")
    assert costs.cost_per_million_input_tokens == expected
    assert isinstance(costs.cost_per_million_output_tokens, Decimal)


def test_float_prices_keep_their_decimal_meaning() -> None:
    assert ModelCosts(0.1, 0.3).cost_per_million_input_tokens == Decimal("0.1")
    assert ModelCosts(0.1, 0.3).price(RequestUsage(input_tokens=10**6, output_tokens=10**6)) == Decimal("0.4")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((-1, 1), "cost_per_million_input_tokens"),
        ((1, "abc"), "cost_per_million_output_tokens"),
        ((1, 1, float("nan")), "cost_per_million_caching_input_tokens"),
        ((1, 1, 1, Decimal("Infinity")), "cost_per_million_caching_hit_tokens"),
        ((True, 1), "cost_per_million_input_tokens"),
        ((None, 1), "cost_per_million_input_tokens"),
    ],
)
def test_model_costs_rejects_bad_prices(args: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        ModelCosts(*args)


def test_inconsistent_usage_never_prices_negative() -> None:
    usage = RequestUsage(input_tokens=10, cache_read_tokens=50, output_tokens=0)
    assert ModelCosts(1, 1, 1, 1).price(usage) == Decimal(50) / 10**6


def test_custom_costs_win_over_a_known_cost() -> None:
    usage = RequestUsage(input_tokens=1_000_000, output_tokens=0)
    usage.cost = Decimal("99")
    assert price(usage, "gpt-4o", {"gpt-4o": ModelCosts(1, 1)}, provider="openai") == Decimal(1)
    assert price(usage, "gpt-4o", {"gpt-4o": ModelCosts(1, 1)}, known_cost=Decimal(7)) == Decimal(1)


def test_provider_qualified_key_wins_over_bare_model_name() -> None:
    costs = {"gpt-4o": ModelCosts(1, 1), "azure:gpt-4o": ModelCosts(2, 2)}
    assert find_custom_costs(costs, "gpt-4o", "azure") == ModelCosts(2, 2)
    assert find_custom_costs(costs, "gpt-4o", "openai") == ModelCosts(1, 1)
    assert find_custom_costs(costs, "other", "openai") is None
    assert find_custom_costs(None, "gpt-4o") is None


def test_a_cost_pydantic_ai_already_filled_is_used() -> None:
    usage = RequestUsage(input_tokens=100, output_tokens=100)
    usage.cost = Decimal("0.123")
    assert price(usage, "whatever-model", None, provider="acme") == Decimal("0.123")
    assert price(usage, "whatever-model", None, known_cost=Decimal("0.5")) == Decimal("0.5")


def test_known_model_is_priced_through_genai_prices_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pricing tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    # gpt-4o: $2.50 per million input tokens, $1.25 per million cached input tokens, $10 per million output tokens.
    usage = RequestUsage(input_tokens=1_000, cache_read_tokens=200, output_tokens=500)
    expected = (800 * Decimal("2.5") + 200 * Decimal("1.25") + 500 * Decimal(10)) / 10**6
    assert price(usage, "gpt-4o", None, provider="openai") == expected == Decimal("0.00725")
    # An unknown provider name still finds the model by its name alone.
    assert price(usage, "gpt-4o", None, provider="my-gateway") == expected


def test_unknown_model_is_none_with_one_warning_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    name = f"acme-llm-{uuid.uuid4().hex[:8]}"
    usage = RequestUsage(input_tokens=100, output_tokens=100)
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        assert price(usage, name, None, provider="acme") is None
        assert price(usage, name, None, provider="acme") is None
        assert price(usage, name, {"other": ModelCosts(1, 1)}, provider="acme") is None
    warnings = [r for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "custom_costs" in warnings[0].getMessage()


def test_test_models_are_unpriced_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    usage = RequestUsage(input_tokens=100, output_tokens=100)
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        assert price(usage, "function:fn:", None, provider="function") is None
        assert price(usage, "test", None, provider="test") is None
    assert not caplog.records


def test_no_model_name_leaves_nothing_to_look_up() -> None:
    usage = RequestUsage(input_tokens=100, output_tokens=100)
    assert price(usage, None) is None
    assert price(usage, "", known_cost=Decimal(1)) == Decimal(1)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ([("gpt-4o", ModelCosts(1, 1))], "mapping"),
        ({"gpt-4o": (1, 1)}, "ModelCosts"),
        ({"": ModelCosts(1, 1)}, "non-empty"),
        ({3: ModelCosts(1, 1)}, "non-empty"),
    ],
)
def test_check_custom_costs_rejects_bad_mappings(value: Any, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        check_custom_costs(value)


def test_check_custom_costs_accepts_none_and_mappings() -> None:
    costs = {"m": ModelCosts(1, 2)}
    assert check_custom_costs(None) is None
    assert check_custom_costs(costs) is costs
