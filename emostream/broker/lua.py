"""Server-side scripts of the Redis broker: decisions that must not race a worker's read.

"Has a worker read this entry yet?" has one exact answer in Redis: an entry id above the
consumer group's ``last-delivered-id`` has not been delivered to anyone. Superseding an
old frame (``XDEL`` of an undelivered entry) and cancelling a closed session's frames
must check that and delete in one atomic step, or a worker could read the entry between
the check and the delete; so both run as Lua scripts. They also create the stream and the
group when Redis has restarted empty. The heartbeat scripts read Redis' clock and use it
in the same step (``redis_heartbeat.py``).
"""

from __future__ import annotations

_COMMON = """
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function id_gt(a, b)
  local ams, aseq = split(a)
  local bms, bseq = split(b)
  if ams ~= bms then return ams > bms end
  return aseq > bseq
end
local function last_delivered(stream, group, create)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, last
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] end
        if g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
      if name == group then return last end
    end
  end
  if create then
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    return '0-0'
  end
  return nil
end
"""

# KEYS[1] job stream; ARGV: group, max undelivered per session, MAXLEN, n, n ids of this
# session's possibly undelivered entries (oldest first), then the new entry's field/values.
# Returns {new id, {superseded ids}, {still undelivered ids, new one last}}.
SUBMIT = (
    _COMMON
    + """
local stream, group = KEYS[1], ARGV[1]
local limit, maxlen, n = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local last = last_delivered(stream, group, true)
local waiting = {}
for i = 1, n do
  local id = ARGV[4 + i]
  if id_gt(id, last) then table.insert(waiting, id) end
end
local superseded = {}
while #waiting >= limit do
  local id = table.remove(waiting, 1)
  redis.call('XDEL', stream, id)
  table.insert(superseded, id)
end
local fields = {}
for i = 5 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
local new = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(fields))
table.insert(waiting, new)
return {new, superseded, waiting}
"""
)

# KEYS[1] job stream; ARGV: group, ids. Deletes the ids no worker has read; returns them.
CANCEL = (
    _COMMON
    + """
local stream, group = KEYS[1], ARGV[1]
local last = last_delivered(stream, group, false)
local cancelled = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if last == nil or id_gt(id, last) then
    if redis.call('XDEL', stream, id) == 1 then table.insert(cancelled, id) end
  end
end
return cancelled
"""
)

# KEYS[1] job stream; ARGV: group, cap. Entries not yet delivered to the group (at most cap).
DEPTH = (
    _COMMON
    + """
local stream, group = KEYS[1], ARGV[1]
local last = last_delivered(stream, group, false)
if last == nil then return redis.call('XLEN', stream) end
return #redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', tonumber(ARGV[2]))
"""
)

# Worker heartbeats are scored by Redis' own clock (``TIME``), so that no two machines'
# clocks are ever compared. ``_NOW``: that clock in seconds, as a number and as exact text.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_text = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
"""

# KEYS[1] the workers set; ARGV: this worker's consumer name, seconds after which a
# silent worker's entry is forgotten (so the set never grows with restarts).
BEAT = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now_text, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return 1
"""
)

# KEYS[1] the workers set; ARGV: seconds. How many workers beat within that many seconds.
ALIVE = (
    _NOW
    + """
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""
)
