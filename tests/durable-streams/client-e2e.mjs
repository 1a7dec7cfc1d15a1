// The protocol's own TypeScript client (@durable-streams/client) against Hopper, in
// two runs with a restart of the server between them (tests/durable_streams.rs
// kills it with SIGKILL and starts it again on the same store and port):
//
//   node client-e2e.mjs before STREAM_URL STATE_FILE
//     creates a JSON stream, appends through the stream's handle and through an
//     idempotent producer, reads it back, follows it live by long-poll, saves the
//     offset the live reader reached in STATE_FILE, then appends two more;
//   node client-e2e.mjs after STREAM_URL STATE_FILE
//     resumes from the saved offset and must see exactly the two appended after
//     it, follows live by SSE while a new session of the producer (epoch 1)
//     appends and closes the stream, and reads the whole stream back.
//
// HOPPER_AUTHORIZATION is sent as the Authorization header. Run it from the
// directory where `npm ci` installed tests/durable-streams/package.json, with this
// file copied there, so that the client resolves. Any failure exits non-zero with
// the reason on standard error.
import assert from "node:assert/strict"
import { readFileSync, writeFileSync } from "node:fs"
import { DurableStream, IdempotentProducer, stream } from "@durable-streams/client"

const [phase, url, stateFile] = process.argv.slice(2)
if (!["before", "after"].includes(phase) || !url || !stateFile) {
  console.error("usage: node client-e2e.mjs before|after STREAM_URL STATE_FILE")
  process.exit(2)
}
const headers = { Authorization: process.env.HOPPER_AUTHORIZATION ?? "" }
const PRODUCER_ID = "e2e-writer"

/** The n-th message of the test, as appended and as read. */
const message = (n) => ({ n, text: `message ${n}`, tags: ["e2e", n % 2 ? "odd" : "even"] })
const messages = (...ns) => ns.map(message)
// Appended as JSON text: 0.2.7's append() takes strings or bytes (its README's
// "objects directly" is not so in this version).
const json = (n) => JSON.stringify(message(n))

/** `promise`, or a rejection naming what did not happen: a hang guard, not a measure. */
function within(ms, what, promise) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Follows `live` until `done(seen, batch)`; resolves with every item and the last batch. */
function follow(live, done) {
  const seen = []
  return new Promise((resolve, reject) => {
    live.subscribeJson((batch) => {
      seen.push(...batch.items)
      if (done(seen, batch)) resolve({ seen, last: batch })
    })
    live.closed.then(
      () => reject(new Error(`the live session ended early, after ${JSON.stringify(seen)}`)),
      reject,
    )
  })
}

/** An idempotent producer whose failures fail the run. */
function producer(handle, epoch) {
  const errors = []
  const writer = new IdempotentProducer(handle, PRODUCER_ID, {
    epoch,
    onError: (error) => errors.push(error),
  })
  const flushed = async () => {
    await writer.flush()
    if (errors.length) throw errors[0]
  }
  return { writer, flushed }
}

async function before() {
  const handle = await DurableStream.create({ url, headers, contentType: "application/json" })
  await handle.append(json(1))
  // Appends made at once go out batched, as one JSON array.
  await Promise.all([handle.append(json(2)), handle.append(json(3))])

  const caughtUp = await handle.stream({ offset: "-1", live: false })
  assert.deepEqual(await caughtUp.json(), messages(1, 2, 3), "a catch-up read from the start")
  assert.equal(caughtUp.upToDate, true)

  const live = await handle.stream({ offset: caughtUp.offset, live: "long-poll" })
  const followed = follow(live, (seen) => seen.length >= 2)
  const { writer, flushed } = producer(handle, 0)
  writer.append(json(4))
  writer.append(json(5))
  await flushed()
  const { seen, last } = await within(15000, "the long-poll reader to see messages 4 and 5", followed)
  live.cancel()
  assert.deepEqual(seen, messages(4, 5), "what the long-poll reader saw")
  writeFileSync(stateFile, JSON.stringify({ offset: last.offset }))

  // After the saved offset, before the kill: the resumed reader must see these.
  writer.append(json(6))
  writer.append(json(7))
  await flushed()
  await writer.detach()
  console.log(`before: 7 messages appended, offset ${last.offset} saved`)
}

async function after() {
  const { offset } = JSON.parse(readFileSync(stateFile, "utf8"))
  const handle = await DurableStream.connect({ url, headers })
  assert.equal(handle.contentType, "application/json")

  const resumed = await handle.stream({ offset, live: false })
  assert.deepEqual(await resumed.json(), messages(6, 7), "a read resumed from the saved offset")

  const live = await handle.stream({ offset: resumed.offset, live: "sse" })
  const followed = follow(live, (_, batch) => batch.streamClosed)
  // A new process of the same producer starts a new epoch: epoch 0's seqs are spent.
  const { writer, flushed } = producer(handle, 1)
  writer.append(json(8))
  await flushed()
  await writer.close(json(9))
  const { seen } = await within(15000, "the SSE reader to see messages 8, 9 and the close", followed)
  assert.deepEqual(seen, messages(8, 9), "what the SSE reader saw")

  const all = await stream({ url, headers, offset: "-1", live: false })
  assert.deepEqual(await all.json(), messages(1, 2, 3, 4, 5, 6, 7, 8, 9), "the whole stream")
  assert.equal(all.streamClosed, true, "the stream is closed")
  console.log(`after: resumed at ${offset}, 9 messages in all, closed`)
}

try {
  await (phase === "before" ? before() : after())
  process.exit(0)
} catch (error) {
  console.error(`${phase}: ${error?.stack ?? error}`)
  process.exit(1)
}
