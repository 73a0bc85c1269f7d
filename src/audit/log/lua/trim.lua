-- Cuts the audit stream through event ARGV[1] and keeps the checkpoint
-- ARGV[2], unless the trail was already cut as far.
local current = redis.call('GET', KEYS[1])
if current then
  local seq = tonumber(string.match(current, '^(%d+) '))
  if seq and seq >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[1] .. '-1')
return 1
