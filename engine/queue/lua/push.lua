-- XADD a batch of jobs to the priority streams in one call (engine/queue/streams.py).
-- KEYS: the streams, highest priority first (one {q} hash tag, so one Cluster slot).
-- ARGV[1]: JSON array of [job id (string), tenant id, priority index (0-based)].
-- One EVALSHA instead of a pipeline of XADDs: redis-py's packing and reply parsing per command
-- was 7% of the daemon's loop thread under load.
-- A priority outside the streams (the database has no CHECK on it) goes to the lowest one
-- rather than failing the whole batch, and with it the feeder round, again and again.
local jobs = cjson.decode(ARGV[1])
for i = 1, #jobs do
    local job = jobs[i]
    local key = KEYS[job[3] + 1] or KEYS[#KEYS]
    redis.call('XADD', key, '*', 'j', job[1], 't', job[2])
end
return #jobs
