-- sweep_events: drops events past the stream's retention, by count and by age.
-- Stream keys as in stream.lua. Returns {wakes, 'ok', events dropped}.
if not exists() then return {wakes, 'ok', 0} end
local max_age = tonumber(redis.call('HGET', S.meta, 'max_age') or '')
local max_events = tonumber(redis.call('HGET', S.meta, 'max_events') or '')
local last = tonumber(redis.call('HGET', S.meta, 'last') or '0')
local old = {}
if max_events then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', S.all, '-inf', last - max_events, 'LIMIT', 0, STEP)) do
    old[#old + 1] = id
  end
end
if max_age then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', S.times, '-inf', now - max_age, 'LIMIT', 0, STEP)) do
    old[#old + 1] = id
  end
end
local dropped = 0
for _, id in ipairs(old) do
  local name = redis.call('HGET', S.names, id)
  if name then
    redis.call('ZREM', by_name(name), id)
    redis.call('HDEL', S.names, id)
    redis.call('HDEL', S.ev, id)
    redis.call('ZREM', S.all, id)
    redis.call('ZREM', S.times, id)
    dropped = dropped + 1
  end
end
return {wakes, 'ok', dropped}
