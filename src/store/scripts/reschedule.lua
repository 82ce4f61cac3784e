-- reschedule: records an attempt and sets the task's next due time, only
-- while the caller still holds the claim.
-- KEYS[1] due, KEYS[2] due:{uid}, KEYS[3] hooks-due, KEYS[4] the task hash,
--   KEYS[5] waiting:{uid}
-- ARGV[1] member, ARGV[2] uid, ARGV[3] claimed score, ARGV[4] ms from now
--   (Redis's clock) until it is due again,
--   ARGV[5] '1' when the task waits for its hook to become deliverable
--   (a change of the hook wakes it early, see wake.lua), else '0',
--   then field/value pairs to set in the task hash
-- Returns 1 when rescheduled, 0 when the claim was lost or the task is gone
-- (its member is then dropped from the due sets).
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') ~= tonumber(ARGV[3]) then return 0 end
if redis.call('EXISTS', KEYS[4]) == 0 then
  unset_due(KEYS[1], KEYS[2], ARGV[1])
  reindex(KEYS[2], KEYS[3], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[4], unpack(ARGV, 6))
if ARGV[5] == '1' then redis.call('SADD', KEYS[5], ARGV[1]) end
set_due(KEYS[1], KEYS[2], ARGV[1], now_ms() + tonumber(ARGV[4]))
reindex(KEYS[2], KEYS[3], ARGV[2])
return 1
