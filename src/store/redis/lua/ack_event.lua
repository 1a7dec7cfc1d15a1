-- ack_event: moves the consumer's offset for the event's name up to the event,
-- never back. Stream keys as in stream.lua. ARGV[5] consumer, ARGV[6] event id.
-- Returns {wakes, 'ok'}, {wakes, 'noevent'} or {wakes, 'nostream'}.
if not exists() then return {wakes, 'nostream'} end
local id = tonumber(ARGV[6])
local name = redis.call('HGET', S.names, ARGV[6])
if not name then return {wakes, 'noevent'} end
local field = ARGV[5] .. '\0' .. name
if tonumber(redis.call('HGET', S.offsets, field) or '0') < id then
  redis.call('HSET', S.offsets, field, ARGV[6])
end
return {wakes, 'ok'}
