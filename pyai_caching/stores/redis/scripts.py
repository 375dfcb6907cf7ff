"""The Lua scripts of `RedisStore`: locks, and reads that check a value's size before sending it."""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE_LOCK", "READ", "RELEASE_LOCK", "RENEW_LOCK"]

# Locks (see `LockingStore`). Ours always expire, so a lock key without an expiry was written by something else:
# it is replaced rather than waited on forever. Each script touches only its one key, so it runs on Redis Cluster.
# Every command a script calls must be in the documented minimal ACL rule (tests/deployments/test_acl.py checks it).
# An acquire retried after its reply was lost with the connection finds its own token and succeeds.
ACQUIRE_LOCK: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[1]) == -1
  or (redis.call('TYPE', KEYS[1]).ok == 'string' and redis.call('GET', KEYS[1]) == ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RENEW_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Reads check the size in the same round trip: a value longer than ARGV[1] is not sent, only its length is.
READ: Final = """
local size = redis.call('STRLEN', KEYS[1])
if size > tonumber(ARGV[1]) then return size end
return redis.call('GET', KEYS[1])
"""
