// node ui.mjs BASE_URL USER PASSWORD [SCREENSHOT_DIR]
//
// The dashboard at /ui, in Chromium: a wrong secret is refused on the form; the
// right one logs in; a pushed message shows in the queue's ready count; a dead
// letter (a queue with max_attempts 1, a message received and nacked) shows in the
// queue's details with its attempts, and Redrive (confirmed) makes it ready again; a
// task is looked up by id; a stream shows its owner, length and a consumer's lag; a
// purge empties a queue; a client with only `consume` sees that queue alone and is
// told the API's refusal of a redrive; a token the server refuses leads back to the
// login form; logging out forgets it.
// Screenshots go to SCREENSHOT_DIR (default: ui-screenshots). Prints what went
// wrong and exits 1 if any step does not show what it should. The browser is
// Debian's chromium (or HOPPER_TEST_CHROMIUM).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, user, password, shots = "ui-screenshots"] = process.argv.slice(2);
if (!base || !user || !password) {
  console.error("usage: node ui.mjs BASE_URL USER PASSWORD [SCREENSHOT_DIR]");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const suffix = Date.now();
const queue = `ui-page-${suffix}`;
const fragile = `ui-fragile-${suffix}`;
const basic = "Basic " + Buffer.from(`${user}:${password}`).toString("base64");

/** A call to the API from outside the page, as the admin (a string body is sent
 * as it is, anything else as JSON); answers the JSON body. */
async function call(method, path, body, headers = {}) {
  const response = await fetch(base + path, {
    method,
    headers: { Authorization: basic, "Content-Type": "application/json", ...headers },
    body: body === undefined || typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

const browser = await chromium.launch({
  executablePath: process.env.HOPPER_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
page.setDefaultTimeout(15000);
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
// The refusals the script provokes (401, 403, 404) are logged as failed loads.
page.on("console", (message) => {
  if (message.type() === "error" && !/status of 40[134]/.test(message.text())) {
    problems.push(`console error: ${message.text()}`);
  }
});
const dialogs = [];
page.on("dialog", (dialog) => {
  dialogs.push(dialog.message());
  dialog.accept();
});

const cellOf = (name, column) => page.locator(`#queues tr[data-queue="${name}"] td.${column}`);
/** Waits until `locator` reads `text` (the page refreshes every 2 s). */
async function expectText(locator, text, what) {
  try {
    await locator.filter({ hasText: new RegExp(`^${text}$`) }).waitFor();
  } catch (error) {
    const now = await locator.innerText().catch(() => "(absent)");
    throw new Error(`${what}: expected ${text}, the page shows ${now}`);
  }
}

try {
  await page.goto(`${base}/ui`);
  if ((await page.title()) !== "Hopper dashboard") problems.push(`title is ${await page.title()}`);

  // A wrong secret: the API's error on the form.
  await page.fill("#username", user);
  await page.fill("#password", "not-the-secret");
  await page.click('#login-form button[type="submit"]');
  await expectText(page.locator("#error"), "Unauthorized", "a wrong secret");
  if (!(await page.locator("#dashboard").isHidden())) problems.push("the dashboard shows after a wrong secret");

  await page.fill("#password", password);
  await page.click('#login-form button[type="submit"]');
  await page.locator("#dashboard").waitFor();

  // A message pushed from outside shows up in the queue's ready count.
  await call("POST", `/api/v1/queues/${queue}/messages`, { hello: "dashboard" });
  await expectText(cellOf(queue, "ready"), "1", `${queue} ready`);
  await page.screenshot({ path: join(shots, "queues.png"), fullPage: true });

  // A dead letter: one attempt allowed, received once and nacked.
  await call("PUT", `/api/v1/queues/${fragile}`, { max_attempts: 1 });
  await call("POST", `/api/v1/queues/${fragile}/messages`, { poison: "<b>not bold</b>" });
  const received = await call("POST", `/api/v1/queues/${fragile}/receive`);
  await call("POST", `/api/v1/queues/${fragile}/nack`, { receipts: [received.messages[0].receipt] });
  await expectText(cellOf(fragile, "dead"), "1", `${fragile} dead`);
  await expectText(cellOf(fragile, "ready"), "0", `${fragile} ready`);

  await page.click(`#queues tr[data-queue="${fragile}"] td.name`);
  await expectText(page.locator("#queue-name"), fragile, "the open queue");
  await expectText(page.locator('#queue-details dd[data-key="dead"]'), "1", "the queue's dead count");
  await expectText(page.locator('#queue-details dd[data-key="max_attempts"]'), "1", "the queue's max_attempts");
  const deadRow = page.locator("#dead tbody tr").first();
  await deadRow.locator("pre").filter({ hasText: "<b>not bold</b>" }).waitFor();
  if ((await page.locator("#dead b").count()) !== 0) problems.push("a dead letter's body was inserted as HTML");
  const attempts = (await deadRow.locator("td").nth(1).innerText()).trim();
  if (attempts !== "1") problems.push(`the dead letter shows ${attempts} attempts, not 1`);
  await page.screenshot({ path: join(shots, "dead-letters.png"), fullPage: true });

  await page.click("#redrive");
  await expectText(cellOf(fragile, "dead"), "0", `${fragile} dead after the redrive`);
  await expectText(cellOf(fragile, "ready"), "1", `${fragile} ready after the redrive`);
  await expectText(page.locator("#dead tbody td.empty"), "No dead letters", "the dead letters after the redrive");
  if (!dialogs.some((d) => d.includes(fragile))) problems.push(`no confirm() named the queue: ${dialogs}`);
  await page.screenshot({ path: join(shots, "redriven.png"), fullPage: true });

  // A task, looked up by id.
  const task = await call("POST", `/api/v1/tasks/${queue}`, { report: 1 }, { Prefer: "respond-async" });
  await page.fill("#task-id", task.id);
  await page.click('#task-form button[type="submit"]');
  await expectText(page.locator('#task dd[data-key="status"]'), "pending", "the task's status");
  await expectText(page.locator('#task dd[data-key="queue"]'), queue, "the task's queue");

  // An unknown task: the API's error string.
  await page.fill("#task-id", "00000000-0000-0000-0000-000000000000");
  await page.click('#task-form button[type="submit"]');
  await page.locator("#error").filter({ hasText: /^Not Found - task/ }).waitFor();

  // A stream with two events, the first acknowledged by a consumer: its lag is 1.
  const stream = `ui-stream-${suffix}`;
  const event = {
    event: { name: "order.created", version: 1 },
    system: { id: "shop-1", name: "shop", time: "2026-01-01T00:00:00Z", timezone: "UTC" },
    trigger: { type: "api", name: "checkout" },
    payload: { order: 1 },
  };
  const first = await call("POST", `/api/v1/streams/${stream}/events`, event, { "X-Producer-ID": "shop-v2" });
  await call("POST", `/api/v1/streams/${stream}/events`, event, { "X-Producer-ID": "shop-v2" });
  await call("POST", `/api/v1/streams/${stream}/events/${first}`, "action=ACK", {
    "Content-Type": "application/x-www-form-urlencoded",
    "X-Consumer-ID": "billing",
  });
  const streamRow = page.locator(`#streams tr[data-stream="${stream}"]`);
  await expectText(streamRow.locator("td.length"), "2", `${stream} length`);
  await expectText(streamRow.locator("td.owner"), "shop-v2", `${stream} owner`);
  await streamRow.locator("td.name").click();
  await expectText(page.locator('#consumers tr[data-consumer="billing"] td.lag'), "1", "the consumer's lag");
  await page.screenshot({ path: join(shots, "streams.png"), fullPage: true });

  // Purge (confirmed) empties the queue.
  await page.click(`#queues tr[data-queue="${fragile}"] td.name`);
  await expectText(page.locator("#queue-name"), fragile, "the open queue");
  await page.click("#purge");
  await expectText(cellOf(fragile, "ready"), "0", `${fragile} ready after the purge`);
  if (!dialogs.some((d) => d.startsWith("Delete every message"))) problems.push(`no confirm() before the purge: ${dialogs}`);

  // A client that may only consume the queue: sees that queue alone, and a Redrive
  // shows the API's refusal.
  const reader = `ui-reader-${suffix}`;
  const readerSecret = "a-reader-secret-0123456789";
  await call("POST", "/api/v1/admin/clients", { id: reader, secret: readerSecret, grants: [`queue:${fragile}:consume`] });
  await page.click("#logout");
  await page.fill("#username", reader);
  await page.fill("#password", readerSecret);
  await page.click('#login-form button[type="submit"]');
  await expectText(cellOf(fragile, "ready"), "0", `${fragile} ready, as ${reader}`);
  if ((await page.locator(`#queues tr[data-queue="${queue}"]`).count()) !== 0) problems.push(`${reader} sees ${queue}`);
  await page.click(`#queues tr[data-queue="${fragile}"] td.name`);
  await expectText(page.locator("#queue-name"), fragile, `the open queue, as ${reader}`);
  await page.click("#redrive");
  await expectText(page.locator("#error"), `Forbidden - needs grant queue:${fragile}:manage`, "a redrive without the grant");
  await page.screenshot({ path: join(shots, "forbidden.png"), fullPage: true });

  // A token the server refuses: back to the form, saying why.
  await page.evaluate(() => sessionStorage.setItem("hopper.token", "not-a-token"));
  await page.reload();
  await page.locator("#login").waitFor();
  await expectText(page.locator("#error"), "Unauthorized", "a refused token");

  // Logging out forgets the token.
  await page.fill("#username", user);
  await page.fill("#password", password);
  await page.click('#login-form button[type="submit"]');
  await page.locator("#dashboard").waitFor();
  await page.click("#logout");
  await page.locator("#login").waitFor();
  if (await page.evaluate(() => sessionStorage.getItem("hopper.token"))) problems.push("the token outlived the logout");
} catch (error) {
  problems.push(`${error.message} (the page as it was: ${join(shots, "failure.png")})`);
  await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}

if (problems.length) {
  for (const problem of problems) console.error(problem);
  process.exit(1);
}
console.log(`logged in, counted, redrove and looked up a task on /ui; screenshots in ${shots}`);
