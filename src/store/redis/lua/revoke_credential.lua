local record = redis.call('GET', KEYS[1])
if not record then return 0 end
local _, last = string.find(record, ARGV[1], 1, true)
if not last then return 0 end
local expiry, flag = string.match(record, '^(%d+)(:?r?)', last + 1)
if not expiry or tonumber(expiry) <= tonumber(ARGV[2]) then return 0 end
if flag == ':r' then return 2 end
local at = last + string.len(expiry)
redis.call('SET', KEYS[1], string.sub(record, 1, at) .. ':r' .. string.sub(record, at + 1), 'KEEPTTL')
return 1
