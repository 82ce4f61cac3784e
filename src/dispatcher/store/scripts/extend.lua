-- extend: moves the lease end of a claimed task, only while the caller
-- still holds the claim (the task's score is still its lease end).
-- KEYS[1] due, KEYS[2] due:{uid}, KEYS[3] hooks-due
-- ARGV[1] member, ARGV[2] uid, ARGV[3] claimed score, ARGV[4] new score
-- Returns 1 when moved, 0 when the claim was lost.
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') ~= tonumber(ARGV[3]) then return 0 end
set_due(KEYS[1], KEYS[2], ARGV[1], ARGV[4])
reindex(KEYS[2], KEYS[3], ARGV[2])
return 1
