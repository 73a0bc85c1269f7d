-- A pending grant changes only if nothing else changed it meanwhile.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if redis.call('PEXPIREAT', KEYS[2], ARGV[3], 'GT') == 0 and redis.call('PTTL', KEYS[2]) == -1 then
  redis.call('PEXPIREAT', KEYS[2], ARGV[3])
end
return 1
