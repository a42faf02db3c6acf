// The direct line between two governments, in the browser: two Hotline
// servers federating over TLS on loopback (scripts/governments.sh, the
// same set-up as scripts/run.sh's demo), the President's office on one and
// the Prime Minister's on the other, each principal in a browser context of
// their own signed in to their own government's server. No mocks: the
// officials were enrolled and vouched by scripts/governments.sh demo, and
// the line between them crossed the servers when it was opened.
//
// Environment (set by scripts/web.sh test): HOTLINE_GOV_DIR (the set-up's
// directory), HOTLINE_BIN, HOTLINE_PASSWORD (the demo accounts' password).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as ed from "@noble/ed25519";
import {
  T,
  TRACK_PCS,
  apiAt,
  assertAudioBothWays,
  b64,
  launchChromium,
  mark,
  message,
  replaceCrossSigning,
  send,
  tokenOf,
} from "./helpers.mjs";

const DIR = process.env.HOTLINE_GOV_DIR;
const BIN = process.env.HOTLINE_BIN;
const PW = process.env.HOTLINE_PASSWORD;
if (!DIR || !BIN || !PW) throw new Error("HOTLINE_GOV_DIR, HOTLINE_BIN and HOTLINE_PASSWORD must be set: run through scripts/web.sh test");

/** One government's server, as its configuration file names it. */
function government(gov) {
  const config = join(DIR, gov, "hotline.toml");
  const text = readFileSync(config, "utf8");
  const setting = (key) => new RegExp(`^${key} = "(.*)"$`, "m").exec(text)[1];
  const name = setting("server_name");
  return { config, name, url: `http://${setting("listen")}`, user: (localpart) => `@${localpart}:${name}` };
}
const A = government("avalon");
const B = government("borduria");
const admin = (gov, ...args) => execFileSync(BIN, ["--config", gov.config, "admin", ...args]).toString();

/** Each demo official's recovery key, from the set-up's list. */
const recoveryKeys = new Map(
  readFileSync(join(DIR, "demo-officials"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [, userId, , ...key] = l.trim().split(/\s+/);
      return [userId, key.join(" ")];
    }),
);

const PRESIDENT = { userId: A.user("president.avalon"), name: "Maria Castell", title: "President", country: "Avalon", office: "Avalon Protocol Office" };
const PM = { userId: B.user("pm.borduria"), name: "Jon Varga", title: "Prime Minister", country: "Borduria", office: "Borduria Chancellery" };

let browser;
const problems = [];
const pages = {};

async function newPage(label) {
  const ctx = await browser.newContext({
    viewport: { width: 1200, height: 760 },
    deviceScaleFactor: 1,
    permissions: ["microphone", "notifications"],
  });
  await ctx.addInitScript(TRACK_PCS);
  const page = await ctx.newPage();
  page.setDefaultTimeout(T);
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    // Answers the app handles (a profile or key look-up's 404, UIA's 401).
    if (/^Failed to load resource: the server responded with a status of (401|403|404)/.test(m.text())) return;
    problems.push(`[${label}] console.error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`[${label}] page error: ${e.message}`));
  return page;
}

async function signIn(page, gov, localpart) {
  await page.goto(gov.url + "/");
  await page.getByLabel("User name").fill(localpart);
  await page.getByLabel("Password", { exact: true }).fill(PW);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** An official's sign-in on a new device: their recovery key unlocks their keys. */
async function signInOfficial(page, gov, official) {
  await signIn(page, gov, official.userId.slice(1).split(":")[0]);
  await page.getByRole("heading", { name: "Confirm it's you" }).waitFor({ timeout: 60_000 });
  await page.getByLabel("Recovery key").fill(recoveryKeys.get(official.userId));
  await page.getByRole("button", { name: "Verify this device" }).click();
  await page.getByRole("navigation", { name: "Lines" }).waitFor({ timeout: 60_000 });
}

const row = (page, userId) => page.locator(`a.line[data-counterpart="${userId}"]`);

/** "Prime Minister · Borduria, vouched by Borduria Chancellery (SERVER)". */
const remoteBadge = (o, server) => `${o.title} · ${o.country}, vouched by ${o.office} (${server})`;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

test("each principal sees the other verified by their own government, named with its office and server", async () => {
  pages.president = await newPage("president");
  pages.pm = await newPage("pm");
  await signInOfficial(pages.president, A, PRESIDENT);
  await signInOfficial(pages.pm, B, PM);
  for (const [page, other, server] of [
    [pages.president, PM, B.name],
    [pages.pm, PRESIDENT, A.name],
  ]) {
    const line = row(page, other.userId);
    await line.and(page.locator('[data-official="true"]')).waitFor();
    await mark(line).and(page.locator('[data-status="verified"]')).filter({ hasText: remoteBadge(other, server) }).waitFor();
    assert.equal(await mark(line).getAttribute("title"), `Verified by ${other.office}: ${other.name}, ${other.title} of ${other.country}`);
    await line.click();
    const header = page.locator(".chat-head");
    await mark(header).and(page.locator('[data-status="verified"]')).filter({ hasText: remoteBadge(other, server) }).waitFor();
    await header.getByText("Official line · End-to-end encrypted").waitFor();
  }
});

test("texts and a voice call both ways across the two servers", async () => {
  const { president: P, pm: M } = pages;
  assert.ok(P && M, "the principals signed in (the test before)");
  await send(P, "Good evening, Prime Minister. This line crosses our two servers.");
  await message(M, "Good evening, Prime Minister. This line crosses our two servers.").waitFor();
  await send(M, "Good evening, Madam President. Verified on my side too.");
  await message(P, "Good evening, Madam President. Verified on my side too.").waitFor();

  // Each calls the other in turn; the callee sees the caller verified on
  // the ringing dialog, and audio flows both ways.
  for (const [caller, callee, calleeO, callerO, callerServer] of [
    [P, M, PM, PRESIDENT, A.name],
    [M, P, PRESIDENT, PM, B.name],
  ]) {
    await caller.getByRole("button", { name: `Call ${calleeO.name}` }).click();
    const incoming = callee.getByTestId("incoming-call");
    await incoming.waitFor();
    await mark(incoming).and(callee.locator('[data-status="verified"]')).filter({ hasText: remoteBadge(callerO, callerServer) }).waitFor();
    await callee.getByRole("button", { name: "Answer call" }).click();
    for (const page of [caller, callee]) await page.locator('[data-testid="active-call"][data-phase="connected"]').waitFor();
    await assertAudioBothWays(caller, callee);
    await caller.getByRole("button", { name: "Hang up" }).click();
    for (const page of [caller, callee]) await page.getByTestId("active-call").waitFor({ state: "detached", timeout: 10_000 });
  }
});

test("availability across the two servers: the President goes into do not disturb on Avalon and the Prime Minister sees it on Borduria, with her local time, before calling; nobody without a line reads it", async () => {
  const { president: P, pm: M } = pages;
  const tokenP = await tokenOf(P);
  const tokenM = await tokenOf(M);
  const set = await apiAt(A.url, "PUT", "/_hotline/v1/availability", { state: "dnd", until: null, tz: "Europe/Paris" }, tokenP);
  assert.equal(set.status, 200, JSON.stringify(set.json));
  try {
    // The line's state crossed to Borduria: the PM's lines list shows it.
    const shown = row(M, PRESIDENT.userId).getByTestId("line-availability");
    await shown.filter({ hasText: /^\d\d:\d\d in Avalon · do not disturb$/ }).waitFor();
    // And his own server answers for her, from the line it holds.
    const read = await apiAt(B.url, "GET", `/_hotline/v1/availability/${encodeURIComponent(PRESIDENT.userId)}`, undefined, tokenM);
    assert.equal(read.status, 200, JSON.stringify(read.json));
    assert.equal(read.json.effective, "dnd");
    assert.equal(read.json.place, "Avalon");
    // A user of Avalon with no line to her reads nothing.
    const login = await apiAt(A.url, "POST", "/_matrix/client/v3/login", { type: "m.login.password", identifier: { type: "m.id.user", user: "alice" }, password: PW });
    assert.equal(login.status, 200, JSON.stringify(login.json));
    const denied = await apiAt(A.url, "GET", `/_hotline/v1/availability/${encodeURIComponent(PRESIDENT.userId)}`, undefined, login.json.access_token);
    assert.equal(denied.status, 403, JSON.stringify(denied.json));
    assert.equal(denied.json.errcode, "M_FORBIDDEN");
  } finally {
    const back = await apiAt(A.url, "PUT", "/_hotline/v1/availability", { state: "available", until: null, tz: "Europe/Paris" }, tokenP);
    assert.equal(back.status, 200, JSON.stringify(back.json));
  }
  await row(M, PRESIDENT.userId).getByTestId("line-availability").filter({ hasText: /· available$/ }).waitFor();
});

test("the demo line shows its aide and the records office keeping it, and the office's archive holds the line's texts, verified", async () => {
  const { president: P, pm: M } = pages;
  assert.ok(P && M, "the principals signed in (the first test)");
  const ARCHIVER = A.user("records.avalon");
  for (const page of [P, M]) {
    const header = page.locator(".chat-head");
    // The aide the Avalon office brought on, named and placed on both
    // servers' screens, and the office's doing told in the line.
    await header.getByTestId("aide-label").filter({ hasText: "Aide: Lea Moreau (for Maria Castell)" }).waitFor();
    await page.getByText("Avalon Protocol Office added Lea Moreau to the line as aide to Maria Castell").waitFor();
    // The archiver joined when it started (scripts/governments.sh serve).
    await header.getByTestId("line-recorder").filter({ hasText: "This line is recorded by Records office of Avalon" }).waitFor({ timeout: 60_000 });
    await page.getByTestId("people-button").click();
    const people = page.getByTestId("people-dialog");
    const recorder = people.locator(`[data-testid="person"][data-role="recorder"][data-user="${ARCHIVER}"]`);
    await recorder.filter({ hasText: "Records office of Avalon" }).filter({ hasText: "Archiver: keeps the official record" }).waitFor();
    // Vouched for by Avalon's office, as its officials are.
    await recorder.locator('[data-status="verified"]').waitFor({ timeout: 60_000 });
    await people.locator('[data-testid="person"][data-role="aide"]').filter({ hasText: "Lea Moreau" }).waitFor();
    assert.equal(await people.getByTestId("person").count(), 4, "both principals, the aide and the archiver");
    await page.keyboard.press("Escape");
    await people.waitFor({ state: "detached" });
  }

  // The archiver read both principals' texts with its own keys: the office's
  // export of the line holds them, and the package verifies.
  const room = await P.evaluate(() => location.hash.split("/").pop());
  const text = "Good evening, Madam President. Verified on my side too.";
  const key = join(DIR, "avalon", "records-office", "records-office.key");
  const archive = join(DIR, "avalon", "archive");
  let entries = "";
  const deadline = Date.now() + 60_000;
  for (let n = 0; !entries.includes(text); n++) {
    assert.ok(Date.now() < deadline, `the archive holds the text within 60 s; the last export:\n${entries.slice(-2000)}`);
    const out = join(DIR, `export-${n}`);
    try {
      execFileSync(BIN, ["records", "export", "--archive", archive, "--line", decodeURIComponent(room), "--key", key, "--out", out], { stdio: "pipe" });
      entries = readFileSync(join(out, "entries.jsonl"), "utf8");
      if (entries.includes(text)) {
        // Exits non-zero, naming the entry, unless complete and untampered.
        execFileSync(BIN, ["records", "verify", out, "--checkpoint-key", join(DIR, "avalon", "records-keys", "checkpoint-verify.pub")], { stdio: "pipe" });
        assert.ok(entries.includes("Good evening, Prime Minister. This line crosses our two servers."), "the other principal's text too");
      }
    } catch (e) {
      entries = `${e.message}`;
    }
    if (!entries.includes(text)) await new Promise((r) => setTimeout(r, 1000));
  }
});

test("someone of the other server named like an official is shown with a warning, never a badge", async () => {
  // Mallory, on Borduria's server, takes the name of an official Avalon
  // has not enrolled yet (her server's name guard has nobody to protect
  // then), and writes to Alice on Avalon's.
  admin(B, "create-user", "mallory", "--password", PW);
  const login = await apiAt(B.url, "POST", "/_matrix/client/v3/login", { type: "m.login.password", identifier: { type: "m.id.user", user: "mallory" }, password: PW });
  assert.equal(login.status, 200, JSON.stringify(login.json));
  const mallory = login.json.access_token;
  const named = await apiAt(B.url, "PUT", `/_matrix/client/v3/profile/${encodeURIComponent(B.user("mallory"))}/displayname`, { displayname: "Ines Duarte" }, mallory);
  assert.equal(named.status, 200, JSON.stringify(named.json));
  const room = await apiAt(B.url, "POST", "/_matrix/client/v3/createRoom", { preset: "trusted_private_chat", is_direct: true, invite: [A.user("alice")] }, mallory);
  assert.equal(room.status, 200, JSON.stringify(room.json));

  // Then Avalon's protocol office enrols and vouches for the real Ines Duarte.
  const out = admin(A, "enroll", "foreign.minister", "--name", "Ines Duarte", "--title", "Foreign Minister", "--country", "Avalon", "--office", "Avalon Protocol Office", "--role", "principal");
  const code = /^code (\S+)$/m.exec(out)[1];
  const enrolled = await apiAt(A.url, "POST", `/_hotline/v1/enrol/${code}`, { password: "a long enough password" });
  assert.equal(enrolled.status, 200, JSON.stringify(enrolled.json));
  const pub = b64(await ed.getPublicKeyAsync(ed.utils.randomSecretKey()));
  const minister = A.user("foreign.minister");
  const up = await apiAt(A.url, "POST", "/_matrix/client/v3/keys/device_signing/upload", { master_key: { user_id: minister, usage: ["master"], keys: { [`ed25519:${pub}`]: pub } } }, enrolled.json.access_token);
  assert.equal(up.status, 200, JSON.stringify(up.json));
  admin(A, "vouch", minister, "--master-key", pub);

  // Alice sees Mallory's invitation: a warning naming the official the
  // name passes for, and no badge.
  const alice = await newPage("alice");
  await signIn(alice, A, "alice");
  await alice.getByRole("heading", { name: "Set up secure keys" }).waitFor({ timeout: 60_000 });
  await alice.getByRole("button", { name: "Create my recovery key" }).click();
  await alice.getByLabel("I have stored my recovery key").check({ timeout: 60_000 });
  await alice.getByRole("button", { name: "Continue" }).click();
  const line = row(alice, B.user("mallory"));
  await line.waitFor();
  await mark(line).and(alice.locator('[data-status="resembles-official"]')).filter({ hasText: "Unverified: resembles Ines Duarte" }).waitFor();
  assert.match(await mark(line).getAttribute("title"), /resembles Ines Duarte, Foreign Minister of Avalon, but no government vouches that this is them/);
  assert.equal(await alice.locator('[data-status="verified"]').count(), 0, "no badge anywhere on Alice's screen");
});

test("a key change on the other server pauses the line until that government's office vouches again", async () => {
  const { president: P, pm: M } = pages;
  assert.ok(P && M, "the principals signed in (the first test)");
  await row(P, PM.userId).click();
  await P.locator("#composer-input:not([disabled])").waitFor();

  // The Prime Minister's cross-signing keys are replaced on Borduria's server.
  const newKey = await replaceCrossSigning(B.url, PM.userId, PW, await tokenOf(M));
  const changedAt = Date.now();
  const banner = P.getByTestId("identity-banner");
  await banner.filter({ hasText: "This line is paused" }).waitFor();
  console.log(`# key change on the other server shown in the line after ${Date.now() - changedAt} ms`);
  assert.match(await banner.textContent(), new RegExp(`${PM.name}'s identity key changed since ${PM.office} vouched for them`));
  assert.equal(await P.locator("#composer-input").isDisabled(), true, "composer disabled");
  assert.equal(await P.getByRole("button", { name: `Call ${PM.name}` }).isDisabled(), true, "call button disabled");
  await mark(P.locator(".chat-head")).and(P.locator('[data-status="key-mismatch"]')).waitFor();
  // Avalon's server agrees: the line is paused for the President's texts.
  const roomId = decodeURIComponent(new URL(P.url()).hash.replace(/^#\/line\//, ""));
  const refused = await apiAt(A.url, "PUT", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/paused-${Date.now()}`, { msgtype: "m.text", body: "x" }, await tokenOf(P));
  assert.equal(refused.status, 403, JSON.stringify(refused.json));
  assert.match(refused.json.error, /paused/);

  // Borduria's office vouches for the new key: the line resumes by itself.
  admin(B, "vouch", PM.userId, "--master-key", newKey);
  const vouchedAt = Date.now();
  await banner.waitFor({ state: "detached", timeout: 20_000 });
  console.log(`# vouched again on the other server: pause lifted after ${Date.now() - vouchedAt} ms`);
  await mark(P.locator(".chat-head")).and(P.locator('[data-status="verified"]')).filter({ hasText: remoteBadge(PM, B.name) }).waitFor();
  await P.locator("#composer-input:not([disabled])").waitFor();
});

test("no console errors or page errors on either server's pages", () => {
  assert.deepEqual(problems, []);
});
