-- Shared by every byte-log script (the Durable Streams protocol's view of a
-- stream); prepended after stream.lua. The log is the seed-004 stream itself:
-- entry N is event N (ev, names, all, times, and by:<name> when it has a name),
-- so both APIs see each other's appends. Log scripts pass instead of KEYS[7]:
--   KEYS[7] prod   hash: producer id -> "<epoch> <seq>"
--   KEYS[8] forks  set: "<fork name> <token>", one per stream or tombstone that
--                  names this stream as its source (a reference, by name)
--   KEYS[9] gone   hash, only while the stream is a tombstone: deleted (ms), and
--                  for a fork its own reference: source, token
-- Meta fields of the log, beside seed 004's: ctype (content type; none: JSON, as
-- seed 004 writes), ttl (idle seconds) or exp (ms), touched (ms), closed ('1'),
-- cb_id, cb_epoch, cb_seq (the claim that closed it), sseq (last Stream-Seq),
-- fork, fork_pos, fork_sub, fork_token (where a fork branched, and its
-- reference), ver (a fresh token at every log write).
-- Rust decides every rule (domain::log) from a state it read; a script that
-- writes is guarded: it writes only if ver and last are still what that read
-- saw, else answers 'changed' and the caller reads again.
S.byname = nil
local L = { prod = KEYS[7], forks = KEYS[8], gone = KEYS[9] }

-- The state a decision needs: {wakes, 'ok', now, meta (HGETALL), tombstone 0|1}.
local function state_reply()
  return {wakes, 'ok', now, redis.call('HGETALL', S.meta), redis.call('EXISTS', L.gone)}
end

-- Whether the stream is still as the caller read it ('' for a field it lacked).
local function unchanged(ver, last)
  return (redis.call('HGET', S.meta, 'ver') or '') == ver
    and (redis.call('HGET', S.meta, 'last') or '') == last
end

-- Stores entries given as quadruples (id, name, appended at or '' for now, data)
-- from ARGV[from]; the caller numbered them.
local function store_entries(from)
  for i = from, #ARGV, 4 do
    local id, name, at, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    redis.call('HSET', S.ev, id, data)
    redis.call('HSET', S.names, id, name)
    redis.call('ZADD', S.all, id, id)
    redis.call('ZADD', S.times, tonumber(at) or now, id)
    -- Seed 004 reads only named events, and no event has the empty name.
    if name ~= '' then redis.call('ZADD', by_name(name), id, id) end
  end
end

-- Removes the stream and all it holds but its forks set (forks name it by name,
-- so a stream made anew under it is their source too).
local function remove_stream()
  local seen = {}
  for _, name in ipairs(redis.call('HVALS', S.names)) do
    if name ~= '' and not seen[name] then
      seen[name] = true
      redis.call('UNLINK', by_name(name))
    end
  end
  redis.call('UNLINK', S.meta, S.ev, S.names, S.all, S.times, S.offsets, L.prod)
end
