-- pop: removes and returns up to `count` of the oldest ready messages (on a grouped
-- queue, only those the group rule lets out, chosen before any is removed, so one
-- pop takes at most one message per group); their tasks expire, since no worker
-- can answer them. Queue keys as in queue.lua.
-- ARGV[5] count. Returns {wakes, 'ok', n, message...} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
options()
promote()
local ids = ready_ids(tonumber(ARGV[5]))
local reply = {wakes, 'ok', #ids}
for _, id in ipairs(ids) do
  local attempts = attempts_of(id) + 1
  for _, field in ipairs(message(id, attempts)) do reply[#reply + 1] = field end
  end_task(id, 'expired', attempts)
  remove_message(id)
end
return reply
