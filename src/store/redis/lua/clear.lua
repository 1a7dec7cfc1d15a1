-- clear: deletes every message of the queue (its unfinished tasks expire); with
-- ARGV[5] = 'drop', the queue and its idempotency keys too. Tasks stay readable,
-- as expired, until their time is up. Queue keys as in queue.lua.
-- Returns {wakes, 'ok', messages removed} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
local removed = redis.call('ZCARD', K.enq)
for _, tid in ipairs(redis.call('SMEMBERS', K.topen)) do
  local raw = redis.call('HGET', K.tasks, tid)
  if raw then
    local t = cjson.decode(raw)
    local id = t.msg and string.format('%.0f', t.msg)
    if id then end_task(id, 'expired', attempts_of(id)) end
  end
end
-- UNLINK, not DEL: a big queue's memory is freed off Redis's main thread, which
-- DEL would hold for seconds (millions of messages), stalling every client.
for _, key in ipairs({K.body, K.att, K.enq, K.tok, K.task, K.err, K.ready, K.delayed,
    K.leased, K.dead, K.grp, K.meta, K.first, K.gidx}) do
  redis.call('UNLINK', key)
end
if ARGV[5] == 'drop' then
  redis.call('UNLINK', K.cfg, K.idem, K.idemx)
end
-- Waiters wake to find the queue gone (404) instead of waiting out their time.
wake(qname)
return {wakes, 'ok', removed}
