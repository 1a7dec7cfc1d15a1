-- pop: removes and returns up to `count` of the oldest ready messages; their tasks
-- expire, since no worker can answer them. Queue keys as in queue.lua.
-- ARGV[5] count. Returns {wakes, 'ok', n, message...} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
promote()
local ids = redis.call('ZRANGE', K.ready, 0, tonumber(ARGV[5]) - 1)
local reply = {wakes, 'ok', #ids}
for _, id in ipairs(ids) do
  local attempts = attempts_of(id) + 1
  for _, field in ipairs(message(id, attempts)) do reply[#reply + 1] = field end
  end_task(id, 'expired', attempts)
  remove_message(id)
end
return reply
