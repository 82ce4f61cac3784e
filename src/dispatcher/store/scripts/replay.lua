-- replay: puts a dead letter back as a fresh task and deletes the dead
-- letter, in one step.
-- KEYS[1] due, KEYS[2] dead-letter stream, KEYS[3] due:{uid},
--   KEYS[4] hooks-due, KEYS[5] the task hash, KEYS[6] hook-tasks:{uid},
--   KEYS[7] dead-index of the hook the dead letter was for
-- ARGV[1] dead letter id, ARGV[2] member, ARGV[3] uid, ARGV[4] ms from now
--   (Redis's clock) until it is due (0: at once),
--   then the task hash's field/value pairs
-- Returns 1 when replayed; 0 when the dead letter is gone (another replay
-- took it: replaying it again would deliver it twice); 2 when the hook
-- holds a live task for the event (left as it is, and the dead letter
-- too).
if #redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then return 2 end
redis.call('HSET', KEYS[5], unpack(ARGV, 5))
set_due(KEYS[1], KEYS[3], ARGV[2], now_ms() + tonumber(ARGV[4]))
reindex(KEYS[3], KEYS[4], ARGV[3])
redis.call('SADD', KEYS[6], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[7], (index_member(ARGV[1])))
return 1
