"""Review findings on `Budget` (issue 16 part 2), kept as regression tests: through real agents, real Redis and the
public API.

Every request here costs $0.003 (1,000 input tokens at $2/M plus 100 output tokens at $10/M), except the "big"
ones ($0.201: 100,000 input tokens). Periods are driven by the budget's `clock=`.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import pytest
import redis
from _agents import Counter, last_prompt, make_agent
from _redis_servers import RedisServer
from pydantic_ai import Agent, Embedder
from pydantic_ai.embeddings import TestEmbeddingModel
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import (
    Budget,
    BudgetExceededError,
    MemoryStore,
    ModelCosts,
    ResponseCache,
    SemanticCache,
    cached_agent_run,
    exceptions,
    read_budget_usage_async,
)
from pyai_caching.exceptions import (
    CacheError,
    CacheMissError,
    ConfigurationError,
    PyAICachingError,
    RateLimitError,
)

PRICES = {"priced": ModelCosts(2, 10)}
COST = Decimal("0.003")


class Model:
    """A priced model function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        return ModelResponse(parts=[TextPart("answer")], usage=RequestUsage(input_tokens=1_000, output_tokens=100))

    def agent(self) -> Agent[Any, str]:
        return Agent(FunctionModel(self, model_name="priced"), deps_type=dict)


def run(model: Model, prompt: str, budget: Any, **kwargs: Any) -> Any:
    return cached_agent_run(
        model.agent(), prompt, "triage", store=MemoryStore(), custom_costs=PRICES, budget=budget, **kwargs
    )


async def test_a_call_denied_by_an_unreachable_store_gives_back_what_an_earlier_store_held(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Budgets of one call on two stores: the first (a MemoryStore) admits and holds a reservation, the second (a
    Redis that is down, `on_store_error='deny'`) refuses the call. The model is not called, so the first budget
    must hold nothing afterwards, as it does when the second budget refuses because it is spent
    (`test_budgets_on_two_stores_give_back_what_the_first_held`). Otherwise the reservation (here half the limit)
    stays held for the whole lease (15 minutes by default), and two such denials block every later call of the
    first budget although nothing was spent."""
    server = redis_server_factory()
    counters = MemoryStore()
    roomy = Budget("roomy", usd=1, reserve="0.5", store=counters)
    strict = Budget("strict", usd=1, redis_url=server.url(), on_store_error="deny")
    server.stop()
    model = Model()
    for prompt in ("a", "b"):
        with pytest.raises(BudgetExceededError, match="could not be reached"):
            await run(model, prompt, [roomy, strict])
    [usage] = await read_budget_usage_async(store=counters)
    assert (usage.reserved, usage.in_flight, usage.spent) == (0, 0, 0)
    assert await run(model, "c", roomy) == "answer"  # nothing was spent: roomy still admits
    assert model.calls == 1


@pytest.mark.parametrize("how", ["task.cancel", "asyncio.timeout", "anyio.fail_after"])
async def test_a_cancelled_request_gives_back_its_reservation(
    how: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """A run cancelled while the model works (a timeout, a client that went away: `task.cancel()`,
    `asyncio.wait_for` / `asyncio.timeout`, `anyio.fail_after`) ends its request: its reservation must be given back
    then, as for a request that raised. The lease is only for a process that died and cannot settle. The settle
    after the request used to be cancelled itself (pydantic-ai runs the graph in anyio cancel scopes, which cancel
    every later await, as `engine.flight` notes for its lock release), so the reservation stayed held for the whole
    lease (15 minutes by default): two cancelled calls here held the whole limit and refused every call after them,
    with nothing spent.

    The settle is cancelled at its first await; when its script is cached on the server, its `EVALSHA` may still
    reach Redis before the cancellation interrupts the read of the reply, which hides the defect by luck. The
    scripts are flushed before each cancellation (as a Redis restart or failover does) so that the test does not
    depend on that race. The timeouts are brought to their deadline from inside the model, where the request is
    in flight, rather than left to the time the test takes to get there."""
    started = asyncio.Event()
    never = asyncio.Event()
    deadline: list[Callable[[], None]] = []

    async def hangs(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        redis_client.script_flush()
        started.set()
        for expire in deadline:
            expire()
        await never.wait()
        raise AssertionError("unreachable")

    budget = Budget("timeouts", usd=1, reserve="0.5", redis_url=redis_url)
    agent = Agent(FunctionModel(hangs, model_name="priced"))

    def call(prompt: str) -> Any:
        return cached_agent_run(agent, prompt, "triage", store=MemoryStore(), custom_costs=PRICES, budget=budget)

    async def under_asyncio_timeout(prompt: str) -> None:
        async with asyncio.timeout(3600) as timeout:
            deadline.append(lambda: timeout.reschedule(asyncio.get_running_loop().time()))
            await call(prompt)

    async def under_anyio_fail_after(prompt: str) -> None:
        with anyio.fail_after(3600) as scope:
            deadline.append(lambda: setattr(scope, "deadline", anyio.current_time()))
            await call(prompt)

    for prompt in ("a", "b"):
        started.clear()
        deadline.clear()
        if how == "task.cancel":
            task = asyncio.create_task(call(prompt))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(TimeoutError):
                await (under_asyncio_timeout if how == "asyncio.timeout" else under_anyio_fail_after)(prompt)
        assert started.is_set()  # the model was working when the run was cancelled
    [usage] = await read_budget_usage_async(redis_url, budget="timeouts")
    assert (usage.reserved, usage.in_flight, usage.spent) == (0, 0, 0)
    model = Model()
    assert await run(model, "c", budget) == "answer"  # nothing was spent: the budget still admits


async def test_a_budget_error_crosses_a_process_boundary_with_its_fields() -> None:
    """`BudgetExceededError` is raised in workers (`ProcessPoolExecutor`, multiprocessing, Celery), which send it
    back to the parent pickled. It must arrive as itself, with the fields issue 16 gave it (which limit, what was
    spent, when it resets). Unpickling used to call `__init__(message)` without its keyword-only fields and raise
    `TypeError`, so the parent saw a broken pool or a serialization error instead of the budget's refusal.
    (`RateLimitError` had the same defect: see `test_every_exception_survives_pickling`.)"""
    budget = Budget("closed", usd=0, store=MemoryStore())
    with pytest.raises(BudgetExceededError) as caught:
        await run(Model(), "a", budget)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(copy, BudgetExceededError)
    assert (copy.budget, copy.unit, copy.period, copy.task_name) == ("closed", "usd", "day", "triage")
    assert (copy.limit, copy.resets_at, str(copy)) == (caught.value.limit, caught.value.resets_at, str(caught.value))


async def test_a_response_cache_used_directly_charges_its_embedding_calls() -> None:
    """`Budget` says "Embedding calls of the semantic cache are charged too", and `ResponseCache` is the
    documented way to cache `agent.run` itself (`agent.run(prompt, capabilities=[ResponseCache(...)])`). The same
    two runs (a miss, then a paraphrase answered by meaning) must charge a tokens budget what they charge through
    `cached_agent_run`: each run's embedding tokens plus the tokens of the request sent. A run outside
    `cached_agent_run` used to have no call record, so its embedding calls were charged nowhere: the semantic hit
    was free although it called the embedding model, and the miss was charged without its embedding."""
    ask, paraphrase = "How do I reset my password?", "How can I change my passcode"

    def semantic() -> SemanticCache:
        model = TestEmbeddingModel("text-embedding-3-small", provider_name="openai")
        return SemanticCache(embedder=Embedder(model), threshold=0.99)

    spent = []
    for direct in (False, True):
        counters = MemoryStore()
        budget = Budget("tokens", tokens=1_000_000, store=counters)
        agent = make_agent(Counter(payload="Use the reset link."))
        store = MemoryStore()
        cache = ResponseCache(store=store, budget=budget, semantic=semantic())
        for prompt in (ask, paraphrase):
            if direct:
                await agent.run(prompt, capabilities=[cache])
            else:
                await cached_agent_run(agent, prompt, "t", store=store, budget=budget, semantic=semantic())
        [usage] = await read_budget_usage_async(store=counters)
        spent.append(usage.spent)
    embedded = await TestEmbeddingModel().count_tokens(ask) + await TestEmbeddingModel().count_tokens(paraphrase)
    assert spent[0] == 120 + embedded  # through cached_agent_run: the request and both embedding calls
    assert spent[1] == spent[0]


# --- a refusal by a later store gives back what an earlier one held, whatever the error ---------------------------


async def test_a_call_stopped_by_an_error_of_a_later_store_gives_back_what_an_earlier_store_held(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Not only an outage: any error of the second store's check (here a wrong password, which is raised, never
    treated as an outage) ends the request before the model is called, and the first store holds nothing after."""
    server = redis_server_factory(password="secret")
    counters = MemoryStore()
    roomy = Budget("roomy", usd=1, reserve="0.5", store=counters)
    locked = Budget("locked", usd=1, redis_url=f"redis://127.0.0.1:{server.port}/0")  # no password
    model = Model()
    for prompt in ("a", "b"):
        with pytest.raises(redis.AuthenticationError):
            await run(model, prompt, [roomy, locked])
    [usage] = await read_budget_usage_async(store=counters)
    assert (usage.admitted, usage.reserved, usage.in_flight, usage.spent) == (2, 0, 0, 0)
    assert model.calls == 0


async def test_a_check_cancelled_before_its_reply_gives_back_what_it_may_hold(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A call cancelled while its check runs on Redis (the script was sent, its reply not read yet) cannot know
    whether the script held a reservation: it releases the reservation by its id, whatever its amount. Here the
    server is stopped (SIGSTOP) while the check's script waits in its socket; the call is cancelled (its client
    closes that connection) and sends the release on a new one; then the server resumes. It reads the script
    first (and holds the reservation: the connection's close comes after the bytes of the script), then the
    release, which gives it back. Without the release, the reservation would stay held for the whole lease."""
    server = redis_server_factory()
    budget = Budget("interrupted", usd=1, reserve="0.5", redis_url=server.url())
    model = Model()
    assert await run(model, "warm", budget) == "answer"  # connected, and the scripts are loaded
    server.pause()
    try:
        task = asyncio.create_task(run(model, "a", budget))
        await _until(lambda: ESTABLISHED in _unread(server.port), "the check never reached the server")
        task.cancel()
        await _until(lambda: CLOSE_WAIT in _unread(server.port), "the call was not cancelled during its check")
        # The release, on a new connection (only the failing case waits out this bound).
        await _until(lambda: ESTABLISHED in _unread(server.port), None, seconds=3)
    finally:
        server.resume()
    with pytest.raises(asyncio.CancelledError):
        await task
    [usage] = await read_budget_usage_async(server.url(), budget="interrupted")
    assert (usage.admitted, usage.reserved, usage.in_flight) == (2, 0, 0)  # the check did hold, and gave it back
    assert model.calls == 1


ESTABLISHED, CLOSE_WAIT = "01", "08"


def _unread(port: int) -> set[str]:
    """The states of the connections to the server on `port` that hold bytes it has not read (/proc/net/tcp)."""
    states = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and int(fields[4].split(":")[1], 16) > 0:
                states.add(fields[3])
    return states


async def _until(condition: Callable[[], bool], failure: str | None, seconds: float = 60) -> None:
    """Poll `condition` until it holds; after `seconds`, fail with `failure` (or go on if it is `None`)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            assert failure is None, failure
            return
        await asyncio.sleep(0.005)


# --- the default reserve: measured in each period, one request at a time until then --------------------------------


class Slow:
    """A priced model that keeps each request in flight until `release` is set; a prompt starting with "big" sends
    100,000 input tokens ($0.201), any other 1,000 ($0.003)."""

    def __init__(self) -> None:
        self.inside = 0
        self.release = asyncio.Event()
        self._changed = asyncio.Condition()

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        async with self._changed:
            self.inside += 1
            self._changed.notify_all()
        await self.release.wait()
        tokens = 100_000 if last_prompt(messages).startswith("big") else 1_000
        return ModelResponse(parts=[TextPart("answer")], usage=RequestUsage(input_tokens=tokens, output_tokens=100))

    async def wait_inside(self, count: int) -> None:
        """Until `count` requests have reached the model."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.inside >= count), 60)

    def call(self, prompt: str, budget: Budget, **kwargs: Any) -> asyncio.Task[Any]:
        agent = Agent(FunctionModel(self, model_name="priced"), deps_type=dict)
        return asyncio.create_task(
            cached_agent_run(agent, prompt, "t", store=MemoryStore(), custom_costs=PRICES, budget=budget, **kwargs)
        )


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def counters(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where a budget keeps its counters: the same rules in this process and in Redis."""
    if request.param == "memory":
        return {"store": MemoryStore()}
    return {"redis_url": request.getfixturevalue("redis_url")}


async def test_until_a_request_is_charged_one_request_at_a_time_measures_the_cost(counters: dict[str, Any]) -> None:
    """Without `reserve=`, a budget holds the largest request charged so far; before the first one settles that
    is unknown, and a burst of first requests holding 0 each would all be admitted and overspend. So the first
    request is admitted alone (holding 0), the others are refused with an error that says why, and once it has been
    charged, concurrent requests are admitted, each holding its cost."""
    slow = Slow()
    budget = Budget("first", usd=1, tenant=lambda deps: deps["customer"], **counters)
    first = slow.call("a", budget, deps={"customer": "acme"})
    await slow.wait_inside(1)
    with pytest.raises(BudgetExceededError, match="measuring") as caught:
        await slow.call("b", budget, deps={"customer": "acme"})
    error = caught.value
    assert "reserve=" in str(error)
    assert (error.budget, error.tenant, error.spent, error.reserved) == ("first", "acme", 0, 0)
    other = slow.call("c", budget, deps={"customer": "globex"})  # another tenant's first request: its own counter
    await slow.wait_inside(2)
    slow.release.set()
    assert (await first, await other) == ("answer", "answer")

    slow.release.clear()
    racing = [slow.call(prompt, budget, deps={"customer": "acme"}) for prompt in ("d", "e")]
    await slow.wait_inside(4)  # both admitted: the cost is known
    [acme, _] = await read_budget_usage_async(**_where(counters), budget="first")
    assert (acme.tenant, acme.in_flight, acme.reserved, acme.denied) == ("acme", 2, 2 * COST, 1)
    slow.release.set()
    assert await asyncio.gather(*racing) == ["answer", "answer"]
    [acme, globex] = await read_budget_usage_async(**_where(counters), budget="first")
    assert (acme.spent, acme.reserved, acme.in_flight, globex.spent) == (3 * COST, 0, 0, COST)


async def test_a_first_request_that_fails_measures_nothing(counters: dict[str, Any]) -> None:
    """A request that raised was charged nothing and says nothing of what requests cost: the next request is
    measured alone again."""

    def fails(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise RuntimeError("provider error")

    budget = Budget("failing", usd=1, **counters)
    agent = Agent(FunctionModel(fails, model_name="priced"))
    with pytest.raises(RuntimeError):
        await cached_agent_run(agent, "a", "t", store=MemoryStore(), custom_costs=PRICES, budget=budget, retry=False)
    slow = Slow()
    first = slow.call("b", budget)
    await slow.wait_inside(1)
    with pytest.raises(BudgetExceededError, match="measuring"):
        await slow.call("c", budget)
    slow.release.set()
    assert await first == "answer"


async def test_the_default_reserve_is_measured_again_in_each_period(counters: dict[str, Any]) -> None:
    """The largest request of a period is what requests hold in that period only: one expensive request does not
    make every later request hold its cost for ever, and the next period measures again."""
    clock = Clock(datetime(2030, 6, 1, 12, tzinfo=UTC))
    budget = Budget("periodic", usd=10, clock=clock, **counters)
    slow = Slow()
    slow.release.set()
    assert await slow.call("big one", budget) == "answer"  # $0.201, the largest request of 1 June
    slow.release.clear()
    held = slow.call("a", budget)
    await slow.wait_inside(2)
    [usage] = await read_budget_usage_async(**_where(counters), at=clock.now)
    assert usage.reserved == Decimal("0.201")
    slow.release.set()
    await held

    clock.now += timedelta(days=1)  # 2 June: nothing charged yet, the first request measures alone
    slow.release.clear()
    first = slow.call("b", budget)
    await slow.wait_inside(3)
    [usage] = await read_budget_usage_async(**_where(counters), at=clock.now)
    assert (usage.reserved, usage.in_flight) == (0, 1)
    with pytest.raises(BudgetExceededError, match="measuring"):
        await slow.call("c", budget)
    slow.release.set()
    await first
    slow.release.clear()
    held = slow.call("d", budget)
    await slow.wait_inside(4)
    [usage] = await read_budget_usage_async(**_where(counters), at=clock.now)
    assert usage.reserved == COST  # the largest request of 2 June, not the $0.201 of 1 June
    slow.release.set()
    await held


async def test_a_budget_with_a_reserve_admits_concurrent_first_requests(counters: dict[str, Any]) -> None:
    slow = Slow()
    budget = Budget("reserved", usd=1, reserve="0.01", **counters)
    racing = [slow.call(prompt, budget) for prompt in ("a", "b")]
    await slow.wait_inside(2)
    slow.release.set()
    assert await asyncio.gather(*racing) == ["answer", "answer"]


async def test_budgets_of_one_name_with_different_periods_count_apart(counters: dict[str, Any]) -> None:
    """A daily and a monthly budget of the same name keep their own counters (in Redis their keys differ by the
    period); a `MemoryStore` used to drop one's use whenever the other was checked."""
    daily = Budget("shared-name", usd="0.005", period="day", **counters)
    monthly = Budget("shared-name", usd="0.005", period="month", **counters)
    model = Model()
    for prompt, budget in (("a", daily), ("b", monthly), ("c", daily), ("d", monthly)):
        assert await run(model, prompt, budget) == "answer"
    for budget in (daily, monthly):  # each has spent $0.006 of its $0.005
        with pytest.raises(BudgetExceededError) as caught:
            await run(model, "e", budget)
        assert caught.value.spent == pytest.approx(0.006)
        assert caught.value.period == budget.period
    assert model.calls == 4


def _where(counters: dict[str, Any]) -> dict[str, Any]:
    """The arguments of `read_budget_usage_async` that read the counters of a budget made with `counters`."""
    return {"store": counters["store"]} if "store" in counters else {"redis_url": counters["redis_url"]}


# --- every exception survives pickling ------------------------------------------------------------------------------

EXAMPLES: dict[type[PyAICachingError], PyAICachingError] = {
    PyAICachingError: PyAICachingError("something failed"),
    ConfigurationError: ConfigurationError("ttl must be a positive number of seconds, got -1"),
    CacheError: CacheError("the store failed", operation="set", store="redis://127.0.0.1:6379/0"),
    CacheMissError: CacheMissError("no cached response", key="pyai_caching:v2:default:req:{abc}"),
    RateLimitError: RateLimitError("rate limited for 60 s", attempts=7, waited=59.5),
    BudgetExceededError: BudgetExceededError(
        "budget 'daily' is spent",
        task_name="triage",
        spent=20.5,
        limit=20.0,
        budget="daily",
        unit="tokens",
        period="month",
        tenant="acme",
        resets_at=datetime(2030, 7, 1, tzinfo=UTC),
        reserved=1.5,
    ),
}


def test_every_exception_survives_pickling() -> None:
    """Worker pools send a worker's exception back to the parent pickled: every exception of the library arrives
    as itself, with its message and its fields (copies too)."""
    classes = {
        value
        for name in exceptions.__all__
        if isinstance(value := getattr(exceptions, name), type) and issubclass(value, BaseException)
    }
    assert classes == set(EXAMPLES)  # a new exception needs an example here
    for cls, error in EXAMPLES.items():
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            for twin in (pickle.loads(pickle.dumps(error, protocol)), copy.copy(error), copy.deepcopy(error)):
                assert type(twin) is cls
                assert (str(twin), twin.args) == (str(error), error.args)
                assert vars(twin) == vars(error)
    assert vars(EXAMPLES[RateLimitError]) == {"attempts": 7, "waited": 59.5}
    assert isinstance(pickle.loads(pickle.dumps(EXAMPLES[ConfigurationError])), ValueError)


async def test_a_budget_whose_name_has_a_bar_is_listed(counters: dict[str, Any]) -> None:
    """The registry of budgets used to keep `<name>|largest` fields and hid every name containing `|`."""
    budget = Budget("support|daily", usd=1, **counters)
    await run(Model(), "a", budget)
    [usage] = await read_budget_usage_async(**_where(counters))
    assert (usage.budget, usage.spent) == ("support|daily", COST)
