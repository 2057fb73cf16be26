#!lua
-- Checks and takes every limit of one client at once, by Redis's own clock, so that replicas
-- whose clocks differ still agree. A refusal takes nothing. The shebang makes Redis refuse
-- the whole script, before it runs, when it is out of memory.
-- KEYS[1]: the rate's theoretical arrival time (GCRA); KEYS[2]: the in-flight slots, a sorted
-- set scored by expiry, each named `replica-slot/reserved`; KEYS[3]: the tokens charged in the
-- budget's window; KEYS[4]: the tokens the slots reserve.
-- ARGV: per_minute (0: none), burst, max_in_flight (0: none), budget (0: none), slot ('': none),
-- lease ms, the tokens this request reserves.
-- Returns {0, 0} admitted; {1, 0} in flight; {2, 0} budget; {3, seconds} rate.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per_minute = tonumber(ARGV[1])
local max_in_flight = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local slot = ARGV[5]
local lease = tonumber(ARGV[6])
local reserve = tonumber(ARGV[7])

if slot ~= '' then
  -- The slots of replicas that died: their leases ended, and their reservations with them.
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  if #expired > 0 then
    local freed = 0
    for _, name in ipairs(expired) do
      freed = freed + tonumber(string.match(name, '/(%d+)$') or '0')
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    if freed > 0 and redis.call('DECRBY', KEYS[4], freed) <= 0 then
      redis.call('DEL', KEYS[4])
    end
  end
  if max_in_flight > 0 and redis.call('ZCARD', KEYS[2]) >= max_in_flight then
    return {1, 0}
  end
end
if budget > 0 then
  local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  local reserved = math.max(0, tonumber(redis.call('GET', KEYS[4]) or '0'))
  if spent + reserved >= budget then
    return {2, 0}
  end
end
if per_minute > 0 then
  local interval = 60000 / per_minute
  local tolerance = interval * (tonumber(ARGV[2]) - 1)
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then
    tat = now
  end
  if tat - now > tolerance then
    return {3, math.max(1, math.ceil((tat - tolerance - now) / 1000))}
  end
  local next_tat = tat + interval
  redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now) + 1000)
end
if slot ~= '' then
  redis.call('ZADD', KEYS[2], now + lease, slot)
  redis.call('PEXPIRE', KEYS[2], 2 * lease)
  if reserve > 0 then
    redis.call('INCRBY', KEYS[4], reserve)
    redis.call('PEXPIRE', KEYS[4], 2 * lease)
  end
end
return {0, 0}
