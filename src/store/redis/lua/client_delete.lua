-- client_delete: deletes a client with its AWS access keys, in one atomic step.
-- KEYS[1] the clients hash, KEYS[2] the AWS keys hash, KEYS[3] the client's set of
-- access key ids.
-- ARGV[1] client id.
-- Returns 1 deleted, 0 no such client.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('HDEL', KEYS[2], id)
end
redis.call('DEL', KEYS[3])
return 1
