-- Checks an attestation identity presented at attestation and registers it
-- if the registry has not seen it (revoked or not, so the list shows it), in
-- one step.
-- KEYS: 1 its record, 2 the revocation of its SPIFFE ID, 3 the index.
-- ARGV: 1 serial, 2 SPIFFE ID, 3 NotBefore ms, 4 NotAfter ms,
--       5 issued at ms (if unrecorded), 6 keep the record until ms.
-- Returns {'ok'}, or {'revoked', at ms, by, reason}.
local record = redis.call('HMGET', KEYS[1], 'id', 'at', 'ra', 'rb', 'rr')
if record[3] then
  return {'revoked', record[3], record[4] or '', record[5] or ''}
end
if not record[1] then
  redis.call('HSET', KEYS[1], 'id', ARGV[2], 'nb', ARGV[3], 'na', ARGV[4],
    'at', ARGV[5], 'via', 'offline')
  redis.call('PEXPIREAT', KEYS[1], ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
  -- The index expires with the last record it lists.
  local clock = redis.call('TIME')
  local left = tonumber(ARGV[6]) - (tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
  if redis.call('PTTL', KEYS[3]) < left then
    redis.call('PEXPIREAT', KEYS[3], ARGV[6])
  end
end
local issued = tonumber(record[2] or ARGV[5])
local by_id = redis.call('HMGET', KEYS[2], 'at', 'by', 'reason')
if by_id[1] and issued < tonumber(by_id[1]) then
  return {'revoked', by_id[1], by_id[2] or '', by_id[3] or ''}
end
return {'ok'}
