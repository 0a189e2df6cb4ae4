-- Release a reservation that will never be settled (the request failed
-- before any usage): give back every hold it took.
-- KEYS[1] the reservation expiry index, KEYS[2] the reservation record;
-- ARGV[1] the request id.  Returns the number of holds released.
local rec = redis.call('HGETALL', KEYS[2])
for j = 1, #rec, 2 do
  if redis.call('DECRBY', rec[j], rec[j + 1]) <= 0 then redis.call('DEL', rec[j]) end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return #rec / 2
