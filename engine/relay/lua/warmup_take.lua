-- One message for a warming relay node today, if it stays within today's cap
-- (engine/relay/node_budget.py). KEYS[1]: the node's counter for the UTC day.
-- ARGV: cap, ttl in seconds. Returns 1 (counted) or 0 (cap reached).
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
