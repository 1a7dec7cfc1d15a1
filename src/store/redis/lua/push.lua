-- push: appends messages, creating the queue with the defaults if needed; with a
-- task, the first message carries it. Queue keys as in queue.lua.
-- ARGV[5] delay (ms), ARGV[6] idempotency key or '', ARGV[7] task id or '',
-- ARGV[8] the task's JSON (without its message id) or '', ARGV[9..13] defaults:
-- lease, max, ret or '', idem, delivery or ''; ARGV[14..] the bodies.
-- Returns {wakes, 'new', created, id...} or {wakes, 'dup', created, id, task id or ''}.
local delay, key, tid, task_json = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local created = create_queue(9)
if key ~= '' then
  local expires = tonumber(redis.call('ZSCORE', K.idemx, key) or '0')
  if expires > now then
    local seen = redis.call('HGET', K.idem, key) or ''
    local id, seen_task = string.match(seen, '^(%d+)|(.*)$')
    if id then return {wakes, 'dup', created, tonumber(id), seen_task} end
  end
end
local ids = {wakes, 'new', created}
if #ARGV >= 14 then
  local id, batch = next_ids(#ARGV - 13), new_messages()
  for i = 14, #ARGV do
    batch.add(id, ARGV[i], delay)
    ids[#ids + 1] = id
    id = id + 1
  end
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
