-- Records an attestation identity the server has just issued.
-- KEYS: 1 its record, 2 the index.
-- ARGV: 1 serial, 2 SPIFFE ID, 3 NotBefore ms, 4 NotAfter ms, 5 issued at
--       ms, 6 how issued, 7 keep until ms, 8 now ms.
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'nb', ARGV[3], 'na', ARGV[4],
  'at', ARGV[5], 'via', ARGV[6])
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[8])
-- The index expires with the last record it lists.
local clock = redis.call('TIME')
local left = tonumber(ARGV[7]) - (tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
if redis.call('PTTL', KEYS[2]) < left then
  redis.call('PEXPIREAT', KEYS[2], ARGV[7])
end
return 1
