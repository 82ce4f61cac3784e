-- claim: leases due tasks of some hooks, at most a capacity per hook.
-- KEYS[1] due, KEYS[2] hooks-due, then two per hook h = 0, 1, ...:
--   KEYS[3+2h] due:{uid}, KEYS[4+2h] waiting:{uid}
-- ARGV[1] lease ms, ARGV[2] most tasks to claim,
--   then per hook h: ARGV[3+2h] its uid, ARGV[4+2h] its capacity
-- Returns {lease end, {claimed members}}: each claimed member is due at the
-- lease end (Redis now + lease), the score the claimer's later calls
-- compare to know it still holds the claim.
-- The caller picks the hooks from hooks-due (due_hooks.lua, by earliest
-- due time) first, so every key this script touches is declared (Redis
-- Cluster needs that); a hook that became due in between is picked at the
-- next claim. Each hook gives only what its capacity allows, so a hook at
-- its limit with a long backlog costs one skip, never a scan of its
-- backlog. A claimed task no longer waits (its claimer decides again).
local now = now_ms()
local lease_until = now + tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local out = {}
for h = 0, (#KEYS - 2) / 2 - 1 do
  if #out >= max then break end
  local hook_due, waiting = KEYS[3 + 2 * h], KEYS[4 + 2 * h]
  local uid, cap = ARGV[3 + 2 * h], tonumber(ARGV[4 + 2 * h])
  if cap > 0 then
    local take = math.min(cap, max - #out)
    local due = redis.call('ZRANGEBYSCORE', hook_due, '-inf', now, 'LIMIT', 0, take)
    if #due > 0 then redis.call('SREM', waiting, unpack(due)) end
    for _, member in ipairs(due) do
      set_due(KEYS[1], hook_due, member, lease_until)
      table.insert(out, member)
    end
    reindex(hook_due, KEYS[2], uid)
  end
end
return {lease_until, out}
