-- Shared by every stream script; prepended to each. One stream's keys, all in one
-- hash slot ({<prefix>s:<name>}), passed in this order:
--   KEYS[1] meta    hash: owner, last (last event id), max_age, max_events
--   KEYS[2] ev      hash: id -> JSON body
--   KEYS[3] names   hash: id -> event name
--   KEYS[4] all     zset: id by id
--   KEYS[5] times   zset: id by append time
--   KEYS[6] offsets hash: "<consumer>\0<event name>" -> last acked id (ids hold no NUL)
--   KEYS[7] byname  zset: id by id, of one event name (scripts that name one)
-- The index of another event name is `<base>:by:<name>`, <base> being KEYS[1]
-- without its ":meta": the same hash tag, so the same slot.
-- ARGV[1] unused, ARGV[2] the wake-up channel, ARGV[3] this node's id, ARGV[4]
-- the stream's wake-up key; a script's own arguments follow. Every script returns
-- {wakes, ...}.
local S = {
  meta = KEYS[1], ev = KEYS[2], names = KEYS[3], all = KEYS[4], times = KEYS[5],
  offsets = KEYS[6], byname = KEYS[7],
}
-- Redis's clock, not the caller's: every Hopper node on this Redis agrees on it.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local channel, node, wake_key = ARGV[2], ARGV[3], ARGV[4]
local STEP = 10000
local base = string.sub(S.meta, 1, -6)

local wakes = {}
local function wake(key)
  wakes[#wakes + 1] = key
  redis.call('PUBLISH', channel, node .. '|' .. key)
end

local function by_name(name)
  return base .. ':by:' .. name
end

local function exists()
  return redis.call('EXISTS', S.meta) == 1
end
