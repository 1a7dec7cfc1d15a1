-- task_get: a task with what its status depends on (task_view in queue.lua).
-- Queue keys as in queue.lua. ARGV[5] the task id.
-- Returns {wakes, 'ok', view...} or {wakes, 'notask'}.
local view = task_view(ARGV[5])
if not view then return {wakes, 'notask'} end
local reply = {wakes, 'ok'}
for _, field in ipairs(view) do reply[#reply + 1] = field end
return reply
