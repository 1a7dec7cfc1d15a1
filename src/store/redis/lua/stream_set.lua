-- stream_set: changes an existing stream's owner or retention. Stream keys as in
-- stream.lua. ARGV[5..] pairs of field and value ('' removes the field).
-- Returns {wakes, 'ok'} or {wakes, 'nostream'}.
if not exists() then return {wakes, 'nostream'} end
for i = 5, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', S.meta, ARGV[i])
  else
    redis.call('HSET', S.meta, ARGV[i], ARGV[i + 1])
  end
end
return {wakes, 'ok'}
