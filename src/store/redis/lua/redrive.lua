-- redrive: makes up to `limit` dead letters ready again with attempts reset; their
-- tasks (failed by running out of attempts) wait for a worker again, and each takes
-- its place in its group again (ahead of the group's younger messages).
-- Queue keys as in queue.lua. ARGV[5] limit. Returns {wakes, 'ok', n} or {wakes, 'noqueue'}.
if not exists() then return {wakes, 'noqueue'} end
promote()
local ids = redis.call('ZRANGE', K.dead, 0, tonumber(ARGV[5]) - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', K.dead, id)
  redis.call('HSET', K.att, id, 0)
  redis.call('HDEL', K.tok, id)
  redis.call('ZADD', K.ready, id, id)
  regroup(id)
  local tid = redis.call('HGET', K.task, id)
  local raw = tid and redis.call('HGET', K.tasks, tid)
  if raw then
    local t = cjson.decode(raw)
    if t.state == 'failed' then
      t.state, t.finished_at = 'open', nil
      redis.call('HSET', K.tasks, tid, cjson.encode(t))
      redis.call('ZREM', K.done_failed, tid)
      redis.call('SADD', K.topen, tid)
    end
  end
end
wake(qname)
return {wakes, 'ok', #ids}
