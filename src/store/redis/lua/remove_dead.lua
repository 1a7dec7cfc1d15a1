-- remove_dead: deletes those of the given messages that are dead letters of this
-- queue (moved to its dead-letter queue by the caller); others stay as they are.
-- Queue keys as in queue.lua. ARGV[5..] message ids.
-- Returns {wakes, 'ok', how many went} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
local removed = 0
for i = 5, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', K.dead, id) then
    remove_message(id)
    removed = removed + 1
  end
end
return {wakes, 'ok', removed}
