-- Revokes every attestation identity of a SPIFFE ID issued before now.
-- KEYS: 1 the revocation of the SPIFFE ID.
-- ARGV: 1 at ms, 2 by, 3 reason, 4 keep until ms.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'at', ARGV[1], 'by', ARGV[2], 'reason', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1
