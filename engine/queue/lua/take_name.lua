-- Compare-and-set of a consumer's heartbeat key: a successor takes the name only from the
-- holder it saw gone (KEYS[1] heartbeat key; ARGV: value seen, new holder, ttl in ms).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
