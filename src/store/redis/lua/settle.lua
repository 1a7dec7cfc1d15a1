-- settle: acks, nacks or extends leased messages by receipt. A receipt holds while
-- its token is on the message: expiry alone does not take it away, only a new lease
-- (a new token), a nack (no token) or deletion. Queue keys as in queue.lua.
-- ARGV[5] 'ack' | 'nack' | 'extend', ARGV[6] the nack's delay or the extension's
-- lease (ms), ARGV[7] a delivery error to keep on a nacked message, or ''; ARGV[8..]
-- pairs of message id and lease token.
-- Returns {wakes, 'ok', 1 or 0 per receipt (applied or stale)} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
local kind, ms, error_text = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local max = max_attempts()
local reply = {wakes, 'ok'}
local nacked = false
for i = 8, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local held = redis.call('HGET', K.tok, id) == token
  local dead = redis.call('ZSCORE', K.dead, id)
  local applied = 0
  if held and kind == 'ack' then
    local attempts = attempts_of(id)
    end_task(id, 'succeeded', attempts)
    remove_message(id)
    applied = 1
  elseif held and not dead and kind == 'nack' then
    for _, key in ipairs({K.ready, K.delayed, K.leased}) do redis.call('ZREM', key, id) end
    redis.call('HDEL', K.tok, id)
    if error_text ~= '' then redis.call('HSET', K.err, id, error_text) end
    local attempts = attempts_of(id)
    if exhausted(attempts, max) then
      bury(id)
      end_task(id, 'failed', attempts)
    elseif ms > 0 then
      redis.call('ZADD', K.delayed, now + ms, id)
    else
      redis.call('ZADD', K.ready, id, id)
    end
    nacked = true
    applied = 1
  elseif held and not dead and kind == 'extend' then
    redis.call('ZREM', K.ready, id)
    redis.call('ZREM', K.delayed, id)
    redis.call('ZADD', K.leased, now + ms, id)
    applied = 1
  end
  reply[#reply + 1] = applied
end
if nacked then wake(qname) end
return reply
