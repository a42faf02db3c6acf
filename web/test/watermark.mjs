// Leak tracing, end to end: the web app's watermark in real Chromium
// screenshots, read back by `hotline trace` against the running server's
// data directory (started by scripts/web.sh test). No mocks: 20 viewer
// devices (4 users, 5 devices each) open the same line, each screenshot is
// leaked the ways a screenshot is (scaled to 50% and 33%, JPEG at quality
// 50, cropped to 400 x 300 CSS pixels around one message), and 95% of each
// kind of copy (all of the untouched ones) must trace back to its device
// and minute, none to another device; the PSNR of the overlay and the time
// of `hotline trace` on a 1920 x 1080 PNG are printed (BENCHMARKS.md).
// All of those leaks at once (crop, then 33%, then JPEG 50) must trace too:
// beyond the code alone, `hotline trace` matches them against the tags the
// server issued (crates/hotline-trace/src/informed.rs). A phone's screenshot
// (3 device pixels per CSS pixel) traces too, untouched and scaled to a
// third. 200 screenshots without
// the watermark (generated pages, the sign-in page) must give "no
// watermark found". The transformations are the `hotline
// trace-tool` ones (the image crate, Catmull-Rom resizing, its JPEG encoder).
//
// Environment (set by scripts/web.sh): HOTLINE_URL, HOTLINE_BIN, HOTLINE_DATA,
// HOTLINE_PASSWORD.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { T, apiAt, launchChromium, newCrossSigningKeys } from "./helpers.mjs";

const URL_ = process.env.HOTLINE_URL;
const PW = process.env.HOTLINE_PASSWORD || "hotline-test-pw";
const BIN = process.env.HOTLINE_BIN;
const DATA = process.env.HOTLINE_DATA;
if (!URL_) throw new Error("HOTLINE_URL is not set: run through scripts/web.sh test");

const api = (method, path, body, token) => apiAt(URL_, method, path, body, token);
const hotline = (...args) => execFileSync(BIN, ["--data-dir", DATA, ...args], { maxBuffer: 64 << 20 }).toString();
const minuteOf = (ms) => Math.floor(ms / 60_000);

let browser;
let dir;
// The 20 devices' screenshots (test 1), leaked again by the next test.
const shots = [];
let lineRoomId = null;
const problems = [];

before(async () => {
  browser = await launchChromium();
  dir = mkdtempSync(join(tmpdir(), "hotline-watermark-"));
});
after(async () => {
  await browser?.close();
  // HOTLINE_WATERMARK_KEEP=1 keeps the screenshots and their leaked copies.
  if (dir && process.env.HOTLINE_WATERMARK_KEEP !== "1") rmSync(dir, { recursive: true, force: true });
  else if (dir) console.log(`screenshots kept in ${dir}`);
});

/** Waits until the overlay for `roomId` is drawn: its tile decoded and two frames painted since. */
async function paintedWatermark(page, roomId) {
  await page.locator(`[data-testid="watermark"][data-line="${roomId}"]`).waitFor({ state: "attached" });
  await page.evaluate(async () => {
    const el = document.querySelector('[data-testid="watermark"]');
    const url = /url\("?(.*?)"?\)$/.exec(getComputedStyle(el).backgroundImage)[1];
    const img = new Image();
    img.src = url;
    await img.decode();
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  });
}

async function login(user) {
  const r = await api("POST", "/_matrix/client/v3/login", {
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password: PW,
  });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json;
}

/**
 * Traces `files` in one `hotline trace` run; for each file, null (no
 * watermark found) or { user, device, from } (the minute's start, ms).
 */
function trace(files) {
  const out = hotline("trace", "--by", "web-test", ...files);
  const results = new Map();
  let current = null;
  for (const line of out.split("\n")) {
    const head = /^(.*): (watermark found|no watermark found)$/.exec(line);
    if (head) {
      current = head[2] === "watermark found" ? {} : null;
      results.set(head[1], current);
      continue;
    }
    const field = /^ {2}(\w+)\s+(.*)$/.exec(line);
    if (field && current) {
      if (field[1] === "time") current.from = Date.parse(field[2].split(" to ")[0].replace(" ", "T") + ":00Z");
      else if (field[1] === "confidence") {
        // "(decoded: ...)" or "(matched against N issued tags and lines: score Z, threshold T, ...)"
        const m = /score ([\d.]+), threshold ([\d.]+)/.exec(field[2]);
        current.how = m ? "matched" : "decoded";
        if (m) [current.score, current.threshold] = [Number(m[1]), Number(m[2])];
      } else current[field[1]] = field[2].replace(/ \(since removed\)$/, "");
    }
  }
  for (const f of files) assert.ok(results.has(f), `hotline trace said nothing about ${f}:\n${out}`);
  return results;
}

/**
 * Gives the account cross-signing keys, as its first device would (the
 * first upload needs no password), so its other devices only need the
 * recovery key, which they may skip.
 */
async function setUpCrossSigning(userId, token) {
  const { body } = await newCrossSigningKeys(userId);
  const r = await api("POST", "/_matrix/client/v3/keys/device_signing/upload", body, token);
  assert.equal(r.status, 200, JSON.stringify(r.json));
}

const LEAKS = {
  untouched: [],
  "scaled to 50%": ["--scale", "0.5"],
  "scaled to 33%": ["--scale", "0.33"],
  "JPEG quality 50": ["--jpeg", "50"],
  "cropped to 400x300 around a message": ["--crop", "CROP"],
};

/**
 * Leaks every screenshot of `shots` one way (`hotline trace-tool
 * transform` ARGS; CROP stands for the shot's message region), traces
 * them in one run, checks that no trace names another device, and answers
 * how many traced to their own device and minute.
 */
function leakAndTrace(name, args) {
  const files = shots.map((s, i) => {
    if (!args.length) return s.file;
    const out = join(dir, `leak-${name.replace(/\W+/g, "-")}-${i}.${args.includes("--jpeg") ? "jpg" : "png"}`);
    hotline("trace-tool", "transform", s.file, out, ...args.map((a) => (a === "CROP" ? s.crop.join(",") : a)));
    return out;
  });
  const results = trace(files);
  let ok = 0;
  const wrong = [];
  files.forEach((f, i) => {
    const r = results.get(f);
    const s = shots[i];
    if (r && r.user === s.creds.userId && r.device === s.creds.deviceId && minuteOf(r.from) === s.minute) ok++;
    // Never another device: a result is right or absent.
    if (r && (r.user !== s.creds.userId || r.device !== s.creds.deviceId)) wrong.push(`${f}: ${JSON.stringify(r)}`);
  });
  const found = files.map((f) => results.get(f)).filter(Boolean);
  const matched = found.filter((r) => r.how === "matched");
  const lowest = matched.reduce((a, r) => (a && a.score - a.threshold < r.score - r.threshold ? a : r), null);
  console.log(
    `watermark traced, ${name}: ${ok} of ${files.length} (decoded ${found.length - matched.length}, matched ${matched.length}` +
      (lowest ? `; lowest match score ${lowest.score} against its threshold ${lowest.threshold})` : ")"),
  );
  assert.deepEqual(wrong, [], "a trace named the wrong device");
  return ok;
}

/**
 * Takes a screenshot of `page` to `file` within one minute (not across a
 * minute's change: the overlay is redrawn then); that minute.
 */
async function screenshotInOneMinute(page, roomId, file) {
  for (;;) {
    const before = Date.now();
    if (60_000 - (before % 60_000) < 1500) {
      await page.waitForTimeout(60_000 - (before % 60_000) + 300);
      await paintedWatermark(page, roomId);
      continue;
    }
    await page.screenshot({ path: file });
    if (minuteOf(before) === minuteOf(Date.now())) return minuteOf(before);
  }
}

/**
 * A page signed in as an existing device, straight into the app; a
 * desktop window unless `screen` says otherwise (Playwright context options).
 */
async function devicePage(creds, screen = { viewport: { width: 1200, height: 760 }, deviceScaleFactor: 1 }) {
  const ctx = await browser.newContext(screen);
  await ctx.addInitScript(
    ({ creds, skip }) => {
      if (!localStorage.getItem("hotline.session")) {
        localStorage.setItem("hotline.session", JSON.stringify(creds));
        // The account's keys were set up elsewhere (replaceCrossSigning):
        // this device skips entering the recovery key, as a user may.
        localStorage.setItem(skip, "1");
      }
    },
    { creds, skip: `hotline.keys-skipped:${creds.userId}:${creds.deviceId}` },
  );
  const page = await ctx.newPage();
  page.setDefaultTimeout(T);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  return page;
}

const MESSAGES = [
  "Minister, the draft communiqué is attached; paragraph 4 still needs your sign-off.",
  "Understood. We hold the line on the fisheries clause.",
  "The delegation lands at 18:40, motorcade to the residence.",
  "Can we move the call to tomorrow 09:00 our time?",
  "Yes. I will brief the Chancellor tonight.",
  "Confidential: the numbers in annex B are provisional.",
  "Agreed on all points except the timetable for phase two.",
  "Thank you — talk tomorrow.",
];

test("watermark: screenshots of 20 viewer devices trace back to their device and minute, untouched and leaked", async () => {
  // The line: an owner and 4 viewers, 5 devices each.
  const users = ["wmowner", "wmview1", "wmview2", "wmview3", "wmview4"];
  for (const u of users) hotline("admin", "create-user", u, "--password", PW);
  const owner = await login("wmowner");
  const viewers = users.slice(1);
  const room = await api(
    "POST",
    "/_matrix/client/v3/createRoom",
    { preset: "private_chat", name: "Leak tracing line", invite: viewers.map((v) => `@${v}:${owner.user_id.split(":")[1]}`) },
    owner.access_token,
  );
  assert.equal(room.status, 200, JSON.stringify(room.json));
  const roomId = room.json.room_id;
  lineRoomId = roomId;
  const devices = [];
  for (const v of viewers) {
    let first = null;
    for (let i = 0; i < 5; i++) {
      const l = await login(v);
      if (!first) {
        first = l;
        assert.equal((await api("POST", `/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {}, l.access_token)).status, 200);
        await setUpCrossSigning(l.user_id, l.access_token);
      }
      devices.push({ baseUrl: URL_, userId: l.user_id, deviceId: l.device_id, accessToken: l.access_token });
    }
  }
  for (const [i, body] of MESSAGES.entries()) {
    const who = i % 2 ? devices[0].accessToken : owner.access_token;
    const r = await api("PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/wm${i}`, { msgtype: "m.text", body }, who);
    assert.equal(r.status, 200);
  }

  // Each device's chat view, and the region of one message (CSS px).
  let psnr = null;
  let fullHd = null;
  for (const [i, creds] of devices.entries()) {
    const page = await devicePage(creds);
    await page.goto(`${URL_}/#/line/${encodeURIComponent(roomId)}`);
    const msg = page.getByTestId("message").filter({ hasText: MESSAGES[(i * 3) % MESSAGES.length] });
    await msg.waitFor();
    await paintedWatermark(page, roomId);
    const box = await msg.boundingBox();
    const file = join(dir, `device-${i}.png`);
    const minute = await screenshotInOneMinute(page, roomId, file);
    if (i === 0) {
      // PSNR: the same page without the overlay.
      await page.getByTestId("watermark").evaluate((e) => (e.style.display = "none"));
      await page.waitForTimeout(100);
      const clean = join(dir, "clean.png");
      await page.screenshot({ path: clean });
      await page.getByTestId("watermark").evaluate((e) => (e.style.display = ""));
      psnr = Number(hotline("trace-tool", "psnr", clean, file).trim());
      // The benchmark's image: the same view on a 1920 x 1080 screen.
      await page.setViewportSize({ width: 1920, height: 1080 });
      await page.waitForTimeout(300);
      fullHd = join(dir, "full-hd.png");
      await page.screenshot({ path: fullHd });
      await page.setViewportSize({ width: 1200, height: 760 });
      await page.waitForTimeout(300);
    }
    const cx = Math.round(box.x + box.width / 2);
    const cy = Math.round(box.y + box.height / 2);
    const crop = [Math.min(Math.max(cx - 200, 0), 1200 - 400), Math.min(Math.max(cy - 150, 0), 760 - 300), 400, 300];
    shots.push({ file, creds, minute, crop });
    await page.context().close();
  }
  console.log(`watermark PSNR (chat view, with and without the overlay): ${psnr.toFixed(2)} dB`);
  assert.ok(psnr >= 38, `the watermark must stay faint: PSNR ${psnr} dB < 38 dB`);

  const rates = {};
  for (const [name, args] of Object.entries(LEAKS)) rates[name] = leakAndTrace(name, args);
  assert.equal(rates.untouched, 20, "every untouched screenshot traces to its device and minute");
  for (const [name, ok] of Object.entries(rates)) assert.ok(ok >= 19, `${name}: ${ok} of 20 (at least 95%)`);

  // `hotline trace` of one 1920 x 1080 PNG, the whole command (start, open
  // the store, decode, resolve, log durably), 5 runs: the median.
  const times = [];
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    const out = hotline("trace", "--by", "web-test", fullHd);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    assert.match(out, /watermark found/);
  }
  times.sort((a, b) => a - b);
  console.log(`hotline trace, one 1920x1080 PNG: median ${times[2].toFixed(0)} ms (runs: ${times.map((t) => t.toFixed(0)).join(", ")} ms)`);

  // Every one of those requests is in the trace log.
  const log = hotline("admin", "trace-log").trim().split("\n");
  assert.ok(log.length >= 105, `trace log has ${log.length} entries`);
  assert.match(log[log.length - 1], /\tweb-test\tsha256:[0-9a-f]{64}\ttrace\t/);
  assert.deepEqual(problems, []);
});

test("watermark: cropped to one message, scaled to 33% and JPEG 50, at least 95% trace back", () => {
  assert.equal(shots.length, 20, "the screenshots of the first test");
  const ok = leakAndTrace("cropped, scaled to 33%, JPEG 50", ["--crop", "CROP", "--scale", "0.33", "--jpeg", "50"]);
  assert.ok(ok >= 19, `${ok} of 20 (at least 95%)`);
});

test("watermark: a phone's screenshot (390 x 844 CSS px, 3 device pixels each) traces back, untouched and scaled to a third", async () => {
  assert.equal(shots.length, 20, "the devices of the first test");
  const { creds } = shots[0];
  const page = await devicePage(creds, { viewport: { width: 390, height: 844 }, deviceScaleFactor: 3, isMobile: true, hasTouch: true });
  await page.goto(`${URL_}/#/line/${encodeURIComponent(lineRoomId)}`);
  await page.getByTestId("message").first().waitFor();
  await paintedWatermark(page, lineRoomId);
  const file = join(dir, "phone.png");
  const minute = await screenshotInOneMinute(page, lineRoomId, file);
  await page.context().close();
  const scaled = join(dir, "phone-33.png");
  hotline("trace-tool", "transform", file, scaled, "--scale", "0.33");
  const results = trace([file, scaled]);
  for (const f of [file, scaled]) {
    const r = results.get(f);
    assert.ok(r, `${f}: no watermark found`);
    assert.deepEqual([r.user, r.device, minuteOf(r.from)], [creds.userId, creds.deviceId, minute], f);
  }
  assert.deepEqual(problems, []);
});

/** A random page of another app: text, colours, pictures, tables. */
function otherPage(seed) {
  let s = seed * 7919 + 17;
  const rnd = (n) => ((s = (s * 1103515245 + 12345) % 2147483648), s % n);
  const words = "state visit treaty budget harbour river council energy grain summit rail bridge museum orchestra football weather market".split(" ");
  const text = (n) => Array.from({ length: n }, () => words[rnd(words.length)]).join(" ");
  const colour = () => `rgb(${rnd(256)},${rnd(256)},${rnd(256)})`;
  const light = () => `rgb(${200 + rnd(56)},${200 + rnd(56)},${200 + rnd(56)})`;
  const dark = seed % 5 === 0;
  let body = `<h1 style="color:${colour()}">${text(3 + rnd(4))}</h1>`;
  for (let i = 0; i < 3 + rnd(8); i++) {
    const kind = rnd(5);
    if (kind === 0) body += `<p style="font-size:${11 + rnd(12)}px">${text(20 + rnd(120))}</p>`;
    else if (kind === 1) body += `<div style="height:${30 + rnd(200)}px;background:linear-gradient(${rnd(360)}deg,${colour()},${light()})"></div>`;
    else if (kind === 2) body += `<canvas data-seed="${rnd(1e6)}" width="${100 + rnd(500)}" height="${60 + rnd(250)}"></canvas>`;
    else if (kind === 3)
      body += `<table border="1" style="border-collapse:collapse">${Array.from({ length: 2 + rnd(6) }, () => `<tr>${Array.from({ length: 2 + rnd(5) }, () => `<td style="padding:${rnd(12)}px;background:${light()}">${text(1 + rnd(3))}</td>`).join("")}</tr>`).join("")}</table>`;
    else body += `<div style="display:flex;gap:${rnd(20)}px">${Array.from({ length: 2 + rnd(4) }, () => `<div style="flex:1;padding:12px;border-radius:${rnd(16)}px;background:${light()}"><b>${text(2)}</b><br>${text(10 + rnd(30))}</div>`).join("")}</div>`;
  }
  const style = `body{font-family:${["sans-serif", "serif", "monospace"][rnd(3)]};margin:${rnd(40)}px;background:${dark ? "#1e1f22" : seed % 3 ? "#fff" : light()};color:${dark ? "#ddd" : "#222"}}`;
  // Pictures: noise, stripes, checkerboards and shapes, drawn per canvas.
  const script = `for (const c of document.querySelectorAll("canvas")) { let s = +c.dataset.seed; const r = (n) => ((s = (s * 1103515245 + 12345) % 2147483648), s % n);
    const g = c.getContext("2d"); const kind = r(4);
    if (kind === 0) { const d = g.createImageData(c.width, c.height); for (let i = 0; i < d.data.length; i += 4) { const v = r(256); d.data[i] = v; d.data[i+1] = r(256); d.data[i+2] = v; d.data[i+3] = 255; } g.putImageData(d, 0, 0); }
    else if (kind === 1) { const w = 2 + r(30); for (let x = 0; x < c.width; x += w) { g.fillStyle = x / w % 2 ? "#fff" : "rgb(" + r(256) + ",0,0)"; g.fillRect(x, 0, w, c.height); } }
    else if (kind === 2) { const w = 4 + r(24); for (let y = 0; y < c.height; y += w) for (let x = 0; x < c.width; x += w) { g.fillStyle = ((x + y) / w) % 2 ? "#eee" : "#fafafa"; g.fillRect(x, y, w, w); } }
    else { for (let i = 0; i < 30; i++) { g.fillStyle = "rgba(" + r(256) + "," + r(256) + "," + r(256) + ",0.5)"; g.beginPath(); g.arc(r(c.width), r(c.height), 5 + r(60), 0, 7); g.fill(); } } }`;
  return `<!doctype html><meta charset="utf-8"><style>${style}</style><body>${body}<script>${script}</script></body>`;
}

test("watermark: 200 screenshots without the watermark give no watermark found", async () => {
  const files = [];
  const sizes = [
    { width: 1200, height: 760 },
    { width: 1920, height: 1080 },
    { width: 390, height: 800 },
    { width: 800, height: 600 },
  ];
  const ctx = await browser.newContext({ deviceScaleFactor: 1 });
  const page = await ctx.newPage();
  for (let i = 0; i < 200; i++) {
    await page.setViewportSize(sizes[i % sizes.length]);
    if (i % 20 === 0) {
      // The sign-in page (signed out: no watermark there).
      await page.goto(URL_ + "/");
      await page.getByRole("button", { name: "Sign in" }).waitFor();
    } else {
      await page.setContent(otherPage(i));
    }
    const file = join(dir, `other-${i}.png`);
    await page.screenshot({ path: file });
    files.push(file);
  }
  await ctx.close();
  const results = trace(files);
  const named = files.filter((f) => results.get(f) !== null).map((f) => `${f}: ${JSON.stringify(results.get(f))}`);
  console.log(`no watermark found: ${files.length - named.length} of ${files.length}`);
  assert.deepEqual(named, [], "a page without the watermark named a device");
});
