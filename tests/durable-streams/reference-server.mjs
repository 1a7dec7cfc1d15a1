// Starts the protocol's reference server (Node.js, from @durable-streams/server) on
// 127.0.0.1:PORT, in memory, or on files under DATA_DIR when it is given: the peer
// Hopper's Durable Streams endpoint is measured and checked beside.
//   node reference-server.mjs PORT [DATA_DIR]
import { DurableStreamTestServer } from "@durable-streams/server"

const [port, dataDir] = process.argv.slice(2)
const server = new DurableStreamTestServer({
  port: Number(port),
  host: "127.0.0.1",
  ...(dataDir ? { dataDir } : {}),
})
await server.start()
console.log(`reference server on http://127.0.0.1:${port}`)
