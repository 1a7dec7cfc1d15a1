-- aws_key_delete: deletes one AWS access key of a client.
-- KEYS[1] the AWS keys hash, KEYS[2] the client's set of access key ids.
-- ARGV[1] access key id.
-- Returns 1 deleted, 0 the client holds no such key (another client's is left alone).
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
