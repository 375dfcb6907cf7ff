"""What a model request costs, in USD, as a `Decimal`.

```python
custom_costs = {"my-finetune": ModelCosts(3, 12, cost_per_million_caching_hit_tokens="0.3")}
await cached_agent_run(agent, prompt, "triage", custom_costs=custom_costs)
```

`price(usage, model_name, custom_costs, provider=...)` decides, in this order:

1. a `ModelCosts` the caller gave for the model (`custom_costs`, keyed by model name or `provider:model name`);
2. a cost already known for this usage (pydantic-ai fills `usage.cost` through genai-prices for models it knows);
3. [genai-prices](https://github.com/pydantic/genai-prices) (bundled price data for thousands of models, cached
   token rates included; no network access);
4. otherwise `None` ("unknown", distinct from zero), with one warning per model and process in the
   `pyai_caching` logger. An unknown price never breaks a run and never stops a response from being cached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic_ai.usage import RequestUsage, RunUsage

from pyai_caching.exceptions import ConfigurationError

__all__ = ["ModelCosts", "check_custom_costs", "find_custom_costs", "price", "to_decimal"]

logger = logging.getLogger("pyai_caching")

_MILLION = Decimal(1_000_000)

_TEST_SYSTEMS = frozenset({"test", "function"})
"""pydantic-ai's test doubles (`TestModel`, `FunctionModel`): unpriced without a warning."""

_warned_lock = threading.Lock()
_warned: set[tuple[str | None, str]] = set()
"""Models warned about (once per process each). Past `_WARNED_KEPT` names (a caller inventing model names), the
set starts again: at worst a name is warned about twice."""
_WARNED_KEPT = 1_000


def to_decimal(value: Any, name: str, *, unit: str = "USD per million tokens") -> Decimal:
    """`value` (int, float, str or Decimal, finite and >= 0) as a `Decimal`; a `ConfigurationError` naming `name`
    otherwise. A float goes through its shortest repr, so 0.1 becomes `Decimal("0.1")`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigurationError(f"{name} must be a number of {unit} (int, float, str or Decimal), got {value!r}")
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ConfigurationError(f"{name} must be a number of {unit}, got {value!r}") from None
    if not result.is_finite() or result < 0:
        raise ConfigurationError(f"{name} must be a finite number >= 0 ({unit}), got {value!r}")
    return result


@dataclass(frozen=True, init=False)
class ModelCosts:
    """Your prices for one model, in USD per million tokens. They win over genai-prices.

    ```python
    ModelCosts(3, 15, cost_per_million_caching_input_tokens="3.75", cost_per_million_caching_hit_tokens="0.30")
    ```

    Input token counts include cache tokens (as in pydantic-ai's usage): cache-write tokens are priced at the
    caching-input rate, cache-read tokens at the caching-hit rate, the rest of the input at the input rate.
    Audio and other token details are not priced separately.
    """

    cost_per_million_input_tokens: Decimal
    """USD per million input tokens that were neither read from nor written to the provider's prompt cache."""
    cost_per_million_output_tokens: Decimal
    """USD per million output tokens (reasoning tokens included, as providers bill them)."""
    cost_per_million_caching_input_tokens: Decimal
    """USD per million tokens written to the provider's prompt cache (`cache_write_tokens`); defaults to the
    input rate."""
    cost_per_million_caching_hit_tokens: Decimal
    """USD per million tokens read from the provider's prompt cache (`cache_read_tokens`); defaults to the input
    rate."""

    def __init__(
        self,
        cost_per_million_input_tokens: int | float | str | Decimal,
        cost_per_million_output_tokens: int | float | str | Decimal,
        cost_per_million_caching_input_tokens: int | float | str | Decimal | None = None,
        cost_per_million_caching_hit_tokens: int | float | str | Decimal | None = None,
    ) -> None:
        input_rate = to_decimal(cost_per_million_input_tokens, "cost_per_million_input_tokens")
        output_rate = to_decimal(cost_per_million_output_tokens, "cost_per_million_output_tokens")
        write_rate = (
            input_rate
            if cost_per_million_caching_input_tokens is None
            else to_decimal(cost_per_million_caching_input_tokens, "cost_per_million_caching_input_tokens")
        )
        read_rate = (
            input_rate
            if cost_per_million_caching_hit_tokens is None
            else to_decimal(cost_per_million_caching_hit_tokens, "cost_per_million_caching_hit_tokens")
        )
        object.__setattr__(self, "cost_per_million_input_tokens", input_rate)
        object.__setattr__(self, "cost_per_million_output_tokens", output_rate)
        object.__setattr__(self, "cost_per_million_caching_input_tokens", write_rate)
        object.__setattr__(self, "cost_per_million_caching_hit_tokens", read_rate)

    def price(self, usage: RequestUsage | RunUsage) -> Decimal:
        """The exact cost of `usage` at these prices, in USD.

        Should a usage report more cache tokens than input tokens (an inconsistent provider report), the uncached
        remainder counts as zero rather than negative.
        """
        cache_read = usage.cache_read_tokens
        cache_write = usage.cache_write_tokens
        uncached = max(usage.input_tokens - cache_read - cache_write, 0)
        total = (
            uncached * self.cost_per_million_input_tokens
            + cache_write * self.cost_per_million_caching_input_tokens
            + cache_read * self.cost_per_million_caching_hit_tokens
            + usage.output_tokens * self.cost_per_million_output_tokens
        )
        return total / _MILLION


def check_custom_costs(custom_costs: Any) -> Mapping[str, ModelCosts] | None:
    """Validate a `custom_costs` argument: `None` or a mapping of model name to `ModelCosts`."""
    if custom_costs is None:
        return None
    if not isinstance(custom_costs, Mapping):
        raise ConfigurationError(
            f"custom_costs must be a mapping of model name to ModelCosts, got {type(custom_costs).__name__}"
        )
    for name, costs in custom_costs.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"custom_costs keys must be non-empty model names (str), got {name!r}")
        if not isinstance(costs, ModelCosts):
            raise ConfigurationError(
                f"custom_costs[{name!r}] must be a pyai_caching.ModelCosts(...), got {type(costs).__name__}"
            )
    return custom_costs


def find_custom_costs(
    custom_costs: Mapping[str, ModelCosts] | None, model_name: str, provider: str | None = None
) -> ModelCosts | None:
    """The caller's prices for a model: the key `provider:model_name` first, then `model_name`."""
    if not custom_costs:
        return None
    if provider:
        found = custom_costs.get(f"{provider}:{model_name}")
        if found is not None:
            return found
    return custom_costs.get(model_name)


def price(
    usage: RequestUsage | RunUsage,
    model_name: str | None,
    custom_costs: Mapping[str, ModelCosts] | None = None,
    *,
    provider: str | None = None,
    provider_api_url: str | None = None,
    known_cost: Decimal | None = None,
) -> Decimal | None:
    """The cost of `usage` in USD, or `None` when the model cannot be priced.

    Args:
        usage: Token counts of one request (`RequestUsage`) or several (`RunUsage`).
        model_name: The model's name as pydantic-ai reports it (`gpt-4o`, `claude-sonnet-4-5`).
        custom_costs: The caller's prices (see `ModelCosts`); they win over everything else.
        provider: The provider (pydantic-ai's `model.system`: `openai`, `anthropic`, ...), to pick the right price
            list in genai-prices.
        provider_api_url: The provider's base URL, which identifies a provider more precisely than its name.
        known_cost: A cost already computed for this usage (for example the one stored with a cache entry), used
            when no custom price applies.

    Unknown models give `None` and one warning per model and process (none for pydantic-ai's `test` and
    `function` models). Never raises for an unknown model or an odd usage.
    """
    if not model_name:
        return known_cost if known_cost is not None else usage.cost
    custom = find_custom_costs(custom_costs, model_name, provider)
    if custom is not None:
        return custom.price(usage)
    if known_cost is not None:
        return known_cost
    if usage.cost is not None:
        return usage.cost
    found = _genai_price(usage, model_name, provider, provider_api_url)
    if found is None:
        _warn_unknown(model_name, provider)
    return found


def _genai_price(
    usage: RequestUsage | RunUsage, model_name: str, provider: str | None, provider_api_url: str | None
) -> Decimal | None:
    try:
        from genai_prices import calc_price
    except ImportError:  # pragma: no cover - pydantic-ai-slim depends on genai-prices
        return None
    attempts: list[dict[str, Any]] = []
    if provider_api_url:
        attempts.append({"provider_api_url": provider_api_url})
    if provider and provider not in _TEST_SYSTEMS:
        attempts.append({"provider_id": provider})
    attempts.append({})
    for reference in attempts:
        try:
            calculation = calc_price(usage, model_name, **reference)
        except (LookupError, ValueError):
            continue
        except Exception as exc:  # genai-prices must never break a run
            logger.debug("genai-prices failed for %s: %s: %s", model_name, type(exc).__name__, exc)
            return None
        total = calculation.total_price
        if isinstance(total, Decimal) and total.is_finite():
            return total
        return None
    return None


def _warn_unknown(model_name: str, provider: str | None) -> None:
    if provider in _TEST_SYSTEMS:
        return
    key = (provider, model_name)
    with _warned_lock:
        if key in _warned:
            return
        if len(_warned) >= _WARNED_KEPT:
            _warned.clear()
        _warned.add(key)
    shown = f"{provider}:{model_name}" if provider else model_name
    logger.warning(
        "no price known for model %r: its cost is recorded as unknown (None). Pass "
        "custom_costs={%r: ModelCosts(input_per_million, output_per_million)} to price it, or call "
        "pydantic_ai.prices.update_in_background() for newer genai-prices data.",
        shown,
        model_name,
    )
