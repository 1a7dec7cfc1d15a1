-- append: stores an event if `producer` owns the stream, creating it (owned by
-- `producer`) if needed. Stream keys as in stream.lua, KEYS[7] the event name's index.
-- ARGV[5] producer, ARGV[6] event name, ARGV[7] body.
-- Returns {wakes, 'ok', id, 1 if the stream was created else 0}, {wakes, 'locked'},
-- or {wakes, 'closed'}: domain::streams::seed_append_verdict's rule, in this script
-- because the decision and the write must be one step.
local producer, name, body = ARGV[5], ARGV[6], ARGV[7]
local created = 0
-- A tombstone (lua/log.lua's gone, in this stream's slot) holds the name.
if redis.call('EXISTS', base .. ':gone') == 1 then
  return {wakes, 'closed'}
end
if not exists() then
  redis.call('HSET', S.meta, 'owner', producer, 'last', 0, 'created', now)
  created = 1
else
  local meta = redis.call('HMGET', S.meta, 'owner', 'closed', 'ctype')
  local owner = meta[1] or ''
  if owner ~= '' and owner ~= producer then
    return {wakes, 'locked'}
  end
  -- domain::log::is_json: the type without its parameters, trimmed, in lower case.
  local essence = (string.gsub(meta[3] or 'application/json', ';.*$', ''))
  local ctype = string.lower(string.match(essence, '^%s*(.-)%s*$'))
  if meta[2] == '1' or ctype ~= 'application/json' then
    return {wakes, 'closed'}
  end
  if owner == '' then
    redis.call('HSET', S.meta, 'owner', producer)
  end
end
local id = redis.call('HINCRBY', S.meta, 'last', 1)
-- A write restarts an idle countdown, as the protocol's own appends do.
redis.call('HSET', S.meta, 'touched', now)
redis.call('HSET', S.ev, id, body)
redis.call('HSET', S.names, id, name)
redis.call('ZADD', S.all, id, id)
redis.call('ZADD', S.times, now, id)
redis.call('ZADD', S.byname, id, id)
wake(wake_key)
return {wakes, 'ok', id, created}
