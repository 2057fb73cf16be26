-- Extends the lease of the slots this replica still holds, by Redis's own clock.
-- KEYS[i]: a slot's sorted set; ARGV[1]: the lease in ms; ARGV[i + 1]: the slot.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, 2 * lease)
end
return #KEYS
