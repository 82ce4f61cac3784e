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

-- Bytes per org (docs/src/tenant-bounds.md#redis-bytes-per-org). `org-bytes` is a hash org -> the
-- bytes the org holds on this shard: its task hashes (each records its
-- size in the field named TASK_BYTES) and its dead letters, each indexed
-- twice in lex-ordered sorted sets (every score 0):
--   `dead-letters-by-id`   `{padded id}\0{bytes}\0{org}\0{hook uid}`: a
--                          letter's org and size from its id, oldest first
--                          (padded ids sort by time);
--   `dead-letters-by-org`  `{org}\0{padded id}`: an org's oldest first.
-- Tasks and dead letters stored before this accounting count 0 bytes.
-- (TASK_ORG and TASK_BYTES, the field names, are set in front of this file
-- from task.rs.)
local function add_bytes(org_bytes, org, delta)
  if not org or org == '' or delta == 0 then return end
  if redis.call('HINCRBY', org_bytes, org, delta) <= 0 then redis.call('HDEL', org_bytes, org) end
end
-- The bytes a task hash records (0 when it records none).
local function task_bytes(task_key)
  local held = redis.call('HMGET', task_key, TASK_ORG, TASK_BYTES)
  return held[1], tonumber(held[2] or '0') or 0
end
-- The size of field/value pairs.
local function size_of(flat)
  local n = 0
  for _, v in ipairs(flat) do n = n + #v end
  return n
end
local function index_letter(by_id, by_org, org_bytes, padded, bytes, org, uid)
  if not org or org == '' then return end
  redis.call('ZADD', by_id, 0, padded .. '\0' .. bytes .. '\0' .. org .. '\0' .. uid)
  redis.call('ZADD', by_org, 0, org .. '\0' .. padded)
  add_bytes(org_bytes, org, bytes)
end
-- Forgets the member of `dead-letters-by-id`; returns its org and uid.
local function forget_indexed(by_id, by_org, org_bytes, member)
  local padded, bytes, org, uid = string.match(member, '^([^%z]*)%z(%d+)%z([^%z]*)%z(.*)$')
  redis.call('ZREM', by_id, member)
  if not padded then return nil end
  redis.call('ZREM', by_org, org .. '\0' .. padded)
  add_bytes(org_bytes, org, -tonumber(bytes))
  return org, uid
end
-- Forgets dead letter `padded` (its bytes leave its org's count); returns
-- its org and hook uid, nil when it was not accounted.
local function forget_letter(by_id, by_org, org_bytes, padded)
  local found = redis.call('ZRANGEBYLEX', by_id, '[' .. padded .. '\0', '[' .. padded .. '\1', 'LIMIT', 0, 1)[1]
  if not found then return nil end
  return forget_indexed(by_id, by_org, org_bytes, found)
end
