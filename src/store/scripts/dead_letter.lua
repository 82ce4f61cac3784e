-- dead_letter: moves tasks of one hook to the dead-letter stream.
-- KEYS[1] due, KEYS[2] dead-letter stream, KEYS[3] due:{uid},
--   KEYS[4] hooks-due, KEYS[5] hook-tasks:{uid}, KEYS[6] waiting:{uid},
--   KEYS[7] dead-index:{uid}, KEYS[8] dead-hooks, KEYS[9] org-bytes,
--   KEYS[10] dead-letters-by-id, KEYS[11] dead-letters-by-org,
--   then the task hash of each member, in the order of the members in ARGV
-- ARGV[1] claimed score ('' = whatever the score: a turn-off moves every
--   task of the hook), ARGV[2] uid, ARGV[3] pair count P, then P
--   field/value pairs added to each dead letter (reason, time), then
--   ARGV[4+2P] count S of task fields left out, the S names, then the
--   members
-- Returns how many tasks moved. A member whose claim was lost is left alone.
-- Its org's count trades the task's bytes for its dead letter's.
local pairs_count = tonumber(ARGV[3])
local skip_at = 4 + 2 * pairs_count
local skip_count = tonumber(ARGV[skip_at])
local skip = {}
for i = 1, skip_count do skip[ARGV[skip_at + i]] = true end
local members_at = skip_at + skip_count
local moved = 0
for i = members_at + 1, #ARGV do
  local member = ARGV[i]
  local task_key = KEYS[11 + i - members_at]
  local ok = true
  if ARGV[1] ~= '' then
    ok = tonumber(redis.call('ZSCORE', KEYS[1], member) or '-1') == tonumber(ARGV[1])
  end
  if ok and redis.call('EXISTS', task_key) == 1 then
    local task = redis.call('HGETALL', task_key)
    local letter = {}
    for j = 4, 3 + 2 * pairs_count do table.insert(letter, ARGV[j]) end
    for j = 1, #task, 2 do
      if not skip[task[j]] then
        table.insert(letter, task[j]); table.insert(letter, task[j + 1])
      end
    end
    local org, bytes = task_bytes(task_key)
    local padded, ms = index_member(redis.call('XADD', KEYS[2], '*', unpack(letter)))
    redis.call('ZADD', KEYS[7], ms, padded)
    add_bytes(KEYS[9], org, -bytes)
    index_letter(KEYS[10], KEYS[11], KEYS[9], padded, size_of(letter), org, ARGV[2])
    redis.call('DEL', task_key)
    moved = moved + 1
  end
  if ok then
    unset_due(KEYS[1], KEYS[3], member)
    redis.call('SREM', KEYS[5], member)
    redis.call('SREM', KEYS[6], member)
  end
end
reindex(KEYS[3], KEYS[4], ARGV[2])
if moved > 0 then redis.call('SADD', KEYS[8], ARGV[2]) end
return moved
