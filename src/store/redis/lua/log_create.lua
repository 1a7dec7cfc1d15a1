-- log_create: makes the stream, in place of an expired one if any, if it is
-- still as read and no tombstone holds its name. Log keys as in log.lua.
-- ARGV[5] ver and ARGV[6] last as read, ARGV[7] the new ver, ARGV[8] content
-- type, ARGV[9] ttl, ARGV[10] exp, ARGV[11] '1' to create it closed, ARGV[12]
-- fork source, ARGV[13] fork position, ARGV[14] fork sub-offset, ARGV[15] the
-- fork's reference token (ARGV[9..15] '' when not set), ARGV[16] its tail, then
-- its entries from ARGV[17] as store_entries takes them.
-- Returns {wakes, 'ok', replaced stream's fork source, its token} ('' when it
-- replaced none, or no fork), or {wakes, 'changed'}.
if not unchanged(ARGV[5], ARGV[6]) or redis.call('EXISTS', L.gone) == 1 then
  return {wakes, 'changed'}
end
local old_source, old_token = '', ''
if redis.call('EXISTS', S.meta) == 1 then
  old_source = redis.call('HGET', S.meta, 'fork') or ''
  old_token = redis.call('HGET', S.meta, 'fork_token') or ''
  remove_stream()
end
redis.call('HSET', S.meta, 'owner', '', 'last', ARGV[16], 'created', now, 'touched', now,
  'ver', ARGV[7], 'ctype', ARGV[8])
local optional = {
  ttl = ARGV[9], exp = ARGV[10], closed = ARGV[11], fork = ARGV[12], fork_pos = ARGV[13],
  fork_sub = ARGV[14], fork_token = ARGV[15],
}
for field, value in pairs(optional) do
  if value ~= '' then redis.call('HSET', S.meta, field, value) end
end
store_entries(17)
wake(wake_key)
return {wakes, 'ok', old_source, old_token}
