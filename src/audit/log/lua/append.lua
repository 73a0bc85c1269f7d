-- Appends audit events only if the chain's head is still the one the
-- writer chained them from: ARGV[1] the empty chain's head, ARGV[2] the
-- expected head, ARGV[3] the new head, ARGV[4] the number of events, then
-- (entry id, event) pairs, then the events' expiry effects as (op, grant,
-- expiry ms, JSON) quadruples: `+` watches a grant, `-` forgets it.
local head = redis.call('GET', KEYS[1]) or ARGV[1]
if head ~= ARGV[2] then return {0, head} end
local effects = 5 + 2 * tonumber(ARGV[4])
for i = 5, effects - 1, 2 do
  redis.call('XADD', KEYS[2], ARGV[i], 'e', ARGV[i + 1])
end
for i = effects, #ARGV, 4 do
  if ARGV[i] == '+' then
    redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 1])
    redis.call('HSET', KEYS[4], ARGV[i + 1], ARGV[i + 3])
  else
    redis.call('ZREM', KEYS[3], ARGV[i + 1])
    redis.call('HDEL', KEYS[4], ARGV[i + 1])
  end
end
redis.call('SET', KEYS[1], ARGV[3])
return {1, ARGV[3]}
