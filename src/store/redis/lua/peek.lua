-- peek: up to `limit` of the oldest messages a receive would take, read only: ready
-- ones, delayed ones whose time has come, and expired leases with attempts left. On
-- a grouped queue the ready and delayed ones are only those the group rule lets
-- out (may_hand_out in queue.lua); an expired lease is let out as the SQL stores
-- let it, having been handed out as its group's head.
-- Queue keys as in queue.lua. ARGV[5] limit.
-- Returns {wakes, 'ok', n, message...} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
local limit = tonumber(ARGV[5])
local max = max_attempts()
local group_rule = grouped()
local heads = {}
local candidates = {}
for _, id in ipairs(ready_ids(limit)) do
  candidates[#candidates + 1] = tonumber(id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, STEP)) do
  if not group_rule or may_hand_out(id, heads) then candidates[#candidates + 1] = tonumber(id) end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leased, '-inf', now, 'LIMIT', 0, STEP)) do
  if not exhausted(attempts_of(id), max) then candidates[#candidates + 1] = tonumber(id) end
end
table.sort(candidates)
local reply = {wakes, 'ok', math.min(#candidates, limit)}
for i = 1, math.min(#candidates, limit) do
  local id = tostring(candidates[i])
  for _, field in ipairs(message(id, attempts_of(id))) do reply[#reply + 1] = field end
end
return reply
