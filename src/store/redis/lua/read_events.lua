-- read_events: up to `limit` events of one name, oldest first, after the consumer's
-- offset or after a given id. Stream keys as in stream.lua, KEYS[7] the name's index.
-- ARGV[5] consumer, ARGV[6] event name, ARGV[7] 'offset' | 'after', ARGV[8] the id
-- to read after, ARGV[9] limit.
-- Returns {wakes, 'ok', id, body, id, body, ...} or {wakes, 'nostream'}.
if not exists() then return {wakes, 'nostream'} end
local after = tonumber(ARGV[8])
if ARGV[7] == 'offset' then
  after = tonumber(redis.call('HGET', S.offsets, ARGV[5] .. '\0' .. ARGV[6]) or '0')
end
local ids = redis.call('ZRANGEBYSCORE', S.byname, '(' .. after, '+inf', 'LIMIT', 0, tonumber(ARGV[9]))
local reply = {wakes, 'ok'}
for _, id in ipairs(ids) do
  local body = redis.call('HGET', S.ev, id)
  if body then
    reply[#reply + 1] = tonumber(id)
    reply[#reply + 1] = body
  end
end
return reply
