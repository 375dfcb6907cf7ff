"""ACL users: the documented minimal rule is enough for everything the library does, and every part of it is
needed; a wrong password is a clear error that never shows the password."""

from __future__ import annotations

import logging
import re
import traceback
import uuid

import pytest
import redis
from _agents import Counter, make_agent
from _deployments import ACL_PASSWORD, ACL_PASSWORD_IN_URL, ACL_USER, MINIMAL_ACL
from _redis_servers import RedisServer
from _redis_topologies import ClusterNodes
from _scenario import exercise_everything

from pyai_caching import CacheError, cached_agent_run

pytestmark = pytest.mark.deployments

CLUSTER_ONLY = ("+cluster|slots", "+command")
"""redis-py's cluster client reads the slot map and the command table when it starts; a single server needs neither."""
PERMISSIONS = [token for token in MINIMAL_ACL if token.startswith("+")]
FIRST_REFUSED_IN_A_SCRIPT = ("+set", "+pttl", "+type", "+del", "+get", "+strlen")
"""Commands whose first refusal comes from inside a script (locks, size-checked reads, the ledger), where Redis does
not name the command."""


LEDGER_CHECKED = ("+hincrby", "+expire")
"""Commands the spend ledger's script checks (`ACL DRYRUN`) before it writes anything, naming the command."""


@pytest.fixture
def cluster(redis_cluster: ClusterNodes) -> ClusterNodes:
    """The Redis cluster only: the refusals above are Redis's words (the Cluster tests run on Valkey too)."""
    return redis_cluster


def refusal(permission: str) -> str:
    """What Redis says when a user without `permission` first needs it (in the library's error or log)."""
    if permission == "+cluster|slots":
        # redis-py's cluster client reports a refused CLUSTER SLOTS while it maps the slots this way (the first
        # command of a run, which now reads through a script, gives it no other chance to name the permission).
        return "Cluster mode is not enabled on this node"
    if permission in LEDGER_CHECKED:
        return f"this user may not run {permission.removeprefix('+').upper()}"
    if permission in FIRST_REFUSED_IN_A_SCRIPT:
        return "The user executing the script can't run this command or subcommand"
    if permission == "+multi":
        return "EXEC without MULTI"  # MULTI is refused inside a pipeline; redis-py reports the EXEC that follows
    return f"has no permissions to run the '{permission.removeprefix('+')}' command"


def fail_text(exc: BaseException) -> str:
    """Everything a log or a traceback of `exc` could show."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


def acl_url(server: RedisServer, db: int, user: str = ACL_USER, password: str = ACL_PASSWORD_IN_URL) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/{db}"


@pytest.fixture
def scripts_flushed(acl_server: RedisServer, cluster: ClusterNodes) -> None:
    """Forget loaded Lua scripts, so that a user must be allowed `SCRIPT LOAD` to use the locks."""
    for server in (acl_server, *cluster.nodes):
        with server.client() as client:
            client.script_flush()


async def test_a_user_with_the_minimal_acl_can_do_everything(acl_server: RedisServer, scripts_flushed: None) -> None:
    # Database 1: a URL naming a database other than 0 needs SELECT, which the rule allows.
    await exercise_everything(acl_url(acl_server, db=1))


async def test_a_user_with_the_minimal_acl_can_do_everything_on_a_cluster(
    cluster: ClusterNodes, scripts_flushed: None
) -> None:
    await exercise_everything(cluster.url(f"{ACL_USER}:{ACL_PASSWORD_IN_URL}@"))


async def fails_for_want_of(permission: str, url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Run the scenario as a user without `permission`: it must fail, and because Redis refused that command.

    Some refusals surface as errors (`on_cache_error="raise"`); others are only logged by design (a spend ledger
    write, a semantic index write), and the scenario's own checks then fail. Either way the refusal itself must be
    in what the failure shows (its exception chain or the library's log), so a scenario that fails for another
    reason (a bug, a timeout) fails this test instead of passing it.
    """
    expected = (CacheError, redis.RedisError, AssertionError)
    with caplog.at_level(logging.DEBUG, logger="pyai_caching"), pytest.raises(expected) as failure:
        await exercise_everything(url)
    evidence = fail_text(failure.value) + "\n" + caplog.text
    assert refusal(permission) in evidence, evidence
    refused_by_name = set(re.findall(r"no permissions to run the '([^']+)' command", evidence))
    assert refused_by_name <= {permission.removeprefix("+")}, "only the missing permission is ever refused"


@pytest.mark.parametrize("permission", [p for p in PERMISSIONS if p not in CLUSTER_ONLY])
async def test_every_permission_of_the_rule_is_needed(
    acl_server: RedisServer, scripts_flushed: None, permission: str, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"without-{uuid.uuid4().hex[:8]}"
    rule = [token for token in MINIMAL_ACL if token != permission]
    with acl_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{ACL_PASSWORD}", *rule)
    try:
        await fails_for_want_of(permission, acl_url(acl_server, db=1, user=user), caplog)
    finally:
        with acl_server.client() as admin:
            admin.acl_deluser(user)


@pytest.mark.parametrize("permission", CLUSTER_ONLY)
async def test_the_cluster_permissions_are_needed_on_a_cluster(
    cluster: ClusterNodes, scripts_flushed: None, permission: str, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"without-{uuid.uuid4().hex[:8]}"
    rule = [token for token in MINIMAL_ACL if token != permission]
    for node in cluster.nodes:
        with node.client() as admin:
            admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{ACL_PASSWORD}", *rule)
    try:
        await fails_for_want_of(permission, cluster.url(f"{user}:{ACL_PASSWORD_IN_URL}@"), caplog)
    finally:
        for node in cluster.nodes:
            with node.client() as admin:
                admin.acl_deluser(user)


WRONG = "Wr0ng/p@ss"
WRONG_IN_URL = "Wr0ng%2Fp%40ss"


@pytest.mark.parametrize("deployment", ["server", "cluster"])
async def test_a_wrong_password_raises_a_clear_cache_error_without_the_password(
    acl_server: RedisServer, cluster: ClusterNodes, deployment: str
) -> None:
    user_part = f"{ACL_USER}:{WRONG_IN_URL}@"
    url = acl_url(acl_server, db=0, password=WRONG_IN_URL) if deployment == "server" else cluster.url(user_part)
    counter = Counter(payload="hello")
    with pytest.raises(CacheError) as info:
        await cached_agent_run(make_agent(counter), "hi", "acl", redis_url=url, on_cache_error="raise")
    message = str(info.value)
    assert "invalid username-password pair" in message
    assert f"{ACL_USER}:***@" in message  # which store, and which user
    text = fail_text(info.value)
    for fragment in (WRONG, WRONG_IN_URL, "Wr0ng", "p@ss", "p%40ss"):
        assert fragment not in text
    assert counter.calls == 0  # raised before the model was called


async def test_a_wrong_password_fails_open_with_a_warning_without_the_password(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = acl_url(acl_server, db=0, password=WRONG_IN_URL)
    counter = Counter(payload="hello")
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        answer = await cached_agent_run(make_agent(counter), "hi", "acl", redis_url=url)
    assert answer == "hello"
    assert counter.calls == 1
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert any("AuthenticationError" in text and "invalid username-password pair" in text for text in warnings)
    for text in caplog.text, *warnings:
        for fragment in (WRONG, WRONG_IN_URL, "Wr0ng"):
            assert fragment not in text
