-- configure: creates the queue with the defaults, then applies the patch, in one
-- step so concurrent patches compose. Queue keys as in queue.lua.
-- ARGV[5..10] defaults: lease, max, ret or '', idem, delivery or '', options JSON
-- or ''; ARGV[11] '' when the patch changes no option, else '=' followed by the
-- options JSON the caller computed the change from (nothing after '=' for none);
-- ARGV[12] the options JSON after the change, or '' for none; ARGV[13..] pairs of
-- setting and value ('' removes it: no retention, no delivery).
-- The options are one JSON text that only the caller can merge a patch into: when
-- they are no longer what the caller read, nothing is written and the caller
-- reads them again. Returns {wakes, 'ok', 1 if created else 0} or {wakes, 'changed'}.
if ARGV[11] ~= '' then
  local current
  if exists() then current = redis.call('HGET', K.cfg, 'opts') or '' else current = ARGV[10] end
  if '=' .. current ~= ARGV[11] then return {wakes, 'changed'} end
end
local created = create_queue(5)
if ARGV[11] ~= '' then
  if ARGV[12] == '' then
    redis.call('HDEL', K.cfg, 'opts')
  else
    redis.call('HSET', K.cfg, 'opts', ARGV[12])
  end
end
for i = 13, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', K.cfg, ARGV[i])
  else
    redis.call('HSET', K.cfg, ARGV[i], ARGV[i + 1])
  end
end
-- A changed lease or attempt limit can make messages ready: waiters re-check.
wake(qname)
return {wakes, 'ok', created}
