-- Active and pending grants can be ended.
local record = redis.call('GET', KEYS[1])
local state = record and string.sub(record, 1, 1)
if state == 'a' or state == 'p' then
  redis.call('SET', KEYS[1], ARGV[1] .. string.sub(record, 2) .. '\30e' .. ARGV[2], 'KEEPTTL')
  return 1
end
return 0
