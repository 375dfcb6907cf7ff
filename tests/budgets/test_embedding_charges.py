"""Embedding calls of the semantic cache count toward spend: in `Expense`, in the ledger, and in budgets.

The semantic cache reports its embedding calls into the call's record (`CallRecord.embedding_*`); these tests fill a
record the way it does and check what the spend side makes of it, against a real Redis.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic_ai.usage import RequestUsage

from pyai_caching import Budget, RedisSpendLedger, read_budget_usage_async
from pyai_caching.engine.context import CallRecord
from pyai_caching.spend.budget_gate import BudgetGate
from pyai_caching.spend.tracker import SpendTracker


def record_with_embeddings() -> CallRecord:
    record = CallRecord(misses=1, cost=Decimal("0.003"), models=["function:priced"])
    record.embedding_calls, record.embedding_tokens, record.embedding_cost = 2, 40, Decimal("0.0004")
    record.unpriced_embedding_calls = 1
    return record


async def test_an_expense_and_the_ledger_carry_embedding_spend(redis_url: str) -> None:
    ledger = RedisSpendLedger(redis_url)
    tracker = SpendTracker.create(
        task_name="t", namespace="ns", custom_costs=None, expense_recorder=None, expense_hook=ledger, gate=None
    )
    assert tracker is not None
    expense = tracker.expense(record_with_embeddings())
    assert (expense.embedding_calls, expense.embedding_tokens, expense.unpriced_embedding_calls) == (2, 40, 1)
    assert expense.embedding_cost == Decimal("0.0004")
    assert expense.cost == Decimal("0.003")
    assert expense.total_cost == Decimal("0.0034")
    assert expense.to_dict()["total_cost"] == 0.0034
    await ledger.record(expense)
    [row] = await ledger.read()
    assert (row.embedding_calls, row.embedding_tokens, row.unpriced_embedding_calls) == (2, 40, 1)
    assert (row.cost, row.embedding_cost, row.total_cost) == (Decimal("0.003"), Decimal("0.0004"), Decimal("0.0034"))
    assert await ledger.spent("t", namespace="ns") == Decimal("0.0034")  # what a TaskBudget counts


async def test_budgets_are_charged_for_embeddings_once(redis_url: str) -> None:
    usd = Budget("usd", usd=1, redis_url=redis_url)
    tokens = Budget("tokens", tokens=10_000, redis_url=redis_url)
    gate = BudgetGate((usd, tokens), "t", "ns")
    record = record_with_embeddings()
    async with gate.request(record, None) as charge:  # the embeddings before the request come with it
        charge.settle(Decimal("0.003"), RequestUsage(input_tokens=1_000, output_tokens=100))
    spent = {u.budget: u.spent for u in await read_budget_usage_async(redis_url)}
    assert spent == {"usd": Decimal("0.0034"), "tokens": 1_140}
    record.embedding_calls += 1  # a later lookup by meaning that was answered without a request
    record.embedding_tokens += 10
    record.embedding_cost += Decimal("0.0001")
    await gate.charge_leftovers(record, None)
    await gate.charge_leftovers(record, None)  # nothing new: nothing charged
    spent = {u.budget: u.spent for u in await read_budget_usage_async(redis_url)}
    assert spent == {"usd": Decimal("0.0035"), "tokens": 1_150}
