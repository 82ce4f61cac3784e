-- route: stores the delivery tasks not stored yet, then acknowledges stream
-- entries, in one step (the acker's batch; either part may be empty).
-- KEYS[1] events stream, KEYS[2] due, KEYS[3] hooks-due,
--   then three per task t = 0, 1, ...: KEYS[4+3t] the task hash,
--   KEYS[5+3t] due:{uid}, KEYS[6+3t] hook-tasks:{uid}
-- ARGV[1] consumer group, ARGV[2] entry count E, ARGV[3..2+E] entry ids,
--   ARGV[3+E] field count F, the F field names of a task hash,
--   then per task: member, uid, ms from now (Redis's clock) until it is
--   due (0: at once), its F field values; the first field is the entry id
--   the task came from
-- Returns {entries acknowledged, now, duplicates}: a task stored here is
-- due at now plus its ms (a first attempt's failed task: the lease end its
-- settling compares). A task already stored is left as it is; when the
-- stored one came from another entry (an event id reused while its first
-- task is held), duplicates lists the new task's index (0-based) and the
-- stored task's entry id. A stored task without the field (older than it)
-- counts as the same entry read again.
local now = now_ms()
local duplicates = {}
local entries = tonumber(ARGV[2])
local names_at = 3 + entries
local fields = tonumber(ARGV[names_at])
local per_task = 3 + fields
local tasks = (#KEYS - 3) / 3
for t = 0, tasks - 1 do
  local task_key, hook_due, hook_tasks = KEYS[4 + 3 * t], KEYS[5 + 3 * t], KEYS[6 + 3 * t]
  local at = names_at + fields + t * per_task
  local member, uid, score = ARGV[at + 1], ARGV[at + 2], now + tonumber(ARGV[at + 3])
  if redis.call('EXISTS', task_key) == 0 then
    local pairs = {}
    for f = 1, fields do
      pairs[2 * f - 1] = ARGV[names_at + f]
      pairs[2 * f] = ARGV[at + 3 + f]
    end
    redis.call('HSET', task_key, unpack(pairs))
    set_due(KEYS[2], hook_due, member, score)
    reindex(hook_due, KEYS[3], uid)
    redis.call('SADD', hook_tasks, member)
  else
    local held = redis.call('HGET', task_key, ARGV[names_at + 1])
    if held and held ~= ARGV[at + 4] then
      table.insert(duplicates, tostring(t))
      table.insert(duplicates, held)
    end
  end
end
local acked = 0
if entries > 0 then acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3, 2 + entries)) end
return {acked, now, duplicates}
