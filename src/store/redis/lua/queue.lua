-- Shared by every queue script; prepended to each. One queue's keys, all in one
-- hash slot ({<prefix>q:<name>}), passed in this order:
--   KEYS[1]  cfg     hash: lease, max, ret, idem, delivery, opts (the options JSON
--                    of QueueSettings::options_json, absent when all are defaults),
--                    seq (last id)
--   KEYS[2]  body    hash: id -> JSON body
--   KEYS[3]  att     hash: id -> times handed out; absent until the first, which
--                    spares every push a write (readers take absent as 0)
--   KEYS[4]  enq     zset: id by enqueue time (every message; retention)
--   KEYS[5]  tok     hash: id -> lease token of its last lease (kept until a nack)
--   KEYS[6]  task    hash: id -> task id, for task messages
--   KEYS[7]  err     hash: id -> last delivery error
--   KEYS[8]  ready   zset: id by id (waiting and visible)
--   KEYS[9]  delayed zset: id by the time it becomes visible
--   KEYS[10] leased  zset: id by lease end
--   KEYS[11] dead    zset: id by id (out of attempts)
--   KEYS[12] idem    hash: idempotency key -> "<message id>|<task id or empty>"
--   KEYS[13] idemx   zset: idempotency key by expiry
--   KEYS[14] tasks   hash: task id -> task JSON
--   KEYS[15] topen   set:  unfinished task ids
--   KEYS[16..18] done_succeeded, done_failed, done_expired
--                    zsets: finished task id by the time it is dropped
--   KEYS[19] grp     hash: id -> its group, for messages pushed with one
--   KEYS[20] meta    hash: id -> its metadata, for messages pushed with some
--   KEYS[21] first   hash: id -> when a receive first handed it out
--   KEYS[22] gidx    zset, every score 0: group .. "\0" .. id (zero-padded to 20
--                    digits) of every grouped message that is not a dead letter,
--                    so a group's head is its first member in lexicographic order
-- ARGV[1] unused, ARGV[2] the wake-up channel, ARGV[3] this
-- node's id, ARGV[4] the queue's name; a script's own arguments follow.
-- Every script returns {wakes, ...}: wakes lists the wake-up keys it published.
local K = {
  cfg = KEYS[1], body = KEYS[2], att = KEYS[3], enq = KEYS[4], tok = KEYS[5],
  task = KEYS[6], err = KEYS[7], ready = KEYS[8], delayed = KEYS[9],
  leased = KEYS[10], dead = KEYS[11], idem = KEYS[12], idemx = KEYS[13],
  tasks = KEYS[14], topen = KEYS[15],
  done_succeeded = KEYS[16], done_failed = KEYS[17], done_expired = KEYS[18],
  grp = KEYS[19], meta = KEYS[20], first = KEYS[21], gidx = KEYS[22],
}
-- Redis's clock, not the caller's: every Hopper node on this Redis agrees on it.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local channel, node, qname = ARGV[2], ARGV[3], ARGV[4]
-- Most messages one step moves, so no script holds Redis for long.
local STEP = 10000
local OUT_OF_ATTEMPTS = '"out of attempts"'

local wakes, woken = {}, {}
local function wake(key)
  if woken[key] then return end
  woken[key] = true
  wakes[#wakes + 1] = key
  redis.call('PUBLISH', channel, node .. '|' .. key)
end

local function max_attempts()
  return tonumber(redis.call('HGET', K.cfg, 'max') or '0') or 0
end

local function attempts_of(id)
  return tonumber(redis.call('HGET', K.att, id) or '0') or 0
end

-- Whether a message whose lease ended after `attempts` goes to the dead letters:
-- the rule of MessageState::after_lease in the domain, which a script cannot call.
-- Every script asks this function, so the rule is written once here too, and the
-- store conformance suite holds both to the same boundary.
local function exhausted(attempts, max)
  return attempts >= max
end

-- The queue's options (the JSON of QueueSettings::options_json, read by its field
-- names), decoded once per script. An unreadable one is an error, raised before
-- the script writes anything, never a default: SQL refuses such a row too.
local stored_options
local function options()
  if stored_options then return stored_options end
  local raw = redis.call('HGET', K.cfg, 'opts')
  stored_options = {}
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if not ok or type(decoded) ~= 'table' then
      error({err = 'ERR the stored options of queue ' .. qname .. ' are unreadable'})
    end
    stored_options = decoded
  end
  return stored_options
end

-- Whether the queue hands out one message per group at a time (Ordering::Group).
local function grouped()
  return options().ordering == 'group'
end

-- A message's entry in K.gidx.
local function group_member(group, id)
  return group .. '\0' .. string.format('%020d', tonumber(id))
end

-- The entry of a group's head (its oldest message that is not a dead letter), or nil.
-- Groups are printable ASCII, so "\0" and "\1" bound exactly one group's entries.
local function group_head(group)
  return redis.call('ZRANGEBYLEX', K.gidx, '[' .. group .. '\0', '(' .. group .. '\1',
    'LIMIT', 0, 1)[1]
end

-- The group rule of Ordering::Group in the domain (src/domain/settings.rs), which
-- a script cannot call; the SQL stores write it as group_head!. A message with a
-- group may be handed out only while it is its group's head; one without is free.
-- `heads` caches each group's head for one scan that writes nothing meanwhile, so
-- each group costs one lookup however many of its messages the scan meets.
local function may_hand_out(id, heads)
  local group = redis.call('HGET', K.grp, id)
  if not group then return true end
  local head = heads[group]
  if head == nil then
    head = group_head(group) or false
    heads[group] = head
  end
  return head == group_member(group, id)
end

-- Takes a message out of its group's order (it is gone, or a dead letter). When it
-- was the head and the group goes on, waiters look again: its next message may be
-- ready now, though nothing else changed.
local function ungroup(id)
  local group = redis.call('HGET', K.grp, id)
  if not group then return end
  local entry = group_member(group, id)
  local was_head = group_head(group) == entry
  redis.call('ZREM', K.gidx, entry)
  if was_head and group_head(group) then wake(qname) end
end

-- Puts a redriven dead letter back in its group's order.
local function regroup(id)
  local group = redis.call('HGET', K.grp, id)
  if group then redis.call('ZADD', K.gidx, 0, group_member(group, id)) end
end

-- Makes a message a dead letter (it must be in no other state's zset by now): out
-- of its group's order, so the group moves on.
local function bury(id)
  redis.call('ZADD', K.dead, id, id)
  ungroup(id)
end

-- Removes a message from every key.
local function remove_message(id)
  ungroup(id)
  for _, key in ipairs({K.body, K.att, K.tok, K.task, K.err, K.grp, K.meta, K.first}) do
    redis.call('HDEL', key, id)
  end
  for _, key in ipairs({K.enq, K.ready, K.delayed, K.leased, K.dead}) do
    redis.call('ZREM', key, id)
  end
end

-- Ends the unfinished task of message `id` as `state` (succeeded, failed or
-- expired) with `attempts`; no-op for a plain message or a finished task.
local function end_task(id, state, attempts)
  local tid = redis.call('HGET', K.task, id)
  if not tid or redis.call('SREM', K.topen, tid) == 0 then return end
  local raw = redis.call('HGET', K.tasks, tid)
  if not raw then return end
  local t = cjson.decode(raw)
  t.state, t.attempts, t.finished_at = state, attempts, now
  if state == 'failed' and t.error == nil then t.error = OUT_OF_ATTEMPTS end
  redis.call('HSET', K.tasks, tid, cjson.encode(t))
  redis.call('ZADD', K['done_' .. state], now + t.keep, tid)
  wake('task/' .. tid)
end

-- Makes delayed messages whose time has come ready, and releases expired leases:
-- ready again, or dead letters (failing their tasks) when out of attempts. The
-- lease token stays, so a receipt still settles until someone else takes the message.
local function promote()
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, STEP)
  for _, id in ipairs(due) do
    redis.call('ZREM', K.delayed, id)
    redis.call('ZADD', K.ready, id, id)
  end
  local expired = redis.call('ZRANGEBYSCORE', K.leased, '-inf', now, 'LIMIT', 0, STEP)
  if #expired == 0 then return end
  local max = max_attempts()
  for _, id in ipairs(expired) do
    redis.call('ZREM', K.leased, id)
    local attempts = attempts_of(id)
    if exhausted(attempts, max) then
      bury(id)
      end_task(id, 'failed', attempts)
    else
      redis.call('ZADD', K.ready, id, id)
    end
  end
end

local function exists()
  return redis.call('EXISTS', K.cfg) == 1
end

-- Creates the queue unless it exists, with the settings ARGV[first..first+5]
-- holds: lease, max, ret or '', idem, delivery or '', options JSON or ''. Returns 1
-- if it created it.
local function create_queue(first)
  if exists() then return 0 end
  redis.call('HSET', K.cfg, 'lease', ARGV[first], 'max', ARGV[first + 1],
    'idem', ARGV[first + 3], 'seq', 0)
  if ARGV[first + 2] ~= '' then redis.call('HSET', K.cfg, 'ret', ARGV[first + 2]) end
  if ARGV[first + 4] ~= '' then redis.call('HSET', K.cfg, 'delivery', ARGV[first + 4]) end
  if ARGV[first + 5] ~= '' then redis.call('HSET', K.cfg, 'opts', ARGV[first + 5]) end
  return 1
end

-- The delay of a push: `arg` in ms, or the queue's delay setting when ''.
local function push_delay(arg)
  if arg ~= '' then return tonumber(arg) end
  return tonumber(options().delay_ms) or 0
end

-- Takes `n` new message ids (one write for all of them); returns the first.
local function next_ids(n)
  return redis.call('HINCRBY', K.cfg, 'seq', n) - n + 1
end

-- Runs `command` on `key` with the pairs of `args` (field and value, score and
-- member), in chunks: one call per chunk, not per pair, and no chunk past what
-- unpack can spread.
local function call_pairs(command, key, args)
  local CHUNK = 4000
  for i = 1, #args, CHUNK do
    redis.call(command, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- New messages gathered by add(id, body, delay, group, meta) and stored together by
-- store(): ready now, or once `delay` ms have passed; group and meta nil for none.
local function new_messages()
  local bodies, enqueued, ready, delayed = {}, {}, {}, {}
  local groups, order, metas = {}, {}, {}
  local batch = {}
  -- Numbers become text once here: redis.call would format each on every use.
  local at = tostring(now)
  function batch.add(id, body, delay, group, meta)
    local key = tostring(id)
    bodies[#bodies + 1], bodies[#bodies + 2] = key, body
    enqueued[#enqueued + 1], enqueued[#enqueued + 2] = at, key
    if delay > 0 then
      delayed[#delayed + 1], delayed[#delayed + 2] = now + delay, key
    else
      ready[#ready + 1], ready[#ready + 2] = key, key
    end
    if group then
      groups[#groups + 1], groups[#groups + 2] = key, group
      order[#order + 1], order[#order + 2] = '0', group_member(group, id)
    end
    if meta then metas[#metas + 1], metas[#metas + 2] = key, meta end
  end
  function batch.store()
    call_pairs('HSET', K.body, bodies)
    call_pairs('ZADD', K.enq, enqueued)
    call_pairs('ZADD', K.ready, ready)
    call_pairs('ZADD', K.delayed, delayed)
    call_pairs('HSET', K.grp, groups)
    call_pairs('ZADD', K.gidx, order)
    call_pairs('HSET', K.meta, metas)
  end
  return batch
end

-- Adds the `n` messages that ARGV holds from index `i` to `batch`, with ids from
-- `id`, each after `delay`, appending each id to `ids`. `shape` says how they are
-- written: 'p' a body each; 'x' a body, a group or '' for none, and a metadata
-- ('' for none, else '.' followed by it, so that an empty one is kept).
-- Returns the index after them.
local function add_pushed(batch, i, n, shape, delay, id, ids)
  for _ = 1, n do
    if shape == 'x' then
      local group, meta = ARGV[i + 1], ARGV[i + 2]
      batch.add(id, ARGV[i], delay, group ~= '' and group or nil,
        meta ~= '' and string.sub(meta, 2) or nil)
      i = i + 3
    else
      batch.add(id, ARGV[i], delay)
      i = i + 1
    end
    ids[#ids + 1] = id
    id = id + 1
  end
  return i
end

-- The number of ARGV entries per message of a push of `shape` (see add_pushed).
local function width(shape)
  return shape == 'x' and 3 or 1
end

-- A message as returned: {id, body, attempts, enqueued_at, task id or '', error or
-- '', group, meta, first received at}, the last three nil when absent.
local function message(id, attempts)
  return {
    tonumber(id), redis.call('HGET', K.body, id) or '', attempts,
    tonumber(redis.call('ZSCORE', K.enq, id) or '0'),
    redis.call('HGET', K.task, id) or '', redis.call('HGET', K.err, id) or '',
    redis.call('HGET', K.grp, id), redis.call('HGET', K.meta, id),
    redis.call('HGET', K.first, id),
  }
end

-- Up to `count` ids of K.ready, oldest first, that may be handed out now: all of
-- them in id order, or on a grouped queue only heads and messages without a group.
-- A grouped queue's scan reads K.ready in chunks and stops after STEP ids, so a
-- group with a long backlog behind a leased head costs at most that much per call
-- (heads further back wait for a later call).
local function ready_ids(count)
  if not grouped() then return redis.call('ZRANGE', K.ready, 0, count - 1) end
  local CHUNK = math.max(count * 4, 100)
  local ids, heads, from = {}, {}, 0
  while #ids < count and from < STEP do
    local chunk = redis.call('ZRANGE', K.ready, from, from + CHUNK - 1)
    for _, id in ipairs(chunk) do
      if may_hand_out(id, heads) then
        ids[#ids + 1] = id
        if #ids == count then break end
      end
    end
    if #chunk < CHUNK then break end
    from = from + CHUNK
  end
  return ids
end

-- When the first of K.delayed and K.leased becomes ready, or nil: on a grouped
-- queue the first that is a head or has no group (a message behind a leased head
-- never becomes ready by its own time, and counting it would make waiters spin),
-- looking at up to STEP of each.
local function next_ready_at()
  local next_at = nil
  local group_rule = grouped()
  for _, key in ipairs({K.delayed, K.leased}) do
    local first
    if group_rule then
      local heads, from, CHUNK = {}, 0, 100
      while not first and from < STEP do
        local chunk = redis.call('ZRANGE', key, from, from + CHUNK - 1, 'WITHSCORES')
        for j = 1, #chunk, 2 do
          if may_hand_out(chunk[j], heads) then
            first = tonumber(chunk[j + 1])
            break
          end
        end
        if #chunk < CHUNK * 2 then break end
        from = from + CHUNK
      end
    else
      local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      first = tonumber(head[2])
    end
    if first and (next_at == nil or first < next_at) then next_at = first end
  end
  return next_at
end

-- What a task's status depends on: {task JSON, its message's state (-1 gone or
-- finished, 0 waiting, 1 leased, 2 dead), 1 if its lease runs, 1 if it is out of
-- attempts, its attempts, ms left of its lease}; nil for no such task. The status
-- itself is decided by the caller, by the rule every backend shares.
local function task_view(tid)
  local raw = redis.call('HGET', K.tasks, tid)
  if not raw then return nil end
  local t = cjson.decode(raw)
  -- Past its keep_finished, a task is gone, swept or not.
  if t.state ~= 'open' and t.finished_at and t.finished_at + t.keep <= now then return nil end
  local id = t.msg and string.format('%.0f', t.msg)
  if t.state ~= 'open' or not id or redis.call('HEXISTS', K.body, id) == 0 then
    return {raw, -1, 0, 0, 0, 0}
  end
  local attempts = attempts_of(id)
  local out = exhausted(attempts, max_attempts()) and 1 or 0
  if redis.call('ZSCORE', K.dead, id) then return {raw, 2, 0, out, attempts, 0} end
  local lease_end = redis.call('ZSCORE', K.leased, id)
  if lease_end then
    lease_end = tonumber(lease_end)
    local running = lease_end > now and 1 or 0
    return {raw, 1, running, out, attempts, math.max(lease_end - now, 0)}
  end
  return {raw, 0, 0, out, attempts, 0}
end
