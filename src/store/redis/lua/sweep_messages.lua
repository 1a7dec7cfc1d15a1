-- sweep_messages: dead-letters expired leases out of attempts (failing their tasks,
-- even when nobody receives) and drops messages past the queue's retention
-- (expiring their tasks). Queue keys as in queue.lua.
-- Returns {wakes, 'ok', messages dropped} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
promote()
local retention = tonumber(redis.call('HGET', K.cfg, 'ret') or '')
local dropped = 0
if retention then
  local old = redis.call('ZRANGEBYSCORE', K.enq, '-inf', now - retention, 'LIMIT', 0, STEP)
  for _, id in ipairs(old) do
    end_task(id, 'expired', attempts_of(id))
    remove_message(id)
  end
  dropped = #old
end
return {wakes, 'ok', dropped}
