"""The Lua scripts of ``RedisStore``: every write is one atomic script.

Kept apart from the store so the Python side reads as plain calls. KEYS are
the revision counter, the key index and the expiry index (the scan script
takes the key index alone); ARGV[1] is the hash prefix and ARGV[2] the
change channel. Each script publishes its changes as
``op NUL revision NUL kind NUL key NUL data``.
"""

from __future__ import annotations

__all__ = ["CAS", "DELETE", "INCR", "PUT", "SCAN", "SWEEP"]

# One write: drop the old hash (and its TTL), set the new one, move both indexes, publish.
# KEYS: rev counter, key index, expiry index. ARGV[1]: hash prefix, ARGV[2]: channel.
_WRITE = """
local function write(key, kind, data, exp, pexpire_at)
  local rev = redis.call('INCR', KEYS[1])
  local hk = ARGV[1] .. key
  redis.call('DEL', hk)
  if exp == '' then
    redis.call('HSET', hk, 'k', kind, 'd', data, 'r', rev)
    redis.call('ZREM', KEYS[3], key)
  else
    redis.call('HSET', hk, 'k', kind, 'd', data, 'r', rev, 'e', exp)
    redis.call('PEXPIREAT', hk, pexpire_at)
    redis.call('ZADD', KEYS[3], exp, key)
  end
  redis.call('ZADD', KEYS[2], 0, key)
  redis.call('PUBLISH', ARGV[2], 'put\\0' .. rev .. '\\0' .. kind .. '\\0' .. key .. '\\0' .. data)
  return rev
end
local function remove(key, op)
  redis.call('DEL', ARGV[1] .. key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('ZREM', KEYS[3], key)
  local rev = redis.call('INCR', KEYS[1])
  redis.call('PUBLISH', ARGV[2], op .. '\\0' .. rev .. '\\0\\0' .. key .. '\\0')
end
local function live_rev(key, now)
  local cur = redis.call('HMGET', ARGV[1] .. key, 'r', 'e')
  if cur[1] and ((not cur[2]) or tonumber(cur[2]) > now) then return tonumber(cur[1]) end
  return 0
end
"""

# ARGV[3..]: key, kind, data, exp, pexpire_at per item. Returns the revisions.
PUT = (
    _WRITE
    + """
local out = {}
for i = 3, #ARGV, 5 do
  out[#out + 1] = write(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
end
return out
"""
)

# ARGV[3]: now, ARGV[4..]: key, expected, kind, data, exp, pexpire_at. Returns {ok, rev}.
CAS = (
    _WRITE
    + """
local cur = live_rev(ARGV[4], tonumber(ARGV[3]))
if cur ~= tonumber(ARGV[5]) then return {0, cur} end
return {1, write(ARGV[4], ARGV[6], ARGV[7], ARGV[8], ARGV[9])}
"""
)

# ARGV[3]: now, ARGV[4]: key, ARGV[5]: by, ARGV[6]: the codec kind for a new key.
# Returns {1, new value}, {0} when the live value is not an int, {-1} when it is
# past 2^53 (Lua numbers are doubles: the client's compare-and-set loop does it).
INCR = (
    _WRITE
    + """
local key, now = ARGV[4], tonumber(ARGV[3])
local hk = ARGV[1] .. key
local cur = redis.call('HMGET', hk, 'k', 'd', 'e')
local live = cur[1] and ((not cur[3]) or tonumber(cur[3]) > now)
local n, kind = 0, ARGV[6]
if live then
  kind = cur[1]
  local d = cur[2]
  if kind == '1' then
    local b = string.byte(d, 1)
    if not b or not (b <= 0x7f or b >= 0xe0 or (b >= 0xcc and b <= 0xd3)) then
      return {0}
    end
    n = cmsgpack.unpack(d)
  elseif kind == '2' then
    if not string.match(d, '^%-?%d+$') then return {0} end
    n = tonumber(d)
  else
    return {0}
  end
end
local limit = 9007199254740991
if math.abs(n) > limit then return {-1} end
n = n + tonumber(ARGV[5])
if math.abs(n) > limit then return {-1} end
local data
if kind == '1' then data = cmsgpack.pack(n) else data = string.format('%d', n) end
local rev = redis.call('INCR', KEYS[1])
if live then
  redis.call('HSET', hk, 'd', data, 'r', rev)
else
  redis.call('DEL', hk)
  redis.call('HSET', hk, 'k', kind, 'd', data, 'r', rev)
  redis.call('ZREM', KEYS[3], key)
end
redis.call('ZADD', KEYS[2], 0, key)
redis.call('PUBLISH', ARGV[2], 'put\\0' .. rev .. '\\0' .. kind .. '\\0' .. key .. '\\0' .. data)
return {1, n}
"""
)

# ARGV[3]: now, ARGV[4..]: keys. Returns how many live keys went.
DELETE = (
    _WRITE
    + """
local now, n = tonumber(ARGV[3]), 0
for i = 4, #ARGV do
  local key = ARGV[i]
  local cur = redis.call('HMGET', ARGV[1] .. key, 'r', 'e')
  if cur[1] then
    if (not cur[2]) or tonumber(cur[2]) > now then
      remove(key, 'delete')
      n = n + 1
    else
      remove(key, 'expire')
    end
  end
end
return n
"""
)

# ARGV[3]: now, ARGV[4]: batch. Expired keys (ours or already gone from Redis) leave with an event.
SWEEP = (
    _WRITE
    + """
local now, n = tonumber(ARGV[3]), 0
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
for _, key in ipairs(due) do
  local cur = redis.call('HMGET', ARGV[1] .. key, 'r', 'e')
  if (not cur[1]) or (cur[2] and tonumber(cur[2]) <= now) then
    remove(key, 'expire')
    n = n + 1
  elseif not cur[2] then
    redis.call('ZREM', KEYS[3], key)
  else
    redis.call('ZADD', KEYS[3], cur[2], key)
  end
end
return n
"""
)

# KEYS[1]: key index. ARGV: hash prefix, now, lex min, lex max, how many.
# Returns key, kind, data, rev, exp ('' if none) per live key, in key order.
SCAN = """
local now, want = tonumber(ARGV[2]), tonumber(ARGV[5])
local out, got, start = {}, 0, ARGV[3]
while got < want do
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], start, ARGV[4], 'LIMIT', 0, want - got + 8)
  if #batch == 0 then break end
  for _, key in ipairs(batch) do
    local v = redis.call('HMGET', ARGV[1] .. key, 'k', 'd', 'r', 'e')
    if v[3] and ((not v[4]) or tonumber(v[4]) > now) then
      out[#out + 1] = key
      out[#out + 1] = v[1]
      out[#out + 1] = v[2]
      out[#out + 1] = v[3]
      out[#out + 1] = v[4] or ''
      got = got + 1
      if got >= want then break end
    end
  end
  start = '(' .. batch[#batch]
end
return out
"""
