-- Keys of the subject's grants are built here from the prefix in ARGV[1];
-- they share the sorted set's hash tag, so they are in its slot.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')
local ended = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local record = redis.call('GET', key)
  local state = record and string.sub(record, 1, 1)
  if state == 'a' or state == 'p' then
    local task = string.match(record, '^[ap]\31([^\31]*)\31')
    if ARGV[5] == '' or task == ARGV[5] then
      redis.call('SET', key, ARGV[3] .. string.sub(record, 2) .. '\30e' .. ARGV[4], 'KEEPTTL')
      ended[#ended + 1] = id
    end
  end
end
return ended
