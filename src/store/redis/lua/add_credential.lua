local marker = redis.call('GET', KEYS[1])
if marker ~= ARGV[1] then return 'epoch:' .. (marker or '') end
local record = redis.call('GET', KEYS[2])
if not record then return 'missing' end
if string.sub(record, 1, 1) ~= 'a' then return 'inactive' end
local _, count = string.gsub(record, '\30[xj]', '')
if count >= tonumber(ARGV[3]) then return 'full' end
redis.call('SET', KEYS[2], record .. ARGV[2], 'KEEPTTL')
return 'ok'
