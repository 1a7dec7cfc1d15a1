-- task_finish: finishes (or retries) a task if the receipt holds its message's lease,
-- settling the message in the same step. Queue keys as in queue.lua.
-- ARGV[5] task id, ARGV[6] message id, ARGV[7] lease token, ARGV[8] 'succeeded' |
-- 'failed' | 'retry', ARGV[9] the result or error (JSON), ARGV[10] upstream status
-- or '', ARGV[11] the retry's delay (ms).
-- Returns {wakes, 'ok', view...} (the task after, as task_get), or {wakes, code}
-- with code 'notask', 'wrong' (another message's receipt) or 'stale'.
local tid, id, token, kind = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local raw = redis.call('HGET', K.tasks, tid)
if not raw then return {wakes, 'notask'} end
local t = cjson.decode(raw)
if t.state ~= 'open' and t.finished_at and t.finished_at + t.keep <= now then
  return {wakes, 'notask'}
end
if string.format('%.0f', t.msg or -1) ~= id then return {wakes, 'wrong'} end
if t.state ~= 'open' or not exists() then return {wakes, 'stale'} end
-- The receipt must hold a lease the message still counts: not a dead letter, and not
-- a lease that ended with no attempts left (the task reads as failed then).
local max = max_attempts()
local attempts = attempts_of(id)
local lease_end = tonumber(redis.call('ZSCORE', K.leased, id) or '')
local held = redis.call('HGET', K.tok, id) == token
  and not redis.call('ZSCORE', K.dead, id)
  and not (lease_end and lease_end <= now and exhausted(attempts, max))
if not held then return {wakes, 'stale'} end
if kind == 'retry' then
  t.error = ARGV[9]
  redis.call('HSET', K.tasks, tid, cjson.encode(t))
  for _, key in ipairs({K.ready, K.delayed, K.leased}) do redis.call('ZREM', key, id) end
  redis.call('HDEL', K.tok, id)
  local delay = tonumber(ARGV[11])
  if exhausted(attempts, max) then
    -- Out of attempts: failed now, though its dead letter stays for a redrive.
    bury(id)
    end_task(id, 'failed', attempts)
  else
    if delay > 0 then
      redis.call('ZADD', K.delayed, now + delay, id)
    else
      redis.call('ZADD', K.ready, id, id)
    end
    wake(qname)
  end
else
  if kind == 'succeeded' then t.result = ARGV[9] else t.error = ARGV[9] end
  if ARGV[10] ~= '' then t.upstream = tonumber(ARGV[10]) end
  t.state, t.attempts, t.finished_at = kind, attempts, now
  redis.call('HSET', K.tasks, tid, cjson.encode(t))
  redis.call('SREM', K.topen, tid)
  redis.call('ZADD', K['done_' .. kind], now + t.keep, tid)
  remove_message(id)
  wake('task/' .. tid)
end
local reply = {wakes, 'ok'}
for _, field in ipairs(task_view(tid)) do reply[#reply + 1] = field end
return reply
