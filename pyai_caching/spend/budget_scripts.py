"""The Lua scripts of `Budget`s' counters in Redis (see `budget_counters` for the schema and the rules).

Each script runs atomically on the server; every key of a call's budgets shares the `{v1}` hash tag, so one script
can touch all of them on Redis Cluster.
"""

from __future__ import annotations

from typing import Final

__all__ = ["RELEASE", "RESERVE", "SETTLE"]

# KEYS: [1] the registry, then for each budget: its use hash, its held set, its tenants set, its largest charge.
# ARGV: [1] reservation id, [2] lease (ms), then for each budget: limit, amount (-1: largest seen), ttl (s, 0: none),
# name, meta JSON, tenant.
RESERVE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_text = string.format('%d', now)
local n = (#KEYS - 1) / 4
local amounts = {}
for i = 1, n do
  local use, held, tenants, largest = KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i], KEYS[4 * i + 1]
  local a = 2 + 6 * (i - 1)
  local ended = redis.call('ZRANGEBYSCORE', held, '-inf', now_text)
  if #ended > 0 then
    local back = 0
    for _, member in ipairs(ended) do back = back + tonumber(string.match(member, ':(%d+)$')) end
    redis.call('HINCRBY', use, 'reserved', string.format('%d', -back))
    redis.call('HINCRBY', use, 'in_flight', -#ended)
    redis.call('HINCRBY', use, 'expired', #ended)
    redis.call('ZREMRANGEBYSCORE', held, '-inf', now_text)
  end
  local spent = redis.call('HGET', use, 'spent') or '0'
  local reserved = redis.call('HGET', use, 'reserved') or '0'
  local in_flight = redis.call('HGET', use, 'in_flight') or '0'
  local amount = tonumber(ARGV[a + 2])
  local refused = tonumber(spent) + tonumber(reserved) >= tonumber(ARGV[a + 1])
  local measuring = 0
  if not refused and amount < 0 then
    local seen = redis.call('GET', largest)
    if seen then
      amount = tonumber(seen)
    elseif tonumber(in_flight) > 0 then
      refused, measuring = true, 1
    else
      amount = 0
    end
  end
  if refused then
    redis.call('HINCRBY', use, 'denied', 1)
    redis.call('SADD', tenants, ARGV[a + 6])
    redis.call('HSET', KEYS[1], ARGV[a + 4], ARGV[a + 5])
    if ARGV[a + 3] ~= '0' then
      redis.call('EXPIRE', use, ARGV[a + 3])
      redis.call('EXPIRE', tenants, ARGV[a + 3])
    end
    return {i, spent, reserved, in_flight, measuring}
  end
  amounts[i] = amount
end
for i = 1, n do
  local use, held, tenants = KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local a = 2 + 6 * (i - 1)
  local member = ARGV[1] .. ':' .. string.format('%d', amounts[i])
  redis.call('ZADD', held, string.format('%d', now + tonumber(ARGV[2])), member)
  redis.call('HINCRBY', use, 'reserved', string.format('%d', amounts[i]))
  redis.call('HINCRBY', use, 'in_flight', 1)
  redis.call('HINCRBY', use, 'admitted', 1)
  redis.call('SADD', tenants, ARGV[a + 6])
  redis.call('HSET', KEYS[1], ARGV[a + 4], ARGV[a + 5])
  if ARGV[a + 3] ~= '0' then
    for _, key in ipairs({use, held, tenants}) do redis.call('EXPIRE', key, ARGV[a + 3]) end
  end
end
local granted = {0}
for i = 1, n do granted[#granted + 1] = string.format('%d', amounts[i]) end
return granted
"""

# KEYS: as for RESERVE. ARGV: [1] reservation id, then for each budget: amount held (-1: none), charge, ttl (s, 0:
# none), tenant, measured (1: the charge of one request that got its answer).
SETTLE: Final = """
local n = (#KEYS - 1) / 4
for i = 1, n do
  local use, held, tenants, largest = KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i], KEYS[4 * i + 1]
  local a = 1 + 5 * (i - 1)
  if ARGV[a + 1] ~= '-1' and redis.call('ZREM', held, ARGV[1] .. ':' .. ARGV[a + 1]) == 1 then
    redis.call('HINCRBY', use, 'reserved', string.format('%d', -tonumber(ARGV[a + 1])))
    redis.call('HINCRBY', use, 'in_flight', -1)
  end
  if ARGV[a + 5] == '1' then
    local seen = redis.call('GET', largest)
    if not seen or tonumber(ARGV[a + 2]) > tonumber(seen) then
      redis.call('SET', largest, ARGV[a + 2])
      if ARGV[a + 3] ~= '0' then redis.call('EXPIRE', largest, ARGV[a + 3]) end
    end
  end
  if ARGV[a + 2] ~= '0' then
    redis.call('HINCRBY', use, 'spent', ARGV[a + 2])
    redis.call('SADD', tenants, ARGV[a + 4])
    if ARGV[a + 3] ~= '0' and redis.call('TTL', use) == -1 then
      redis.call('EXPIRE', use, ARGV[a + 3])
      redis.call('EXPIRE', tenants, ARGV[a + 3])
    end
  end
end
return 1
"""

# KEYS: as for RESERVE. ARGV: [1] reservation id. Drops that reservation's members, whatever their amounts.
RELEASE: Final = """
local n = (#KEYS - 1) / 4
local prefix = ARGV[1] .. ':'
for i = 1, n do
  local use, held = KEYS[4 * i - 2], KEYS[4 * i - 1]
  for _, member in ipairs(redis.call('ZRANGE', held, 0, -1)) do
    if string.sub(member, 1, #prefix) == prefix and redis.call('ZREM', held, member) == 1 then
      redis.call('HINCRBY', use, 'reserved', string.format('%d', -tonumber(string.sub(member, #prefix + 1))))
      redis.call('HINCRBY', use, 'in_flight', -1)
    end
  end
end
return 1
"""
