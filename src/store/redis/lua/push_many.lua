-- push_many: the plain pushes (no idempotency key, no task) of one batch to this
-- queue, in one step; creates the queue with the defaults if needed. Queue keys as
-- in queue.lua. ARGV[5..9] the defaults as push.lua takes them; then per push its
-- delay (ms), its number of bodies, and the bodies.
-- Returns {wakes, 'new', created, id...}: every push's ids, in order.
local created = create_queue(5)
local reply = {wakes, 'new', created}
local first = 10
-- Count the bodies first, so one write takes every id.
local bodies, i = 0, first
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  bodies = bodies + n
  i = i + 2 + n
end
local id, batch = next_ids(bodies), new_messages()
i = first
while i <= #ARGV do
  local delay, n = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  for j = i + 2, i + 1 + n do
    batch.add(id, ARGV[j], delay)
    reply[#reply + 1] = id
    id = id + 1
  end
  i = i + 2 + n
end
batch.store()
wake(qname)
return reply
