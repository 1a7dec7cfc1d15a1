-- log_state: the stream's state, read only. Log keys as in log.lua. ARGV[5] a
-- producer id ('' for none).
-- Returns state_reply() then the producer's "<epoch> <seq>" ('' when unknown).
local reply = state_reply()
local producer = ''
if ARGV[5] ~= '' then producer = redis.call('HGET', L.prod, ARGV[5]) or '' end
reply[#reply + 1] = producer
return reply
