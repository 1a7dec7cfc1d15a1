-- info: a queue's settings and counts, read only. Queue keys as in queue.lua.
-- Returns {wakes, 'ok', settings (HGETALL), ready, leased, delayed, dead,
-- succeeded, failed, expired tasks, open task groups} or {wakes, 'noqueue'}; each
-- open task group is "state:lease running:out of attempts" followed by its count.
if not exists() then return {wakes, 'noqueue'} end
local max = max_attempts()
local ready = redis.call('ZCARD', K.ready) + redis.call('ZCOUNT', K.delayed, '-inf', now)
local delayed = redis.call('ZCOUNT', K.delayed, '(' .. now, '+inf')
local leased = redis.call('ZCOUNT', K.leased, '(' .. now, '+inf')
local dead = redis.call('ZCARD', K.dead)
-- Expired leases are ready again, or dead letters when out of attempts, though not yet moved.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leased, '-inf', now, 'LIMIT', 0, STEP)) do
  if exhausted(attempts_of(id), max) then dead = dead + 1 else ready = ready + 1 end
end
local groups = {}
for _, tid in ipairs(redis.call('SMEMBERS', K.topen)) do
  local view = task_view(tid)
  if view then
    local group = view[2] .. ':' .. view[3] .. ':' .. view[4]
    groups[group] = (groups[group] or 0) + 1
  end
end
local reply = {wakes, 'ok', redis.call('HGETALL', K.cfg), ready, leased, delayed, dead}
-- Finished tasks count until their time is up, swept or not.
for _, key in ipairs({K.done_succeeded, K.done_failed, K.done_expired}) do
  reply[#reply + 1] = redis.call('ZCOUNT', key, '(' .. now, '+inf')
end
for group, n in pairs(groups) do
  reply[#reply + 1] = group
  reply[#reply + 1] = n
end
return reply
