-- sweep_idempotency: forgets idempotency keys past their window. Queue keys as in
-- queue.lua (the queue may be gone). Returns {wakes, 'ok', keys dropped}.
local old = redis.call('ZRANGEBYSCORE', K.idemx, '-inf', now, 'LIMIT', 0, STEP)
for _, key in ipairs(old) do
  redis.call('HDEL', K.idem, key)
  redis.call('ZREM', K.idemx, key)
end
return {wakes, 'ok', #old}
