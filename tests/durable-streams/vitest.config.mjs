// Runs the Durable Streams conformance suite against the server at
// CONFORMANCE_TEST_URL. The suite ships as a file inside node_modules, which
// vitest skips by default; naming it and clearing the exclusions runs it.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js"],
    exclude: [],
    testTimeout: 30000,
    hookTimeout: 30000,
  },
})
