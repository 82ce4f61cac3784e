-- Prepended to every script that moves tasks between due times (not a
-- script of its own). Keeps three sorted sets in step:
--   `due`        every task member by due time (Unix ms of Redis's clock; a
--                claim sets it to the lease end, so a dead claimer's task
--                comes due again),
--   `due:{uid}`  the same for one hook,
--   `hooks-due`  each hook by the earliest score in its `due:{uid}`.
-- A member is `{hook uid}:{event id}`.
--
-- Every due time and lease end is computed and compared here, from Redis's
-- own clock (TIME), never from a dispatcher replica's: replicas whose
-- clocks disagree would otherwise take each other's leased tasks. Callers
-- pass durations and get back the absolute scores they later compare.
-- (Redis 7 replicates scripts by their effects, so TIME before a write is
-- allowed and replicas store the same scores.)
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function set_due(due, hook_due, member, score)
  redis.call('ZADD', due, score, member)
  redis.call('ZADD', hook_due, score, member)
end
local function unset_due(due, hook_due, member)
  redis.call('ZREM', due, member)
  redis.call('ZREM', hook_due, member)
end
-- A dead-letter index (`dead-index:{uid}`) holds stream ids zero-padded,
-- so that ids of one millisecond sort by sequence (as the stream does).
local function index_member(stream_id)
  local ms, seq = string.match(stream_id, '^(%d+)-(%d+)$')
  return string.format('%016d-%016d', tonumber(ms), tonumber(seq)), tonumber(ms)
end
local function stream_id_of(member)
  local ms, seq = string.match(member, '^(%d+)-(%d+)$')
  return tonumber(ms) .. '-' .. tonumber(seq)
end
local function reindex(hook_due, hooks_due, uid)
  local first = redis.call('ZRANGE', hook_due, 0, 0, 'WITHSCORES')
  if first[1] then redis.call('ZADD', hooks_due, first[2], uid)
  else redis.call('ZREM', hooks_due, uid) end
end
