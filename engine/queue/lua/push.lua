-- XADD a batch of jobs to the priority streams of one shard in one call (engine/queue/streams.py).
-- KEYS: the shard's streams, highest priority first, then its push counter (one hash tag, so
-- one Cluster slot).
-- ARGV[1]: JSON array of [job id (string), tenant id, priority index (0-based)].
-- One EVALSHA instead of a pipeline of XADDs: redis-py's packing and reply parsing per command
-- was 7% of the daemon's loop thread under load.
-- A priority outside the streams (the database has no CHECK on it) goes to the lowest one
-- rather than failing the whole batch, and with it the feeder round, again and again.
local jobs = cjson.decode(ARGV[1])
local streams = #KEYS - 1
for i = 1, #jobs do
    local job = jobs[i]
    local idx = job[3] + 1
    if idx < 1 or idx > streams then idx = streams end
    redis.call('XADD', KEYS[idx], '*', 'j', job[1], 't', job[2])
end
redis.call('INCRBY', KEYS[#KEYS], #jobs)
return #jobs
