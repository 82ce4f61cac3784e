-- trim_by_age: deletes the entries of a stream older than an age by
-- Redis's clock (the clock of the stream ids), not a replica's.
-- KEYS[1] the stream
-- ARGV[1] most age kept (ms)
-- Returns how many entries were deleted.
local oldest = math.max(now_ms() - tonumber(ARGV[1]), 0)
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', oldest))
