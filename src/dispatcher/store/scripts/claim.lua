-- claim: leases due tasks, at most a capacity per hook.
-- KEYS[1] due, KEYS[2] hooks-due
-- ARGV[1] now (Unix ms), ARGV[2] lease ms, ARGV[3] most tasks to claim,
--   ARGV[4] default per-hook capacity, ARGV[5] the prefix of the per-hook
--   due sets (`{prefix}due:`), ARGV[6] the prefix of the per-hook waiting
--   sets (`{prefix}waiting:`), then uid/capacity pairs for hooks whose
--   capacity is not the default
-- Returns the claimed members; each is due at now + lease (its lease end).
-- Walks the hooks that have something due (hooks-due, by earliest due time)
-- and takes from each hook's own due set only what its capacity allows, so
-- a hook at its limit with a long backlog costs one skip, never a scan of
-- its backlog. A claimed task no longer waits (its claimer decides again).
-- The per-hook sets are found during the walk, so they cannot be declared
-- in KEYS; they share the prefix's hash tag.
local now = tonumber(ARGV[1])
local lease_until = now + tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local default_cap = tonumber(ARGV[4])
local hook_due_prefix = ARGV[5]
local waiting_prefix = ARGV[6]
local caps = {}
for i = 7, #ARGV, 2 do caps[ARGV[i]] = tonumber(ARGV[i + 1]) end
local out = {}
local hooks = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 5000)
for _, uid in ipairs(hooks) do
  if #out >= max then break end
  local cap = caps[uid] or default_cap
  if cap > 0 then
    local hook_due = hook_due_prefix .. uid
    local take = math.min(cap, max - #out)
    local due = redis.call('ZRANGEBYSCORE', hook_due, '-inf', now, 'LIMIT', 0, take)
    if #due > 0 then redis.call('SREM', waiting_prefix .. uid, unpack(due)) end
    for _, member in ipairs(due) do
      set_due(KEYS[1], hook_due, member, lease_until)
      table.insert(out, member)
    end
    reindex(hook_due, KEYS[2], uid)
  end
end
return out
