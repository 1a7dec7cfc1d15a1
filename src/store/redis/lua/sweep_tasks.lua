-- sweep_tasks: drops finished tasks past their time. Queue keys as in queue.lua
-- (the queue may be gone). Returns {wakes, 'ok', task id...} of the dropped tasks.
local reply = {wakes, 'ok'}
for _, key in ipairs({K.done_succeeded, K.done_failed, K.done_expired}) do
  for _, tid in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now, 'LIMIT', 0, STEP)) do
    redis.call('HDEL', K.tasks, tid)
    redis.call('ZREM', key, tid)
    reply[#reply + 1] = tid
  end
end
return reply
