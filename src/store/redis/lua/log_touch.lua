-- log_touch: restarts an idle countdown, if the stream is still the one read.
-- Log keys as in log.lua. ARGV[5] its ver as read. Returns {wakes, 'ok'}.
if redis.call('EXISTS', S.meta) == 1 and (redis.call('HGET', S.meta, 'ver') or '') == ARGV[5] then
  redis.call('HSET', S.meta, 'touched', now)
end
return {wakes, 'ok'}
