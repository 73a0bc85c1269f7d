-- Watched grants due by ARGV[1] (ms), at most ARGV[2]: their JSON.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for i, grant in ipairs(due) do
  out[i] = redis.call('HGET', KEYS[2], grant) or grant
end
return out
