-- log_release: drops one fork's reference from its source; a tombstone left with
-- none goes, and its own reference is then its caller's to release. Log keys
-- (the source's) as in log.lua. ARGV[5] the reference "<fork name> <token>".
-- Returns {wakes, 'ok', 'released', its fork source, its token} ('' when no
-- fork) or {wakes, 'ok', 'kept'}.
redis.call('SREM', L.forks, ARGV[5])
if redis.call('EXISTS', L.gone) == 0 or redis.call('SCARD', L.forks) > 0 then
  return {wakes, 'ok', 'kept'}
end
local source = redis.call('HGET', L.gone, 'source') or ''
local token = redis.call('HGET', L.gone, 'token') or ''
redis.call('DEL', L.gone)
wake(wake_key)
return {wakes, 'ok', 'released', source, token}
