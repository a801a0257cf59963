-- New entries of one shard's streams for one consumer, in one call (engine/queue/streams.py,
-- Streams.read).
-- KEYS: the shard's streams, highest priority first (one hash tag, so one Cluster slot).
-- ARGV[1]: the consumer group, ARGV[2]: the consumer, ARGV[3 ...]: how many to read from each
-- stream (0: none).
-- Returns, per stream, a flat array {entry id, job id, tenant id, ...}: one reply to parse
-- instead of redis-py's per-stream nested replies, and one routed command per shard instead
-- of one per stream. Entries are delivered (and pending) exactly as XREADGROUP delivers them.
local out = {}
for i = 1, #KEYS do
    local got = {}
    local count = tonumber(ARGV[2 + i])
    if count > 0 then
        local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count,
            'STREAMS', KEYS[i], '>')
        if reply then
            for _, entry in ipairs(reply[1][2]) do
                local job, tenant = '0', ''
                local fields = entry[2]
                if fields then
                    for k = 1, #fields, 2 do
                        if fields[k] == 'j' then
                            job = fields[k + 1]
                        elseif fields[k] == 't' then
                            tenant = fields[k + 1]
                        end
                    end
                end
                got[#got + 1] = entry[1]
                got[#got + 1] = job
                got[#got + 1] = tenant
            end
        end
    end
    out[i] = got
end
return out
