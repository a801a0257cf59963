-- Delivery feedback for one {hash tag}: AIMD rate updates per sender x provider and reputation
-- window counters per sender, atomically (engine/shaping/limiter.py).
--
-- ARGV[1] now ms (-1: server TIME)  ARGV[2] bucket ms  ARGV[3] buckets per window
-- ARGV[4] msgpack [aimd, rep]: two flat lists of entries
-- AIMD entry (8 fields): k_rate floor ceiling start increase cooldown_ms successes factor
--   (mirrors engine/shaping/aimd.py aimd_update: one decrease per cooldown when factor < 1,
--    else r = min(ceiling, sqrt(r^2 + 2*increase*ceiling*successes)))
-- Reputation entry (6 fields): k_rep k_warmup k_pause attempts hard_bounces complaints
-- Returns msgpack {today, rates..., then per reputation entry: window attempts hard complaints,
--          yesterday's (UTC day) attempts hard complaints, warmup_stage (-1: not in warm-up),
--          warmup_day, paused (0/1)}

local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local bucket_ms = tonumber(ARGV[2])
local nbuckets = tonumber(ARGV[3])
local batch = cmsgpack.unpack(ARGV[4])
local aimd, rep = batch[1], batch[2]
local MONTH = 30 * 86400000
local out = {math.floor(now / 86400000)}

for pos = 1, #aimd, 8 do
  local k = KEYS[aimd[pos]]
  local floor, ceiling, start = aimd[pos + 1], aimd[pos + 2], aimd[pos + 3]
  local increase, cooldown = aimd[pos + 4], aimd[pos + 5]
  local successes, factor = aimd[pos + 6], aimd[pos + 7]
  local h = redis.call('HMGET', k, 'rate', 'dec')
  local rate = tonumber(h[1]) or start
  local dec = tonumber(h[2])
  rate = math.min(math.max(rate, floor), ceiling)
  if factor < 1 then
    if dec == nil or now - dec >= cooldown then
      rate = math.max(floor, rate * factor)
      dec = now
    end
  elseif successes > 0 then
    rate = math.min(ceiling, math.sqrt(rate * rate + 2 * increase * ceiling * successes))
  end
  if dec ~= nil then
    redis.call('HSET', k, 'rate', string.format('%.17g', rate), 'dec', string.format('%.17g', dec))
  else
    redis.call('HSET', k, 'rate', string.format('%.17g', rate))
  end
  redis.call('PEXPIRE', k, MONTH)
  out[#out + 1] = rate
end

local current = math.floor(now / bucket_ms)
local oldest = current - nbuckets + 1
local today = out[1]
for pos = 1, #rep, 6 do
  local k, kw, kp = KEYS[rep[pos]], KEYS[rep[pos + 1]], KEYS[rep[pos + 2]]
  local add = {a = rep[pos + 3], h = rep[pos + 4], c = rep[pos + 5]}
  for kind, n in pairs(add) do
    if n > 0 then
      redis.call('HINCRBY', k, current .. ':' .. kind, n) -- sliding window bucket
      redis.call('HINCRBY', k, 'd' .. today .. ':' .. kind, n) -- per UTC day, for warm-up
    end
  end
  local sums = {a = 0, h = 0, c = 0}
  local yesterday = {a = 0, h = 0, c = 0}
  local flat = redis.call('HGETALL', k)
  local stale = {}
  for i = 1, #flat, 2 do
    local field = flat[i]
    local day, dkind = string.match(field, '^d(%d+):(%a)$')
    if day ~= nil then
      day = tonumber(day)
      if day < today - 1 then
        stale[#stale + 1] = field
      elseif day == today - 1 then
        yesterday[dkind] = yesterday[dkind] + tonumber(flat[i + 1])
      end
    else
      local b, kind = string.match(field, '^(%-?%d+):(%a)$')
      b = tonumber(b)
      if b == nil or b < oldest then
        stale[#stale + 1] = field
      else
        sums[kind] = sums[kind] + tonumber(flat[i + 1])
      end
    end
  end
  if #stale > 0 then redis.call('HDEL', k, unpack(stale)) end
  redis.call('PEXPIRE', k, math.max(math.ceil(bucket_ms * (nbuckets + 1)), 2 * 86400000))
  local w = redis.call('HMGET', kw, 'stage', 'day')
  out[#out + 1] = sums.a
  out[#out + 1] = sums.h
  out[#out + 1] = sums.c
  out[#out + 1] = yesterday.a
  out[#out + 1] = yesterday.h
  out[#out + 1] = yesterday.c
  out[#out + 1] = tonumber(w[1]) or -1
  out[#out + 1] = tonumber(w[2]) or -1
  out[#out + 1] = redis.call('EXISTS', kp)
end
-- One bulk string: decoded in C by msgspec instead of element by element.
return cmsgpack.pack(out)
