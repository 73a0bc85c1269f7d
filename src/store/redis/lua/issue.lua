-- A grant is one string: its state character, then fields separated by
-- \x1f, then sections each opened by \x1e and a tag: `x`/`j` + the random
-- part of a credential id + `:` + expiry (+ `:r` when revoked), or `e` +
-- why the grant ended. See `encode_grant`.
local marker = redis.call('GET', KEYS[1])
if not marker then return 'missing' end
if marker ~= ARGV[1] then return 'epoch:' .. marker end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'conflict' end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
-- The subject's unexpired grants are capped; nothing is written past it.
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[6]) then return 'full' end
redis.call('SET', KEYS[2], ARGV[5], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
-- The index lives as long as its last grant; GT fails only on a new key.
if redis.call('PEXPIREAT', KEYS[3], ARGV[3], 'GT') == 0 and redis.call('PTTL', KEYS[3]) == -1 then
  redis.call('PEXPIREAT', KEYS[3], ARGV[3])
end
return 'ok'
