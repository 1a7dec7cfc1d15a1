-- log_append: stores entries and the append's effects, if the stream is still as
-- read. Log keys as in log.lua. ARGV[5] ver and ARGV[6] last as read, ARGV[7] the
-- new ver, ARGV[8] the new tail, ARGV[9] producer id ('' for none), ARGV[10] its
-- new "<epoch> <seq>", ARGV[11] '1' to close, '2' to close by the claim of id,
-- epoch and seq ARGV[12..14] ('' not to close), ARGV[15] '1' when ARGV[16] is a new
-- Stream-Seq, then the entries from ARGV[17] as store_entries takes them.
-- Returns {wakes, 'ok'} or {wakes, 'changed'}.
if redis.call('EXISTS', S.meta) == 0 or not unchanged(ARGV[5], ARGV[6]) then
  return {wakes, 'changed'}
end
store_entries(17)
redis.call('HSET', S.meta, 'last', ARGV[8], 'ver', ARGV[7], 'touched', now)
if ARGV[9] ~= '' then redis.call('HSET', L.prod, ARGV[9], ARGV[10]) end
if ARGV[15] == '1' then redis.call('HSET', S.meta, 'sseq', ARGV[16]) end
if ARGV[11] ~= '' then
  redis.call('HSET', S.meta, 'closed', '1')
  if ARGV[11] == '2' then
    redis.call('HSET', S.meta, 'cb_id', ARGV[12], 'cb_epoch', ARGV[13], 'cb_seq', ARGV[14])
  end
end
wake(wake_key)
return {wakes, 'ok'}
