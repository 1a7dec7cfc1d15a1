-- aws_key_create: stores an AWS access key of an existing client, in one atomic
-- step, so no key outlives a client deleted at the same moment.
-- KEYS[1] the clients hash, KEYS[2] the AWS keys hash, KEYS[3] the client's set of
-- access key ids (one cluster slot: see `Keys::aws_tag`).
-- ARGV[1] client id, ARGV[2] access key id, ARGV[3] the key's stored form.
-- Returns 1 created, 0 no such client, -1 the access key id is taken.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 0 then return -1 end
redis.call('SADD', KEYS[3], ARGV[2])
return 1
