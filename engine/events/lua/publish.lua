-- XADD a batch of events to the stream in one call (engine/events/stream.py).
-- KEYS[1]: the stream; ARGV[1]: approximate MAXLEN; ARGV[2]: MessagePack array of entries, each
-- a flat array of field, value, field, value, ... strings.
-- One EVALSHA with one packed argument instead of a pipeline of XADDs with ~10 arguments each:
-- redis-py's per-argument packing was most of the publisher's cost in the daemon's loop.
-- MessagePack rather than JSON: the ``event`` value is JSON text, which cjson had to unescape.
-- The stream is trimmed once per batch, not at each XADD.
local entries = cmsgpack.unpack(ARGV[2])
for i = 1, #entries do
    redis.call('XADD', KEYS[1], '*', unpack(entries[i]))
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[1])
return #entries
