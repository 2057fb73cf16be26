#!lua
-- Extends the lease of the slots this replica still holds, and of their reservations, by
-- Redis's own clock.
-- KEYS[2i - 1]: a slot's sorted set; KEYS[2i]: its client's reserved tokens; ARGV[1]: the
-- lease in ms; ARGV[i + 1]: the slot.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 1, #KEYS / 2 do
  redis.call('ZADD', KEYS[2 * i - 1], 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', KEYS[2 * i - 1], 2 * lease)
  redis.call('PEXPIRE', KEYS[2 * i], 2 * lease)
end
return #KEYS / 2
