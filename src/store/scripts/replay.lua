-- replay: puts a dead letter back as a fresh task and deletes the dead
-- letter, in one step.
-- KEYS[1] due, KEYS[2] dead-letter stream, KEYS[3] due:{uid},
--   KEYS[4] hooks-due, KEYS[5] the task hash, KEYS[6] hook-tasks:{uid},
--   KEYS[7] dead-index of the hook the dead letter was for, KEYS[8]
--   org-bytes, KEYS[9] dead-letters-by-id, KEYS[10] dead-letters-by-org
-- ARGV[1] dead letter id, ARGV[2] member, ARGV[3] uid, ARGV[4] ms from now
--   (Redis's clock) until it is due (0: at once), ARGV[5] the org,
--   then the task hash's field/value pairs
-- The org's count trades the dead letter's bytes for the task's (a replay
-- is an operator's act: it is not refused at the budget).
-- Returns 1 when replayed; 0 when the dead letter is gone (another replay
-- took it: replaying it again would deliver it twice); 2 when the hook
-- holds a live task for the event (left as it is, and the dead letter
-- too).
if #redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then return 2 end
local stored = {unpack(ARGV, 6)}
local size = size_of(stored)
table.insert(stored, TASK_BYTES); table.insert(stored, tostring(size))
redis.call('HSET', KEYS[5], unpack(stored))
add_bytes(KEYS[8], ARGV[5], size)
set_due(KEYS[1], KEYS[3], ARGV[2], now_ms() + tonumber(ARGV[4]))
reindex(KEYS[3], KEYS[4], ARGV[3])
redis.call('SADD', KEYS[6], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[1])
local padded = index_member(ARGV[1])
redis.call('ZREM', KEYS[7], padded)
forget_letter(KEYS[9], KEYS[10], KEYS[8], padded)
return 1
