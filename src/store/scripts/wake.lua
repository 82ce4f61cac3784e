-- wake: makes the waiting tasks of some hooks due now (Redis's clock; their hook or one
-- of its Secrets changed, so they may be deliverable), instead of every
-- waiting task polling.
-- KEYS[1] due, KEYS[2] hooks-due, then two per hook h = 0, 1, ...:
--   KEYS[3+2h] due:{uid}, KEYS[4+2h] waiting:{uid}
-- ARGV: the hooks' uids in the order of their keys
-- Returns how many tasks woke.
local now = now_ms()
local woken = 0
for h = 0, (#KEYS - 2) / 2 - 1 do
  local hook_due, waiting = KEYS[3 + 2 * h], KEYS[4 + 2 * h]
  local members = redis.call('SMEMBERS', waiting)
  if #members > 0 then
    for _, member in ipairs(members) do
      if redis.call('ZSCORE', hook_due, member) then
        set_due(KEYS[1], hook_due, member, now)
        woken = woken + 1
      end
    end
    redis.call('DEL', waiting)
    reindex(hook_due, KEYS[2], ARGV[1 + h])
  end
end
return woken
