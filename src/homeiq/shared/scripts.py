"""Every Lua script of the Redis contract: each is one atomic step in Redis, where a check and the change it
allows must not be separated by another client's command. Field names come from `homeiq.shared.stream` as
arguments, never as literals here."""

from __future__ import annotations

from typing import Final

# A batch of entries added in one call (all or none), each with the same version and its own event, and the id
# of the last one kept in the same step: the tail. A caller that finds a tail other than the id it last got back
# learns that Redis forgot what came after that tail (an older AOF, a failover to a replica that lagged).
# With a window (two collectors subscribed to one HA), each event comes with its identity and the bucket (second) of
# its time: an identity already in its bucket's hash was added by the other collector (or by this one, before a WAIT
# that timed out) and is skipped; a new one is kept there, and a bucket lives `window` seconds from its first identity
# (EXPIRE NX): the memory is what arrived in the last window. Checked and added in the same step as the XADD, so two
# collectors racing with one event add it once.
# KEYS: stream, and the collector's own tail key (one per collector, left out by other publishers: the audit's
# repair), and the prefix of the identity buckets (only with a window). ARGV: the tail the caller expects ('' when it
# does not know), version field, version, event field, window (s; '0': none), then each event: its payload, or with a
# window its bucket, identity and payload. Returns {the tail found (false: none or no tail key), the id of the last
# entry added (false: none), the positions (1-based) of the events skipped}.
XADD_BATCH_SCRIPT: Final = """
local found = false
if #KEYS > 1 then found = redis.call('GET', KEYS[2]) end
local window = tonumber(ARGV[5])
local id = false
local skipped = {}
local step = 1
if window > 0 then step = 3 end
local n = 0
for i = 6, #ARGV, step do
  n = n + 1
  local payload = ARGV[i]
  local new = true
  if window > 0 then
    local bucket = KEYS[3] .. ARGV[i]
    new = redis.call('HSETNX', bucket, ARGV[i + 1], '') == 1
    if new then redis.call('EXPIRE', bucket, window, 'NX') end
    payload = ARGV[i + 2]
  end
  if new then
    id = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3], ARGV[4], payload)
  else
    table.insert(skipped, n)
  end
end
if id and #KEYS > 1 then redis.call('SET', KEYS[2], id) end
return {found, id, skipped}
"""


# Ack an entry and copy it to the dead-letter stream in one step; a second caller finds it acked and
# adds nothing (two replayers never dead-letter the same entry twice). `force` records ids whose entry
# is already gone from the pending list (XAUTOCLAIM's deleted ids).
# KEYS: stream, dead. ARGV: group, id, force, field, value, ...
DEAD_LETTER_SCRIPT: Final = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 and ARGV[3] ~= '1' then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
return 1
"""

# Stream ids compared and incremented as decimal strings: Lua numbers are doubles, ids are two uint64.
_IDS: Final = """
local function num_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function id_lt(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if ams ~= bms then return num_lt(ams, bms) end
  return num_lt(aseq, bseq)
end
local function incr(n)
  local i = #n
  while i > 0 and string.sub(n, i, i) == '9' do i = i - 1 end
  if i == 0 then return '1' .. string.rep('0', #n) end
  return string.sub(n, 1, i - 1) .. string.char(string.byte(n, i) + 1) .. string.rep('0', #n - i)
end
local UINT64_MAX = '18446744073709551615'
local function successor(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq ~= UINT64_MAX then return ms .. '-' .. incr(seq) end
  if ms ~= UINT64_MAX then return incr(ms) .. '-0' end
  return id
end
"""

# A field of a reply that Redis sends to scripts as a flat list (XINFO's `name value name value ...`).
_FIELD: Final = """
local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end
"""

# XTRIM MINID at the lowest id any group still needs, computed and applied in one step, so that no read,
# claim or group creation can fall between the two. Each group needs its pending entries (ids >= its
# oldest pending id) and what it has not been given yet (ids > its last-delivered id). A stream without
# a group is never trimmed: nothing says what was written.
# The entries a restarted collector reads back (those after its resume id) stay too: without them it would
# publish again, with a newer registry, states that were already written.
# KEYS: stream, the collector's resume id. ARGV: '1' for a dry run (compute only).
# Returns {cut id or false, removed, group, 'pending' | 'delivered' | 'resume' | 'no_stream' | 'no_group',
# that id}.
TRIM_SCRIPT: Final = _IDS + _FIELD + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {false, 0, '', 'no_stream', ''} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {false, 0, '', 'no_group', ''} end
local cut, why_group, why, why_id
for _, group in ipairs(groups) do
  local name = field(group, 'name')
  local last = field(group, 'last-delivered-id')
  local needed, kind, id = successor(last), 'delivered', last
  local summary = redis.call('XPENDING', KEYS[1], name)
  if summary[1] > 0 and not id_lt(needed, summary[2]) then
    needed, kind, id = summary[2], 'pending', summary[2]
  end
  if cut == nil or id_lt(needed, cut) then
    cut, why_group, why, why_id = needed, name, kind, id
  end
end
local resume_from = redis.call('GET', KEYS[2])
if resume_from and string.match(resume_from, '^%d+%-%d+$') then
  local needed = successor(resume_from)
  if id_lt(needed, cut) then cut, why_group, why, why_id = needed, '', 'resume', resume_from end
end
local removed = 0
if ARGV[1] ~= '1' then removed = redis.call('XTRIM', KEYS[1], 'MINID', '=', cut) end
return {cut, removed, why_group, why, why_id}
"""

# Delete the consumers idle longer than ARGV[2] ms that have nothing pending, checked and deleted in one
# step (XGROUP DELCONSUMER drops a consumer's pending entries: one delivered between a separate check and
# the delete would lose its pending record and become trimmable). `idle` is the time since the consumer
# last tried to read or claim (Redis >= 7.2 also reports `inactive`, the time since its last successful
# read, which grows while a live writer blocks on an empty stream: never use that one here).
# KEYS: stream. ARGV: group, idle ms. Returns {name, idle ms, ...} of the consumers deleted.
PRUNE_SCRIPT: Final = _FIELD + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers['err'] then return {} end
local threshold = tonumber(ARGV[2])
local pruned = {}
for _, consumer in ipairs(consumers) do
  local name, pending, idle = field(consumer, 'name'), field(consumer, 'pending'), field(consumer, 'idle')
  if pending == 0 and idle > threshold then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    table.insert(pruned, name)
    table.insert(pruned, idle)
  end
end
return pruned
"""

# Put a dead letter back on the main stream and remove it from the dead-letter stream, atomically.
# KEYS: dead, stream. ARGV: dead id, the version field's name, the event field's name.
# Returns the new id, or false when the dead letter has no payload.
REDRIVE_SCRIPT: Final = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return false end
local fields = entry[1][2]
local v, e
for i = 1, #fields, 2 do
  if fields[i] == ARGV[2] then v = fields[i + 1] elseif fields[i] == ARGV[3] then e = fields[i + 1] end
end
if not v or not e then return false end
local new_id = redis.call('XADD', KEYS[2], '*', ARGV[2], v, ARGV[3], e)
redis.call('XDEL', KEYS[1], ARGV[1])
return new_id
"""

# The crash ledger (homeiq.replayer.crashes). A marker says "replayer instance T is reading suspect entry
# E until U" (U: Redis's clock plus a lease). KEYS: suspects. ARGV: instance token, entry id, lease ms.
MARK_SCRIPT: Final = """
local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. string.format('%d', until_ms))
return until_ms
"""

# Count every marker whose lease ran out (its replayer died reading that entry, or hung there) as one
# crash of that entry, once; drop the caller's own stale marker uncounted (its release failed with
# Redis, which is no crash); forget the counts of entries no longer pending.
# KEYS: suspects, crashes, stream. ARGV: group, caller's instance token.
# Returns {{entry ids just counted}, {entry id, crashes, ...} of the entries still pending}.
SETTLE_CRASHES_SCRIPT: Final = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local counted = {}
local markers = redis.call('HGETALL', KEYS[1])
for i = 1, #markers, 2 do
  local id, until_ms = string.match(markers[i + 1], '^(%S+) (%d+)$')
  if markers[i] == ARGV[2] or not id then
    redis.call('HDEL', KEYS[1], markers[i])
  elseif tonumber(until_ms) <= now_ms then
    redis.call('HDEL', KEYS[1], markers[i])
    redis.call('HINCRBY', KEYS[2], id, 1)
    table.insert(counted, id)
  end
end
local counts = {}
local ledger = redis.call('HGETALL', KEYS[2])
for i = 1, #ledger, 2 do
  local pending = redis.pcall('XPENDING', KEYS[3], ARGV[1], ledger[i], ledger[i], 1)
  if pending['err'] or #pending == 0 then
    redis.call('HDEL', KEYS[2], ledger[i])
  else
    table.insert(counts, ledger[i])
    table.insert(counts, tonumber(ledger[i + 1]))
  end
end
return {counted, counts}
"""
