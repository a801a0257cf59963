-- Move a sender to a new warm-up stage, once: only if the stage is still the one evaluated
-- (ARGV[1] old day), so two instances rolling the same day do not both advance it.
-- KEYS[1] warm-up hash; ARGV: old_day new_stage new_day new_cap. Returns 1 if applied.
local day = tonumber(redis.call('HGET', KEYS[1], 'day'))
if day ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'stage', ARGV[2], 'day', ARGV[3], 'cap', ARGV[4])
return 1
