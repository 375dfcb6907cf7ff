"""Prices of model usage: `ModelCosts` and the pricing rules (moved to `pyai_caching.spend.costs`; kept importable)."""

from pyai_caching.spend.costs import ModelCosts, check_custom_costs, find_custom_costs, price

__all__ = ["ModelCosts", "check_custom_costs", "find_custom_costs", "price"]
