-- Revokes one attestation identity by serial; an unseen serial gets a
-- revoked record of its own, kept as long as such an identity could live.
-- KEYS: 1 its record, 2 the index.
-- ARGV: 1 serial, 2 at ms, 3 by, 4 reason, 5 keep an unseen one until ms.
-- Returns {'revoked', SPIFFE ID}, {'already', SPIFFE ID} or {'unseen', ''}.
local id = redis.call('HGET', KEYS[1], 'id')
if id then
  if redis.call('HEXISTS', KEYS[1], 'ra') == 1 then
    return {'already', id}
  end
  redis.call('HSET', KEYS[1], 'ra', ARGV[2], 'rb', ARGV[3], 'rr', ARGV[4])
  return {'revoked', id}
end
redis.call('HSET', KEYS[1], 'id', '', 'nb', '0', 'na', '0', 'at', ARGV[2],
  'via', 'unseen', 'ra', ARGV[2], 'rb', ARGV[3], 'rr', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
-- The index expires with the last record it lists.
local clock = redis.call('TIME')
local left = tonumber(ARGV[5]) - (tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
if redis.call('PTTL', KEYS[2]) < left then
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
return {'unseen', ''}
