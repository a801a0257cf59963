-- One shard's backlog in one call (engine/queue/streams.py, Streams.backlog).
-- KEYS: the shard's streams, highest priority first, then its push counter (one hash tag, so
-- one Cluster slot).
-- ARGV[1]: the consumer group.
-- Returns {unread per stream..., entries on the streams, entries ever pushed}. Read entries
-- stay on a stream until their job's outcome is written, so unread = XLEN - pending.
-- A stream or group that is gone (Redis emptied; the epoch check recreates them) counts as
-- empty rather than failing the feeder's round.
local out = {}
local length = 0
for i = 1, #KEYS - 1 do
    local xlen = redis.call('XLEN', KEYS[i])
    local pending = 0
    if xlen > 0 then
        local ok, summary = pcall(redis.call, 'XPENDING', KEYS[i], ARGV[1])
        if ok then pending = summary[1] end
    end
    out[i] = math.max(0, xlen - pending)
    length = length + xlen
end
out[#KEYS] = length
out[#KEYS + 1] = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
return out
