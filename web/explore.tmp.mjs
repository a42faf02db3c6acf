// Scratch: sign in to the demo as a new user would; print every 4xx/5xx and console message.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
const URL_ = process.env.URL_ || "http://127.0.0.1:8008";
const who = process.argv[2] || "president.avalon";
const officials = readFileSync(process.env.DATA + "/demo-officials", "utf8");
const key = new RegExp(who.replace(".", "\\.") + "\\S*\\s+\\S+\\s+(.+)$", "m").exec(officials)?.[1]?.trim();
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"] });
const ctx = await browser.newContext({ viewport: { width: +(process.env.W || 1200), height: 760 }, locale: process.env.LOCALE || "en-US" });
const page = await ctx.newPage();
page.on("console", (m) => console.log(`[console.${m.type()}] ${m.text().slice(0, 300)}`));
page.on("response", (r) => { if (r.status() >= 400) console.log(`[http ${r.status()}] ${r.request().method()} ${r.url()}`); });
await page.goto(URL_ + "/");
await page.getByLabel("User name").fill(who);
await page.getByLabel("Password", { exact: true }).fill("hotline-demo");
await page.getByRole("button", { name: "Sign in" }).click();
console.log("key", key);
try {
  if (!key) {
    await page.getByRole("button", { name: "Create my recovery key" }).click();
    await page.waitForTimeout(8000); await page.screenshot({ path: "/tmp/explore/keys.png" }); await page.getByTestId("recovery-key").waitFor({ timeout: 60000 });
    await page.getByLabel("I have stored my recovery key").check();
    await page.getByRole("button", { name: "Continue" }).click();
    throw new Error("created keys");
  }
  await page.getByLabel(/recovery key/i).first().waitFor({ timeout: 20000 });
  await page.getByLabel(/recovery key/i).first().fill(key);
  await page.getByRole("button", { name: /unlock|continue|verify/i }).first().click();
} catch (e) { console.log("no recovery step", e.message.slice(0, 100)); }
await page.getByRole("navigation", { name: "Lines" }).waitFor();
await page.waitForTimeout(3000);
console.log("=== lines loaded");
await page.screenshot({ path: "/tmp/explore/lines.png" });
const first = page.locator("a.line").first();
if (await first.count()) { await first.click(); await page.waitForTimeout(3000); await page.screenshot({ path: "/tmp/explore/chat.png" }); }
console.log("=== chat opened");
await page.goto(URL_ + "/#/settings"); await page.waitForTimeout(2000);
console.log("=== settings");
await page.goto(URL_ + "/#/invites"); await page.waitForTimeout(2000);
await page.screenshot({ path: "/tmp/explore/invites.png" });
console.log("=== invites");
await browser.close();
