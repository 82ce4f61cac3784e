-- extend: makes the lease of a claimed task last at least a duration from
-- now (Redis's clock), only while the caller still holds the claim (the
-- task's score is still its lease end). A lease is never shortened.
-- KEYS[1] due, KEYS[2] due:{uid}, KEYS[3] hooks-due, KEYS[4] in-flight:{uid}
-- ARGV[1] member, ARGV[2] uid, ARGV[3] claimed score, ARGV[4] lease ms
-- Returns the lease end now held (the score later calls compare), or 0
-- when the claim was lost.
local claimed = tonumber(ARGV[3])
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') ~= claimed then return 0 end
local until_ms = now_ms() + tonumber(ARGV[4])
if until_ms <= claimed then return claimed end
set_due(KEYS[1], KEYS[2], ARGV[1], until_ms)
reindex(KEYS[2], KEYS[3], ARGV[2])
-- A hook with a concurrency limit counts the task in flight until its new
-- lease end (claim.lua compares the two scores).
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('ZADD', KEYS[4], until_ms, ARGV[1])
  local last = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[4], tonumber(last[2]) + 1000)
end
return until_ms
