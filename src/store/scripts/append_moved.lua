-- append_moved: appends an entry taken from a dead letter (one dead-lettered
-- on another shard than its org's) to the events stream of its org's shard,
-- once however often `dead-letter replay` runs: after a crash between this
-- step and the dead letter's removal, or with two replays at once, the
-- marker says it was appended already.
-- KEYS[1] the events stream of the org's shard, KEYS[2] the marker
--   (`moved:{shard}:{dead letter id}`); both carry that shard's hash tag,
--   so on a Cluster this runs on one node.
-- ARGV[1] how long the marker is kept (seconds), then the entry's
--   field/value pairs
-- Returns the new entry id, or false when the marker existed.
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
