"""Every Lua script of the Redis contract: each is one atomic step in Redis, where a check and the change it
allows must not be separated by another client's command. Field names come from `homeiq.shared.stream` as
arguments, never as literals here."""

from __future__ import annotations

from typing import Final

# A batch of entries added in one call (all or none), each with its version and its payload field (`e`: one event;
# `z`: several, packed), and the id of the last one kept in the same step: the tail. A caller that finds a tail other
# than the id it last got back learns that Redis forgot what came after that tail (an older AOF, a failover to a
# replica that lagged).
# With a window (two collectors subscribed to one HA), each event of an entry comes with its identity and the bucket
# (second) of its time: an identity already in its bucket's hash was added by the other collector (or by this one,
# before a WAIT that timed out). An entry whose events were all added before is skipped; one whose events are all new
# is added and its identities kept there, a bucket living `window` seconds from its first identity (EXPIRE NX): the
# memory is what arrived in the last window. An entry only partly added before cannot be cut here (its events are
# packed): the script stops before it, and the caller packs its new events again. Checked and added in the same step
# as the XADD, so two collectors racing with one event add it once.
# KEYS: stream, and the collector's own tail key (one per collector, left out by other publishers: the audit's
# repair), and the prefix of the identity buckets (only with a window). ARGV: the tail the caller expects ('' when it
# does not know), the version field, the window (s; '0': none), then each entry: its version, its payload field, how
# many events it holds, with a window each event's bucket and identity, then the payload.
# Returns {the tail found (false: none or no tail key), the id of the last entry added (false: none), the positions
# (1-based, over the events of the call) of the events added before (skipped), how many events were handled (all of
# them, or those before the entry partly added before; its events added before are among the positions)}.
XADD_BATCH_SCRIPT: Final = """
local found = false
if #KEYS > 1 then found = redis.call('GET', KEYS[2]) end
local window = tonumber(ARGV[3])
local id = false
local skipped = {}
local n = 0
local i = 4
while i <= #ARGV do
  local count = tonumber(ARGV[i + 2])
  local first = i + 3
  local add = true
  if window > 0 then
    local seen = {}
    for k = first, first + 2 * count - 1, 2 do
      if redis.call('HEXISTS', KEYS[3] .. ARGV[k], ARGV[k + 1]) == 1 then
        table.insert(seen, n + (k - first) / 2 + 1)
      end
    end
    for _, position in ipairs(seen) do table.insert(skipped, position) end
    if #seen > 0 and #seen < count then break end
    if #seen == count then
      add = false
    else
      for k = first, first + 2 * count - 1, 2 do
        local bucket = KEYS[3] .. ARGV[k]
        redis.call('HSET', bucket, ARGV[k + 1], '')
        redis.call('EXPIRE', bucket, window, 'NX')
      end
    end
    first = first + 2 * count
  end
  if add then id = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i], ARGV[i + 1], ARGV[first]) end
  n = n + count
  i = first + 1
end
if id and #KEYS > 1 then redis.call('SET', KEYS[2], id) end
return {found, id, skipped, n}
"""


# Ack an entry and copy it to the dead-letter stream in one step; a second caller finds it acked and
# adds nothing (two replayers never dead-letter the same entry twice). `force` records ids whose entry
# is already gone from the pending list (XAUTOCLAIM's deleted ids). Several letters for one entry: the poisoned
# events of a packed entry, each alone, added with the entry's ack once its other events are written.
# KEYS: stream, dead. ARGV: group, id, force, fields per letter, then each letter's fields and values.
DEAD_LETTER_SCRIPT: Final = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 and ARGV[3] ~= '1' then return 0 end
local size = tonumber(ARGV[4])
for i = 5, #ARGV, size do redis.call('XADD', KEYS[2], '*', unpack(ARGV, i, i + size - 1)) end
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
# KEYS: dead, stream. ARGV: dead id, the version field's name, the event field's name, the packed events' name, and
# for a packed entry dead-lettered whole (crashed_reader) the version of one event and its events, read out of it by
# the caller: they go back an entry each, so that what crashed a reader is alone the next time (one that cannot be
# read goes back whole). Returns the last new id, or false when the dead letter is gone or has no payload.
REDRIVE_SCRIPT: Final = """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return false end
if #ARGV > 5 then
  local new_id
  for i = 6, #ARGV do new_id = redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[5], ARGV[3], ARGV[i]) end
  redis.call('XDEL', KEYS[1], ARGV[1])
  return new_id
end
local fields = entry[1][2]
local v, e, name
for i = 1, #fields, 2 do
  if fields[i] == ARGV[2] then v = fields[i + 1]
  elseif fields[i] == ARGV[3] or fields[i] == ARGV[4] then e, name = fields[i + 1], fields[i] end
end
if not v or not e then return false end
local new_id = redis.call('XADD', KEYS[2], '*', ARGV[2], v, name, e)
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
