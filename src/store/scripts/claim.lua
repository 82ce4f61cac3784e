-- claim: leases due tasks of some hooks, at most a capacity per hook and
-- within each hook's limits across replicas (store/limits.rs).
-- KEYS[1] due, KEYS[2] hooks-due, then four per hook h = 0, 1, ...:
--   KEYS[3+4h] due:{uid}, KEYS[4+4h] waiting:{uid},
--   KEYS[5+4h] rate:{uid}, KEYS[6+4h] in-flight:{uid}
-- ARGV[1] lease ms, ARGV[2] most tasks to claim, then five per hook h:
--   ARGV[3+5h] its uid, ARGV[4+5h] its capacity on this replica,
--   ARGV[5+5h] requests per second (0: no rate limit), ARGV[6+5h] burst,
--   ARGV[7+5h] most requests in flight (0: no limit)
-- Returns {lease end, {claimed members}, next token, hooks held by their
-- rate, hooks held by their concurrency}: each claimed member is due at
-- the lease end (Redis now + lease), the score the claimer's later calls
-- compare to know it still holds the claim; the next token is when the
-- first hook held back by its rate may take a task again (0: none).
-- The caller picks the hooks from hooks-due (due_hooks.lua, by earliest
-- due time) first, so every key this script touches is declared (Redis
-- Cluster needs that); a hook that became due in between is picked at the
-- next claim. Each hook gives only what its capacity allows, so a hook at
-- its limit with a long backlog costs one skip, never a scan of its
-- backlog. A claimed task no longer waits (its claimer decides again).
local now = now_ms()
local lease_ms = tonumber(ARGV[1])
local lease_until = now + lease_ms
local max = tonumber(ARGV[2])
local out = {}
local next_token, held_rate, held_conc = 0, 0, 0

-- The hook's tasks in flight: members of in-flight:{uid} still due at the
-- lease end recorded there (a task that settled has another due time, or
-- none); the others are forgotten.
local function in_flight(hook_due, conc)
  local held = redis.call('ZRANGE', conc, 0, -1, 'WITHSCORES')
  local n = 0
  for i = 1, #held, 2 do
    local score = redis.call('ZSCORE', hook_due, held[i])
    if score and tonumber(score) == tonumber(held[i + 1]) and tonumber(score) > now then
      n = n + 1
    else
      redis.call('ZREM', conc, held[i])
    end
  end
  return n
end

for h = 0, (#KEYS - 2) / 4 - 1 do
  if #out >= max then break end
  local hook_due, waiting = KEYS[3 + 4 * h], KEYS[4 + 4 * h]
  local rate, conc = KEYS[5 + 4 * h], KEYS[6 + 4 * h]
  local a = 3 + 5 * h
  local uid, cap = ARGV[a], tonumber(ARGV[a + 1])
  local rps, burst, most = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if cap > 0 then
    local take = math.min(cap, max - #out)
    -- GCRA: tat is when the bucket would be full again; each task moves it
    -- on by one interval; tokens are what the burst leaves of it now.
    local interval, tat, running = 0, now, 0
    if rps > 0 then
      interval = 1000 / rps
      tat = math.max(tonumber(redis.call('GET', rate) or '0') or 0, now)
      take = math.min(take, math.max(math.floor((now - tat) / interval + burst + 1e-9), 0))
    end
    if most > 0 then
      running = in_flight(hook_due, conc)
      take = math.min(take, math.max(most - running, 0))
    end
    local due = {}
    if take > 0 then
      due = redis.call('ZRANGEBYSCORE', hook_due, '-inf', now, 'LIMIT', 0, take)
    end
    if #due > 0 then redis.call('SREM', waiting, unpack(due)) end
    for _, member in ipairs(due) do
      set_due(KEYS[1], hook_due, member, lease_until)
      if most > 0 then redis.call('ZADD', conc, lease_until, member) end
      table.insert(out, member)
    end
    if rps > 0 and #due > 0 then
      tat = tat + #due * interval
      redis.call('SET', rate, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
    end
    if most > 0 and #due > 0 then
      local last = redis.call('ZRANGE', conc, -1, -1, 'WITHSCORES')
      redis.call('PEXPIREAT', conc, tonumber(last[2]) + 1000)
    end
    reindex(hook_due, KEYS[2], uid)
    -- Held back by a limit with tasks still due: out of hooks-due until it
    -- may take one again (a settled task's reindex brings it back sooner).
    local by_rate = rps > 0 and math.floor((now - tat) / interval + burst + 1e-9) < 1
    local by_conc = most > 0 and running + #due >= most
    if by_rate or by_conc then
      local first = redis.call('ZRANGE', hook_due, 0, 0, 'WITHSCORES')
      if first[1] and tonumber(first[2]) <= now then
        local until_ms = now
        if by_rate then
          until_ms = math.ceil(tat - (burst - 1) * interval)
          held_rate = held_rate + 1
          if next_token == 0 or until_ms < next_token then next_token = until_ms end
        end
        if by_conc then
          local soonest = redis.call('ZRANGE', conc, 0, 0, 'WITHSCORES')
          until_ms = math.max(until_ms, tonumber(soonest[2] or now))
          held_conc = held_conc + 1
        end
        redis.call('ZADD', KEYS[2], until_ms, uid)
      end
    end
  end
end
return {lease_until, out, next_token, held_rate, held_conc}
