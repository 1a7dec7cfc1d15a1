-- push: appends messages, creating the queue with the defaults if needed; with a
-- task, the first message carries it. Queue keys as in queue.lua.
-- ARGV[5] delay (ms) or '' for the queue's delay setting, ARGV[6] idempotency key
-- or '', ARGV[7] task id or '', ARGV[8] the task's JSON (without its message id) or
-- '', ARGV[9..14] defaults: lease, max, ret or '', idem, delivery or '', options
-- JSON or ''; ARGV[15] the messages' shape ('p' or 'x', see add_pushed in
-- queue.lua); ARGV[16..] the messages.
-- Returns {wakes, 'new', created, id...} or {wakes, 'dup', created, id, task id or ''}.
local key, tid, task_json, shape = ARGV[6], ARGV[7], ARGV[8], ARGV[15]
local created = create_queue(9)
-- Read after the queue may have been created by this push, so its delay is the
-- defaults'; unreadable options fail the push before it writes, as on SQL.
options()
local delay = push_delay(ARGV[5])
if key ~= '' then
  local expires = tonumber(redis.call('ZSCORE', K.idemx, key) or '0')
  if expires > now then
    local seen = redis.call('HGET', K.idem, key) or ''
    local id, seen_task = string.match(seen, '^(%d+)|(.*)$')
    if id then return {wakes, 'dup', created, tonumber(id), seen_task} end
  end
end
local ids = {wakes, 'new', created}
local n = (#ARGV - 15) / width(shape)
if n >= 1 then
  local batch = new_messages()
  add_pushed(batch, 16, n, shape, delay, next_ids(n), ids)
  batch.store()
end
local first = ids[4]
if tid ~= '' and first then
  local t = cjson.decode(task_json)
  t.msg, t.state, t.created_at = first, 'open', now
  redis.call('HSET', K.task, first, tid)
  redis.call('HSET', K.tasks, tid, cjson.encode(t))
  redis.call('SADD', K.topen, tid)
end
if key ~= '' and first then
  local window = tonumber(redis.call('HGET', K.cfg, 'idem') or '0')
  redis.call('HSET', K.idem, key, first .. '|' .. tid)
  redis.call('ZADD', K.idemx, now + window, key)
end
-- Delayed pushes wake waiters too, so they re-arm their timers for the new message.
wake(qname)
return ids
