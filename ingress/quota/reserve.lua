-- Reserve (or peek at) every applicable quota counter in one atomic call.
--
-- KEYS[1]  the reservation expiry index (zset: request id -> expires at ms)
-- KEYS[2]  this request's reservation record (hash: held key -> amount)
-- KEYS[2+2i-1], KEYS[2+2i]  counter i's spent key and held key
-- ARGV: mode ('reserve' | 'peek'), now_ms, expire_at_ms, reservation key
--       prefix, request id, purge limit, and the counters packed in one
--       string (fewer arguments to encode on the hot path):
--       "rolling,bucket,nbuckets,limit,amount,enforce;" per counter
--
-- Returns {status, spent_1, held_1, ..., spent_n, held_n}; status 1 =
-- admitted (held), 0 = an enforced counter would go over, -1 = this
-- request id already holds a reservation.  Nothing is written unless every
-- enforced counter fits: all axes or none.

local mode = ARGV[1]
local now = tonumber(ARGV[2])
local expire_at = tonumber(ARGV[3])
local res_prefix = ARGV[4]
local rid = ARGV[5]
local purge = tonumber(ARGV[6])
local n = (#KEYS - 2) / 2
local spec = {}
for r, b, nb, lim, amt, enf in string.gmatch(ARGV[7], '(%d),(%d+),(%d+),(%d+),(%d+),(%d);') do
  spec[#spec + 1] = {r, tonumber(b), tonumber(nb), tonumber(lim), tonumber(amt), enf}
end

-- Crashed requests never settle: release what their reservations hold.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, purge)
for _, old in ipairs(expired) do
  local rk = res_prefix .. old
  local rec = redis.call('HGETALL', rk)
  for j = 1, #rec, 2 do
    if redis.call('DECRBY', rec[j], rec[j + 1]) <= 0 then redis.call('DEL', rec[j]) end
  end
  redis.call('DEL', rk)
  redis.call('ZREM', KEYS[1], old)
end

if mode == 'reserve' and redis.call('EXISTS', KEYS[2]) == 1 then
  return {-1}
end

local out = {1}
local ok = true
for i = 1, n do
  local c = spec[i]
  local spent_key, held_key = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local spent
  if c[1] == '1' then
    spent = 0
    if redis.call('EXISTS', spent_key) == 1 then
      spent = rolling_advance(spent_key, c[2], c[3])
    end
  else
    spent = tonumber(redis.call('GET', spent_key)) or 0
  end
  local held = tonumber(redis.call('GET', held_key)) or 0
  if c[6] == '1' and spent + held + c[5] > c[4] then
    ok = false
  end
  out[#out + 1] = spent
  out[#out + 1] = held
end

if mode ~= 'reserve' then return out end
if not ok then
  out[1] = 0
  return out
end

-- Relative TTLs: "now" is the caller's clock (injected in tests), not the server's.
-- Holds and the record outlive the reservation's expiry with a wide margin:
-- the purge above (run by any later call) is what releases them, and it
-- needs the record to know what to give back.
local keep_ms = 2 * (expire_at - now) + 60000
for i = 1, n do
  local amount = spec[i][5]
  if amount > 0 then
    local held_key = KEYS[2 + 2 * i]
    redis.call('INCRBY', held_key, amount)
    redis.call('PEXPIRE', held_key, keep_ms)
    redis.call('HINCRBY', KEYS[2], held_key, amount)
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], keep_ms)
  redis.call('ZADD', KEYS[1], expire_at, rid)
end
return out
