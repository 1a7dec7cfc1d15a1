// node docs.mjs BASE_URL USER PASSWORD
//
// What a newcomer does on /docs, in Chromium: authorize with Basic credentials, push
// a message with "Try it out", then pop it. Prints what went wrong and exits 1 if
// any step does not show what it should. The browser is Debian's chromium (or
// HOPPER_TEST_CHROMIUM).
import { chromium } from "playwright-core";

const [base, user, password] = process.argv.slice(2);
if (!base || !user || !password) {
  console.error("usage: node docs.mjs BASE_URL USER PASSWORD");
  process.exit(2);
}
const marker = `hello-from-the-docs-page-${Date.now()}`;
const queue = "docs-page";

const browser = await chromium.launch({
  executablePath: process.env.HOPPER_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const page = await browser.newPage();
page.setDefaultTimeout(15000);
const problems = [];
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));

/** Expands operation `id` of tag `tag`, turns on Try it out, fills `params`, runs it. */
async function run(tag, id, params, body) {
  const op = page.locator(`#operations-${tag}-${id}`);
  await op.locator(".opblock-summary").first().click();
  // The page opens with Try it out on; the button then reads Cancel.
  const tryOut = op.locator("button.try-out__btn");
  if ((await tryOut.innerText()).includes("Try it out")) await tryOut.click();
  await op.locator("button.execute").waitFor();
  for (const [name, value] of Object.entries(params)) {
    await op.locator(`tr[data-param-name="${name}"] input`).first().fill(value);
  }
  if (body !== undefined) {
    await op.locator("textarea.body-param__text").fill(body);
  }
  await op.locator("button.execute").click();
  const answer = op.locator(".live-responses-table .response").first();
  await answer.waitFor();
  const status = (await answer.locator(".response-col_status").innerText()).trim();
  const text = await answer.locator(".response-col_description").innerText();
  return { status, text };
}

try {
  await page.goto(`${base}/docs`);
  const title = await page.title();
  if (title !== "Hopper API") problems.push(`title is ${JSON.stringify(title)}`);
  await page.locator("#operations-queues-push").waitFor();

  await page.locator(".scheme-container button.authorize").click();
  const basic = page.locator(".auth-container").filter({ hasText: "basic" }).first();
  await basic.locator('input[type="text"]').fill(user);
  await basic.locator('input[type="password"]').fill(password);
  await basic.locator('button[type="submit"]').click();
  await basic.locator("text=Authorized").waitFor();
  await page.locator(".modal-ux button.close-modal").click();

  const pushed = await run("queues", "push", { queue }, JSON.stringify({ note: marker }));
  if (pushed.status !== "201") problems.push(`push answered ${pushed.status}: ${pushed.text}`);

  const popped = await run("queues", "pop", { queue });
  if (popped.status !== "200") problems.push(`pop answered ${popped.status}: ${popped.text}`);
  else if (!popped.text.includes(marker)) problems.push(`pop did not return the pushed message: ${popped.text}`);
} catch (error) {
  const shot = process.env.HOPPER_TEST_SCREENSHOT || "docs-page-failure.png";
  problems.push(`${error.message} (the page as it was: ${shot})`);
  await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}

if (problems.length) {
  for (const problem of problems) console.error(problem);
  process.exit(1);
}
console.log("authorized, pushed and popped through /docs");
