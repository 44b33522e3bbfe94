"""The Lua scripts of ``RedisJobQueue``: every state change of a job is one atomic script.

Kept apart from the queue so the Python side reads as plain calls. Layout
under the hash tag ``T = {prefix}:`` (one slot, so scripts may touch any key):

========================  ==========================================================
``T j:<id>``              the job (hash): name, params, state, attempts, token, …
``T r:<name>``            due jobs of one name: score ``-priority``, member
                          ``%016x(seq) .. id`` (same score sorts by member: FIFO)
``T d:<name>``            jobs waiting for ``run_at`` (score), moved to ``r:`` when due
``T l``                   running jobs by lease end (the reaper's index)
``T s:<state>``           jobs per state by creation order (``scan``)
``T f``                   succeeded jobs by end time (retention)
``T i`` / ``T n``         idempotency key -> id; every job name seen
``T seq``                 one counter for creation and ready order
========================  ==========================================================

Times travel as the client's ``repr(float)`` strings and are stored as given,
so no precision is lost in Lua's number formatting.
"""

from __future__ import annotations

__all__ = [
    "BACKLOG",
    "CLAIM",
    "COMPLETE",
    "ENQUEUE",
    "FAIL",
    "HEARTBEAT",
    "NEXT_DUE",
    "PURGE",
    "RELEASE",
    "REQUEUE",
    "SWEEP",
]

_PRELUDE = """
local T = ARGV[1]
local function jk(id) return T .. 'j:' .. id end
local function setstate(id, old, new, cs)
  if old then redis.call('ZREM', T .. 's:' .. old, id) end
  redis.call('ZADD', T .. 's:' .. new, cs, id)
end
local function make_ready(id, name, pri, seq)
  seq = seq or redis.call('INCR', T .. 'seq')
  local rm = string.format('%016x', seq) .. id
  redis.call('ZADD', T .. 'r:' .. name, -tonumber(pri), rm)
  redis.call('HSET', jk(id), 'rm', rm)
end
local function schedule(id, name, pri, run_at, now)
  if tonumber(run_at) <= now then
    make_ready(id, name, pri)
  else
    redis.call('ZADD', T .. 'd:' .. name, run_at, id)
  end
end
local function unschedule(id, name)
  local rm = redis.call('HGET', jk(id), 'rm')
  if rm then redis.call('ZREM', T .. 'r:' .. name, rm) end
  redis.call('ZREM', T .. 'd:' .. name, id)
end
local function append(errs, e)
  if (not errs) or errs == '' or errs == '[]' then return '[' .. e .. ']' end
  return string.sub(errs, 1, -2) .. ',' .. e .. ']'
end
"""

# ARGV: T, now, channel, then id, name, params, priority, run_at, max_attempts,
# lease_s, idempotency key ('' none), meta ('' none) per job. Returns the ids.
ENQUEUE = (
    _PRELUDE
    + """
local now = tonumber(ARGV[2])
local out, fresh = {}, 0
for i = 4, #ARGV, 9 do
  local id, name, pri, run_at, idem = ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 4], ARGV[i + 7]
  local found = false
  if idem ~= '' then found = redis.call('HGET', T .. 'i', idem) end
  if found then
    out[#out + 1] = found
  elseif redis.call('EXISTS', jk(id)) == 1 then
    out[#out + 1] = id
  else
    local cs = redis.call('INCR', T .. 'seq')
    redis.call('HSET', jk(id), 'name', name, 'params', ARGV[i + 2], 'state', 'queued',
      'pri', pri, 'run_at', run_at, 'att', 0, 'max', ARGV[i + 5], 'ls', ARGV[i + 6], 'tok', 0,
      'ca', ARGV[2], 'ua', ARGV[2], 'cs', cs, 'meta', ARGV[i + 8], 'idem', idem)
    if idem ~= '' then redis.call('HSET', T .. 'i', idem, id) end
    redis.call('SADD', T .. 'n', name)
    redis.call('ZADD', T .. 's:queued', cs, id)
    if tonumber(run_at) <= now then
      make_ready(id, name, pri, cs)
    else
      redis.call('ZADD', T .. 'd:' .. name, run_at, id)
    end
    fresh = fresh + 1
    out[#out + 1] = id
  end
end
if fresh > 0 then redis.call('PUBLISH', ARGV[3], '') end
return out
"""
)

# ARGV: T, now, limit, names... Reaps expired leases (lost attempt: retry or
# dead), moves due delayed jobs to ready, then leases the best ``limit`` jobs.
# Returns id, name, params, attempt, token, max_attempts, lease_s, created_at, meta.
CLAIM = (
    _PRELUDE
    + """
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local lost = redis.call('ZRANGEBYSCORE', T .. 'l', '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(lost) do
  redis.call('ZREM', T .. 'l', id)
  local k = jk(id)
  local j = redis.call('HMGET', k, 'att', 'max', 'st', 'name', 'pri', 'err', 'cs', 'state')
  if j[8] == 'running' then
    local att = tonumber(j[1])
    local e = string.format('{"attempt":%d,"type":"LeaseExpired","message":"attempt %d lost its '
      .. 'lease: the worker died or stalled","traceback":"","started_at":%s,"failed_at":%s}',
      att, att, j[3] or '0', ARGV[2])
    local state = 'failed'
    if att >= tonumber(j[2]) then state = 'dead' end
    redis.call('HSET', k, 'state', state, 'run_at', ARGV[2], 'err', append(j[6], e), 'ua', ARGV[2])
    redis.call('HDEL', k, 'lu')
    setstate(id, 'running', state, j[7])
    if state == 'failed' then make_ready(id, j[4], j[5]) end
  end
end
for i = 4, #ARGV do
  local dk = T .. 'd:' .. ARGV[i]
  local due = redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', dk, id)
    local pri = redis.call('HGET', jk(id), 'pri')
    if pri then make_ready(id, ARGV[i], pri) end
  end
end
local picked = {}
if #ARGV == 4 then
  local got = redis.call('ZPOPMIN', T .. 'r:' .. ARGV[4], limit)
  for i = 1, #got, 2 do picked[#picked + 1] = got[i] end
else
  for _ = 1, limit do
    local best, bs, bk = nil, nil, nil
    for i = 4, #ARGV do
      local rk = T .. 'r:' .. ARGV[i]
      local top = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
      if top[1] then
        local s = tonumber(top[2])
        if best == nil or s < bs or (s == bs and top[1] < best) then
          best, bs, bk = top[1], s, rk
        end
      end
    end
    if best == nil then break end
    redis.call('ZREM', bk, best)
    picked[#picked + 1] = best
  end
end
local out = {}
for _, rm in ipairs(picked) do
  local id = string.sub(rm, 17)
  local k = jk(id)
  local j = redis.call('HMGET', k, 'state', 'ls', 'cs', 'name', 'params', 'max', 'ca', 'meta')
  if j[1] then
    local att = redis.call('HINCRBY', k, 'att', 1)
    local tok = redis.call('HINCRBY', k, 'tok', 1)
    local lu = string.format('%.17g', now + tonumber(j[2]))
    redis.call('HSET', k, 'state', 'running', 'lu', lu, 'st', ARGV[2], 'ua', ARGV[2])
    redis.call('ZADD', T .. 'l', lu, id)
    setstate(id, j[1], 'running', j[3])
    out[#out + 1] = id
    out[#out + 1] = j[4]
    out[#out + 1] = j[5]
    out[#out + 1] = att
    out[#out + 1] = tok
    out[#out + 1] = j[6]
    out[#out + 1] = j[2]
    out[#out + 1] = j[7]
    out[#out + 1] = j[8]
  end
end
return out
"""
)

# ARGV: T, now, then id, token per lease. Returns the 1-based positions of lost leases.
HEARTBEAT = (
    _PRELUDE
    + """
local now, lost = tonumber(ARGV[2]), {}
for i = 3, #ARGV, 2 do
  local k = jk(ARGV[i])
  local j = redis.call('HMGET', k, 'state', 'tok', 'ls')
  if j[1] == 'running' and j[2] == ARGV[i + 1] then
    local lu = string.format('%.17g', now + tonumber(j[3]))
    redis.call('HSET', k, 'lu', lu)
    redis.call('ZADD', T .. 'l', lu, ARGV[i])
  else
    lost[#lost + 1] = (i - 1) / 2
  end
end
return lost
"""
)

# ARGV: T, now, then id, token, result ('' none) per lease. Returns 1 (done) / 0 (lost) each.
COMPLETE = (
    _PRELUDE
    + """
local out = {}
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  local k = jk(id)
  local j = redis.call('HMGET', k, 'state', 'tok', 'cs')
  if j[1] == 'running' and j[2] == ARGV[i + 1] then
    if ARGV[i + 2] == '' then
      redis.call('HDEL', k, 'lu', 'res')
      redis.call('HSET', k, 'state', 'succeeded', 'ua', ARGV[2])
    else
      redis.call('HDEL', k, 'lu')
      redis.call('HSET', k, 'state', 'succeeded', 'ua', ARGV[2], 'res', ARGV[i + 2])
    end
    redis.call('ZREM', T .. 'l', id)
    setstate(id, 'running', 'succeeded', j[3])
    redis.call('ZADD', T .. 'f', ARGV[2], id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
)

# ARGV: T, now, channel, id, token, error JSON, retry_at ('' dead). Returns 0 (lost) or 1.
FAIL = (
    _PRELUDE
    + """
local id = ARGV[4]
local k = jk(id)
local j = redis.call('HMGET', k, 'state', 'tok', 'cs', 'name', 'pri', 'err')
if j[1] ~= 'running' or j[2] ~= ARGV[5] then return 0 end
local state, run_at = 'dead', ARGV[2]
if ARGV[7] ~= '' then state, run_at = 'failed', ARGV[7] end
redis.call('HSET', k, 'state', state, 'run_at', run_at, 'err', append(j[6], ARGV[6]), 'ua', ARGV[2])
redis.call('HDEL', k, 'lu')
redis.call('ZREM', T .. 'l', id)
setstate(id, 'running', state, j[3])
if state == 'failed' then
  schedule(id, j[4], j[5], run_at, tonumber(ARGV[2]))
  redis.call('PUBLISH', ARGV[3], '')
end
return 1
"""
)

# ARGV: T, now, channel, then id, token per lease: back to ready, attempt not counted.
RELEASE = (
    _PRELUDE
    + """
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local k = jk(id)
  local j = redis.call('HMGET', k, 'state', 'tok', 'cs', 'name', 'pri')
  if j[1] == 'running' and j[2] == ARGV[i + 1] then
    redis.call('HINCRBY', k, 'att', -1)
    redis.call('HSET', k, 'state', 'queued', 'ua', ARGV[2])
    redis.call('HDEL', k, 'lu')
    redis.call('ZREM', T .. 'l', id)
    setstate(id, 'running', 'queued', j[3])
    make_ready(id, j[4], j[5])
  end
end
redis.call('PUBLISH', ARGV[3], '')
return 1
"""
)

# ARGV: T, names... Earliest run_at of a waiting job among names, or of a lease end.
NEXT_DUE = (
    _PRELUDE
    + """
local best = nil
local function consider(v)
  if v and (best == nil or tonumber(v) < tonumber(best)) then best = v end
end
for i = 2, #ARGV do
  local top = redis.call('ZRANGE', T .. 'r:' .. ARGV[i], 0, 0)
  if top[1] then consider(redis.call('HGET', jk(string.sub(top[1], 17)), 'run_at')) end
  consider(redis.call('ZRANGE', T .. 'd:' .. ARGV[i], 0, 0, 'WITHSCORES')[2])
end
consider(redis.call('ZRANGE', T .. 'l', 0, 0, 'WITHSCORES')[2])
return best or false
"""
)

# ARGV: T, now, names... (none: every name seen). Returns name, count pairs.
BACKLOG = (
    _PRELUDE
    + """
local names = {}
for i = 3, #ARGV do names[#names + 1] = ARGV[i] end
if #names == 0 then names = redis.call('SMEMBERS', T .. 'n') end
local out = {}
for _, name in ipairs(names) do
  local n = redis.call('ZCARD', T .. 'r:' .. name)
    + redis.call('ZCOUNT', T .. 'd:' .. name, '-inf', ARGV[2])
  if n > 0 then
    out[#out + 1] = name
    out[#out + 1] = n
  end
end
return out
"""
)

# ARGV: T, now, channel, id. Returns 1, or 0 when no such finished job.
REQUEUE = (
    _PRELUDE
    + """
local id = ARGV[4]
local k = jk(id)
local j = redis.call('HMGET', k, 'state', 'name', 'pri', 'cs')
if (not j[1]) or j[1] == 'running' then return 0 end
unschedule(id, j[2])
setstate(id, j[1], 'queued', j[4])
redis.call('HSET', k, 'state', 'queued', 'att', 0, 'run_at', ARGV[2], 'ua', ARGV[2])
redis.call('ZREM', T .. 'f', id)
make_ready(id, j[2], j[3])
redis.call('PUBLISH', ARGV[3], '')
return 1
"""
)

_DROP = """
local function drop(id, j)
  unschedule(id, j[2])
  redis.call('ZREM', T .. 's:' .. j[1], id)
  redis.call('ZREM', T .. 'f', id)
  if j[3] and j[3] ~= '' and redis.call('HGET', T .. 'i', j[3]) == id then
    redis.call('HDEL', T .. 'i', j[3])
  end
  redis.call('DEL', jk(id))
end
"""

# ARGV: T, ids... Deletes the jobs that are not running; returns how many.
PURGE = (
    _PRELUDE
    + _DROP
    + """
local n = 0
for i = 2, #ARGV do
  local j = redis.call('HMGET', jk(ARGV[i]), 'state', 'name', 'idem')
  if j[1] and j[1] ~= 'running' then
    drop(ARGV[i], j)
    n = n + 1
  end
end
return n
"""
)

# ARGV: T, cutoff, batch. Deletes succeeded jobs that ended before the cutoff.
SWEEP = (
    _PRELUDE
    + _DROP
    + """
local old = redis.call('ZRANGEBYSCORE', T .. 'f', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(old) do
  local j = redis.call('HMGET', jk(id), 'state', 'name', 'idem')
  if j[1] == 'succeeded' then drop(id, j) else redis.call('ZREM', T .. 'f', id) end
end
return #old
"""
)
