#!lua
-- Settles one client's finished exchanges of one batch, once: gives back their in-flight
-- slots with the tokens those reserved, and adds the tokens they cost, in one step, so that an
-- exchange is never free nor counted twice in between. A batch numbered at or below the last
-- one this replica applied for the client is one Redis already applied (its answer was lost
-- or late): nothing is done again. The shebang makes Redis refuse the whole script, before it
-- runs, when it is out of memory.
-- KEYS[1]: the last batch this replica applied for the client; KEYS[2]: the in-flight slots;
-- KEYS[3]: the tokens reserved by the slots; KEYS[4..]: a budget's count for each charge.
-- ARGV[1]: the batch's number; ARGV[2]: seconds KEYS[1] is kept; ARGV[3]: n, the slots given
-- back, then n slot names (`replica-slot/reserved`); then, for each of KEYS[4..], the tokens
-- and the Unix second at which the count expires.
-- Returns {1, rejected}: applied now, with the charges Redis rejected (not integers, or out
-- of range); {0, 0}: applied before.
if tonumber(ARGV[1]) <= tonumber(redis.call('GET', KEYS[1]) or '0') then
  return {0, 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local n = tonumber(ARGV[3])
local released = 0
for i = 1, n do
  local slot = ARGV[3 + i]
  if redis.call('ZREM', KEYS[2], slot) == 1 then
    released = released + tonumber(string.match(slot, '/(%d+)$') or '0')
  end
end
if released > 0 and redis.call('DECRBY', KEYS[3], released) <= 0 then
  redis.call('DEL', KEYS[3])
end
local rejected = 0
local at = 4 + n
for k = 4, #KEYS do
  local added = redis.pcall('INCRBY', KEYS[k], ARGV[at])
  if type(added) == 'table' and added.err then
    if string.find(added.err, 'overflow', 1, true) then
      -- The count is as high as Redis holds: the budget is spent.
      redis.call('SET', KEYS[k], '9223372036854775807')
    else
      rejected = rejected + 1
    end
  end
  redis.call('EXPIREAT', KEYS[k], ARGV[at + 1])
  at = at + 2
end
return {1, rejected}
