-- trim_dead_letters: retention of one hook's dead letters: deletes those
-- older than a time and those beyond a count (oldest first), at most a
-- number per call so a large trim never blocks Redis for long.
-- (Index members are zero-padded stream ids, see due_prelude.lua.)
-- Their bytes leave their org's count.
-- KEYS[1] dead-letter stream, KEYS[2] dead-index:{uid}, KEYS[3] dead-hooks,
--   KEYS[4] org-bytes, KEYS[5] dead-letters-by-id, KEYS[6] dead-letters-by-org
-- ARGV[1] most age kept (ms before now by Redis's clock, the clock of the
--   stream ids), ARGV[2] most kept, ARGV[3] most
--   deleted by this call, ARGV[4] uid
-- Returns {index entries removed, dead letters deleted} (the stream may
-- have lost some already to the age trim); the caller calls again while
-- the first is ARGV[3].
local budget = tonumber(ARGV[3])
local oldest = math.max(now_ms() - tonumber(ARGV[1]), 0)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('(%d', oldest), 'LIMIT', 0, budget)
local excess = redis.call('ZCARD', KEYS[2]) - #old - tonumber(ARGV[2])
local doomed = old
if excess > 0 and #doomed < budget then
  local more = redis.call('ZRANGE', KEYS[2], #old, #old + math.min(excess, budget - #old) - 1)
  for _, id in ipairs(more) do table.insert(doomed, id) end
end
local deleted = 0
if #doomed > 0 then
  local ids = {}
  for i, member in ipairs(doomed) do
    ids[i] = stream_id_of(member)
    forget_letter(KEYS[5], KEYS[6], KEYS[4], member)
  end
  deleted = redis.call('XDEL', KEYS[1], unpack(ids))
  redis.call('ZREM', KEYS[2], unpack(doomed))
end
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[4]) end
return {#doomed, deleted}
