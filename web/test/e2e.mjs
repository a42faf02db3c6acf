// End-to-end tests of the Hotline web app against a real `hotline serve`
// (started by scripts/web.sh test), driven by playwright-core with Debian's
// chromium. No mocks: two (and three) browser contexts sign in as different
// users, text each other through the server, and call each other with real
// WebRTC (fake microphones), media relayed through coturn in relay-only mode.
//
// Environment (set by scripts/web.sh): HOTLINE_URL, HOTLINE_BIN, HOTLINE_DATA,
// HOTLINE_PASSWORD, HOTLINE_TURN (1 when coturn runs), HOTLINE_SCREENSHOTS
// (a directory: write the main screens there as PNG).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import qrcode from "qrcode-generator";
import * as ed from "@noble/ed25519";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { createPublicKey, verify as verifySignature } from "node:crypto";
import { tmpdir } from "node:os";
import {
  T,
  TRACK_PCS,
  apiAt,
  assertAudioBothWays,
  b64,
  launchChromium,
  launchChromiumProfile,
  mark,
  message,
  replaceCrossSigning,
  send,
  tokenOf,
} from "./helpers.mjs";

const URL_ = process.env.HOTLINE_URL;
const PW = process.env.HOTLINE_PASSWORD || "hotline-test-pw";
const BIN = process.env.HOTLINE_BIN;
const DATA = process.env.HOTLINE_DATA;
const TURN = process.env.HOTLINE_TURN === "1";
const SHOTS = process.env.HOTLINE_SCREENSHOTS || "";
const HERE = dirname(fileURLToPath(import.meta.url));
const TEST_DIST = join(HERE, "..", "test-dist");
if (!URL_) throw new Error("HOTLINE_URL is not set: run through scripts/web.sh test");


let browser;
const pages = []; // every page, for the console check
const problems = []; // console errors and page errors
let expectSendFailure = false; // while a test makes sends fail on purpose
const signedOutElsewhere = new Set(); // pages whose device was removed on purpose
const offlineOnPurpose = new Set(); // pages whose browser is taken offline on purpose
const limitOnPurpose = new Set(); // pages whose next 429 is a refusal the test asks for (the fourth urgent contact)
const pushOnPurpose = new Set(); // pages that turn on notifications in an incognito context, where Chromium can't subscribe

const api = (method, path, body, token) => apiAt(URL_, method, path, body, token);

async function supports(method, path, body) {
  const login = await api("POST", "/_matrix/client/v3/login", {
    type: "m.login.password",
    identifier: { type: "m.id.user", user: "carol" },
    password: PW,
  });
  const r = await api(method, path, body, login.json.access_token);
  await api("POST", "/_matrix/client/v3/logout", {}, login.json.access_token);
  return r.json.errcode !== "M_UNRECOGNIZED";
}

let E2EE = false;
let TURN_API = false;

async function newPage(name, { mobile = false } = {}) {
  const ctx = await browser.newContext({
    viewport: mobile ? { width: 390, height: 800 } : { width: 1200, height: 760 },
    deviceScaleFactor: 1,
    permissions: ["microphone", "notifications"],
  });
  await ctx.addInitScript(TRACK_PCS);
  const page = await ctx.newPage();
  watchPage(page, name);
  return page;
}

/** Collects a page's console errors and page errors for the last test, less the expected ones. */
function watchPage(page, name) {
  page.setDefaultTimeout(T);
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const text = m.text();
    // The browser reports every non-2xx response this way (for example the
    // 401 that starts user-interactive auth, or a 404 profile look-up);
    // those are answers the app handles, not errors in the app.
    if (/^Failed to load resource: the server responded with a status of (401|403|404)/.test(text)) return;
    // Until the server answers /voip/turnServer, matrix-js-sdk logs its 404.
    // matrix-js-sdk logs this when the server forgets a device's token.
    if (signedOutElsewhere.has(name) && /Unable to refresh token|M_UNKNOWN_TOKEN/.test(text)) return;
    if (expectSendFailure && /net::ERR_FAILED|Error sending event/.test(text)) return;
    if (!TURN_API && /Failed to get TURN URIs M_UNRECOGNIZED/.test(text)) return;
    // Chromium logs each request that fails for want of a network.
    if (offlineOnPurpose.has(name) && /net::ERR_INTERNET_DISCONNECTED/.test(text)) return;
    // Chromium says so when a page asks an incognito context for a push
    // subscription (the test's subscription stands in: src/lib/push.ts).
    // The server's refusal of an urgent contact past the quota is a 429 the app shows.
    if (limitOnPurpose.has(name) && /status of 429/.test(text)) return;
    if (pushOnPurpose.has(name) && /does not support the Push API in incognito mode/.test(text)) return;
    problems.push(`[${name}] console.error: ${text}`);
  });
  page.on("pageerror", (e) => problems.push(`[${name}] page error: ${e.message}`));
  pages.push(page);
}

async function shot(page, file, { bottom = true } = {}) {
  if (!SHOTS) return;
  if (bottom) await page.evaluate(() => document.querySelector('[data-testid="timeline"]')?.scrollTo(0, 1e9));
  mkdirSync(SHOTS, { recursive: true });
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(SHOTS, file) });
}

async function signIn(page, user, base = URL_) {
  await page.goto(base + "/");
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password", { exact: true }).fill(PW);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** First sign-in of an account: creates keys and shows the recovery key once. */
async function firstSignIn(page, user, base = URL_) {
  await signIn(page, user, base);
  let recoveryKey = null;
  if (E2EE) {
    await page.getByRole("heading", { name: "Set up secure keys" }).waitFor();
    await page.getByRole("button", { name: "Create my recovery key" }).click();
    const out = page.getByTestId("recovery-key");
    await out.waitFor({ timeout: 60_000 });
    recoveryKey = (await out.textContent()).trim();
    assert.match(recoveryKey, /^([A-Za-z0-9]{4} ){11}[A-Za-z0-9]{4}$/, "recovery key is 48 base58 characters in groups of 4");
    const cont = page.getByRole("button", { name: "Continue" });
    assert.equal(await cont.isDisabled(), true, "cannot continue before confirming the key is stored");
    await page.getByLabel("I have stored my recovery key").check();
    await cont.click();
  }
  await page.getByRole("navigation", { name: "Lines" }).waitFor();
  return recoveryKey;
}

async function openLine(page, counterpartId) {
  const link = page.locator(`a.line[data-counterpart="${counterpartId}"]`);
  await link.waitFor();
  await link.click();
  await page.locator("#composer-input, .invite-bar").first().waitFor();
}

let alice, bob, aliceKey, lineRoomId;
const ALICE = "@alice:localhost";
const BOB = "@bob:localhost";
const CAROL = "@carol:localhost";

before(async () => {
  E2EE = await supports("POST", "/_matrix/client/v3/keys/query", { device_keys: {} });
  TURN_API = await supports("GET", "/_matrix/client/v3/voip/turnServer");
  if (!E2EE) console.log("# server has no E2EE endpoints yet: key set-up steps are skipped, encrypted sends will fail");
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

test("sign-in page: labelled form, wrong password refused", async () => {
  const page = await newPage("anon");
  await page.goto(URL_ + "/");
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
  await shot(page, "sign-in.png");
  // Keyboard order: user name, password, then the submit button.
  await page.getByLabel("User name").focus();
  await page.keyboard.type("alice");
  await page.keyboard.press("Tab");
  await page.keyboard.type("not-the-password");
  await page.keyboard.press("Enter");
  await page.getByRole("alert").filter({ hasText: /password/i }).waitFor();
  // Every request stayed on this deployment (no CDN, no font service).
  const origins = await page.evaluate(() => [...new Set(performance.getEntriesByType("resource").map((e) => new URL(e.name).origin))]);
  assert.deepEqual(origins.filter((o) => o !== new URL(URL_).origin), [], "no request leaves the deployment");
  await page.context().close();
});

test("first-time set-up with a registration token", async () => {
  const token = execFileSync(BIN, ["--data-dir", DATA, "admin", "registration-token", "--uses", "1"]).toString().trim();
  const page = await newPage("dave");
  await page.goto(URL_ + "/");
  await page.getByRole("button", { name: "Set up with a registration token" }).click();
  await page.getByLabel("User name").fill("dave");
  await page.getByLabel("Password", { exact: true }).fill("dave-password-1");
  await page.getByLabel("Confirm password").fill("dave-password-1");
  await page.getByLabel("Registration token").fill(token);
  await page.getByRole("button", { name: "Create account" }).click();
  if (E2EE) {
    await page.getByRole("heading", { name: "Set up secure keys" }).waitFor();
    await page.getByRole("button", { name: "Create my recovery key" }).click();
    await page.getByTestId("recovery-key").waitFor({ timeout: 60_000 });
    await page.getByLabel("I have stored my recovery key").check();
    await page.getByRole("button", { name: "Continue" }).click();
  }
  await page.getByRole("navigation", { name: "Lines" }).waitFor();
  const who = await api("POST", "/_matrix/client/v3/login", {
    type: "m.login.password",
    identifier: { type: "m.id.user", user: "dave" },
    password: "dave-password-1",
  });
  assert.equal(who.json.user_id, "@dave:localhost", "the account exists on the server");
  // The token had one use: a second registration with it is refused.
  const again = await api("POST", "/_matrix/client/v3/register", { username: "eve", password: "eve-password-1" });
  const second = await api("POST", "/_matrix/client/v3/register", {
    username: "eve",
    password: "eve-password-1",
    auth: { type: "m.login.registration_token", token, session: again.json.session },
  });
  assert.notEqual(second.status, 200, "a used-up token is refused");
  await page.context().close();
});

test("two users sign in and set up keys", async () => {
  alice = await newPage("alice");
  bob = await newPage("bob");
  // One after the other: key set-up waits for each account-data write to
  // come back through /sync, and the server (at the time of writing) can
  // miss the wake-up of a waiting /sync when two users write at once,
  // delaying the echo to the long-poll timeout (30 s) per write.
  aliceKey = await firstSignIn(alice, "alice");
  await firstSignIn(bob, "bob");
  if (E2EE) {
    await alice.getByRole("button", { name: "Settings and account" }).click();
    await alice.getByTestId("crypto-state").filter({ hasText: "This device is verified" }).waitFor();
  }
});

test("new line: encrypted DM recorded in m.direct; the invite is accepted", async () => {
  await alice.goto(URL_ + "/#/");
  await alice.getByRole("button", { name: "New line" }).click();
  await alice.getByLabel("User id").fill("bob");
  await alice.getByRole("button", { name: "Open line" }).click();
  await alice.locator("#composer-input").waitFor();
  lineRoomId = decodeURIComponent(new URL(alice.url()).hash.replace(/^#\/line\//, ""));
  assert.match(lineRoomId, /^!/);

  // The room is what the spec says a DM is: encrypted, direct, in m.direct.
  const token = await alice.evaluate(() => JSON.parse(localStorage.getItem("hotline.session")).accessToken);
  const enc = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(lineRoomId)}/state/m.room.encryption/`, undefined, token);
  assert.equal(enc.json.algorithm, "m.megolm.v1.aes-sha2");
  const direct = await api("GET", `/_matrix/client/v3/user/${encodeURIComponent(ALICE)}/account_data/m.direct`, undefined, token);
  assert.deepEqual(direct.json[BOB], [lineRoomId]);

  await openLine(bob, ALICE);
  await bob.locator(".invite-bar").getByText("wants to open a line with you").waitFor();
  await bob.getByRole("button", { name: "Accept" }).click();
  await bob.locator("#composer-input").waitFor();
});

test("encrypted messages both ways, typing, read receipts, unread counts", async () => {
  await alice.locator("#composer-input").waitFor();
  // Typing shows on the other side.
  await alice.locator("#composer-input").pressSequentially("Hel", { delay: 30 });
  await bob.getByTestId("typing").filter({ hasText: "alice is typing" }).waitFor();
  await alice.locator("#composer-input").fill("");

  await send(alice, "Hello Bob, this line is encrypted.");
  await message(bob, "Hello Bob, this line is encrypted.").waitFor();
  await send(bob, "Hello Alice, loud and clear.");
  await message(alice, "Hello Alice, loud and clear.").waitFor();

  // Sent, then read once Bob has seen it (Bob's chat is open).
  await message(alice, "Hello Bob, this line is encrypted.").and(alice.locator('[data-status="read"]')).waitFor();

  // The server only ever saw ciphertext.
  const token = await alice.evaluate(() => JSON.parse(localStorage.getItem("hotline.session")).accessToken);
  const msgs = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(lineRoomId)}/messages?dir=b&limit=50`, undefined, token);
  const types = msgs.json.chunk.filter((e) => e.sender === ALICE && e.state_key === undefined && e.type.startsWith("m.room.")).map((e) => e.type);
  assert.ok(types.length > 0 && types.every((t) => t === "m.room.encrypted"), `messages are m.room.encrypted on the server: ${types}`);
  assert.ok(!JSON.stringify(msgs.json).includes("loud and clear"), "no plaintext on the server");

  // Unread count on Alice's list while she looks elsewhere.
  await alice.goto(URL_ + "/#/");
  await send(bob, "Are you free for a call?");
  const badge = alice.locator(`a.line[data-counterpart="${BOB}"] .badge`);
  await badge.filter({ hasText: "1" }).waitFor();
  const preview = await alice.locator(`a.line[data-counterpart="${BOB}"] .line-preview`).textContent();
  assert.equal(preview, "Are you free for a call?");
  await openLine(alice, BOB);
  await badge.waitFor({ state: "detached" });
});

test("edit, delete, failed send with retry", async () => {
  await send(alice, "Meet at 10");
  await message(bob, "Meet at 10").waitFor();
  const mine = message(alice, "Meet at 10");
  await mine.and(alice.locator('[data-status="read"], [data-status="sent"]')).waitFor();
  await mine.hover();
  await mine.getByRole("button", { name: "Edit message" }).click();
  await alice.locator("#composer-input").fill("Meet at 11");
  await alice.locator("#composer-input").press("Enter");
  await message(bob, "Meet at 11").filter({ hasText: "edited" }).waitFor();
  assert.equal(await message(bob, "Meet at 10").count(), 0, "the old text is replaced");

  alice.once("dialog", (d) => d.accept());
  const edited = message(alice, "Meet at 11");
  await edited.hover();
  await edited.getByRole("button", { name: "Delete message" }).click();
  await message(bob, "Message deleted").waitFor();
  assert.equal(await message(bob, "Meet at 11").count(), 0);

  // A send that fails (server unreachable for this request) shows "Not sent"
  // with Retry; retrying delivers it.
  expectSendFailure = true;
  await alice.route("**/_matrix/client/v3/rooms/*/send/**", (route) => route.abort());
  await send(alice, "This one will need a retry");
  const failed = message(alice, "This one will need a retry");
  await failed.and(alice.locator('[data-status="failed"]')).waitFor();
  await failed.getByText("Not sent").waitFor();
  await alice.unroute("**/_matrix/client/v3/rooms/*/send/**");
  expectSendFailure = false;
  await failed.getByRole("button", { name: "Retry" }).click();
  await message(bob, "This one will need a retry").waitFor();
  await alice.mouse.move(5, 700);
  await shot(alice, "chat.png");
});

test("encrypted image attachment shown inline on the other side", async () => {
  // A real PNG (the app's own screenshot), so the browser must decode it.
  const png = await alice.screenshot({ clip: { x: 0, y: 0, width: 64, height: 48 } });
  await alice.getByTestId("file-input").setInputFiles({ name: "photo.png", mimeType: "image/png", buffer: png });
  const img = bob.getByTestId("chat-image").last();
  await img.waitFor();
  await bob.waitForFunction((el) => el.complete && el.naturalWidth === 64, await img.elementHandle());
  // What the server stores is ciphertext, not the PNG.
  const files = readdirDeep(join(DATA, "media"));
  assert.ok(files.length > 0, "media stored");
  for (const f of files) {
    const head = readFileSync(f).subarray(0, 8);
    assert.notDeepEqual([...head], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `stored media ${f} is not a plaintext PNG`);
  }
});

function readdirDeep(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath || e.path, e.name));
}

test("history loads on scroll", async () => {
  // Sent through Bob's UI, so they are encrypted like any message.
  for (let i = 1; i <= 45; i++) await send(bob, `history ${i}`);
  await message(alice, "history 45").waitFor();
  // A fresh load of Alice's page starts with the latest page only.
  await alice.reload();
  await openLine(alice, BOB);
  await message(alice, "history 45").waitFor();
  assert.equal(await message(alice, "Hello Alice, loud and clear.").count(), 0, "old messages not loaded yet");
  const timeline = alice.getByTestId("timeline");
  for (let i = 0; i < 20 && (await message(alice, "Hello Alice, loud and clear.").count()) === 0; i++) {
    await timeline.evaluate((el) => (el.scrollTop = 0));
    await alice.waitForTimeout(400);
  }
  await message(alice, "Hello Alice, loud and clear.").waitFor();
});

async function call(caller, callee, calleeName, { screenshots = false } = {}) {
  await caller.getByRole("button", { name: new RegExp(`^Call ${calleeName}`) }).click();
  const incoming = callee.getByTestId("incoming-call");
  await incoming.waitFor();
  const dialog = callee.getByRole("alertdialog");
  await dialog.waitFor();
  // Ringing is ringing: not yet "Call in progress" in the caller's history.
  await caller.getByTestId("call-entry").last().filter({ hasText: "Ringing…" }).waitFor();
  // The dialog names the caller as a person, not as a Matrix ID.
  assert.doesNotMatch(await dialog.textContent(), /@[^\s:]+:\S/, "no Matrix ID in the incoming call");
  if (screenshots) await shot(callee, "incoming-call.png");
  // The browser notification rings too (permission granted to the context).
  const notes = await callee.evaluate(() => window.__notifications);
  assert.ok(notes.some((n) => n.title === "Incoming call"), `a browser notification: ${JSON.stringify(notes)}`);
  // Keyboard: the answer button has focus when the call arrives.
  assert.equal(await callee.evaluate(() => document.activeElement?.getAttribute("aria-label")), "Answer call");
  await callee.keyboard.press("Enter");
  await caller.locator('[data-testid="active-call"][data-phase="connected"]').waitFor();
  await callee.locator('[data-testid="active-call"][data-phase="connected"]').waitFor();
  await caller.getByTestId("call-entry").last().filter({ hasText: "Call in progress" }).waitFor();
}

test("voice call: ring, answer, audio both ways, mute, timer, hang up, history", async () => {
  await openLine(bob, ALICE);
  await call(alice, bob, "bob", { screenshots: true });
  const stats = await assertAudioBothWays(alice, bob);
  assert.ok(stats.a.outbound > 0 && stats.b.outbound > 0);
  // Timer runs.
  await alice.getByTestId("call-status").filter({ hasText: /^0:0[1-9]/ }).waitFor();
  await shot(alice, "in-call.png");
  // Mute stops sending audio from Alice's side.
  await alice.getByRole("button", { name: "Mute microphone" }).click();
  await alice.getByRole("button", { name: "Unmute microphone" }).waitFor();
  const muted = await alice.evaluate(() =>
    window.__pcs[window.__pcs.length - 1].getSenders().every((s) => !s.track || !s.track.enabled),
  );
  assert.ok(muted, "microphone track disabled when muted");
  await alice.getByRole("button", { name: "Unmute microphone" }).click();
  await alice.getByRole("button", { name: "Hang up" }).click();
  await bob.locator('[data-testid="active-call"][data-phase="ended"]').or(bob.getByTestId("call-entry").filter({ hasText: /Incoming call · 0:/ })).first().waitFor();
  await alice.getByTestId("call-entry").filter({ hasText: /Outgoing call · 0:\d\d/ }).waitFor();
  await bob.getByTestId("call-entry").filter({ hasText: /Incoming call · 0:\d\d/ }).waitFor();
  await alice.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
});

test("declined call shows in history", async () => {
  await alice.getByRole("button", { name: /^Call bob/ }).click();
  await bob.getByTestId("incoming-call").waitFor();
  await bob.getByRole("button", { name: "Decline call" }).click();
  await alice.getByTestId("call-entry").filter({ hasText: "Call declined" }).waitFor();
  await alice.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
});

test("relay-only call goes through coturn (selected candidate pair is relay)", { skip: !TURN && "coturn not running (hotline turn-config missing?)" }, async () => {
  for (const p of [alice, bob]) {
    await p.goto(URL_ + "/#/settings");
    await p.getByText(/Relay \(TURN\): available/).waitFor();
    const toggle = p.getByTestId("relay-only");
    await toggle.check();
    assert.equal(await p.evaluate(() => JSON.parse(localStorage.getItem("hotline.settings")).relayOnly), true, "setting persisted");
  }
  // The setting survives a reload.
  await bob.reload();
  assert.equal(await bob.getByTestId("relay-only").isChecked(), true);
  await alice.goto(URL_ + `/#/line/${encodeURIComponent(lineRoomId)}`);
  await bob.goto(URL_ + `/#/line/${encodeURIComponent(lineRoomId)}`);
  await call(alice, bob, "bob");
  const stats = await assertAudioBothWays(alice, bob);
  assert.equal(stats.a.policy, "relay");
  assert.equal(stats.a.local, "relay", `caller's selected pair is relayed: ${JSON.stringify(stats.a)}`);
  assert.equal(stats.b.local, "relay", `callee's selected pair is relayed: ${JSON.stringify(stats.b)}`);
  await alice.getByRole("button", { name: "Hang up" }).click();
  await alice.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
  for (const p of [alice, bob]) {
    await p.goto(URL_ + "/#/settings");
    await p.getByTestId("relay-only").uncheck();
  }
  await alice.goto(URL_ + `/#/line/${encodeURIComponent(lineRoomId)}`);
  await bob.goto(URL_ + `/#/line/${encodeURIComponent(lineRoomId)}`);
});

test("interop: a bare matrix-js-sdk client calls the web app and is called back", async () => {
  assert.ok(existsSync(join(TEST_DIST, "index.html")), "interop page built (npm run build)");
  const sdk = await newPage("carol-sdk");
  // Serve the test page from the server's origin (a secure context for WebRTC).
  await sdk.route(URL_ + "/interop/**", (route) => {
    const rel = new URL(route.request().url()).pathname.replace(/^\/interop\/?/, "") || "index.html";
    const file = join(TEST_DIST, rel);
    const type = rel.endsWith(".js") ? "text/javascript" : rel.endsWith(".wasm") ? "application/wasm" : "text/html";
    route.fulfill({ status: 200, contentType: type, body: readFileSync(file) });
  });
  await sdk.goto(URL_ + "/interop/index.html");
  await sdk.waitForFunction(() => !!window.interop);
  const carolId = await sdk.evaluate(([hs, pw]) => window.interop.start(hs, "carol", pw), [URL_, PW]);
  assert.equal(carolId, CAROL);

  // Alice opens a line with Carol from the web app; the SDK client joins.
  await alice.goto(URL_ + "/#/");
  await alice.getByRole("button", { name: "New line" }).click();
  await alice.getByLabel("User id").fill(CAROL);
  await alice.getByRole("button", { name: "Open line" }).click();
  await alice.locator("#composer-input").waitFor();
  const carolRoom = decodeURIComponent(new URL(alice.url()).hash.replace(/^#\/line\//, ""));
  await sdk.waitForFunction((r) => window.interop.client.getRoom(r)?.getMyMembership() === "join", carolRoom, { timeout: T });
  await alice.locator('button.call-button:not([disabled])').waitFor();

  // Texts cross both ways.
  await send(alice, "Hello from the Hotline web app");
  await sdk.waitForFunction((r) => window.interop.texts(r).includes("Hello from the Hotline web app"), carolRoom, { timeout: T });
  await sdk.evaluate((r) => window.interop.sendText(r, "Hello from plain matrix-js-sdk"), carolRoom);
  await message(alice, "Hello from plain matrix-js-sdk").waitFor();

  // The SDK client calls; Alice answers in the web app.
  await sdk.evaluate((r) => window.interop.placeCall(r), carolRoom);
  await alice.getByTestId("incoming-call").waitFor();
  await alice.getByRole("button", { name: "Answer call" }).click();
  await alice.locator('[data-testid="active-call"][data-phase="connected"]').waitFor();
  await assertAudioBothWays(alice, sdk);
  await alice.getByRole("button", { name: "Hang up" }).click();
  await sdk.waitForFunction(() => window.interop.callState === "ended", undefined, { timeout: T });
  await alice.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });

  // And back: Alice calls, the SDK client answers automatically.
  await alice.getByRole("button", { name: /^Call carol/ }).click();
  await sdk.waitForFunction(() => window.interop.callState === "connected", undefined, { timeout: T });
  await alice.locator('[data-testid="active-call"][data-phase="connected"]').waitFor();
  await assertAudioBothWays(alice, sdk);
  await sdk.evaluate(() => window.interop.hangup());
  await alice.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
  await sdk.context().close();
});

test("new device: recovery key restores history; the old device removes it", async (t) => {
  if (!E2EE) return t.skip("server has no E2EE endpoints");
  const second = await newPage("alice-2", { mobile: true });
  await signIn(second, "alice");
  await second.getByRole("heading", { name: "Confirm it's you" }).waitFor();
  await second.getByLabel("Recovery key").fill("EsTc aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii jjjj kkkk");
  await second.getByRole("button", { name: "Verify this device" }).click();
  await second.getByRole("alert").waitFor();
  await second.getByLabel("Recovery key").fill(aliceKey);
  await second.getByRole("button", { name: "Verify this device" }).click();
  await second.getByRole("navigation", { name: "Lines" }).waitFor();
  await openLine(second, BOB);
  // Earlier messages decrypt from the key backup.
  const timeline = second.getByTestId("timeline");
  for (let i = 0; i < 20 && (await message(second, "Hello Bob, this line is encrypted.").count()) === 0; i++) {
    await timeline.evaluate((el) => (el.scrollTop = 0));
    await second.waitForTimeout(500);
  }
  await message(second, "Hello Bob, this line is encrypted.").waitFor();
  await shot(second, "chat-phone.png");

  // The first device removes the second (password confirmation).
  const secondDevice = await second.evaluate(() => JSON.parse(localStorage.getItem("hotline.session")).deviceId);
  await alice.goto(URL_ + "/#/settings");
  const list = alice.getByTestId("devices");
  await list.getByText(secondDevice).waitFor();
  await list.locator("li").filter({ hasText: secondDevice }).getByRole("button", { name: /^Remove/ }).click();
  await alice.getByLabel("Confirm with your password").fill("wrong-password");
  await alice.getByRole("button", { name: "Remove session" }).click();
  await alice.getByRole("alert").filter({ hasText: "Wrong password" }).waitFor();
  await alice.getByLabel("Confirm with your password").fill(PW);
  signedOutElsewhere.add("alice-2");
  await alice.getByRole("button", { name: "Remove session" }).click();
  await list.getByText(secondDevice).waitFor({ state: "detached" });
  // The removed device notices and returns to sign-in.
  await second.getByRole("heading", { name: "Sign in" }).waitFor({ timeout: 60_000 });
});

test("undecryptable message is clearly marked", async (t) => {
  if (!E2EE) return t.skip("server has no E2EE endpoints");
  // A message encrypted with a session nobody shared: craft it with the
  // access token directly (the server relays ciphertext it cannot read).
  // Well-formed (a 32-byte sender key and session id, a Megolm message:
  // version 3, index 0, 16 bytes of ciphertext, MAC, signature), so the
  // only thing missing is the session's key.
  const token = await bob.evaluate(() => JSON.parse(localStorage.getItem("hotline.session")).accessToken);
  const unpadded = (b) => b.toString("base64").replace(/=+$/, "");
  const megolm = Buffer.concat([Buffer.from([3, 0x08, 0x00, 0x12, 16]), Buffer.alloc(16, 7), Buffer.alloc(8, 1), Buffer.alloc(64, 2)]);
  const r = await api(
    "PUT",
    `/_matrix/client/v3/rooms/${encodeURIComponent(lineRoomId)}/send/m.room.encrypted/utd-${Date.now()}`,
    {
      algorithm: "m.megolm.v1.aes-sha2",
      sender_key: unpadded(Buffer.alloc(32, 9)),
      session_id: unpadded(Buffer.alloc(32, 5)),
      device_id: "NOSUCHDEVICE",
      ciphertext: unpadded(megolm),
    },
    token,
  );
  assert.equal(r.status, 200);
  let receipts = 0;
  const onReq = (q) => q.method() === "POST" && q.url().includes(encodeURIComponent(r.json.event_id)) && receipts++;
  alice.on("request", onReq);
  await alice.goto(URL_ + `/#/line/${encodeURIComponent(lineRoomId)}`);
  await alice.getByTestId("utd").last().waitFor();
  // The crypto layer's own reason, in words: the key never came.
  assert.equal(await alice.getByTestId("utd").last().getAttribute("data-reason"), "MEGOLM_UNKNOWN_INBOUND_SESSION_ID");
  assert.match(await alice.getByTestId("utd").last().textContent(), /Unable to decrypt this message\. Its key has not reached this device/);
  // A device does not claim to have read what it could not decrypt.
  await alice.waitForTimeout(2000);
  alice.off("request", onReq);
  assert.equal(receipts, 0, "no read receipt for an undecryptable event");
});

test("phone-sized screen: list, then chat with a back button", async () => {
  const phone = await newPage("bob-phone", { mobile: true });
  // Carol (whose other device is the bare SDK client, without cross-signing)
  // sets up her keys here on a phone-sized screen.
  await firstSignIn(phone, "carol");
  const lines = phone.getByRole("navigation", { name: "Lines" });
  assert.ok(await lines.isVisible(), "list visible first");
  await openLine(phone, ALICE);
  assert.ok(!(await lines.isVisible()), "the list gives way to the chat");
  await phone.getByRole("button", { name: "Back to lines" }).click();
  await lines.waitFor();
  await phone.context().close();
});

test("load time: page load to the lines list (loopback)", async () => {
  const samples = [];
  for (let i = 0; i < 3; i++) {
    // A real page load each time (a hash-only change would not reload).
    await alice.goto(URL_ + `/?load=${i}#/`);
    await alice.locator(`a.line[data-counterpart="${BOB}"]`).waitFor();
    const ms = await alice.evaluate(() => performance.getEntriesByName("hotline:lines")[0]?.startTime);
    assert.ok(typeof ms === "number" && ms > 0, "the app marks when the lines list is ready");
    samples.push(Math.round(ms));
  }
  samples.sort((a, b) => a - b);
  await shot(alice, "lines.png");
  console.log(`# load-to-lines ms (signed in, 3 loads): ${samples.join(", ")} (median ${samples[1]})`);
  assert.ok(samples[1] < 10_000, "lines list within 10 s on loopback");
});

// ---- official identity and direct lines (docs/DESIGN.md capabilities 4 and 5) ----

const OFFICIALS = {
  a: { user: "avalon-president", name: "Alma Reyes", title: "President", country: "Avalon", office: "Office of the President of Avalon", password: "alma-reyes-pw-1" },
  b: { user: "borduria-chancellor", name: "Bruno Keller", title: "Chancellor", country: "Borduria", office: "Federal Chancellery of Borduria", password: "bruno-keller-pw-1" },
};
const official = {}; // key -> { page, userId, masterKey }

function admin(...args) {
  return execFileSync(BIN, ["--data-dir", DATA, "admin", ...args]).toString();
}


/** Asserts that a rendered QR code (our SVG) holds exactly `text`. */
async function assertQrEncodes(svg, text) {
  const { n, d } = await svg.evaluate((el) => ({ n: Number(el.dataset.modules), d: el.querySelector("path").getAttribute("d") }));
  const q = qrcode(0, "M");
  q.addData(text, "Byte");
  q.make();
  assert.equal(n, q.getModuleCount(), "QR size");
  const dark = new Set();
  for (const m of d.matchAll(/M(\d+) (\d+)h(\d+)v1h-\d+z/g)) {
    for (let i = 0; i < Number(m[3]); i++) dark.add(`${Number(m[2]) - 4},${Number(m[1]) - 4 + i}`);
  }
  let wrong = 0;
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (dark.has(`${r},${c}`) !== q.isDark(r, c)) wrong++;
  assert.equal(wrong, 0, `QR modules differ from the encoding of ${text}`);
}


test("official enrolment: set a password, key set-up, fingerprint, vouched by the office", async () => {
  for (const key of ["a", "b"]) {
    const o = OFFICIALS[key];
    const out = admin("enroll", o.user, "--name", o.name, "--title", o.title, "--country", o.country, "--office", o.office, "--role", "principal", "--base-url", URL_);
    const code = /^code (\S+)$/m.exec(out)?.[1];
    const link = /^link (\S+)$/m.exec(out)?.[1];
    const userId = /^enrolled (\S+)$/m.exec(out)?.[1];
    assert.equal(link, `${URL_}/#/enrol/${code}`, out);
    const page = await newPage(`official-${key}`);
    await page.goto(link);
    await page.getByRole("heading", { name: "Set your password" }).waitFor();
    // Before anything is set, the link says whose enrolment it is.
    await page.getByTestId("enrollee").filter({ hasText: `${o.name}, ${o.title} · ${o.country}` }).filter({ hasText: userId }).filter({ hasText: o.office }).waitFor();
    await page.getByLabel("New password").fill(o.password);
    await page.getByLabel("Confirm password").fill(o.password + "-typo");
    await page.getByRole("button", { name: "Set password and continue" }).click();
    await page.getByRole("alert").filter({ hasText: "do not match" }).waitFor();
    await page.getByLabel("Confirm password").fill(o.password);
    await page.getByRole("button", { name: "Set password and continue" }).click();
    if (E2EE) {
      // Key set-up reuses the password just set: no second prompt.
      await page.getByRole("heading", { name: "Set up secure keys" }).waitFor();
      // It says whose enrolment this is.
      await page.getByTestId("enrollee").filter({ hasText: `${o.name}, ${o.title} · ${o.country}` }).filter({ hasText: userId }).waitFor();
      assert.equal(await page.getByLabel("Confirm your password").count(), 0);
      await page.getByRole("button", { name: "Create my recovery key" }).click();
      await page.getByTestId("recovery-key").waitFor({ timeout: 60_000 });
      await page.getByLabel("I have stored my recovery key").check();
      await page.getByRole("button", { name: "Continue" }).click();
    }
    await page.getByRole("heading", { name: "Your identity fingerprint" }).waitFor();
    await page.getByText("Show this to your protocol office to be vouched for.").waitFor();
    await page.getByTestId("enrollee").filter({ hasText: `${o.name}, ${o.title} · ${o.country}` }).filter({ hasText: userId }).waitFor();
    // The fingerprint as the office compares it: 12 groups of 5 digits.
    await page.locator('[data-testid="fingerprint"][data-ready="true"]').waitFor();
    const fp = (await page.getByTestId("fingerprint").textContent()).trim();
    assert.match(fp, /^(\d{5} ){11}\d{5}$/, "12 groups of 5 digits");
    // The office's `hotline admin show-key` prints the same digits, for
    // the master key the server holds for the account.
    const shown = admin("show-key", userId);
    assert.equal(/^fingerprint (.+)$/m.exec(shown)?.[1], fp, shown);
    assert.equal(/^official (.+)$/m.exec(shown)?.[1], `${o.name}, ${o.title} of ${o.country} (${o.office})`);
    const token = await tokenOf(page);
    const q = await api("POST", "/_matrix/client/v3/keys/query", { device_keys: { [userId]: [] } }, token);
    const serverKey = Object.values(q.json.master_keys[userId].keys)[0];
    assert.equal(/^master_key (\S+)$/m.exec(shown)?.[1], serverKey);
    // The key's base64 is there on request.
    await page.getByText("Show the key as base64").click();
    assert.equal((await page.getByTestId("fingerprint-base64").textContent()).replaceAll(" ", ""), serverKey);
    await page.getByTestId("own-identity").filter({ hasText: "Not vouched for yet" }).waitFor();
    if (key === "a") await shot(page, "enrol-fingerprint.png", { bottom: false });
    // The office compares the digits in person and vouches, typing them as read aloud.
    const att = JSON.parse(admin("vouch", userId, "--master-key", fp));
    assert.equal(att.master_key, serverKey);
    await page.getByTestId("own-identity").filter({ hasText: `Vouched for by ${o.office}: ${o.name}, ${o.title} · ${o.country}` }).waitFor();
    await page.getByRole("button", { name: "Continue to Hotline" }).click();
    await page.getByRole("navigation", { name: "Lines" }).waitFor();
    assert.equal(new URL(page.url()).hash, "#/");
    official[key] = { page, userId, masterKey: att.master_key, digits: fp };

    // The code worked once: the same link is refused, in words, before any
    // password is typed (and no form is offered to type one into).
    const again = await newPage(`enrol-again-${key}`);
    await again.goto(link);
    await again.getByTestId("enrol-link-error").filter({ hasText: "Unknown or already used enrolment code" }).waitFor();
    assert.equal(await again.getByLabel("New password").count(), 0);
    await again.context().close();
  }
  // Settings shows one's own fingerprint and vouched-for state.
  const a = official.a.page;
  await a.goto(URL_ + "/#/settings");
  await a.getByTestId("own-identity").filter({ hasText: `Vouched for by ${OFFICIALS.a.office}` }).waitFor();
  await a.locator('[data-testid="fingerprint"][data-ready="true"]').waitFor();
  assert.equal((await a.getByTestId("fingerprint").textContent()).trim(), official.a.digits);
  await a.getByRole("link", { name: "Manage line invites" }).waitFor();
});

/**
 * Creates an invite in the form; `forName` picks its one counterpart in the
 * official picker, by keyboard: type part of the name, Down, Enter.
 */
async function createInvite(page, { forName = "" } = {}) {
  const created = page.getByTestId("created-invite");
  const before = (await created.count()) ? await created.getByTestId("invite-link").inputValue() : null;
  if (forName) {
    const box = page.getByRole("combobox", { name: "Only for (optional)" });
    await box.fill(forName.split(" ")[0].toLowerCase());
    await page.getByRole("listbox").getByRole("option", { name: new RegExp(forName) }).waitFor();
    await box.press("ArrowDown");
    await box.press("Enter");
    await page.getByTestId("invite-for-picked").filter({ hasText: forName }).waitFor();
  }
  await page.getByRole("button", { name: "Create invite" }).click();
  const link = created.getByTestId("invite-link");
  await page.waitForFunction(
    ([b]) => {
      const v = document.querySelector('[data-testid="created-invite"] [data-testid="invite-link"]')?.value;
      return v && v !== b;
    },
    [before],
  );
  return link.inputValue();
}

/** Opens an invite link and expects a refusal: at once (the preview), or when opening the line. */
async function redeemError(page, link, expected) {
  await page.goto(link);
  await page.getByRole("heading", { name: "Open a direct line" }).waitFor();
  const error = page.getByTestId("redeem-error");
  const open = page.getByRole("button", { name: "Open the line" });
  await error.or(open).first().waitFor();
  if (await open.count()) await open.click();
  await error.filter({ hasText: expected }).waitFor();
}

/**
 * Enrols a third principal whose office vouches for them at once (a
 * master key uploaded through the API), so the pickers list them.
 */
async function enrolVouchedPrincipal(user, name, title, country) {
  const out = admin("enroll", user, "--name", name, "--title", title, "--country", country, "--office", `Office of the ${title} of ${country}`, "--role", "principal");
  const code = /^code (\S+)$/m.exec(out)[1];
  const userId = /^enrolled (\S+)$/m.exec(out)[1];
  const r = await api("POST", `/_hotline/v1/enrol/${code}`, { password: "a long enough password" });
  assert.equal(r.status, 200);
  const pub = b64(await ed.getPublicKeyAsync(ed.utils.randomSecretKey()));
  const up = await api("POST", "/_matrix/client/v3/keys/device_signing/upload", { master_key: { user_id: userId, usage: ["master"], keys: { [`ed25519:${pub}`]: pub } } }, r.json.access_token);
  assert.equal(up.status, 200, JSON.stringify(up.json));
  admin("vouch", userId, "--master-key", pub);
  return userId;
}

test("line invites: a principal creates, shares (link + QR) and revokes; refusals are explained", async () => {
  const A = official.a.page;
  const B = official.b.page;
  // Only principals and aides see the entry: Alice (no official) doesn't.
  if (alice) {
    await alice.goto(URL_ + "/#/");
    await alice.getByRole("navigation", { name: "Lines" }).waitFor();
    assert.equal(await alice.getByRole("link", { name: "Line invites" }).count(), 0);
  }
  // A third principal, vouched for: the picker offers her to bind an invite to.
  await enrolVouchedPrincipal("carpathia-consul", "Cara Lind", "Consul", "Carpathia");
  await A.goto(URL_ + "/#/");
  await A.reload();
  await A.getByRole("link", { name: "Line invites" }).click();
  await A.getByRole("heading", { name: "Line invites" }).waitFor();

  // Bound to someone else (picked, not typed): Bruno is refused as soon
  // as he opens it, without learning whom it is for.
  const bound = await createInvite(A, { forName: "Cara Lind" });
  await A.getByTestId("created-invite").getByText("only for Cara Lind (Consul · Carpathia)").waitFor();
  await redeemError(B, bound, "This line invite is meant for someone else");
  assert.equal(await B.getByTestId("invite-issuer").count(), 0, "nothing about the issuer is shown");
  assert.equal(await B.getByRole("button", { name: "Open the line" }).count(), 0);

  // Revoked in the list: refused.
  const revoked = await createInvite(A);
  const revokedCode = revoked.split("#/line/")[1].split("/")[0];
  const row = A.locator(`[data-testid="invites"] li[data-code="${revokedCode}"]`);
  A.once("dialog", (d) => d.accept());
  await row.getByRole("button", { name: /^Revoke invite/ }).click();
  await A.locator(`[data-testid="invites"] li[data-code="${revokedCode}"][data-state="revoked"]`).getByText("Revoked").waitFor();
  await redeemError(B, revoked, "This line invite was revoked by its office");

  // Expired (made through the API with a one-second lifetime): refused.
  const short = await api("POST", "/_hotline/v1/line_invites", { expires_in_ms: 1000 }, await tokenOf(A));
  assert.equal(short.status, 200);
  await A.waitForTimeout(1200);
  await redeemError(B, short.json.url, "This line invite has expired");

  // The real one: single use, 7 days, for Bruno (picked); its link and QR code.
  const link = await createInvite(A, { forName: "Bruno Keller" });
  // The link names the issuing server after the code.
  const [code, issuingServer] = link.split("#/line/")[1].split("/");
  assert.equal(link, `${URL_}/#/line/${code}/${issuingServer}`);
  const created = A.getByTestId("created-invite");
  await created.getByText("single use · expires in 7 days · only for Bruno Keller (Chancellor · Borduria)").waitFor();
  await assertQrEncodes(created.getByTestId("invite-qr"), link);
  await A.locator(`[data-testid="invites"] li[data-code="${code}"][data-state="active"]`).waitFor();
  await shot(A, "line-invite.png", { bottom: false });

  // Before anything is accepted, Bruno sees who is calling: Alma's name,
  // title and country, verified against her attestation, and the expiry.
  await B.goto(link);
  const issuer = B.locator('[data-testid="invite-issuer"][data-status="verified"]');
  await issuer.waitFor();
  await issuer.getByText(OFFICIALS.a.name, { exact: true }).waitFor();
  await issuer.getByText(`${OFFICIALS.a.title} · ${OFFICIALS.a.country}`).waitFor();
  await issuer.getByText(`Verified: attested by ${OFFICIALS.a.office}`).waitFor();
  await issuer.getByTestId("invite-expiry").filter({ hasText: /^Expires .*\(in 7 days\)$/ }).waitFor();
  assert.equal((await api("GET", `/_hotline/v1/line_invites/${code}`, undefined, await tokenOf(B))).json.name, OFFICIALS.a.name);
  await shot(B, "line-invite-open.png", { bottom: false });
  await B.getByRole("button", { name: "Open the line" }).click();
  await B.locator("#composer-input").waitFor();
  const roomId = decodeURIComponent(new URL(B.url()).hash.replace(/^#\/line\//, ""));
  assert.match(roomId, /^!/);
  official.roomId = roomId;
  // The server's line: both principals, official, encrypted.
  const line = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/org.hotline.line/`, undefined, await tokenOf(B));
  assert.deepEqual([...line.json.principals].sort(), [official.a.userId, official.b.userId].sort());
  assert.equal(line.json.official, true);

  // Used once and listed as used up; opening it again leads its redeemer
  // back to the same line (a redeem is idempotent per principal).
  await B.goto(link);
  await B.getByRole("heading", { name: "Open a direct line" }).waitFor();
  await B.getByRole("button", { name: "Open the line" }).click();
  await B.waitForFunction((id) => decodeURIComponent(location.hash) === `#/line/${id}`, roomId);
  await B.locator("#composer-input").waitFor();
  const usedRow = A.locator(`[data-testid="invites"] li[data-code="${code}"][data-state="used"]`);
  await usedRow.getByText("Used up").waitFor();
  // The list names who redeemed it.
  await usedRow.getByTestId("redeemed-by").filter({ hasText: `Redeemed by ${OFFICIALS.b.name}, ${OFFICIALS.b.title} · ${OFFICIALS.b.country}` }).waitFor();
});

test("line invite opened signed out: sign in first, then a non-principal is refused", async () => {
  const token = await tokenOf(official.a.page);
  const inv = await api("POST", "/_hotline/v1/line_invites", {}, token);
  assert.equal(inv.status, 200);
  admin("create-user", "erin", "--password", PW);
  const page = await newPage("erin");
  await page.goto(inv.json.url);
  await page.getByText("Sign in to open the direct line you were invited to.").waitFor();
  await page.getByLabel("User name").fill("erin");
  await page.getByLabel("Password", { exact: true }).fill(PW);
  await page.getByRole("button", { name: "Sign in" }).click();
  if (E2EE) {
    await page.getByRole("heading", { name: "Set up secure keys" }).waitFor();
    await page.getByRole("button", { name: "Create my recovery key" }).click();
    await page.getByLabel("I have stored my recovery key").check({ timeout: 60_000 });
    await page.getByRole("button", { name: "Continue" }).click();
  }
  // Back where the link pointed, signed in: who sent it is shown to anyone
  // signed in; only a principal may open it.
  await page.getByRole("heading", { name: "Open a direct line" }).waitFor();
  await page.locator('[data-testid="invite-issuer"][data-status="verified"]').getByText(OFFICIALS.a.name, { exact: true }).waitFor();
  await page.getByRole("button", { name: "Open the line" }).click();
  await page.getByTestId("redeem-error").filter({ hasText: "Only an enrolled principal can redeem a line invite" }).waitFor();
  await page.context().close();
});

test("direct line: verified badges (title, country) in list, header and call; texts both ways; voice call", async () => {
  const A = official.a.page;
  const B = official.b.page;
  const { a, b } = OFFICIALS;
  // The list shows the line, with the counterpart's verified badge.
  for (const [page, other, o] of [[A, official.b.userId, b], [B, official.a.userId, a]]) {
    await page.goto(URL_ + "/#/");
    const row = page.locator(`a.line[data-counterpart="${other}"]`);
    await row.and(page.locator('[data-official="true"]')).waitFor();
    await mark(row).and(page.locator('[data-status="verified"]')).filter({ hasText: `${o.title} · ${o.country}` }).waitFor();
    await row.getByText(o.name).waitFor();
    assert.equal(await mark(row).getAttribute("title"), `Verified by ${o.office}: ${o.name}, ${o.title} of ${o.country}`);
    await row.click();
    const header = page.locator(".chat-head");
    await mark(header).and(page.locator('[data-status="verified"]')).filter({ hasText: `${o.title} · ${o.country}` }).waitFor();
    await header.getByText("Official line · End-to-end encrypted").waitFor();
  }
  // Regular users stay plainly unverified (Alice's line with Bob).
  if (alice && lineRoomId) {
    await alice.goto(URL_ + `/#/line/${encodeURIComponent(lineRoomId)}`);
    await mark(alice.locator(".chat-head")).and(alice.locator('[data-status="unverified"]')).filter({ hasText: "unverified" }).waitFor();
  }

  await send(A, "Good evening, Chancellor. This is the line we agreed.");
  await message(B, "Good evening, Chancellor. This is the line we agreed.").waitFor();
  await send(B, "Good evening, Madam President. Loud and clear.");
  await message(A, "Good evening, Madam President. Loud and clear.").waitFor();
  await shot(A, "verified-line.png");

  // A voice call: the badge is on the ringing dialog and in the call bar.
  await A.getByRole("button", { name: `Call ${b.name}` }).click();
  const incoming = B.getByTestId("incoming-call");
  await incoming.waitFor();
  await mark(incoming).filter({ hasText: `${a.title} · ${a.country}` }).and(B.locator('[data-status="verified"]')).waitFor();
  await B.getByRole("button", { name: "Answer call" }).click();
  for (const [page, o] of [[A, b], [B, a]]) {
    const bar = page.locator('[data-testid="active-call"][data-phase="connected"]');
    await bar.waitFor();
    await mark(bar).filter({ hasText: `${o.title} · ${o.country}` }).and(page.locator('[data-status="verified"]')).waitFor();
  }
  await assertAudioBothWays(A, B);
  await shot(A, "verified-call.png");
  await A.getByRole("button", { name: "Hang up" }).click();
  await A.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
  await B.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
});

test("a changed identity key pauses the line until the office vouches again", async () => {
  const A = official.a.page;
  const B = official.b.page;
  const { b } = OFFICIALS;
  const room = `/#/line/${encodeURIComponent(official.roomId)}`;
  await A.goto(URL_ + room);
  await B.goto(URL_ + room);
  await A.locator("#composer-input:not([disabled])").waitFor();

  const newKey = await replaceCrossSigning(URL_, official.b.userId, b.password, await tokenOf(B));
  const changedAt = Date.now();

  // Alma's side: a blocking banner, composer and call button off, the badge turns to a warning.
  const banner = A.getByTestId("identity-banner");
  await banner.filter({ hasText: "This line is paused" }).waitFor();
  console.log(`# key change shown in the counterpart's line after ${Date.now() - changedAt} ms`);
  assert.match(await banner.textContent(), new RegExp(`${b.name}'s identity key changed since ${b.office} vouched for them as ${b.title} · ${b.country}`));
  assert.equal(await A.locator("#composer-input").isDisabled(), true, "composer disabled");
  assert.equal(await A.getByRole("button", { name: `Call ${b.name}` }).isDisabled(), true, "call button disabled");
  assert.equal(await A.getByRole("button", { name: "Send" }).isDisabled(), true, "send disabled");
  await mark(A.locator(".chat-head")).and(A.locator('[data-status="key-mismatch"]')).filter({ hasText: "Identity key changed" }).waitFor();
  await mark(A.locator(`a.line[data-counterpart="${official.b.userId}"]`)).and(A.locator('[data-status="key-mismatch"]')).waitFor();
  await shot(A, "line-paused.png");
  // The server agrees: the line is paused.
  const refused = await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(official.roomId)}/send/m.room.message/paused-${Date.now()}`, { msgtype: "m.text", body: "x" }, await tokenOf(A));
  assert.equal(refused.status, 403);
  assert.match(refused.json.error, /paused/);
  // Bruno's side: his own key is not the vouched one; his composer is off too.
  await B.getByTestId("identity-banner").filter({ hasText: "Your identity key is not the one" }).waitFor();
  assert.equal(await B.locator("#composer-input").isDisabled(), true);

  // "Check again" reads the directory at once; with no new vouch the line stays paused.
  await A.getByRole("button", { name: "Check again" }).click();
  await A.getByRole("button", { name: "Check again" }).waitFor();
  assert.equal(await A.locator("#composer-input").isDisabled(), true, "still paused after checking again");
  await banner.filter({ hasText: "This line is paused" }).waitFor();

  // The office compares the new fingerprint in person and vouches again: the
  // line resumes by itself (the directory's change reaches the page through
  // /sync, or the paused line's 10 s look), with no click needed.
  admin("vouch", official.b.userId, "--master-key", newKey);
  const vouchedAt = Date.now();
  await banner.waitFor({ state: "detached", timeout: 15_000 });
  await mark(A.locator(".chat-head")).and(A.locator('[data-status="verified"]')).filter({ hasText: `${b.title} · ${b.country}` }).waitFor();
  await A.locator("#composer-input:not([disabled])").waitFor();
  // Bruno's page notices by itself (a paused line looks again every 10 s).
  await B.getByTestId("identity-banner").waitFor({ state: "detached" });
  console.log(`# vouched again: pause lifted on the other side after ${Date.now() - vouchedAt} ms`);
  await send(A, "Back on the line after your office vouched again.");
  await message(B, "Back on the line after your office vouched again.").waitFor();
});

// ---- what a person sees: errors, clock, one entry per person, the header on a phone, a quiet console ----

/** Every 4xx/5xx answer and console message of a page from now on, except UIA's 401 (it starts every password check). */
function watchQuiet(page) {
  const seen = [];
  // Alice's line holds an event made undecryptable on purpose (the test
  // "undecryptable message is clearly marked"): the crypto library warns of
  // it, and the SDK asks the key backup for its session (404: not there).
  // Those are the app doing its job for that one event.
  const utdOnPurpose = page === alice;
  const backupMiss = (url) => utdOnPurpose && /\/room_keys\/keys\/[^/]+\/BQUFBQUF/.test(url);
  const onResponse = (r) => {
    if (r.status() === 401 && r.request().method() === "POST") return;
    if (r.status() === 404 && backupMiss(r.url())) return;
    if (r.status() >= 400) seen.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
  };
  const onConsole = (m) => {
    if (utdOnPurpose && /Failed to decrypt a room event|^Error decrypting event .*sender=@bob:/.test(m.text())) return;
    if (backupMiss(m.location()?.url || "")) return;
    seen.push(`console.${m.type()}: ${m.text().slice(0, 200)}`);
  };
  page.on("response", onResponse);
  page.on("console", onConsole);
  return () => {
    page.off("response", onResponse);
    page.off("console", onConsole);
    return seen;
  };
}

/** Buttons and links on the page that a screen reader could not name. */
const unnamedControls = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll("button, a[href], [role=button]")]
      .filter((el) => el.offsetParent !== null)
      .filter((el) => !(el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") || el.textContent.trim() || el.getAttribute("title")))
      .map((el) => el.outerHTML.slice(0, 120)),
  );

test("a signed-in session is quiet: no failed requests, no console output, every control named", async () => {
  for (const [page, other] of [[alice, BOB], [official.a.page, official.b?.userId]]) {
    if (!page || !other) continue;
    const stop = watchQuiet(page);
    await page.goto(URL_ + `/?quiet=${Date.now()}#/`); // a real page load
    await page.getByRole("navigation", { name: "Lines" }).waitFor();
    const row = page.locator(`a.line[data-counterpart="${other}"]`);
    await row.waitFor();
    assert.deepEqual(await unnamedControls(page), [], "list: every control has a name");
    await row.click();
    await page.locator("#composer-input").waitFor();
    assert.deepEqual(await unnamedControls(page), [], "chat: every control has a name");
    await page.getByRole("button", { name: "Settings and account" }).click();
    await page.getByTestId("crypto-state").waitFor();
    await page.waitForTimeout(1500); // late answers (device list, key backup) land too
    assert.deepEqual(stop(), [], "nothing failed and nothing was logged");
  }
});

test("a refused action reads as a sentence with the server's reason, never a raw MatrixError", async () => {
  // Alice (no office vouches for her) may not open a line to a principal.
  await alice.goto(URL_ + "/#/");
  await alice.getByRole("button", { name: "New line" }).click();
  await alice.getByLabel("User id").fill(official.a.userId);
  await alice.getByRole("button", { name: "Open line" }).click();
  const err = alice.getByRole("dialog").getByRole("alert");
  await err.waitFor();
  const text = await err.textContent();
  assert.doesNotMatch(text, /MatrixError|\[\d{3}\]|https?:\/\/|M_FORBIDDEN/, text);
  assert.match(text, /^Could not open the line\. The server refused: \S/, text);
  await alice.getByRole("button", { name: "Cancel" }).click();
});

test("times follow the reader's languages, not the browser's own locale", async () => {
  // Chromium's own locale is en-US here. A reader whose languages say en-GB
  // (Accept-Language, navigator.languages) reads a 24-hour clock.
  await alice.context().addInitScript(() => {
    const l = localStorage.getItem("e2e.languages");
    if (l) Object.defineProperty(navigator, "languages", { get: () => JSON.parse(l) });
  });
  try {
    for (const [languages, pattern] of [[["en-GB", "en"], /^\d{2}:\d{2}$/], [["en-US"], /^\d{1,2}:\d{2}\s?[AP]M$/]]) {
      await alice.evaluate((l) => localStorage.setItem("e2e.languages", JSON.stringify(l)), languages);
      await alice.goto(URL_ + `/?lang=${languages[0]}#/line/${encodeURIComponent(lineRoomId)}`);
      const t = alice.getByTestId("message").last().locator("time");
      await t.waitFor();
      const text = (await t.textContent()).trim();
      assert.match(text, pattern, `${languages}: ${text}`);
    }
  } finally {
    await alice.evaluate(() => localStorage.removeItem("e2e.languages"));
  }
});

test("one list entry per person, even with two rooms between them", async () => {
  const aliceToken = await tokenOf(alice);
  const bobToken = await tokenOf(bob);
  await alice.goto(URL_ + "/#/");
  await alice.locator(`a.line[data-counterpart="${BOB}"]`).waitFor();
  // A second direct room between the same two people (both opened a line at
  // once), where Bob then writes: it is the more recent one.
  const r = await api("POST", "/_matrix/client/v3/createRoom", { is_direct: true, preset: "trusted_private_chat", invite: [BOB] }, aliceToken);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const second = r.json.room_id;
  assert.equal((await api("POST", `/_matrix/client/v3/join/${encodeURIComponent(second)}`, {}, bobToken)).status, 200);
  const sent = await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(second)}/send/m.room.message/dup-${Date.now()}`, { msgtype: "m.text", body: "Written in the second room" }, bobToken);
  assert.equal(sent.status, 200);
  try {
    // Alice's list shows Bob once: the entry is the room with his newest message.
    const rows = alice.locator(`a.line[data-counterpart="${BOB}"]`);
    await rows.filter({ hasText: "Written in the second room" }).waitFor();
    assert.equal(await rows.count(), 1);
    await rows.click();
    await message(alice, "Written in the second room").waitFor();
    await bob.goto(URL_ + "/#/");
    await bob.locator(`a.line[data-counterpart="${ALICE}"]`).filter({ hasText: "Written in the second room" }).waitFor();
    assert.equal(await bob.locator(`a.line[data-counterpart="${ALICE}"]`).count(), 1);
  } finally {
    // Both leave it: the first line is the line again.
    for (const t of [bobToken, aliceToken]) await api("POST", `/_matrix/client/v3/rooms/${encodeURIComponent(second)}/leave`, {}, t);
  }
  // Once both leaves have synced, the one entry is the first line again.
  await alice.goto(URL_ + "/#/");
  const first = alice.locator(`a.line[data-counterpart="${BOB}"][href="#/line/${encodeURIComponent(lineRoomId)}"]`);
  await first.waitFor();
  assert.equal(await alice.locator(`a.line[data-counterpart="${BOB}"]`).count(), 1);
  await first.click();
  assert.equal(decodeURIComponent(new URL(alice.url()).hash.replace(/^#\/line\//, "")), lineRoomId);
});

test("a phone-sized screen shows the whole chat header, and a principal reads 'you', not 'your principal'", async () => {
  const A = official.a.page;
  const { b } = OFFICIALS;
  await A.setViewportSize({ width: 390, height: 800 });
  try {
    await A.goto(URL_ + `/#/line/${encodeURIComponent(official.roomId)}`);
    const head = A.locator(".chat-head");
    await mark(head).and(A.locator('[data-status="verified"]')).filter({ hasText: `${b.title} · ${b.country}` }).waitFor();
    await head.getByText("Official line · End-to-end encrypted").waitFor();
    const cut = await head.evaluate((h) =>
      [...h.querySelectorAll("h1, .chat-sub, .idmark, .idmark-text")]
        .filter((el) => el.scrollWidth > el.clientWidth + 1 || el.getBoundingClientRect().right > window.innerWidth)
        .map((el) => `${el.className || el.tagName}: ${el.textContent}`),
    );
    assert.deepEqual(cut, [], "nothing in the header is cut off");
    await shot(A, "chat-phone-official.png", { bottom: false });
  } finally {
    await A.setViewportSize({ width: 1200, height: 760 });
  }
  await A.goto(URL_ + "/#/invites");
  const intro = A.locator(".settings-body .intro");
  await intro.waitFor();
  assert.doesNotMatch(await intro.textContent(), /your principal/);
  assert.match(await intro.textContent(), /line with you\./);
});

// ---- aides on a line, visibly (docs/DESIGN.md capability 6) ----

/**
 * Enrols an official through their link, as "official enrolment" does
 * (password, key set-up), and vouches for them with the digits their
 * fingerprint screen shows. Returns their page and user id.
 */
async function enrolThroughLink(pageName, o, roleArgs) {
  const out = admin("enroll", o.user, "--name", o.name, "--title", o.title, "--country", o.country, "--office", o.office, ...roleArgs, "--base-url", URL_);
  const link = /^link (\S+)$/m.exec(out)?.[1];
  const userId = /^enrolled (\S+)$/m.exec(out)?.[1];
  assert.ok(link && userId, out);
  const page = await newPage(pageName);
  await page.goto(link);
  await page.getByLabel("New password").fill(o.password);
  await page.getByLabel("Confirm password").fill(o.password);
  await page.getByRole("button", { name: "Set password and continue" }).click();
  if (E2EE) {
    await page.getByRole("button", { name: "Create my recovery key" }).click();
    await page.getByTestId("recovery-key").waitFor({ timeout: 60_000 });
    await page.getByLabel("I have stored my recovery key").check();
    await page.getByRole("button", { name: "Continue" }).click();
  }
  await page.locator('[data-testid="fingerprint"][data-ready="true"]').waitFor();
  const digits = (await page.getByTestId("fingerprint").textContent()).trim();
  const att = JSON.parse(admin("vouch", userId, "--master-key", digits));
  await page.getByTestId("own-identity").filter({ hasText: `Vouched for by ${o.office}` }).waitFor();
  await page.getByRole("button", { name: "Continue to Hotline" }).click();
  await page.getByRole("navigation", { name: "Lines" }).waitFor();
  return { page, userId, masterKey: att.master_key, digits };
}

/**
 * The two principals' line of the tests above (Alma Reyes and Bruno
 * Keller); run on its own (--test-name-pattern), the same two are
 * enrolled here and the line is opened from an invite of Alma's.
 */
async function principalsLine() {
  for (const key of ["a", "b"]) {
    if (!official[key]) official[key] = await enrolThroughLink(`official-${key}`, OFFICIALS[key], ["--role", "principal"]);
  }
  if (!official.roomId) {
    const inv = await api("POST", "/_hotline/v1/line_invites", {}, await tokenOf(official.a.page));
    assert.equal(inv.status, 200, JSON.stringify(inv.json));
    const r = await api("POST", `/_hotline/v1/line_invites/${inv.json.code}/redeem`, {}, await tokenOf(official.b.page));
    assert.equal(r.status, 200, JSON.stringify(r.json));
    official.roomId = r.json.room_id;
  }
  return { A: official.a.page, B: official.b.page, roomId: official.roomId };
}

const AIDE = {
  user: "avalon-chief-of-staff",
  name: "Lea Moreau",
  title: "Chief of Staff",
  country: "Avalon",
  office: "Office of the President of Avalon",
  password: "lea-moreau-pw-1",
};

test("aides on a line: a principal adds their aide, everyone sees 'Aide: NAME (for PRINCIPAL)', the other principal removes them", async () => {
  const { A, B, roomId } = await principalsLine();
  const { a, b } = OFFICIALS;
  official.aide = await enrolThroughLink("aide", AIDE, ["--role", "aide", "--principal", official.a.userId]);
  const { page: L, userId: aideId } = official.aide;
  const label = `Aide: ${AIDE.name} (for ${a.name})`;
  const room = `/#/line/${encodeURIComponent(roomId)}`;

  // Alma opens "People on this line" from the header: the two principals.
  await A.goto(URL_ + room);
  await A.locator("#composer-input:not([disabled])").waitFor();
  await A.getByRole("button", { name: "People on this line (2)" }).click();
  const panelA = A.getByTestId("people-dialog");
  await panelA.getByTestId("person").nth(1).waitFor();
  assert.equal(await panelA.getByTestId("person").count(), 2);
  // "Add aide" lists her own aides as the directory vouches for them (read
  // again as it opens: Lea was vouched for a moment ago).
  await panelA.getByRole("button", { name: "Add aide" }).click();
  const candidate = panelA.getByTestId("aide-candidates").locator(`li[data-user="${aideId}"]`);
  await candidate.getByText(`${AIDE.title} · ${AIDE.country}`).waitFor();
  assert.deepEqual(await unnamedControls(A), [], "people panel: every control has a name");
  await candidate.getByRole("button", { name: `Add ${AIDE.name} to the line` }).click();
  const aideRowA = panelA.locator(`[data-testid="person"][data-user="${aideId}"]`);
  await aideRowA.getByTestId("person-role").filter({ hasText: `Aide to ${a.name} · invited` }).waitFor();
  await mark(aideRowA).and(A.locator('[data-status="verified"]')).filter({ hasText: `${AIDE.title} · ${AIDE.country}` }).waitFor();
  await panelA.getByRole("button", { name: "Close" }).click();
  await A.getByTestId("aide-notice").filter({ hasText: `${a.name} added ${AIDE.name} to the line as their aide` }).waitFor();

  // Bruno sees her in his header as soon as she is invited, and why.
  await B.goto(URL_ + room);
  await B.locator(".chat-head").getByTestId("aide-label").filter({ hasText: `${label} · invited` }).waitFor();
  await B.getByTestId("aide-notice").filter({ hasText: `${a.name} added ${AIDE.name} to the line as their aide` }).waitFor();

  // Lea's list: her principal bringing her onto a line; she accepts.
  await L.goto(URL_ + "/#/");
  const entry = L.locator('a.line[data-aide="true"]');
  await entry.filter({ hasText: "Brings you onto a line as their aide" }).waitFor();
  await entry.click();
  await L.getByTestId("aide-invite").filter({ hasText: `${a.name} brings you onto a line as their aide.` }).waitFor();
  await L.getByRole("button", { name: "Accept" }).click();
  // The line between the two principals, not a chat with one person.
  await L.locator("#chat-title").filter({ hasText: `${a.name} – ${b.name}` }).waitFor();
  await L.getByTestId("you-aide").filter({ hasText: `You are on this line as aide to ${a.name}` }).waitFor();
  await entry.filter({ hasText: `${a.name} – ${b.name}` }).getByTestId("line-role").filter({ hasText: `As aide to ${a.name}` }).waitFor();
  assert.equal(await L.locator(`a.line[data-counterpart="${official.a.userId}"]:not([data-aide])`).count(), 0, "no direct chat with her principal appears");
  await L.locator("#composer-input:not([disabled])").waitFor();
  await send(L, "The briefing notes for tonight are ready.");

  // Bruno: her message, named as an aide and for whom; his header too.
  const fromAide = message(B, "The briefing notes for tonight are ready.");
  await fromAide.waitFor();
  await fromAide.getByTestId("sender").filter({ hasText: label }).waitFor();
  assert.equal((await fromAide.getByTestId("sender").textContent()).trim(), label);
  await B.getByTestId("aide-notice").filter({ hasText: `${AIDE.name} joined the line as aide to ${a.name}` }).waitFor();
  const headerB = B.locator(".chat-head").getByTestId("aide-label");
  await B.waitForFunction((l) => document.querySelector('.chat-head [data-testid="aide-label"]')?.textContent.trim() === l, label);
  assert.equal((await headerB.textContent()).trim(), label);
  // Alma reads it the same way; her reply reaches the aide, named.
  await message(A, "The briefing notes for tonight are ready.").getByTestId("sender").filter({ hasText: label }).waitFor();
  await send(A, "Thank you, Lea. Chancellor, shall we begin?");
  await message(L, "Thank you, Lea. Chancellor, shall we begin?").getByTestId("sender").filter({ hasText: a.name }).waitFor();
  await message(B, "Thank you, Lea. Chancellor, shall we begin?").getByTestId("sender").filter({ hasText: a.name }).waitFor();
  await shot(B, "line-aide.png");

  // Bruno's "People on this line": three, with roles and verified badges.
  await B.getByRole("button", { name: "People on this line (3)" }).click();
  const panelB = B.getByTestId("people-dialog");
  await panelB.getByTestId("person").nth(2).waitFor();
  const rows = await panelB.getByTestId("person").evaluateAll((els) =>
    els.map((e) => [e.dataset.user, e.dataset.role, e.querySelector('[data-testid="person-role"]').textContent.trim(), e.querySelector('[data-testid="identity-mark"]')?.dataset.status]),
  );
  assert.deepEqual(
    rows.sort((x, y) => (x[0] < y[0] ? -1 : 1)),
    [
      [official.a.userId, "principal", "Principal", "verified"],
      [aideId, "aide", `Aide to ${a.name}`, "verified"],
      [official.b.userId, "principal", "Principal", "verified"],
    ].sort((x, y) => (x[0] < y[0] ? -1 : 1)),
  );
  await panelB.getByText(`${b.name} (you)`).waitFor();
  // He has no aide of his own to add.
  await panelB.getByRole("button", { name: "Add aide" }).click();
  await panelB.getByTestId("no-aides").waitFor();
  assert.deepEqual(await unnamedControls(B), [], "people panel: every control has a name");

  // The other side objects to the aide: Bruno takes her off the line.
  B.once("dialog", (d) => d.accept());
  await panelB.getByRole("button", { name: `Remove ${AIDE.name} from the line` }).click();
  await panelB.locator(`[data-testid="person"][data-user="${aideId}"]`).waitFor({ state: "detached" });
  await panelB.getByRole("button", { name: "Close" }).click();
  for (const page of [A, B]) {
    await page.getByTestId("aide-notice").filter({ hasText: `${b.name} removed ${AIDE.name} from the line` }).waitFor();
    await page.locator(".chat-head").getByTestId("line-aides").waitFor({ state: "detached" });
    await page.getByRole("button", { name: "People on this line (2)" }).waitFor();
  }
  // Lea's page: no composer, and a sentence saying who took her off.
  await L.getByTestId("left-bar").filter({ hasText: `${b.name} removed you from this line. You are no longer on it as aide to ${a.name}.` }).waitFor();
  assert.equal(await L.locator("#composer-input").count(), 0, "no composer once off the line");
  await entry.waitFor({ state: "detached" });
  // The server agrees: the marking names who removed her, and she can't send.
  const marking = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/org.hotline.aide/${encodeURIComponent("_" + aideId)}`, undefined, await tokenOf(A));
  assert.deepEqual(marking.json, { removed_by: official.b.userId });
  const refused = await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/aide-${Date.now()}`, { msgtype: "m.text", body: "x" }, await tokenOf(L));
  assert.equal(refused.status, 403);
  // The principals' texts go on as before.
  await send(A, "Just the two of us again.");
  await message(B, "Just the two of us again.").waitFor();
});

// ---- the official record: official or personal, calls on record, the contact log ----

test("official or personal: one principal asks, the other agrees, either makes it official again", async () => {
  const { A, B, roomId } = await principalsLine();
  const { a, b } = OFFICIALS;
  const room = `/#/line/${encodeURIComponent(roomId)}`;
  const lineOnServer = async () =>
    (await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/org.hotline.line/`, undefined, await tokenOf(A))).json;
  await A.goto(URL_ + room);
  await B.goto(URL_ + room);
  for (const page of [A, B]) await page.locator(".chat-head").getByText("Official line · End-to-end encrypted").waitFor();

  // Alma asks, from "People on this line"; a confirm says both must agree.
  await A.getByRole("button", { name: /^People on this line/ }).click();
  const panelA = A.getByTestId("people-dialog");
  await panelA.getByTestId("record-state").filter({ hasText: "This line is official: it is kept in the official record." }).waitFor();
  let asked = "";
  A.once("dialog", (d) => {
    asked = d.message();
    d.accept();
  });
  await panelA.getByRole("button", { name: "Ask to make it personal" }).click();
  await panelA.getByTestId("record-state").filter({ hasText: `You asked to make this line personal; waiting for ${b.name}.` }).waitFor();
  assert.match(asked, new RegExp(`Ask ${b.name} to make this line personal\\?`));
  assert.match(asked, /only when you both agree/);
  assert.deepEqual(await unnamedControls(A), [], "record section: every control has a name");
  await panelA.getByRole("button", { name: "Close" }).click();
  await A.getByTestId("record-notice").filter({ hasText: `${a.name} asked to make this line personal` }).waitFor();
  // One consent changes nothing yet.
  await A.locator(".chat-head").getByText("Official line · End-to-end encrypted").waitFor();
  assert.notEqual((await lineOnServer()).official, false, "still official on the server");

  // Bruno sees the request above his timeline, and agrees.
  const bar = B.getByTestId("record-request");
  await bar.filter({ hasText: `${a.name} asks to make this line personal.` }).waitFor();
  await B.getByTestId("record-notice").filter({ hasText: `${a.name} asked to make this line personal` }).waitFor();
  assert.deepEqual(await unnamedControls(B), [], "request bar: every control has a name");
  await bar.getByRole("button", { name: "Agree" }).click();
  for (const page of [A, B]) {
    await page.locator(".chat-head").getByText("Personal line · End-to-end encrypted").waitFor();
    await page.getByTestId("record-notice").filter({ hasText: "This line is now personal: not recorded" }).waitFor();
  }
  await bar.waitFor({ state: "detached" });
  await A.locator(`a.line[data-counterpart="${official.b.userId}"][data-personal="true"]`).waitFor();
  // The server agrees: the line says personal, and who turned it.
  const personal = await lineOnServer();
  assert.equal(personal.official, false, JSON.stringify(personal));
  assert.equal(personal.record_changed_by, official.b.userId);

  // Alma alone makes it official again.
  await A.getByRole("button", { name: /^People on this line/ }).click();
  await panelA.getByTestId("record-state").filter({ hasText: "This line is personal: it is not kept in the official record." }).waitFor();
  await panelA.getByRole("button", { name: "Make it official again" }).click();
  await panelA.getByTestId("record-state").filter({ hasText: "This line is official: it is kept in the official record." }).waitFor();
  await panelA.getByRole("button", { name: "Close" }).click();
  for (const page of [A, B]) {
    await page.locator(".chat-head").getByText("Official line · End-to-end encrypted").waitFor();
    await page.getByTestId("record-notice").filter({ hasText: `${a.name} made this line official again` }).waitFor();
  }
  const again = await lineOnServer();
  assert.equal(again.official, true, JSON.stringify(again));
  const consent = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/org.hotline.record/${encodeURIComponent("_" + official.b.userId)}`, undefined, await tokenOf(A));
  assert.deepEqual(consent.json, { withdrawn_by: official.a.userId });
  await A.locator(`a.line[data-counterpart="${official.b.userId}"][data-official="true"]`).waitFor();
  // Bruno's panel reads the same, with his own button.
  await B.getByRole("button", { name: /^People on this line/ }).click();
  await B.getByTestId("people-dialog").getByRole("button", { name: "Ask to make it personal" }).waitFor();
  await B.getByTestId("people-dialog").getByRole("button", { name: "Close" }).click();
});

/** The MatrixRTC memberships (m.call.member) on a room, by state key, as the server holds them. */
async function callMembers(roomId, token) {
  const state = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state`, undefined, token);
  return Object.fromEntries(state.json.filter((e) => e.type === "m.call.member").map((e) => [e.state_key, e.content]));
}

test("contact log: a call and a text on the line, with direction and length; the CSV download", async () => {
  const { A, B, roomId } = await principalsLine();
  const { a, b } = OFFICIALS;
  const room = `/#/line/${encodeURIComponent(roomId)}`;
  await A.goto(URL_ + room);
  await B.goto(URL_ + room);
  await A.locator("#composer-input:not([disabled])").waitFor();
  await B.locator("#composer-input:not([disabled])").waitFor();
  const token = await tokenOf(A);
  const devices = {};
  for (const [k, page] of [["a", A], ["b", B]]) {
    devices[k] = await page.evaluate(() => JSON.parse(localStorage.getItem("hotline.session")).deviceId);
  }
  const keyA = `_${official.a.userId}_${devices.a}`;
  const keyB = `_${official.b.userId}_${devices.b}`;

  // Alma calls Bruno: her membership stands from placing the call, his from answering.
  await A.getByRole("button", { name: `Call ${b.name}` }).click();
  await B.getByTestId("incoming-call").waitFor();
  for (let i = 0; !(await callMembers(roomId, token))[keyA]?.application; i++) {
    assert.ok(i < 150, `the caller's membership is published when the call is placed: ${JSON.stringify(await callMembers(roomId, token))}`);
    await A.waitForTimeout(100);
  }
  assert.equal((await callMembers(roomId, token))[keyB]?.application, undefined, "the callee is not in the call before answering");
  await B.getByRole("button", { name: "Answer call" }).click();
  for (const page of [A, B]) await page.locator('[data-testid="active-call"][data-phase="connected"]').waitFor();
  await assertAudioBothWays(A, B);
  const inCall = await callMembers(roomId, token);
  for (const [key, device] of [[keyA, devices.a], [keyB, devices.b]]) {
    const m = inCall[key];
    assert.ok(m, `membership ${key}: ${JSON.stringify(inCall)}`);
    assert.deepEqual(
      { ...m, created_ts: typeof m.created_ts },
      { application: "m.call", call_id: "", scope: "m.room", device_id: device, expires: 14400000, focus_active: { type: "mesh" }, foci_preferred: [], created_ts: "number" },
    );
  }
  await A.waitForTimeout(2000);
  await A.getByRole("button", { name: "Hang up" }).click();
  for (const page of [A, B]) await page.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
  // Both left: each membership is empty again (the callee's too, ended by the other side).
  for (let i = 0; ; i++) {
    const m = await callMembers(roomId, token);
    if (JSON.stringify(m[keyA]) === "{}" && JSON.stringify(m[keyB]) === "{}") break;
    assert.ok(i < 100, `memberships left: ${JSON.stringify(m)}`);
    await A.waitForTimeout(100);
  }
  // The memberships stay out of the timeline: the call's own entry tells it.
  assert.equal(await A.getByTestId("timeline").getByText("m.call.member").count(), 0);

  // A text from Bruno after the call. (The server takes an encrypted event
  // within a second of a caller leaving the call for its signalling, a
  // hangup landing late, not a text: this one is typed a moment later.)
  await B.waitForTimeout(1500);
  await send(B, "Noted for the record, Madam President.");
  await message(A, "Noted for the record, Madam President.").waitFor();
  const textId = await message(B, "Noted for the record, Madam President.").getAttribute("data-event-id");

  // Alma's contact log, from the lines list; its requests carry no token in a URL.
  const urls = [];
  A.on("request", (r) => urls.push(r.url()));
  await A.getByRole("link", { name: "Contact log" }).click();
  await A.getByRole("heading", { name: "Contact log" }).waitFor();
  const rows = A.getByTestId("contact-row");
  const callRow = A.locator('[data-testid="contact-row"][data-kind="call"]').first();
  await callRow.waitFor();
  assert.equal(await callRow.getAttribute("data-direction"), "outgoing");
  assert.equal((await callRow.getByTestId("contact-direction").textContent()).trim(), `You → ${b.name}`);
  const length = (await callRow.getByTestId("contact-length").textContent()).trim();
  const m = /^(?:(\d+) min ?)?(?:(\d+) s)?$/.exec(length);
  assert.ok(m && Number(m[1] || 0) * 60 + Number(m[2] || 0) >= 3, `the call lasted 3 s or more: "${length}"`);
  await mark(callRow).and(A.locator('[data-status="verified"]')).waitFor();
  const textRow = A.locator(`[data-testid="contact-row"][data-event-id="${textId}"]`);
  await textRow.waitFor();
  assert.equal(await textRow.getAttribute("data-kind"), "text");
  assert.equal(await textRow.getAttribute("data-direction"), "incoming");
  assert.equal((await textRow.getByTestId("contact-direction").textContent()).trim(), `${b.name} → you`);
  // Newest first: the text sent after the call is above it.
  const order = await rows.evaluateAll((els) => els.map((e) => e.dataset.eventId));
  const callId = await callRow.getAttribute("data-event-id");
  assert.ok(order.indexOf(textId) < order.indexOf(callId), `newest first: ${order}`);
  // Metadata only: no message text anywhere in the log.
  assert.doesNotMatch(await A.getByTestId("contact-log").textContent(), /Noted for the record|Madam President\./);
  assert.deepEqual(await unnamedControls(A), [], "contact log: every control has a name");
  await shot(A, "contact-log.png", { bottom: false });

  // The CSV, fetched with the token in a header and saved as a file.
  const [download] = await Promise.all([A.waitForEvent("download"), A.getByRole("button", { name: "Download CSV" }).click()]);
  assert.match(download.suggestedFilename(), /^contact-log-.*\.csv$/);
  const csv = readFileSync(await download.path(), "utf8");
  const lines = csv.split(/\r?\n/);
  assert.equal(lines[0], "time_utc,kind,direction,counterpart,by,duration_s,answered,urgent,room_id,event_id");
  const callLine = lines.find((l) => l.includes(`,${callId}`));
  assert.ok(callLine, csv);
  const cells = callLine.split(",");
  assert.deepEqual(cells.slice(1, 5), ["call", "outgoing", official.b.userId, official.a.userId]);
  assert.ok(Number(cells[5]) >= 3, `duration_s ${cells[5]}`);
  assert.equal(cells[6], "true");
  assert.ok(lines.some((l) => l.endsWith(`,${textId}`) && l.includes(",text,incoming,")), csv);
  assert.deepEqual(urls.filter((u) => /access_token/.test(u)), [], "no token in any URL");
  assert.ok(urls.some((u) => /\/_hotline\/v1\/contact_log\?.*format=csv/.test(u)));

  // Bruno's log: the same call, incoming from Alma.
  await B.getByRole("link", { name: "Contact log" }).click();
  const hisCall = B.locator(`[data-testid="contact-row"][data-event-id="${callId}"]`);
  await hisCall.waitFor();
  assert.equal(await hisCall.getAttribute("data-direction"), "incoming");
  assert.equal((await hisCall.getByTestId("contact-direction").textContent()).trim(), `${a.name} → you`);
});

// ---- a line call with more than two: the principals and their aides, a mesh ----

/**
 * The page's live peer connections: each one's DTLS fingerprints (its own
 * and its peer's, from the SDP: Chromium gives every connection a
 * certificate of its own, so they pair connections across pages) and the
 * audio bytes it received.
 */
test("availability: do not disturb shows with local time before calling, the call does not ring and the caller is told why, an urgent call rings through, the fourth urgent is refused with its reason; no line, no availability", async () => {
  const { A, B, roomId } = await principalsLine();
  const { a, b } = OFFICIALS;
  const room = `/#/line/${encodeURIComponent(roomId)}`;
  const tokenA = await tokenOf(A);
  const tokenB = await tokenOf(B);
  try {
    // Bruno goes to sleep until 07:00, from Settings.
    await B.goto(URL_ + "/#/settings");
    const setter = B.getByTestId("availability-settings");
    await setter.getByRole("radio", { name: "Asleep" }).check();
    await setter.getByTestId("availability-until").fill("07:00");
    await setter.getByTestId("availability-save").click();
    await B.getByTestId("availability-status").filter({ hasText: /asleep until 07:00/ }).waitFor();

    // Before calling, Alma sees it with Bruno's local time and country: in
    // the lines list, the chat header and on the call button.
    await A.goto(URL_ + room);
    const row = A.locator(`.line[data-counterpart="${official.b.userId}"]`).getByTestId("line-availability");
    await row.filter({ hasText: new RegExp(`^\\d\\d:\\d\\d in ${b.country} · asleep until 07:00$`) }).waitFor();
    await A.getByTestId("chat-availability").filter({ hasText: /asleep until 07:00/ }).waitFor();
    const callButton = A.getByTestId("call-button");
    assert.equal(await callButton.getAttribute("data-availability"), "asleep");
    assert.match(await callButton.getAttribute("aria-label"), /asleep until 07:00: will not ring/);

    // A call that is not urgent: placed, but Bruno's app does not ring, and
    // Alma's says why; "Leave a text" ends it, and Bruno sees a missed call.
    await B.goto(URL_ + room);
    await B.locator("#composer-input:not([disabled])").waitFor();
    const missedBefore = await B.getByTestId("call-entry").filter({ hasText: "Missed call" }).count();
    await callButton.click();
    const banner = A.getByTestId("not-ringing");
    await banner.filter({ hasText: `${b.name} is not being rung` }).waitFor();
    assert.match(await banner.textContent(), /asleep until 07:00/);
    await A.getByTestId("call-urgently").filter({ hasText: "Call urgently (3 of 3 left today)" }).waitFor();
    await B.waitForTimeout(3000);
    assert.equal(await B.getByTestId("incoming-call").count(), 0, "an asleep principal is not rung");
    await A.getByTestId("leave-text").click();
    await A.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
    await B.waitForFunction(
      (n) => [...document.querySelectorAll('[data-testid="call-entry"]')].filter((e) => e.textContent.includes("Missed call")).length > n,
      missedBefore,
      { timeout: T },
    );
    await send(A, "Call me when you wake up");
    await message(B, "Call me when you wake up").waitFor();

    // Urgent: the same call rings through.
    await callButton.click();
    await A.getByTestId("call-urgently").click();
    await B.getByTestId("incoming-call").waitFor({ timeout: T });
    await B.getByRole("button", { name: "Decline call" }).click();
    await A.getByTestId("active-call").waitFor({ state: "detached", timeout: 15_000 });

    // Alma's app counts 2 of 3 left. Two more urgent contacts from another
    // client of her side use up today's quota, so the app's count is stale:
    // the server refuses her urgent text, and she reads why and when it resets.
    await A.getByTestId("urgent-toggle").filter({ hasText: "Urgent 2/3" }).waitFor();
    for (const txn of ["e2e-u2", "e2e-u3"]) {
      const r = await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/org.hotline.urgent/${txn}`, { kind: "text" }, tokenA);
      assert.equal(r.status, 200, JSON.stringify(r.json));
    }
    const q = await api("GET", `/_hotline/v1/lines/${encodeURIComponent(roomId)}/urgent`, undefined, tokenA);
    assert.equal(q.json.remaining, 0, JSON.stringify(q.json));
    await A.getByTestId("urgent-toggle").click();
    assert.equal(await A.getByTestId("urgent-toggle").getAttribute("aria-pressed"), "true");
    limitOnPurpose.add("official-a");
    await A.fill("#composer-input", "Urgent: the fourth");
    await A.press("#composer-input", "Enter");
    const refusal = A.locator(".composer-error");
    await refusal.filter({ hasText: /Not sent as urgent: Urgent contacts on this line are limited to 3 a day/ }).waitFor();
    assert.match(await refusal.textContent(), /next one is available at \d{4}-\d\d-\d\d \d\d:\d\d/);
    assert.equal(await A.inputValue("#composer-input"), "Urgent: the fourth", "the text stays, to send without urgency");
    // Its count now says none is left.
    await A.locator('[data-testid="urgent-toggle"][disabled]').filter({ hasText: "Urgent 0/3" }).waitFor();
    limitOnPurpose.delete("official-a");

    // Alma's aide sets her availability from Settings (for her, not
    // himself), sees it there as the server keeps it, and Alma sees it too.
    if (!official.aide) official.aide = await enrolThroughLink("aide", AIDE, ["--role", "aide", "--principal", official.a.userId]);
    const L = official.aide.page;
    await L.goto(URL_ + "/#/settings");
    const forAlma = L.getByTestId("availability-settings");
    await forAlma.getByTestId("availability-for").filter({ hasText: `As aide to ${a.name}` }).waitFor();
    await forAlma.getByRole("radio", { name: "Do not disturb" }).check();
    await forAlma.getByTestId("availability-save").click();
    await L.getByTestId("availability-status").filter({ hasText: /do not disturb/ }).waitFor();
    await L.reload();
    await L.getByTestId("availability-now").filter({ hasText: /do not disturb/ }).waitFor();
    assert.equal(await L.getByTestId("availability-settings").getByRole("radio", { name: "Do not disturb" }).isChecked(), true);
    const hers = await api("GET", `/_hotline/v1/availability/${encodeURIComponent(official.a.userId)}`, undefined, tokenA);
    assert.equal(hers.json.state, "dnd", JSON.stringify(hers.json));
    assert.equal(hers.json.set_by, official.aide.userId, JSON.stringify(hers.json));

    // Someone without a line reads nothing of Bruno's availability.
    admin("create-user", "avail-stranger", "--password", PW);
    const login = await api("POST", "/_matrix/client/v3/login", { type: "m.login.password", identifier: { type: "m.id.user", user: "avail-stranger" }, password: PW });
    const r = await api("GET", `/_hotline/v1/availability/${encodeURIComponent(official.b.userId)}`, undefined, login.json.access_token);
    assert.equal(r.status, 403, JSON.stringify(r.json));
    assert.equal(r.json.errcode, "M_FORBIDDEN");
    const mine = await api("GET", `/_hotline/v1/availability/${encodeURIComponent(official.b.userId)}`, undefined, tokenA);
    assert.equal(mine.json.state, "asleep");
  } finally {
    // The tests after this one call Bruno and Alma as usual.
    await api("PUT", "/_hotline/v1/availability", { state: "available" }, tokenB);
    await api("PUT", "/_hotline/v1/availability", { state: "available" }, tokenA);
    await A.fill("#composer-input", "").catch(() => undefined);
  }
});

async function meshStats(page) {
  return page.evaluate(async () => {
    const fp = (d) => /a=fingerprint:\S+ (\S+)/.exec(d?.sdp || "")?.[1] || null;
    const out = [];
    for (const pc of window.__pcs) {
      if (pc.connectionState !== "connected") continue;
      let inbound = 0;
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio") inbound += s.bytesReceived || 0;
      });
      out.push({ local: fp(pc.localDescription), remote: fp(pc.remoteDescription), inbound });
    }
    return out;
  });
}

/**
 * Asserts a full mesh between the pages: each has one connected peer
 * connection per other page (and no other), paired by fingerprints, and
 * the audio each receives over it from each other page grows.
 */
async function assertMeshAudio(pages) {
  const names = Object.keys(pages);
  const take = async () => Object.fromEntries(await Promise.all(names.map(async (n) => [n, await meshStats(pages[n])])));
  const links = (snap) => {
    const m = {};
    for (const x of names)
      for (const y of names) {
        if (x === y) continue;
        const pc = snap[x].find((a) => snap[y].some((b) => b.local === a.remote && b.remote === a.local));
        if (pc) m[`${y} → ${x}`] = pc.inbound;
      }
    return m;
  };
  const want = names.length * (names.length - 1);
  const deadline = Date.now() + 60_000;
  let snap, first;
  for (;;) {
    snap = await take();
    first = links(snap);
    if (Object.keys(first).length === want && Object.values(first).every((v) => v > 0)) break;
    if (Date.now() > deadline) assert.fail(`no full mesh with audio: ${JSON.stringify({ first, snap })}`);
    await pages[names[0]].waitForTimeout(250);
  }
  for (const n of names) assert.equal(snap[n].length, names.length - 1, `${n}: one connection per other participant, no more: ${JSON.stringify(snap[n])}`);
  let later;
  for (;;) {
    await pages[names[0]].waitForTimeout(1000);
    later = links(await take());
    if (Object.keys(first).every((k) => later[k] > first[k])) break;
    if (Date.now() > deadline) assert.fail(`audio does not grow on every link: ${JSON.stringify({ first, later })}`);
  }
  return later;
}

/** The call bar's participants: [user, name, role, identity mark] in the order shown. */
const callRows = (page) =>
  page.getByTestId("call-participant").evaluateAll((els) =>
    els.map((e) => [
      e.dataset.user,
      e.querySelector('[data-testid="call-participant-name"]').textContent.trim(),
      e.querySelector('[data-testid="call-participant-role"]').textContent.trim(),
      e.querySelector('[data-testid="identity-mark"]')?.dataset.status,
    ]),
  );

test("a line call with three parties: both principals and an aide, all shown with their roles, audio flowing between every pair (getStats), a leave announced; a seventh refused", async () => {
  const { A, B, roomId } = await principalsLine();
  const { a, b } = OFFICIALS;
  if (!official.aide) official.aide = await enrolThroughLink("aide", AIDE, ["--role", "aide", "--principal", official.a.userId]);
  const { page: L, userId: aideId } = official.aide;
  const room = `/#/line/${encodeURIComponent(roomId)}`;
  const token = await tokenOf(A);
  // Alma brings Lea (back) onto the line; she joins.
  const added = await api("PUT", `/_hotline/v1/lines/${encodeURIComponent(roomId)}/aides/${encodeURIComponent(aideId)}`, {}, token);
  assert.equal(added.status, 200, JSON.stringify(added.json));
  const joined = await api("POST", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/join`, {}, await tokenOf(L));
  assert.equal(joined.status, 200, JSON.stringify(joined.json));
  for (const page of [A, B, L]) {
    await page.goto(URL_ + room);
    await page.locator("#composer-input:not([disabled])").waitFor();
  }
  await A.getByRole("button", { name: "People on this line (3)" }).waitFor();
  const devices = {};
  for (const [k, page] of [["a", A], ["b", B], ["l", L]]) {
    devices[k] = await page.evaluate(() => JSON.parse(localStorage.getItem("hotline.session")).deviceId);
  }
  const keys = {
    a: `_${official.a.userId}_${devices.a}`,
    b: `_${official.b.userId}_${devices.b}`,
    l: `_${aideId}_${devices.l}`,
  };
  const started = Date.now();

  // Alma calls Bruno, as on any line: he rings, Lea does not.
  await A.getByRole("button", { name: `Call ${b.name}` }).click();
  await B.getByTestId("incoming-call").waitFor();
  await B.getByRole("button", { name: "Answer call" }).click();
  for (const page of [A, B]) await page.locator('[data-testid="active-call"][data-phase="connected"]').waitFor();
  assert.equal(await L.getByTestId("incoming-call").count(), 0, "the aide is not rung");
  const entries = {};
  for (const [k, page] of [["a", A], ["b", B]]) entries[k] = await page.getByTestId("call-entry").count();
  // The messages each page shows now (by event id): an older one the
  // timeline decrypts or loads later may still join them, but nothing the
  // call sends.
  const messageIds = (page) => page.getByTestId("message").evaluateAll((els) => els.map((e) => e.getAttribute("data-event-id")));
  const messages = {};
  for (const [k, page] of [["a", A], ["b", B], ["l", L]]) messages[k] = await messageIds(page);
  const inCallSince = Date.now();

  // Lea's header: the call going on, who is in it, and "Join call".
  const bar = L.getByTestId("join-call");
  await bar.getByTestId("join-call-who").filter({ hasText: `In the call: ${a.name}, ${b.name}` }).waitFor();
  assert.equal(await L.getByRole("button", { name: `Call ${b.name}` }).isDisabled(), true, "no second call while one goes on");
  assert.deepEqual(await unnamedControls(L), [], "join bar: every control has a name");
  await bar.getByRole("button", { name: "Join call" }).click();

  // Everyone in it lists all three, with names, roles and verified badges.
  const expected = new Map([
    [official.a.userId, [a.name, a.title]],
    [official.b.userId, [b.name, b.title]],
    [aideId, [AIDE.name, `Aide: ${AIDE.name} (for ${a.name})`]],
  ]);
  for (const page of [A, B, L]) {
    const callBar = page.locator('[data-testid="active-call"][data-phase="connected"]');
    await callBar.waitFor();
    await callBar.locator('[data-testid="call-participant"][data-link="connected"]').nth(1).waitFor({ timeout: 60_000 });
    const rows = await callRows(page);
    assert.equal(rows.length, 3, JSON.stringify(rows));
    for (const [user, name, role, status] of rows) {
      assert.deepEqual([name, role, status], [...expected.get(user), "verified"], `${user}: ${JSON.stringify(rows)}`);
    }
    // The principals first, then the aide.
    assert.equal(rows[2][0], aideId, JSON.stringify(rows));
  }
  // Her joining is told to the others, as text and in a live region.
  for (const page of [A, B]) {
    const news = page.getByTestId("call-news");
    await news.filter({ hasText: `${AIDE.name} joined the call` }).waitFor();
    assert.equal(await news.getAttribute("aria-live"), "polite");
  }
  // Every device is in the call by its MatrixRTC membership.
  const during = await callMembers(roomId, token);
  for (const [k, key] of Object.entries(keys)) assert.equal(during[key]?.application, "m.call", `${k}: ${JSON.stringify(during)}`);

  // Audio both ways between every pair: each page receives from each of the other two.
  const audio = await assertMeshAudio({ alma: A, bruno: B, lea: L });
  console.log(`# three-party line call: every link receives audio ${JSON.stringify(audio)}; ${Date.now() - started} ms from the first call`);

  // Mute still works for the whole mesh.
  await L.getByRole("button", { name: "Mute microphone" }).click();
  await L.getByRole("button", { name: "Unmute microphone" }).waitFor();
  // (every connection's microphone track disabled)
  await L.waitForFunction(() => {
    const live = window.__pcs.filter((pc) => pc.connectionState === "connected");
    return live.length === 2 && live.every((pc) => pc.getSenders().every((s) => !s.track || !s.track.enabled));
  });
  await L.getByRole("button", { name: "Unmute microphone" }).click();

  // The mesh's own signalling shows nowhere in the timeline.
  for (const [k, page] of [["a", A], ["b", B]]) assert.equal(await page.getByTestId("call-entry").count(), entries[k], `${k}: no call entry for the mesh's links`);
  for (const [k, page] of [["a", A], ["b", B], ["l", L]]) {
    // An encrypted event shows as "Decrypting…" for the moment it takes to
    // decrypt; the mesh's signalling then leaves the timeline.
    await page.waitForFunction(() => ![...document.querySelectorAll('[data-testid="message"]')].some((e) => e.textContent.includes("Decrypting…")));
    for (const id of (await messageIds(page)).filter((id) => !messages[k].includes(id))) {
      const e = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(id)}`, undefined, token);
      assert.ok(e.json.origin_server_ts < inCallSince, `${k}: no message from the call: ${JSON.stringify(e.json)}`);
    }
  }

  // Lea hangs up: the others are told, and go on between the two of them.
  await L.getByRole("button", { name: "Hang up" }).click();
  await L.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
  for (const page of [A, B]) {
    await page.getByTestId("call-news").filter({ hasText: `${AIDE.name} left the call` }).waitFor();
    await page.locator('[data-testid="call-participant"]').nth(2).waitFor({ state: "detached" });
    assert.equal(await page.getByTestId("active-call").getAttribute("data-phase"), "connected");
  }
  for (let i = 0; JSON.stringify((await callMembers(roomId, token))[keys.l]) !== "{}"; i++) {
    assert.ok(i < 100, `the aide's membership is emptied: ${JSON.stringify(await callMembers(roomId, token))}`);
    await A.waitForTimeout(100);
  }
  assert.equal((await meshStats(L)).length, 0, "the aide has no connection left");
  await assertMeshAudio({ alma: A, bruno: B });

  // Alma hangs up: the call ends for Bruno too, nobody else being left; every membership is empty.
  await A.getByRole("button", { name: "Hang up" }).click();
  for (const page of [A, B]) await page.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
  for (let i = 0; ; i++) {
    const m = await callMembers(roomId, token);
    if (Object.values(keys).every((k) => JSON.stringify(m[k]) === "{}")) break;
    assert.ok(i < 100, `memberships left: ${JSON.stringify(m)}`);
    await A.waitForTimeout(100);
  }
  // Nobody is in a call: no "Join call" anywhere.
  for (const page of [A, B, L]) await page.getByTestId("join-call").waitFor({ state: "detached" });

  // Six in a call at most: with six memberships standing (devices of the
  // principals that are not pages here), the aide's "Join call" is refused, in words.
  const fakes = [];
  for (const [user, tok] of [[official.a.userId, token], [official.b.userId, await tokenOf(B)]]) {
    for (let i = 1; i <= 3; i++) {
      const device = `MESHTEST${i}`;
      const key = `_${user}_${device}`;
      const content = { application: "m.call", call_id: "", scope: "m.room", device_id: device, expires: 120_000, focus_active: { type: "mesh" }, foci_preferred: [], created_ts: Date.now() };
      const r = await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.call.member/${encodeURIComponent(key)}`, content, tok);
      assert.equal(r.status, 200, JSON.stringify(r.json));
      fakes.push([key, tok]);
    }
  }
  const full = L.getByTestId("join-call");
  await full.getByTestId("join-call-who").filter({ hasText: `In the call: ${a.name}, ${b.name}` }).waitFor();
  await full.getByRole("button", { name: "Join call" }).click();
  await full.getByTestId("join-call-error").filter({ hasText: "This call is full: at most 6 people can be in a call on a line." }).waitFor();
  assert.equal(await L.getByTestId("active-call").count(), 0, "the seventh is not in the call");
  assert.equal(JSON.stringify((await callMembers(roomId, token))[keys.l]), "{}", "the seventh published no membership");
  for (const [key, tok] of fakes) {
    await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.call.member/${encodeURIComponent(key)}`, {}, tok);
  }
  await full.waitFor({ state: "detached" });
});

// ---- calls without a relay: a second server, started here with no TURN ----
// (as scripts/run.sh's demo runs when coturn cannot start). Its users are
// alice and bob too, on their own data dir.
let bare = null; // { url, dir, proc }
let alice2, bob2;

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startBareServer() {
  const dir = mkdtempSync(join(tmpdir(), "hotline-no-turn-"));
  for (const u of ["alice", "bob"]) {
    execFileSync(BIN, ["--data-dir", dir, "admin", "create-user", u, "--password", PW], { stdio: "ignore" });
  }
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(BIN, ["--data-dir", dir, "serve", "--listen", `127.0.0.1:${port}`, "--web-dir", join(HERE, "..", "dist")], {
    stdio: "ignore",
  });
  for (let i = 0; ; i++) {
    const up = await fetch(url + "/healthz").then((r) => r.ok, () => false);
    if (up) break;
    if (i > 100 || proc.exitCode !== null) throw new Error("the second server did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, dir, proc };
}

after(() => {
  if (!bare) return;
  bare.proc.kill("SIGTERM");
  rmSync(bare.dir, { recursive: true, force: true });
});

test("without TURN the relay-only setting is disabled, with the reason shown", async () => {
  bare = await startBareServer();
  const login = await fetch(bare.url + "/_matrix/client/v3/login", {
    method: "POST",
    body: JSON.stringify({ type: "m.login.password", identifier: { type: "m.id.user", user: "bob" }, password: PW }),
  }).then((r) => r.json());
  const turn = await fetch(bare.url + "/_matrix/client/v3/voip/turnServer", {
    headers: { Authorization: `Bearer ${login.access_token}` },
  }).then((r) => r.json());
  assert.deepEqual(turn, {}, "the second server has no TURN");
  await fetch(bare.url + "/_matrix/client/v3/logout", { method: "POST", headers: { Authorization: `Bearer ${login.access_token}` } });
  alice2 = await newPage("alice-no-turn");
  await firstSignIn(alice2, "alice", bare.url);
  await alice2.goto(bare.url + "/#/settings");
  await alice2.getByText("Relay (TURN): not configured").waitFor();
  const toggle = alice2.getByTestId("relay-only");
  assert.equal(await toggle.isDisabled(), true, "relay-only cannot be turned on without a relay");
  assert.equal(await toggle.isChecked(), false);
  const reason = alice2.getByTestId("relay-unavailable");
  assert.match(await reason.textContent(), /^No relay server is configured on this homeserver/);
  assert.equal(await toggle.getAttribute("aria-describedby"), await reason.getAttribute("id"), "the reason describes the switch");
});

test("relay-only with no relay: the call fails at once, with the reason, and never rings", async () => {
  bob2 = await newPage("bob-no-turn");
  await firstSignIn(bob2, "bob", bare.url);
  await alice2.goto(bare.url + "/#/");
  await alice2.getByRole("button", { name: "New line" }).click();
  await alice2.getByLabel("User id").fill("bob");
  await alice2.getByRole("button", { name: "Open line" }).click();
  await alice2.locator("#composer-input").waitFor();
  await openLine(bob2, ALICE);
  await bob2.getByRole("button", { name: "Accept" }).click();
  await bob2.locator("#composer-input").waitFor();
  // Relay-only still on from before the server lost its relay: the switch
  // stays usable, to turn it off, and says why calls cannot connect.
  const line = alice2.url();
  await alice2.evaluate(() => localStorage.setItem("hotline.settings", JSON.stringify({ relayOnly: true })));
  await alice2.goto(bare.url + "/#/settings");
  await alice2.reload();
  await alice2.getByText("Relay (TURN): not configured").waitFor();
  assert.equal(await alice2.getByTestId("relay-only").isDisabled(), false, "a relay-only setting can be turned off");
  assert.equal(await alice2.getByTestId("relay-only").isChecked(), true);
  await alice2.getByTestId("relay-unavailable").filter({ hasText: "Relay-only calls cannot connect" }).waitFor();
  await alice2.goto(line);
  await alice2.locator("#composer-input").waitFor();
  await alice2.getByRole("button", { name: /^Call bob/ }).click();
  const status = alice2.getByTestId("call-status");
  await status.filter({ hasText: /^The call could not connect: relay-only calls are on, but this homeserver has no relay server/ }).waitFor({ timeout: 10_000 });
  assert.equal(await alice2.getByTestId("active-call").getAttribute("data-phase"), "ended");
  // Nothing was sent: the room has no call invite.
  const roomId = decodeURIComponent(new URL(line).hash.replace(/^#\/line\//, ""));
  const token = await alice2.evaluate(() => JSON.parse(localStorage.getItem("hotline.session")).accessToken);
  const events = await fetch(`${bare.url}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=100`, {
    headers: { Authorization: `Bearer ${token}` },
  }).then((r) => r.json());
  assert.ok(events.chunk.length > 0, "the room's events are readable");
  assert.ok(!events.chunk.some((e) => e.type.startsWith("m.call.")), `no call events: ${events.chunk.map((e) => e.type)}`);
  assert.equal(await bob2.getByTestId("incoming-call").count(), 0, "Bob was not rung");
  await alice2.getByTestId("dismiss-call").click();
  await alice2.getByTestId("active-call").waitFor({ state: "detached" });
});

test("a call with no working network path ends within 10 s with the reason, on both sides", async () => {
  // The server hands out a relay that does not answer (as when coturn is
  // down): Alice, relay-only, gathers no candidate at all.
  const dead = await freePort();
  execFileSync(BIN, ["--data-dir", bare.dir, "turn-config", "--out", join(bare.dir, "unused-turnserver.conf"), "--listen", `127.0.0.1:${dead}`], { stdio: "ignore" });
  await alice2.reload();
  await bob2.reload();
  await alice2.locator("#composer-input").waitFor();
  await alice2.getByRole("button", { name: /^Call bob/ }).click();
  await bob2.getByTestId("incoming-call").waitFor();
  await bob2.getByRole("button", { name: "Answer call" }).click();
  const answeredAt = Date.now();
  await alice2.locator('[data-testid="active-call"][data-phase="connecting"]').waitFor();
  for (const p of [alice2, bob2]) {
    await p.getByTestId("call-status").filter({ hasText: /^The call could not connect: / }).waitFor({ timeout: 10_000 });
  }
  const took = Date.now() - answeredAt;
  assert.ok(took < 10_000, `ended ${took} ms after the answer`);
  const text = await alice2.getByTestId("call-status").textContent();
  assert.match(text, /the relay server \(TURN\) could not be reached/, text);
  console.log(`# the call ended as failed ${took} ms after the answer: ${text}`);
  await alice2.getByTestId("dismiss-call").click();
  await alice2.getByTestId("active-call").waitFor({ state: "detached" });
});

// ---- delivery to a counterpart with no device, and read receipts ----

const deliveryPair = {}; // { S, R, sender, reader } once the first delivery test ran

test("a text for a counterpart with no device: the sender is warned, and it is readable once they sign in", async (t) => {
  if (!E2EE) return t.skip("server has no E2EE endpoints");
  const sfx = Date.now().toString(36);
  const sender = `dana-${sfx}`;
  const reader = `evan-${sfx}`;
  admin("create-user", sender, "--password", PW);
  admin("create-user", reader, "--password", PW);
  const S = await newPage("delivery-sender");
  await firstSignIn(S, sender);
  await S.getByRole("button", { name: "New line" }).click();
  await S.getByLabel("User id").fill(reader);
  await S.getByRole("button", { name: "Open line" }).click();
  await S.locator("#composer-input").waitFor();
  const roomId = decodeURIComponent(new URL(S.url()).hash.replace(/^#\/line\//, ""));
  const token = await tokenOf(S);
  const onServer = async () => {
    const r = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`, undefined, token);
    return r.json.chunk.filter((e) => e.type === "m.room.encrypted").length;
  };

  // Told before sending: the reader has never signed in, so no device has keys.
  const notice = S.getByTestId("no-device");
  await notice.filter({ hasText: "has no signed-in device yet: your message can't be read until they sign in" }).waitFor();
  // Enter does not send into the void: it asks.
  await send(S, "Held for you until you sign in.");
  await notice.getByRole("button", { name: "Hold until they sign in" }).click();
  await message(S, "Held for you until you sign in.").and(S.locator('[data-status="held"]')).waitFor();
  await S.getByTestId("held-note").filter({ hasText: "Held: will be sent when" }).first().waitFor();
  // A held message that is cancelled is never sent.
  await send(S, "Never mind this one.");
  await notice.getByRole("button", { name: "Hold until they sign in" }).click();
  await message(S, "Never mind this one.").getByRole("button", { name: "Cancel" }).click();
  await message(S, "Never mind this one.").waitFor({ state: "detached" });
  assert.equal(await onServer(), 0, "a held message is not on the server");
  // Sent anyway: on the server, encrypted for nobody, marked as not readable yet.
  await S.locator("#composer-input").fill("Sent to nobody, delivered later.");
  await notice.getByRole("button", { name: "Send anyway" }).click();
  await message(S, "Sent to nobody, delivered later.").and(S.locator('[data-status="waiting"]')).waitFor();
  await S.getByTestId("waiting-note").filter({ hasText: "Not readable yet: will be delivered again when" }).waitFor();
  assert.equal(await onServer(), 1);

  // Both survive a reload of the sender's page.
  await S.reload();
  await message(S, "Held for you until you sign in.").and(S.locator('[data-status="held"]')).waitFor();
  await message(S, "Sent to nobody, delivered later.").and(S.locator('[data-status="waiting"]')).waitFor();

  // The reader signs in for the first time, the sender's page still open.
  const R = await newPage("delivery-reader");
  await firstSignIn(R, reader);
  await openLine(R, `@${sender}:localhost`);
  await R.getByRole("button", { name: "Accept" }).click();
  await R.locator("#composer-input").waitFor();
  await message(R, "Sent to nobody, delivered later.").waitFor({ timeout: 60_000 });
  await message(R, "Held for you until you sign in.").waitFor({ timeout: 60_000 });
  // The undecryptable original gives way to its redelivery, in its place.
  await R.getByTestId("utd").waitFor({ state: "detached" });
  const order = await R.getByTestId("message").allTextContents();
  const at = (x) => order.findIndex((m) => m.includes(x));
  assert.ok(at("Sent to nobody") >= 0 && at("Sent to nobody") < at("Held for you"), `order: ${order}`);
  assert.equal(order.filter((m) => m.includes("Sent to nobody")).length, 1, "shown once");
  assert.ok(!order.some((m) => m.includes("Never mind")));

  // The sender's side: nothing waits any more, and both were read.
  await S.getByTestId("held-note").waitFor({ state: "detached" });
  await S.getByTestId("waiting-note").waitFor({ state: "detached" });
  await message(S, "Held for you until you sign in.").and(S.locator('[data-status="read"]')).waitFor();
  await message(S, "Sent to nobody, delivered later.").and(S.locator('[data-status="read"]')).waitFor();
  assert.equal((await S.getByTestId("message").allTextContents()).filter((m) => m.includes("Sent to nobody")).length, 1);
  const left = await S.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("hotline.outbox:")));
  assert.deepEqual(left, [], "the outbox is empty once delivered");
  Object.assign(deliveryPair, { S, R, sender: `@${sender}:localhost`, reader: `@${reader}:localhost` });
});

test("read receipts: at most one per newly read event over 30 s with the chat open, whoever sent last", async (t) => {
  if (!deliveryPair.S) return t.skip("needs the pair from the delivery test");
  const { S, R, sender, reader } = deliveryPair;
  const count = (page) => {
    const c = { n: 0 };
    page.on("request", (r) => {
      if (r.method() === "POST" && /\/receipt\/|\/read_markers/.test(r.url())) c.n++;
    });
    return c;
  };
  // Case 1 (alice/bob): the last event is the reader's own reply.
  // Case 2 (the delivery pair): the last event is the other side's.
  await alice.goto(URL_ + `/#/line/${encodeURIComponent(lineRoomId)}`);
  await bob.goto(URL_ + `/#/line/${encodeURIComponent(lineRoomId)}`);
  await openLine(S, reader);
  await openLine(R, sender);
  const counts = [alice, bob, S, R].map(count);
  const window30s = async (a, b, first, second) => {
    await send(a, first);
    await message(b, first).waitFor();
    await send(b, second);
    await message(a, second).waitFor();
    await a.waitForTimeout(30_000);
  };
  await Promise.all([
    // alice reads bob's text, then replies last.
    window30s(bob, alice, "Receipt check: are you there?", "Here, and this reply is the last word."),
    // R replies, then S's text is the last event, which R reads.
    window30s(R, S, "Receipt check from the reader.", "And the sender has the last word."),
  ]);
  const [a, b, s, r] = counts.map((c) => c.n);
  console.log(`# receipts in 30 s: alice ${a}, bob ${b}, sender ${s}, reader ${r}`);
  // Each page read exactly one new event from the other side in its window.
  for (const [who, n] of Object.entries({ alice: a, bob: b, sender: s, reader: r })) {
    assert.ok(n <= 1, `${who} posted ${n} receipts for one newly read event`);
  }
  assert.equal(a, 1, "alice's receipt for bob's text was sent");
  assert.equal(r, 1, "the reader's receipt for the last text was sent");
  await message(bob, "Receipt check: are you there?").and(bob.locator('[data-status="read"]')).waitFor();
  await message(S, "And the sender has the last word.").and(S.locator('[data-status="read"]')).waitFor();
});

// ---- the installable app (public/manifest.webmanifest, public/sw.js, public/icons/) ----

/** A PNG's width and height, from its IHDR chunk, which the format puts first. */
function pngSize(bytes, what) {
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${what}: PNG signature`);
  assert.equal(bytes.toString("latin1", 12, 16), "IHDR", `${what}: IHDR chunk first`);
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

/** Every URL in the page's Cache Storage. */
const storedUrls = (page) =>
  page.evaluate(async () => {
    const urls = [];
    for (const name of await caches.keys()) for (const req of await (await caches.open(name)).keys()) urls.push(req.url);
    return urls;
  });

test("the app installs: a valid manifest with its icons, a service worker controlling the page, and the shell opens offline", async () => {
  // A profile of its own: Chromium installs no app from an incognito
  // context, which every browser.newContext() is.
  const profile = mkdtempSync(join(tmpdir(), "hotline-install-"));
  const ctx = await launchChromiumProfile(profile, { viewport: { width: 1200, height: 760 } });
  let token = null;
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    watchPage(page, "installer");
    const signInHeading = page.getByRole("heading", { name: "Sign in" });
    await page.goto(URL_ + "/");
    await signInHeading.waitFor();

    // The manifest the page links, with what an install needs.
    const head = await page.evaluate(() => {
      const css = getComputedStyle(document.documentElement);
      return {
        manifest: document.querySelector('link[rel="manifest"]')?.href,
        appleIcon: document.querySelector('link[rel="apple-touch-icon"]')?.href,
        themeMeta: document.querySelector('meta[name="theme-color"]')?.content,
        navy: css.getPropertyValue("--navy").trim(),
        bg: css.getPropertyValue("--bg").trim(),
      };
    });
    assert.ok(head.manifest, "the page links a manifest");
    const resp = await fetch(head.manifest);
    assert.equal(resp.status, 200, "the manifest is served");
    const m = JSON.parse(await resp.text());
    assert.equal(m.name, "Hotline");
    assert.equal(m.short_name, "Hotline");
    assert.equal(m.display, "standalone");
    assert.equal(new URL(m.start_url, head.manifest).href, URL_ + "/", "start_url is the app's page");
    assert.equal(new URL(m.scope, head.manifest).href, URL_ + "/", "the scope is the app");
    assert.equal(m.theme_color.toLowerCase(), head.navy.toLowerCase(), "theme_color is the app's navy (styles.css)");
    assert.equal(head.themeMeta?.toLowerCase(), head.navy.toLowerCase(), "and so is the page's theme-color");
    assert.equal(m.background_color.toLowerCase(), head.bg.toLowerCase(), "background_color is the page's background (styles.css)");

    // Each icon is a PNG of exactly the size it declares.
    const purposes = (icon) => (icon.purpose || "any").split(/\s+/);
    for (const icon of m.icons) {
      const r = await fetch(new URL(icon.src, head.manifest));
      assert.equal(r.status, 200, `${icon.src} is served`);
      assert.equal(icon.type, "image/png", `${icon.src} is declared a PNG`);
      assert.match(r.headers.get("content-type") || "", /^image\/png/, `${icon.src} is served as a PNG`);
      const { width, height } = pngSize(Buffer.from(await r.arrayBuffer()), icon.src);
      assert.equal(`${width}x${height}`, icon.sizes, `${icon.src} is ${icon.sizes}`);
    }
    for (const size of ["192x192", "512x512"]) {
      assert.ok(m.icons.some((i) => i.sizes === size && purposes(i).includes("any")), `an icon of ${size} for any use`);
    }
    assert.ok(m.icons.some((i) => purposes(i).includes("maskable")), "a maskable icon");
    assert.ok(head.appleIcon, "the page names an apple-touch-icon");
    const apple = pngSize(Buffer.from(await (await fetch(head.appleIcon)).arrayBuffer()), "apple-touch-icon");
    assert.ok(apple.width === apple.height && apple.width >= 180, `apple-touch-icon is square, 180 px or more: ${apple.width}x${apple.height}`);

    // The service worker: active, then in control of the page once it is
    // loaded again, and serving the app's script from its store.
    const active = await page.evaluate(
      (ms) =>
        Promise.race([
          navigator.serviceWorker.ready.then((r) => r.active?.scriptURL),
          new Promise((resolve) => setTimeout(() => resolve(`no service worker ready after ${ms} ms`), ms)),
        ]),
      T,
    );
    assert.equal(active, URL_ + "/sw.js", "the service worker is active");
    const viaWorker = [];
    const onResponse = (r) => r.fromServiceWorker() && viaWorker.push(new URL(r.url()).pathname);
    page.on("response", onResponse);
    await page.reload();
    await signInHeading.waitFor();
    page.off("response", onResponse);
    const controller = await page.evaluate(() => navigator.serviceWorker.controller?.scriptURL);
    assert.equal(controller, URL_ + "/sw.js", "the service worker controls the reloaded page");
    assert.ok(viaWorker.some((p) => /^\/assets\/index-[\w-]+\.js$/.test(p)), `the app's script came from the worker: ${viaWorker.join(", ")}`);
    // An API answer goes past it.
    const [versions] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/_matrix/client/versions")),
      page.evaluate(() => fetch("./_matrix/client/versions").then((r) => r.status)),
    ]);
    assert.equal(versions.status(), 200);
    assert.equal(versions.fromServiceWorker(), false, "the worker does not answer API requests");
    const shell = await storedUrls(page);
    assert.ok(shell.includes(URL_ + "/index.html"), `the page is stored: ${shell.join(", ")}`);
    assert.ok(shell.some((u) => /\/assets\/index-[\w-]+\.js$/.test(u)), "the app's script is stored");

    // Installable, as Chromium judges it.
    const cdp = await ctx.newCDPSession(page);
    const { installabilityErrors } = await cdp.send("Page.getInstallabilityErrors");
    // (While a session of ours is attached, a page reloaded offline reads
    // navigator.onLine as true, and never hears the network come back.)
    await cdp.detach();
    assert.deepEqual(installabilityErrors, [], "Chromium finds nothing that keeps the app from installing");

    // Offline: the shell opens from the worker's store, and signing in
    // says the server can't be reached.
    offlineOnPurpose.add("installer");
    await ctx.setOffline(true);
    await page.reload();
    await signInHeading.waitFor();
    await page.getByLabel("User name").fill("installer");
    await page.getByLabel("Password", { exact: true }).fill(PW);
    await page.getByRole("button", { name: "Sign in" }).click();
    assert.match(await page.getByRole("alert").textContent(), /^The server could not be reached\. Check the connection and try again\.$/);

    // Signed in already (a session made through the API: this page can't
    // use it before the network is back), the app says it can't reach the
    // server, names it, and tries again on request and by itself.
    admin("create-user", "installer", "--password", PW);
    const login = await api("POST", "/_matrix/client/v3/login", {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: "installer" },
      password: PW,
    });
    assert.equal(login.status, 200, JSON.stringify(login.json));
    token = login.json.access_token;
    await page.evaluate(
      ([baseUrl, l]) =>
        localStorage.setItem("hotline.session", JSON.stringify({ baseUrl, userId: l.user_id, deviceId: l.device_id, accessToken: l.access_token })),
      [URL_, login.json],
    );
    await page.reload();
    const unreachable = page.getByRole("heading", { name: "Can't reach the server" });
    await unreachable.waitFor();
    assert.match(await page.getByTestId("unreachable").textContent(), new RegExp(`can't reach ${new URL(URL_).host.replace(/\./g, "\\.")} right now`));
    const tried = page.waitForEvent("requestfailed", (r) => r.url().endsWith("/_matrix/client/v3/keys/query"));
    await page.getByRole("button", { name: "Try again" }).click();
    assert.match((await tried).failure().errorText, /ERR_INTERNET_DISCONNECTED/, "Try again asks the server");
    await unreachable.waitFor();
    await ctx.setOffline(false);
    await page.getByRole("heading", { name: "Set up secure keys" }).or(page.getByRole("navigation", { name: "Lines" })).waitFor();
    assert.equal(await unreachable.count(), 0);
    offlineOnPurpose.delete("installer");

    // A whole session's start went by (sync, keys, the directory): still
    // nothing from the API in the store, nor from anywhere else; the crypto
    // WebAssembly, loaded once, is kept with the shell.
    const stored = await storedUrls(page);
    assert.deepEqual(
      stored.filter((u) => !u.startsWith(URL_ + "/") || /\/_(matrix|hotline|synapse)\//.test(u)),
      [],
      "no API answer stored",
    );
    if (E2EE) assert.ok(stored.some((u) => /\/assets\/[^/]+\.wasm$/.test(u)), "the crypto WebAssembly is stored once loaded");
  } finally {
    offlineOnPurpose.delete("installer");
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
    if (token) await api("POST", "/_matrix/client/v3/logout", {}, token);
  }
});

/** Polls `check` until it answers something truthy (that answer), or fails with `what` (or what it returns). */
async function eventually(check, what, ms = T) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`${typeof what === "function" ? what() : what} (waited ${ms} ms)`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * The `Authorization: vapid t=JWT, k=KEY` of a Web Push request (RFC 8292):
 * KEY is the server's served VAPID key, and the JWT an ES256 token that key
 * signed, for the endpoint's origin, expiring within 24 hours.
 */
function checkVapid(header, servedKey, origin) {
  const m = /^vapid t=([\w-]+\.[\w-]+\.[\w-]+), k=([\w-]+)$/.exec(header || "");
  assert.ok(m, `a VAPID Authorization header: ${header}`);
  assert.equal(m[2], servedKey, "k is the key the server serves");
  const [head, claims, sig] = m[1].split(".");
  assert.equal(JSON.parse(Buffer.from(head, "base64url")).alg, "ES256");
  const c = JSON.parse(Buffer.from(claims, "base64url"));
  assert.equal(c.aud, origin, "aud is the push endpoint's origin");
  const now = Date.now() / 1000;
  assert.ok(c.exp > now && c.exp <= now + 24 * 3600, `exp within 24 h: ${c.exp}`);
  assert.match(c.sub, /^(mailto:|https:)/);
  const point = Buffer.from(servedKey, "base64url");
  assert.equal(point.length, 65, "an uncompressed P-256 point");
  const key = createPublicKey({
    key: { kty: "EC", crv: "P-256", x: point.subarray(1, 33).toString("base64url"), y: point.subarray(33).toString("base64url") },
    format: "jwk",
  });
  assert.ok(
    verifySignature("sha256", Buffer.from(`${head}.${claims}`), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(sig, "base64url")),
    "the JWT's ES256 signature verifies against the served key",
  );
}

test("with the tab closed, a call and a text reach the phone as notifications through the service worker: a ring with Answer and Decline, then a missed call, and a text naming its sender and line but not its words; each push encrypted and VAPID-signed", async () => {
  // The test's push service: every Web Push request the server's gateway
  // sends to this browser's subscription lands here, in order.
  const pushes = [];
  const service = createHttpServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      pushes.push({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(201).end();
    });
  });
  await new Promise((r) => service.listen(0, "127.0.0.1", r));
  const origin = `http://127.0.0.1:${service.address().port}`;
  const endpoint = `${origin}/push/subscription-nadia`;
  const contexts = [];
  try {
    // Two principals (enrolled, not yet vouched for) and the line between
    // them, opened through a line invite: a line's call rings through
    // MatrixRTC, which is what the server pushes as a ring.
    const enrol = async (user, name) => {
      const out = admin("enroll", user, "--name", name, "--title", "Minister", "--country", "Freedonia", "--office", "Office of the Minister of Freedonia", "--role", "principal");
      const code = /^code (\S+)$/m.exec(out)[1];
      const r = await api("POST", `/_hotline/v1/enrol/${code}`, { password: PW });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      return r.json.access_token;
    };
    const nadiaToken = await enrol("nadia", "Nadia Karim");
    const omarToken = await enrol("omar", "Omar Haddad");
    const invite = await api("POST", "/_hotline/v1/line_invites", {}, nadiaToken);
    assert.equal(invite.status, 200, JSON.stringify(invite.json));
    const redeemed = await api("POST", `/_hotline/v1/line_invites/${invite.json.code}/redeem`, undefined, omarToken);
    assert.equal(redeemed.status, 200, JSON.stringify(redeemed.json));
    const room = redeemed.json.room_id;
    const named = await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(room)}/state/m.room.name/`, { name: "Budget line" }, omarToken);
    assert.equal(named.status, 200, JSON.stringify(named.json));
    for (const t of [nadiaToken, omarToken]) await api("POST", "/_matrix/client/v3/logout", {}, t);
    const NADIA = "@nadia:localhost";
    const served = await api("GET", "/_hotline/v1/push/web");
    assert.equal(served.status, 200);
    assert.equal(served.json.app_id, "org.hotline.web");
    const vapid = served.json.vapid_public_key;

    // Nadia signs in (notifications allowed in her browser) and turns on
    // notifications while Hotline is closed: the app subscribes this browser
    // (here, with the test's endpoint: no push service is reachable) and
    // registers its pusher.
    pushOnPurpose.add("nadia");
    const a = await newPage("nadia");
    const aCtx = a.context();
    contexts.push(aCtx);
    await aCtx.addInitScript((ep) => localStorage.setItem("hotline.pushTestEndpoint", ep), endpoint);
    await firstSignIn(a, "nadia");
    const aToken = await tokenOf(a);
    await a.getByRole("button", { name: "Settings and account" }).click();
    const toggle = a.getByTestId("push-notifications");
    assert.equal(await toggle.isChecked(), false, "off until she turns it on");
    await a.getByTestId("push-status").filter({ hasText: "Off for this browser." }).waitFor();
    await toggle.check();
    await a.getByTestId("push-status").filter({ hasText: "On for this browser." }).waitFor();
    const pusher = await eventually(async () => {
      const r = await api("GET", "/_matrix/client/v3/pushers", undefined, aToken);
      return r.json.pushers?.find((p) => p.app_id === "org.hotline.web");
    }, "the web app registers its pusher");
    assert.equal(pusher.kind, "http");
    assert.equal(pusher.app_display_name, "Hotline");
    assert.equal(pusher.data.url, URL_ + "/_matrix/push/v1/notify", "the server's own gateway");
    assert.equal(pusher.data.endpoint, endpoint);
    assert.equal(Buffer.from(pusher.data.auth, "base64url").length, 16, "the auth secret");
    const p256dh = Buffer.from(pusher.pushkey, "base64url");
    assert.deepEqual([p256dh.length, p256dh[0]], [65, 4], "the pushkey is the subscription's P-256 key");
    assert.equal(await toggle.isChecked(), true);
    // What the worker keeps: the server and who is signed in, never the token.
    const kept = await a.evaluate(
      () =>
        new Promise((resolve, reject) => {
          const open = indexedDB.open("hotline-push");
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const req = open.result.transaction("kv").objectStore("kv").get("session");
            req.onsuccess = () => resolve(req.result);
          };
        }),
    );
    assert.deepEqual(kept, { baseUrl: URL_, userId: NADIA });
    assert.ok(!JSON.stringify(kept).includes(aToken), "no access token for the worker");

    // Omar signs in and opens the line.
    const b = await newPage("omar");
    contexts.push(b.context());
    await firstSignIn(b, "omar");
    await openLine(b, NADIA);
    await b.getByRole("button", { name: /^Call Nadia/ }).waitFor();

    // Her tab closes; her browser and its service worker stay.
    await a.waitForTimeout(1500);
    await a.close();
    let seen = pushes.length;
    const blank = await aCtx.newPage(); // DevTools attaches to a page; about:blank is none of the app's
    const cdp = await aCtx.newCDPSession(blank);
    const registrations = new Map();
    cdp.on("ServiceWorker.workerRegistrationUpdated", ({ registrations: rs }) => rs.forEach((r) => registrations.set(r.registrationId, r)));
    await cdp.send("ServiceWorker.enable");
    const registration = await eventually(
      () => [...registrations.values()].find((r) => r.scopeURL === URL_ + "/" && !r.isDeleted),
      "the app's service worker is registered",
    );
    // Hands every push received since the last call to the worker, as her
    // push service would; answers them.
    const deliverNew = async () => {
      const fresh = pushes.slice(seen);
      seen = pushes.length;
      for (const p of fresh) {
        await cdp.send("ServiceWorker.deliverPushMessage", {
          origin: URL_,
          registrationId: registration.registrationId,
          data: JSON.stringify({ aes128gcm: p.body.toString("base64") }),
        });
      }
      return fresh;
    };
    // The notifications showing, read from a page of the origin that is
    // not the app (the worker stays quiet while the app itself is open).
    const reader = await aCtx.newPage();
    await reader.goto(URL_ + "/manifest.webmanifest");
    const shown = () =>
      reader.evaluate(() =>
        navigator.serviceWorker.ready
          .then((r) => r.getNotifications())
          .then((ns) =>
            ns.map((n) => ({
              title: n.title,
              body: n.body,
              tag: n.tag,
              requireInteraction: n.requireInteraction,
              actions: n.actions.map((x) => `${x.action}:${x.title}`),
              data: n.data,
            })),
          ),
      );
    const untilShown = (want, what) =>
      eventually(async () => {
        const ns = await shown();
        return want(ns) ? ns : null;
      }, what);

    // Omar calls: his device joins the line's call and the server rings her.
    await b.getByRole("button", { name: /^Call Nadia/ }).click();
    const ringAt = await eventually(
      () => {
        const i = pushes.findIndex((p, i) => i >= seen && p.headers.ttl === "90");
        return i >= 0 ? i + 1 : 0;
      },
      () => `the ring reaches the push endpoint (TTL, urgency of each push: ${JSON.stringify(pushes.map((p) => [p.headers.ttl, p.headers.urgency]))})`,
    );
    const ring = pushes[ringAt - 1];
    assert.equal(ring.method, "POST");
    assert.equal(ring.url, "/push/subscription-nadia");
    assert.equal(ring.headers["content-encoding"], "aes128gcm");
    assert.equal(ring.headers.urgency, "high", "a ring is urgent");
    checkVapid(ring.headers.authorization, vapid, origin);
    assert.ok(!ring.body.includes("Omar"), "the payload is encrypted");
    await deliverNew();
    const ringing = await untilShown((ns) => ns.some((n) => n.title === "Incoming call"), "the worker shows the ring");
    const call = ringing.find((n) => n.title === "Incoming call");
    assert.equal(call.body, "Omar Haddad on Budget line");
    assert.deepEqual(call.actions, ["answer:Answer", "decline:Decline"]);
    assert.equal(call.requireInteraction, true);
    assert.equal(call.tag, room);
    assert.equal(call.data.call, true);
    // The call's own signalling follows, encrypted: while the ring shows,
    // it adds nothing.
    await b.waitForTimeout(2000);
    await deliverNew();
    await b.waitForTimeout(1000);
    assert.deepEqual((await shown()).map((n) => n.title), ["Incoming call"]);

    // He gives up: the ring becomes a missed call.
    await b.getByRole("button", { name: "Hang up" }).click();
    await eventually(() => pushes.slice(seen).some((p) => p.headers.urgency === "normal"), "the call's end reaches the push endpoint");
    await deliverNew();
    const missed = await untilShown((ns) => ns.some((n) => n.title === "Missed call"), "the ring turns into a missed call");
    assert.equal(missed.find((n) => n.title === "Missed call").body, "Omar Haddad on Budget line");
    assert.ok(!missed.some((n) => n.title === "Incoming call"), "no longer ringing");

    // He texts her: his name and the line, never his words.
    const words = "The figure is 4242";
    await send(b, words);
    await eventually(() => pushes.length > seen, "the text reaches the push endpoint");
    const text = pushes[seen];
    assert.equal(text.headers["content-encoding"], "aes128gcm");
    assert.equal(text.headers.ttl, "86400");
    checkVapid(text.headers.authorization, vapid, origin);
    await deliverNew();
    const all = await untilShown((ns) => ns.some((n) => n.title === "Omar Haddad"), "the worker shows the text");
    assert.equal(all.find((n) => n.title === "Omar Haddad").body, "New message on Budget line");
    for (const n of all) assert.ok(!`${n.title} ${n.body}`.includes("4242"), `no message text in a notification: ${n.title}: ${n.body}`);
  } finally {
    for (const c of contexts) await c.close().catch(() => undefined);
    service.close();
  }
});

test("no console errors or page errors in any page, and no raw MatrixError on any screen", async () => {
  for (const page of pages) {
    if (page.isClosed()) continue;
    const text = await page.locator("body").innerText().catch(() => "");
    assert.doesNotMatch(text, /MatrixError|\(https?:\/\/[^)]*\/_matrix\//, "a screen shows a raw error");
  }
  assert.deepEqual(problems, []);
});
