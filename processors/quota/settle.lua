-- Settle a batch of usage events, exactly once, atomically with the
-- processor's position.
--
-- KEYS[1] reservation expiry index   KEYS[2] position (max stream seq applied)
-- KEYS[3] processed event ids (zset: id -> stream seq)
-- KEYS[4] pending alerts (hash: alert id -> JSON), published after this call
-- ARGV[1] reservation key prefix  ARGV[2] how many seqs of ids to keep
-- ARGV[3] the batch, JSON: [{id, seq, rid, ops: [{k, r, b, n, a, x, ak, l, t, m}]}]
--   k spent key, r rolling (0/1), b bucket, n buckets, a amount, x time to live (ms, from the event's time),
--   ak alert marker key, l limit, t [[fraction, absolute], ...], m alert metadata
--
-- Returns {applied, duplicates, alerts}, or {-1, i} without writing anything
-- when event i (1-based) carries an amount or a time to live Valkey cannot
-- count with (not an integer, negative, beyond 2^53): a script that fails
-- half-way keeps what it wrote, and a retry would count it twice.

local batch = cjson.decode(ARGV[3])
local LIMIT = 9007199254740992  -- 2^53: the integers a Lua number holds exactly
local function countable(v, lo)
  return type(v) == 'number' and v == math.floor(v) and v >= lo and v < LIMIT
end
for i, ev in ipairs(batch) do
  for _, op in ipairs(ev.ops) do
    if not (countable(op.a, 0) and countable(op.x, 1) and countable(op.b, 0) and countable(op.n, 0)) then
      return {-1, i}
    end
  end
end

local pos = tonumber(redis.call('GET', KEYS[2])) or 0
local applied, dups, alerts = 0, 0, 0
local touched = {}

for _, ev in ipairs(batch) do
  if redis.call('ZSCORE', KEYS[3], ev.id) then
    dups = dups + 1
  else
    -- The reservation this usage settles: give back every hold.
    if ev.rid ~= '' then
      local rk = ARGV[1] .. ev.rid
      local rec = redis.call('HGETALL', rk)
      for j = 1, #rec, 2 do
        if redis.call('DECRBY', rec[j], rec[j + 1]) <= 0 then redis.call('DEL', rec[j]) end
      end
      if #rec > 0 then
        redis.call('DEL', rk)
        redis.call('ZREM', KEYS[1], ev.rid)
      end
    end
    for _, op in ipairs(ev.ops) do
      local v
      if op.r == 1 then
        local lo
        v, lo = rolling_advance(op.k, op.b, op.n)
        if op.b >= lo and op.a ~= 0 then
          redis.call('HINCRBY', op.k, op.b, op.a)
          v = redis.call('HINCRBY', op.k, 'sum', op.a)
        end
      else
        v = redis.call('INCRBY', op.k, op.a)
      end
      -- One TTL refresh per key per batch is enough.
      if not touched[op.k] then
        redis.call('PEXPIRE', op.k, op.x)
        touched[op.k] = true
      end
      for _, th in ipairs(op.t) do
        if v >= th[2] and redis.call('HSETNX', op.ak, tostring(th[1]), ev.id) == 1 then
          redis.call('PEXPIRE', op.ak, op.x)
          local m = op.m
          m.threshold = th[1]
          m.spent_raw = v
          m.request_id = ev.rid
          redis.call('HSET', KEYS[4], op.ak .. '|' .. tostring(th[1]), cjson.encode(m))
          alerts = alerts + 1
        end
      end
    end
    redis.call('ZADD', KEYS[3], ev.seq, ev.id)
    applied = applied + 1
  end
  if ev.seq > pos then pos = ev.seq end
end

redis.call('SET', KEYS[2], pos)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', pos - tonumber(ARGV[2]))
return {applied, dups, alerts}
