-- receive: leases up to `count` of the oldest ready messages. Queue keys as in queue.lua.
-- ARGV[5] count, ARGV[6] lease (ms) or '' for the queue's, ARGV[7] the lease token.
-- Returns {wakes, 'ok', n, message..., } with each message flattened as message()
-- gives it, or {wakes, 'ok', 0, ms until something may be ready or -1};
-- {wakes, 'noqueue'} when the queue does not exist.
if not exists() then return {wakes, 'noqueue'} end
local count, token = tonumber(ARGV[5]), ARGV[7]
local lease = tonumber(ARGV[6]) or tonumber(redis.call('HGET', K.cfg, 'lease') or '30000')
promote()
local ids = redis.call('ZRANGE', K.ready, 0, count - 1)
if #ids == 0 then
  local next_at = nil
  for _, key in ipairs({K.delayed, K.leased}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if next_at == nil or at < next_at then next_at = at end
    end
  end
  return {wakes, 'ok', 0, next_at and math.max(next_at - now, 0) or -1}
end
local reply = {wakes, 'ok', #ids}
local until_ms = now + lease
for _, id in ipairs(ids) do
  redis.call('ZREM', K.ready, id)
  local attempts = redis.call('HINCRBY', K.att, id, 1)
  redis.call('HSET', K.tok, id, token)
  redis.call('ZADD', K.leased, until_ms, id)
  for _, field in ipairs(message(id, attempts)) do reply[#reply + 1] = field end
end
return reply
