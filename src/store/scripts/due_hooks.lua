-- due_hooks: the hooks with a task due now (by Redis's clock), earliest
-- first: the claimer's pick of hooks before claim.lua, which must be told
-- its keys (read only).
-- KEYS[1] hooks-due
-- ARGV[1] most hooks returned
-- Returns the hooks' uids.
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
