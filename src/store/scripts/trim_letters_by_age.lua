-- trim_letters_by_age: deletes the dead letters older than an age by
-- Redis's clock (the clock of the stream ids), not a replica's; their
-- bytes leave their orgs' counts. The accounted ones go by their index, at
-- most a number per call; once none of those is left that old, one XTRIM
-- takes the rest (dead letters older than the accounting). Their hooks'
-- dead-index entries go with the hooks' own retention (trim_dead_letters).
-- KEYS[1] dead-letter stream, KEYS[2] org-bytes, KEYS[3]
--   dead-letters-by-id, KEYS[4] dead-letters-by-org
-- ARGV[1] most age kept (ms), ARGV[2] most accounted letters deleted
-- Returns {accounted letters deleted, dead letters deleted}; the caller
-- calls again while the first is ARGV[2].
local oldest = math.max(now_ms() - tonumber(ARGV[1]), 0)
local budget = tonumber(ARGV[2])
local old = redis.call('ZRANGEBYLEX', KEYS[3], '-', string.format('(%016d-', oldest), 'LIMIT', 0, budget)
local deleted = 0
if #old > 0 then
  local ids = {}
  for i, member in ipairs(old) do
    ids[i] = stream_id_of(string.match(member, '^[^%z]*'))
    forget_indexed(KEYS[3], KEYS[4], KEYS[2], member)
  end
  deleted = redis.call('XDEL', KEYS[1], unpack(ids))
end
if #old < budget then
  deleted = deleted + redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', oldest))
end
return {#old, deleted}
