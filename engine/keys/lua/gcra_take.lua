-- The per-key enqueue limit (engine/keys/ratelimit.py): take `cost` units of one GCRA bucket,
-- all or nothing. The arithmetic is engine/gcra.py's gcra_check; keep the two in step.
-- KEYS[1]: the bucket's TAT (theoretical arrival time, ms since the epoch, a string).
-- ARGV[1] now in ms (-1: the server's TIME, so instances with skewed clocks agree)
-- ARGV[2] emission interval T in ms   ARGV[3] tolerance tau = burst * T in ms   ARGV[4] cost
-- Returns {1, "0"} (taken) or {0, ms to wait as a string} (denied, nothing taken).
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
-- Offsets from now, not absolute times: from idle a full burst must compare exactly equal.
local ahead = (tonumber(redis.call('GET', KEYS[1])) or now) - now
if ahead < 0 then ahead = 0 end
local new_ahead = ahead + cost * interval
local allow_in = new_ahead - tolerance
if allow_in > 0 then
  return {0, tostring(allow_in)}
end
-- The key lives until the bucket is full again; a missing key means a full bucket.
redis.call('SET', KEYS[1], string.format('%.3f', now + new_ahead), 'PX', math.ceil(new_ahead) + 1000)
return {1, '0'}
