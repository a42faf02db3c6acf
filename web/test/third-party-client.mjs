// A released Matrix web client nobody here wrote, used against a real
// `hotline serve` (started by scripts/web.sh test) as a new person would:
// Element Call, the release published to npm as
// @element-hq/element-call-embedded (pinned in web/package.json; its dist/
// is the built app, so nothing is built here). The test serves that dist/
// with a config.json naming this server as the default homeserver, signs
// up through the client's own registration form, starts a call room from
// its home view, and signs in again through its login form in a fresh
// browser; the server is then asked, through the Matrix API, whether the
// account, the display name the client set and the room are there.
//
// (Cinny, the first candidate, is not usable from npm: its only release
// there, cinny@4.5.1, ships neither a built dist/ nor its src/.)
//
// Environment (set by scripts/web.sh): HOTLINE_URL.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createReadStream, existsSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { dirname, extname, join, normalize } from "node:path";
import { T, apiAt, launchChromium } from "./helpers.mjs";

const URL_ = process.env.HOTLINE_URL;
if (!URL_) throw new Error("HOTLINE_URL must be set: run through scripts/web.sh test");

const CLIENT = "@element-hq/element-call-embedded";
const require = createRequire(import.meta.url);
const DIST = join(dirname(require.resolve(`${CLIENT}/package.json`)), "dist");
const VERSION = require(`${CLIENT}/package.json`).version;
const PASSWORD = "correct horse battery staple";
const api = (method, path, body, token) => apiAt(URL_, method, path, body, token);

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".css": "text/css",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".map": "application/json",
};

/**
 * Serves the client's dist/ on a free loopback port, as a static host would:
 * its config.json names `homeserver`; any other path that is no file is the
 * single-page app's index.html (its routes: /register, /login, /room/...),
 * and assets are found from any route (index.html loads them relatively).
 */
function serveClient(homeserver, serverName) {
  const config = JSON.stringify({
    default_server_config: { "m.homeserver": { base_url: homeserver, server_name: serverName } },
  });
  const server = http.createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://client").pathname);
    if (path.endsWith("/config.json")) {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(config);
      return;
    }
    const at = path.indexOf("/assets/");
    let file = normalize(join(DIST, at >= 0 ? path.slice(at) : path));
    if (!file.startsWith(DIST + "/") || !existsSync(file) || statSync(file).isDirectory()) {
      file = join(DIST, "index.html");
    }
    res.writeHead(200, { "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, base: `http://127.0.0.1:${server.address().port}` })),
  );
}

let client; // the static server
let browser;
let account; // what the first test made: { localpart, roomId, roomName, roomUrl }
after(async () => {
  await browser?.close();
  client?.server.close();
});

async function start() {
  if (!client) {
    const { json: key } = await api("GET", "/_matrix/key/v2/server");
    assert.ok(key.server_name, "the server tells its name");
    client = await serveClient(URL_, key.server_name);
  }
  browser ??= await launchChromium();
}

/**
 * A page of the client in a fresh browser context, recording what the
 * homeserver answered it: server errors and requests that failed outright
 * (a missing CORS header shows as one).
 */
async function clientPage() {
  const context = await browser.newContext({ locale: "en-US" });
  const page = await context.newPage();
  const seen = { serverErrors: [], failed: [], answers: [] };
  page.on("response", (r) => {
    if (!r.url().startsWith(URL_)) return;
    const what = `${r.request().method()} ${r.url().slice(URL_.length).split("?")[0]} -> ${r.status()}`;
    seen.answers.push(what);
    if (r.status() >= 500) seen.serverErrors.push(what);
  });
  page.on("requestfailed", (r) => {
    // (ERR_ABORTED: the page dropped it, as a navigation does a long-poll)
    const error = r.failure()?.errorText;
    if (r.url().startsWith(URL_) && error !== "net::ERR_ABORTED") seen.failed.push(`${r.method()} ${r.url()}: ${error}`);
  });
  return { context, page, seen };
}

/** Runs `body`; on failure saves a screenshot of `page` to /tmp and says where. */
async function shotOnFailure(page, name, body) {
  try {
    await body();
  } catch (e) {
    const file = join(tmpdir(), `hotline-third-party-${name}.png`);
    await page.screenshot({ path: file }).catch(() => {});
    e.message += `\n(screenshot: ${file})`;
    throw e;
  }
}

function assertServerHappy(seen) {
  assert.deepEqual(seen.serverErrors, [], `no server error answered the client; it saw:\n${seen.answers.join("\n")}`);
  assert.deepEqual(seen.failed, [], "no request to the server failed outright (CORS, connection)");
}

/** Signs in through the Matrix API with the password the person chose. */
async function passwordLogin(localpart) {
  const r = await api("POST", "/_matrix/client/v3/login", {
    type: "m.login.password",
    identifier: { type: "m.id.user", user: localpart },
    password: PASSWORD,
  });
  assert.equal(r.status, 200, `the password signs in: ${JSON.stringify(r.json)}`);
  return r.json;
}

test(`third-party client (Element Call ${VERSION}): a new person signs up through its own form, reaches its home view and starts a call room; the server has the account and the room`, async () => {
  await start();
  const { context, page, seen } = await clientPage();
  const localpart = `thirdparty${Date.now()}`;
  const roomName = "Third party check";
  await shotOnFailure(page, "register", async () => {
    await page.goto(`${client.base}/register`);
    // The form: username (shown with the server's name), password, confirmation.
    await page.getByTestId("register_username").fill(localpart, { timeout: T });
    await page.getByTestId("register_password").fill(PASSWORD);
    await page.getByTestId("register_confirm_password").fill(PASSWORD);
    await page.getByTestId("register_register").click();
    // Signed in: the home view, "Start new call", and the user menu.
    await page.getByTestId("home_go").waitFor({ timeout: T });
    await page.getByTestId("usermenu_open").waitFor({ timeout: T });
    assert.ok(await page.getByText("Start new call").isVisible(), "the signed-in home view");
  });
  assert.ok(
    seen.answers.some((a) => a.startsWith("POST /_matrix/client/v3/register -> 200")),
    `the client's sign-up completed on the server:\n${seen.answers.join("\n")}`,
  );

  await shotOnFailure(page, "room", async () => {
    await page.locator("input[name=callName]").fill(roomName);
    await page.getByTestId("home_go").click();
    await page.waitForURL(/\/room\/.*roomId=/, { timeout: T });
    // The room's lobby shows the name the server keeps for it.
    await page.getByText(roomName).first().waitFor({ timeout: T });
    await page.getByRole("button", { name: "Join call" }).waitFor({ timeout: T });
  });
  const roomUrl = page.url();
  const roomId = new URLSearchParams(new URL(roomUrl).hash.split("?")[1]).get("roomId");
  assert.match(roomId ?? "", /^!/, `the room's id in the client's URL: ${roomUrl}`);
  assertServerHappy(seen);
  await context.close();

  // The server's side: the account signs in with the password chosen in the
  // form, its display name is what the client set, and it is in the room.
  const login = await passwordLogin(localpart);
  assert.match(login.user_id, new RegExp(`^@${localpart}:`));
  const profile = await api("GET", `/_matrix/client/v3/profile/${encodeURIComponent(login.user_id)}/displayname`);
  assert.equal(profile.json.displayname, localpart, "the display name the client set at sign-up");
  const devices = await api("GET", "/_matrix/client/v3/devices", undefined, login.access_token);
  assert.ok(
    devices.json.devices.some((d) => d.device_id !== login.device_id),
    `the client's own device is on the account: ${JSON.stringify(devices.json)}`,
  );
  const joined = await api("GET", "/_matrix/client/v3/joined_rooms", undefined, login.access_token);
  assert.ok(joined.json.joined_rooms.includes(roomId), `the user is in the room the client made: ${JSON.stringify(joined.json)}`);
  const name = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.name`, undefined, login.access_token);
  assert.equal(name.json.name, roomName, "the room has the name typed in the client");
  account = { localpart, roomId, roomName, roomUrl };
});

test("third-party client: the same person signs in through the client's login form in a fresh browser and opens the room", async (t) => {
  if (!account) return t.skip("the sign-up test did not pass");
  await start();
  const { context, page, seen } = await clientPage();
  await shotOnFailure(page, "login", async () => {
    await page.goto(`${client.base}/login`);
    await page.getByTestId("login_username").fill(account.localpart, { timeout: T });
    await page.getByTestId("login_password").fill(PASSWORD);
    await page.getByTestId("login_login").click();
    await page.getByTestId("home_go").waitFor({ timeout: T });
    // The room, from this new session's sync.
    await page.goto(account.roomUrl);
    await page.getByText(account.roomName).first().waitFor({ timeout: T });
    await page.getByRole("button", { name: "Join call" }).waitFor({ timeout: T });
  });
  assert.ok(
    seen.answers.some((a) => a.startsWith("POST /_matrix/client/v3/login -> 200")),
    `the client's sign-in went through the server:\n${seen.answers.join("\n")}`,
  );
  assertServerHappy(seen);
  await context.close();
});
