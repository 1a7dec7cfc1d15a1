-- configure: creates the queue with the defaults, then applies the patch, in one
-- step so concurrent patches compose. Queue keys as in queue.lua.
-- ARGV[5..9] defaults: lease, max, ret or '', idem, delivery or ''; ARGV[10..] pairs
-- of setting and value ('' removes it: no retention, no delivery).
-- Returns {wakes, 'ok', 1 if created else 0}.
local created = create_queue(5)
for i = 10, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', K.cfg, ARGV[i])
  else
    redis.call('HSET', K.cfg, ARGV[i], ARGV[i + 1])
  end
end
-- A changed lease or attempt limit can make messages ready: waiters re-check.
wake(qname)
return {wakes, 'ok', created}
