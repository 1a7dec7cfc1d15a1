-- receive: leases up to `count` of the oldest ready messages (on a grouped queue,
-- only those the group rule lets out: see may_hand_out in queue.lua). Queue keys
-- as in queue.lua. ARGV[5] count, ARGV[6] lease (ms) or '' for the queue's,
-- ARGV[7] the lease token.
-- Returns {wakes, 'ok', wait, n, message...} with each message flattened as
-- message() gives it, or {wakes, 'ok', wait, 0, ms until something may be ready or
-- -1}, wait being the queue's wait setting (ms); {wakes, 'noqueue'} when the queue
-- does not exist.
if not exists() then return {wakes, 'noqueue'} end
local count, token = tonumber(ARGV[5]), ARGV[7]
local lease = tonumber(ARGV[6]) or tonumber(redis.call('HGET', K.cfg, 'lease') or '30000')
local wait = tonumber(options().wait_ms) or 0
promote()
local ids = ready_ids(count)
if #ids == 0 then
  local next_at = next_ready_at()
  return {wakes, 'ok', wait, 0, next_at and math.max(next_at - now, 0) or -1}
end
local reply = {wakes, 'ok', wait, #ids}
local until_ms = now + lease
for _, id in ipairs(ids) do
  redis.call('ZREM', K.ready, id)
  local attempts = redis.call('HINCRBY', K.att, id, 1)
  redis.call('HSET', K.tok, id, token)
  redis.call('ZADD', K.leased, until_ms, id)
  redis.call('HSETNX', K.first, id, now)
  for _, field in ipairs(message(id, attempts)) do reply[#reply + 1] = field end
end
return reply
