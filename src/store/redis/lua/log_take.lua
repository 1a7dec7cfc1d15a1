-- log_take: what a fork copies of its source, read in the step that records the
-- fork's reference, if the source is still as read (so a delete after it leaves
-- a tombstone). Log keys (the source's) as in log.lua. ARGV[5] ver and ARGV[6]
-- last as read, ARGV[7] the reference "<fork name> <token>", ARGV[8] the last
-- whole entry to take, ARGV[9] the bytes to take of the next ('' for none).
-- Returns {wakes, 'ok', id, name, appended at, data, ...} or {wakes, 'changed'}.
if redis.call('EXISTS', S.meta) == 0 or not unchanged(ARGV[5], ARGV[6]) then
  return {wakes, 'changed'}
end
redis.call('SADD', L.forks, ARGV[7])
local upto = tonumber(ARGV[8])
local reply = {wakes, 'ok'}
local function take(id, name, bytes)
  local data = redis.call('HGET', S.ev, id)
  if not data then return end
  if bytes then data = string.sub(data, 1, bytes) end
  reply[#reply + 1] = tonumber(id)
  reply[#reply + 1] = name or redis.call('HGET', S.names, id) or ''
  reply[#reply + 1] = redis.call('ZSCORE', S.times, id) or ''
  reply[#reply + 1] = data
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', S.all, '-inf', upto)) do
  take(id)
end
if ARGV[9] ~= '' then
  -- A part of an entry is no whole seed-004 event: it keeps no name.
  take(tostring(upto + 1), '', tonumber(ARGV[9]))
end
return reply
