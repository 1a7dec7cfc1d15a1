-- dead: up to `limit` dead letters, oldest first (expired leases out of attempts are
-- moved first). Queue keys as in queue.lua. ARGV[5] limit.
-- Returns {wakes, 'ok', n, message...} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
promote()
local ids = redis.call('ZRANGE', K.dead, 0, tonumber(ARGV[5]) - 1)
local reply = {wakes, 'ok', #ids}
for _, id in ipairs(ids) do
  for _, field in ipairs(message(id, attempts_of(id))) do reply[#reply + 1] = field end
end
return reply
