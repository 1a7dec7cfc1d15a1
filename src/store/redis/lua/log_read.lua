-- log_read: the state and the entries after a position, oldest first, up to a
-- byte budget (at least one entry, if any) and a number of entries. Log keys as
-- in log.lua. ARGV[5] the position to read after, ARGV[6] most bytes, ARGV[7]
-- most entries.
-- Returns state_reply() then id, data, id, data, ...
local reply = state_reply()
if redis.call('EXISTS', S.meta) == 0 then return reply end
local after, budget, most = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local bytes, count = 0, 0
local page = math.min(most, 100)
while count < most do
  local ids = redis.call('ZRANGEBYSCORE', S.all, '(' .. after, '+inf', 'LIMIT', 0, page)
  if #ids == 0 then return reply end
  for _, id in ipairs(ids) do
    local data = redis.call('HGET', S.ev, id)
    if data then
      if count > 0 and bytes + #data > budget then return reply end
      bytes = bytes + #data
      count = count + 1
      reply[#reply + 1] = tonumber(id)
      reply[#reply + 1] = data
      if count >= most then return reply end
    end
    after = id
  end
end
return reply
