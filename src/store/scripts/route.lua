-- route: stores the delivery tasks not stored yet, within their orgs'
-- byte budgets, then acknowledges stream entries, in one step (the
-- acker's batch; either part may be empty).
-- KEYS[1] events stream, KEYS[2] due, KEYS[3] hooks-due, KEYS[4]
--   dead-letter stream, KEYS[5] dead-hooks, KEYS[6] org-bytes, KEYS[7]
--   dead-letters-by-id, KEYS[8] dead-letters-by-org,
--   then four per task t = 0, 1, ...: KEYS[9+4t] the task hash,
--   KEYS[10+4t] due:{uid}, KEYS[11+4t] hook-tasks:{uid},
--   KEYS[12+4t] dead-index:{uid}
-- ARGV[1] consumer group, ARGV[2] entry count E, ARGV[3..2+E] entry ids,
--   ARGV[3+E] field count F, the F field names of a task hash, the count O
--   of the last of them that are optional (not stored when empty: the
--   producer's trace context), then a pair count P and P field/value pairs added to the dead letter
--   of a task over its org's budget (reason, time), then a count S and the
--   S task fields that dead letter leaves out (the body first of all),
--   then per task: member, uid, ms from now (Redis's clock) until it is
--   due (0: at once), its org, the org's budget (bytes), its F field
--   values; the first field is the entry id the task came from
-- Returns {entries acknowledged, now, duplicates, refused, evicted}: a
-- task stored here is due at now plus its ms (a first attempt's failed
-- task: the lease end its settling compares). A task already stored is
-- left as it is; when the stored one came from another entry (an event id
-- reused while its first task is held), duplicates lists the new task's
-- index (0-based) and the stored task's entry id. A stored task without
-- the field (older than it) counts as the same entry read again.
-- A new task that would take its org past its budget first deletes the
-- org's oldest dead letters (evicted: org, hook uid, padded id of each, so
-- the caller removes them from their hook's dead-index, which this script
-- cannot declare); when the org's live tasks alone leave no room, the task
-- is not stored but dead-lettered without its body, or dropped when even
-- that does not fit: refused lists its index and '1' (dead-lettered) or
-- '0' (dropped).
local now = now_ms()
local duplicates, refused, evicted = {}, {}, {}
local dead, dead_hooks, org_bytes, by_id, by_org = KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local entries = tonumber(ARGV[2])
local names_at = 3 + entries
local fields = tonumber(ARGV[names_at])
local required = fields - tonumber(ARGV[names_at + fields + 1])
local pairs_at = names_at + fields + 2
local pair_count = tonumber(ARGV[pairs_at])
local skip_at = pairs_at + 1 + 2 * pair_count
local skip = {}
for i = 1, tonumber(ARGV[skip_at]) do skip[ARGV[skip_at + i]] = true end
local tasks_at = skip_at + tonumber(ARGV[skip_at])
local per_task = 5 + fields
local tasks = (#KEYS - 8) / 4

local function held_by(org) return tonumber(redis.call('HGET', org_bytes, org) or '0') end

-- Deletes the org's oldest dead letters until `size` more bytes fit its
-- budget (at most 1000 per task, so one call stays short); whether they fit.
local function make_room(org, size, budget)
  for _ = 1, 1000 do
    if held_by(org) + size <= budget then return true end
    local oldest = redis.call('ZRANGEBYLEX', by_org, '[' .. org .. '\0', '[' .. org .. '\1', 'LIMIT', 0, 1)[1]
    if not oldest then return false end
    local padded = string.sub(oldest, #org + 2)
    local _, uid = forget_letter(by_id, by_org, org_bytes, padded)
    if not uid then redis.call('ZREM', by_org, oldest) end
    redis.call('XDEL', dead, stream_id_of(padded))
    table.insert(evicted, org); table.insert(evicted, uid or ''); table.insert(evicted, padded)
  end
  return held_by(org) + size <= budget
end

for t = 0, tasks - 1 do
  local task_key, hook_due, hook_tasks, dead_index = KEYS[9 + 4 * t], KEYS[10 + 4 * t], KEYS[11 + 4 * t], KEYS[12 + 4 * t]
  local at = tasks_at + t * per_task
  local member, uid, score = ARGV[at + 1], ARGV[at + 2], now + tonumber(ARGV[at + 3])
  local org, budget = ARGV[at + 4], tonumber(ARGV[at + 5])
  if redis.call('EXISTS', task_key) == 0 then
    local pairs = {}
    for f = 1, fields do
      local value = ARGV[at + 5 + f]
      if f <= required or value ~= '' then
        table.insert(pairs, ARGV[names_at + f]); table.insert(pairs, value)
      end
    end
    local size = size_of(pairs)
    if make_room(org, size, budget) then
      table.insert(pairs, TASK_BYTES); table.insert(pairs, tostring(size))
      redis.call('HSET', task_key, unpack(pairs))
      add_bytes(org_bytes, org, size)
      set_due(KEYS[2], hook_due, member, score)
      reindex(hook_due, KEYS[3], uid)
      redis.call('SADD', hook_tasks, member)
    else
      local letter = {}
      for j = pairs_at + 1, pairs_at + 2 * pair_count do table.insert(letter, ARGV[j]) end
      for f = 1, #pairs, 2 do
        if not skip[pairs[f]] then table.insert(letter, pairs[f]); table.insert(letter, pairs[f + 1]) end
      end
      local letter_size = size_of(letter)
      if held_by(org) + letter_size <= budget then
        local padded, ms = index_member(redis.call('XADD', dead, '*', unpack(letter)))
        redis.call('ZADD', dead_index, ms, padded)
        redis.call('SADD', dead_hooks, uid)
        index_letter(by_id, by_org, org_bytes, padded, letter_size, org, uid)
        table.insert(refused, tostring(t)); table.insert(refused, '1')
      else
        table.insert(refused, tostring(t)); table.insert(refused, '0')
      end
    end
  else
    local held = redis.call('HGET', task_key, ARGV[names_at + 1])
    if held and held ~= ARGV[at + 6] then
      table.insert(duplicates, tostring(t))
      table.insert(duplicates, held)
    end
  end
end
local acked = 0
if entries > 0 then acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3, 2 + entries)) end
return {acked, now, duplicates, refused, evicted}
