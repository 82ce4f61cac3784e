-- memory: one shard's stored bytes and its node's memory, in one call so
-- that on a Cluster both come from the node holding this shard's keys (a
-- plain INFO would go to any node). Orgs per shard are namespaces: the sum
-- is bounded by the platform, not by a tenant.
-- KEYS[1] org-bytes
-- Returns {the orgs' bytes summed, INFO memory}.
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + (tonumber(v) or 0) end
return {tostring(total), redis.call('INFO', 'memory')}
