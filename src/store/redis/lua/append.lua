-- append: stores an event if `producer` owns the stream, creating it (owned by
-- `producer`) if needed. Stream keys as in stream.lua, KEYS[7] the event name's index.
-- ARGV[5] producer, ARGV[6] event name, ARGV[7] body.
-- Returns {wakes, 'ok', id, 1 if the stream was created else 0} or {wakes, 'locked'}.
local producer, name, body = ARGV[5], ARGV[6], ARGV[7]
local created = 0
if not exists() then
  redis.call('HSET', S.meta, 'owner', producer, 'last', 0, 'created', now)
  created = 1
elseif redis.call('HGET', S.meta, 'owner') ~= producer then
  return {wakes, 'locked'}
end
local id = redis.call('HINCRBY', S.meta, 'last', 1)
redis.call('HSET', S.ev, id, body)
redis.call('HSET', S.names, id, name)
redis.call('ZADD', S.all, id, id)
redis.call('ZADD', S.times, now, id)
redis.call('ZADD', S.byname, id, id)
wake(wake_key)
return {wakes, 'ok', id, created}
