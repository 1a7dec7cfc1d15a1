-- stream_info: owner, retention, extent and (with ARGV[5] = 'consumers') each
-- committed offset with its lag. Stream keys as in stream.lua.
-- Returns {wakes, 'ok', meta (HGETALL), length, first id or -1, last id or -1,
-- consumer, event name, offset, lag, ...} or {wakes, 'nostream'}.
if not exists() then return {wakes, 'nostream'} end
local first = redis.call('ZRANGE', S.all, 0, 0)
local last = redis.call('ZRANGE', S.all, -1, -1)
local reply = {
  wakes, 'ok', redis.call('HGETALL', S.meta), redis.call('ZCARD', S.all),
  tonumber(first[1] or '-1'), tonumber(last[1] or '-1'),
}
if ARGV[5] == 'consumers' then
  local offsets = redis.call('HGETALL', S.offsets)
  for i = 1, #offsets, 2 do
    local sep = string.find(offsets[i], '\0', 1, true)
    if sep then
      local consumer, name = string.sub(offsets[i], 1, sep - 1), string.sub(offsets[i], sep + 1)
      reply[#reply + 1] = consumer
      reply[#reply + 1] = name
      reply[#reply + 1] = tonumber(offsets[i + 1])
      reply[#reply + 1] = redis.call('ZCOUNT', by_name(name), '(' .. offsets[i + 1], '+inf')
    end
  end
end
return reply
