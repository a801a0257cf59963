-- Hierarchical GCRA + daily caps for a batch of requests, atomically (engine/shaping/limiter.py).
-- Every key of one call carries the same {hash tag}, so the call touches one Redis Cluster slot.
--
-- ARGV[1] now in ms (-1: use the server's TIME, so every instance shares one clock)
-- ARGV[2] mode: 0 acquire (all levels allow -> consume one unit at each), 1 refund (give back one
--         unit at each level, unconditionally), 2 peek (explain: evaluate, consume nothing)
-- ARGV[3] msgpack [sets, requests]: `sets` are the distinct level lists of the batch (many
--         requests share a sender x provider), each a flat list of 7 fields per level
--             code kind k1 k2 a b c      (k1/k2: 1-based KEYS index, 0 = none)
--         and `requests` lists, in order, the 0-based set index of every request.
--   kind 2 GCRA   k1 TAT key                   a rate/s   b burst
--   kind 3 AIMD   k1 TAT key  k2 AIMD hash     a start rate/s  b burst seconds  c ceiling/s
--   kind 4 DAILY  k1 warm-up hash k2 counter   a stage-0 cap (-1: no cap)
-- Returns msgpack: per request {level code or 0, retry ms}; in peek mode per level of the first
-- request {code, retry ms, limit*1000, used*1000}.
-- The arithmetic mirrors engine/gcra.py; keep the two in step.

local floor, ceil, max = math.floor, math.ceil, math.max
local tonumber, call = tonumber, redis.call

local now = tonumber(ARGV[1])
if now < 0 then
  local t = call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local mode = tonumber(ARGV[2])
local batch = cmsgpack.unpack(ARGV[3])
local sets, requests = batch[1], batch[2]
local DAY = 86400000
local today = floor(now / DAY)
local to_midnight = (today + 1) * DAY - now

-- Per-call caches: a key shared by many requests is read once and written once.
local tat, tat_dirty = {}, {}
local rate_of = {}
local wcap, wnew = {}, {}
local cnt, cnt_dirty = {}, {}

local function get_tat(i)
  local v = tat[i]
  if v == nil then
    v = tonumber(call('GET', KEYS[i])) or 0
    tat[i] = v
  end
  return v
end

local function get_rate(k2, start, ceiling)
  local r = rate_of[k2]
  if r == nil then
    r = tonumber(call('HGET', KEYS[k2], 'rate')) or start
    if r > ceiling then r = ceiling end
    rate_of[k2] = r
  end
  return r
end

local function get_cap(k1, first)
  local c = wcap[k1]
  if c == nil then
    c = tonumber(call('HGET', KEYS[k1], 'cap'))
    if c == nil then
      c = first
      wnew[k1] = true -- a sender seen for the first time starts the plan today
    end
    wcap[k1] = c
  end
  return c
end

local function get_cnt(k2)
  local n = cnt[k2]
  if n == nil then
    local h = call('HMGET', KEYS[k2], 'day', 'n')
    if tonumber(h[1]) == today then n = tonumber(h[2]) or 0 else n = 0 end
    cnt[k2] = n
  end
  return n
end

local out = {}
local pend = {} -- value each level would commit, indexed by the level's position in its set
for r = 1, #requests do
  local set = sets[requests[r] + 1]
  local worst_code, worst_ms = 0, 0
  for pos = 1, #set, 7 do
    local kind, k1, k2 = set[pos + 1], set[pos + 2], set[pos + 3]
    local wait, limit, used = 0, 0, 0
    if mode == 1 then
      if kind == 2 or kind == 3 then
        local rate = set[pos + 4]
        if kind == 3 then rate = get_rate(k2, rate, set[pos + 6]) end
        tat[k1] = get_tat(k1) - 1000 / rate
        tat_dirty[k1] = true
      elseif kind == 4 then
        local n = get_cnt(k2)
        if n > 0 then cnt[k2] = n - 1; cnt_dirty[k2] = true end
      end
    else
      if kind == 2 or kind == 3 then
        local rate, burst = set[pos + 4], set[pos + 5]
        if kind == 3 then
          rate = get_rate(k2, rate, set[pos + 6])
          burst = max(1, floor(rate * burst))
        end
        local interval = 1000 / rate
        local base = tat[k1] or get_tat(k1)
        if base < now then base = now end
        local new = base + interval
        local allow_at = new - burst * interval
        if allow_at > now then wait = allow_at - now end
        pend[pos] = new
        limit, used = rate, (base - now) / interval
      else
        local cap = wcap[k1] or get_cap(k1, set[pos + 4])
        local n = cnt[k2] or get_cnt(k2)
        if cap >= 0 and n >= cap then wait = to_midnight end
        pend[pos] = n + 1
        limit, used = cap, n
      end
      if mode == 2 and r == 1 then
        out[#out + 1] = set[pos]
        out[#out + 1] = ceil(wait)
        out[#out + 1] = floor(limit * 1000)
        out[#out + 1] = floor(used * 1000)
      end
      if wait > worst_ms then worst_ms, worst_code = wait, set[pos] end
    end
  end
  if mode == 0 then
    if worst_code == 0 then
      for pos = 1, #set, 7 do
        local kind = set[pos + 1]
        if kind == 2 or kind == 3 then
          local k1 = set[pos + 2]
          tat[k1] = pend[pos]; tat_dirty[k1] = true
        elseif kind == 4 then
          local k2 = set[pos + 3]
          cnt[k2] = pend[pos]; cnt_dirty[k2] = true
        end
      end
    end
    out[#out + 1] = worst_code
    out[#out + 1] = ceil(worst_ms)
  end
end

if mode ~= 2 then
  for i in pairs(tat_dirty) do
    local ttl = ceil(tat[i] - now)
    if ttl > 0 then
      call('SET', KEYS[i], string.format('%.17g', tat[i]), 'PX', ttl)
    else
      call('DEL', KEYS[i]) -- a TAT in the past is the same as an idle bucket
    end
  end
  for i in pairs(cnt_dirty) do
    call('HSET', KEYS[i], 'day', today, 'n', cnt[i])
    call('PEXPIRE', KEYS[i], 2 * DAY)
  end
end
if mode == 0 then
  for i in pairs(wnew) do
    call('HSETNX', KEYS[i], 'stage', 0)
    call('HSETNX', KEYS[i], 'day', today)
    call('HSETNX', KEYS[i], 'cap', wcap[i])
  end
end
-- One bulk string instead of an array: the client decodes it in C (msgspec) in one go.
return cmsgpack.pack(out)
