-- push_many: the plain pushes (no idempotency key, no task) of one batch to this
-- queue, in one step; creates the queue with the defaults if needed. Queue keys as
-- in queue.lua. ARGV[5..10] the defaults as push.lua takes them; then per push its
-- delay (ms, or '' for the queue's delay setting), its shape ('p' or 'x', see
-- add_pushed in queue.lua), its number of messages, and the messages.
-- Returns {wakes, 'new', created, id...}: every push's ids, in order.
local created = create_queue(5)
-- Unreadable options fail the push before it writes, as on SQL.
options()
local reply = {wakes, 'new', created}
local first = 11
-- Count the messages first, so one write takes every id.
local total, i = 0, first
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  total = total + n
  i = i + 3 + n * width(ARGV[i + 1])
end
local id, batch = next_ids(total), new_messages()
i = first
while i <= #ARGV do
  local delay, shape, n = push_delay(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  i = add_pushed(batch, i + 3, n, shape, delay, id, reply)
  id = id + n
end
batch.store()
wake(qname)
return reply
