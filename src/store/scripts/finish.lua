-- finish: removes a delivered (or abandoned) task; its bytes leave its
-- org's count.
-- KEYS[1] due, KEYS[2] due:{uid}, KEYS[3] hooks-due, KEYS[4] the task hash,
--   KEYS[5] hook-tasks:{uid}, KEYS[6] waiting:{uid}, KEYS[7] org-bytes
-- ARGV[1] member, ARGV[2] uid
-- Returns 1.
local org, bytes = task_bytes(KEYS[4])
add_bytes(KEYS[7], org, -bytes)
redis.call('DEL', KEYS[4])
unset_due(KEYS[1], KEYS[2], ARGV[1])
reindex(KEYS[2], KEYS[3], ARGV[2])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
return 1
