-- log_delete: removes the stream, if it is still as read. Deleted ('delete')
-- while forks name it, it stays a tombstone holding its own fork reference;
-- expired ('expire') it just goes. Log keys as in log.lua. ARGV[5] ver and
-- ARGV[6] last as read, ARGV[7] 'delete' | 'expire', ARGV[8] when it was last
-- touched as read (a read restarts an idle countdown without a new ver).
-- Returns {wakes, 'ok', 'tombstone'} or {wakes, 'ok', 'removed', its fork
-- source, its token} ('' when no fork), or {wakes, 'changed'}.
if redis.call('EXISTS', S.meta) == 0 or not unchanged(ARGV[5], ARGV[6]) then
  return {wakes, 'changed'}
end
if ARGV[7] == 'expire' then
  local touched = redis.call('HGET', S.meta, 'touched') or redis.call('HGET', S.meta, 'created') or '0'
  if tonumber(touched) ~= tonumber(ARGV[8]) then
    return {wakes, 'changed'}
  end
end
local source = redis.call('HGET', S.meta, 'fork') or ''
local token = redis.call('HGET', S.meta, 'fork_token') or ''
remove_stream()
wake(wake_key)
if ARGV[7] == 'delete' and redis.call('SCARD', L.forks) > 0 then
  redis.call('HSET', L.gone, 'deleted', now)
  if source ~= '' then redis.call('HSET', L.gone, 'source', source, 'token', token) end
  return {wakes, 'ok', 'tombstone'}
end
return {wakes, 'ok', 'removed', source, token}
