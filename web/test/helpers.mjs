// What the web app's browser tests share (web/test/e2e.mjs on one server,
// web/test/governments.mjs on two): the browser, the pages' call stats,
// the chat's controls, and the Matrix API calls a test makes itself.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import * as ed from "@noble/ed25519";

export const T = 30_000; // default wait for anything that crosses the server

const CHROMIUM = {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
  ],
};

/** Debian's chromium, headless, with fake media devices for calls. */
export function launchChromium() {
  return chromium.launch(CHROMIUM);
}

/**
 * The same chromium with a profile of its own in `dir`: a context that is not
 * incognito (every browser.newContext() is), which Chromium needs to install
 * an app. Returns the context; closing it ends that browser.
 */
export function launchChromiumProfile(dir, options = {}) {
  return chromium.launchPersistentContext(dir, { ...CHROMIUM, ...options });
}

// Records every RTCPeerConnection a page makes, so tests read real stats.
export const TRACK_PCS = () => {
  window.__notifications = [];
  if (window.Notification) {
    const OrigN = window.Notification;
    window.Notification = class extends OrigN {
      constructor(title, opts) {
        super(title, opts);
        window.__notifications.push({ title, body: opts?.body });
      }
    };
  }
  window.__pcs = [];
  const Orig = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Orig {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };
};

/** A Matrix API call to the server at `base`: the status and the JSON answer. */
export async function apiAt(base, method, path, body, token) {
  const resp = await fetch(base + path, {
    method,
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await resp.json().catch(() => ({}));
  return { status: resp.status, json };
}

export async function send(page, text) {
  const box = page.locator("#composer-input");
  await box.fill(text);
  await box.press("Enter");
}

export function message(page, text) {
  return page.getByTestId("message").filter({ hasText: text });
}

/** The identity mark next to a counterpart in a scope (list row, chat header, call UI). */
export const mark = (scope) => scope.getByTestId("identity-mark");

/** The access token of the page's session. */
export const tokenOf = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("hotline.session")).accessToken);

/** Audio stats of the page's newest peer connection. */
export async function callStats(page) {
  return page.evaluate(async () => {
    const pc = window.__pcs[window.__pcs.length - 1];
    if (!pc) return null;
    const stats = await pc.getStats();
    let inbound = 0;
    let outbound = 0;
    let pairId = null;
    const byId = new Map();
    stats.forEach((s) => {
      byId.set(s.id, s);
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound += s.bytesReceived || 0;
      if (s.type === "outbound-rtp" && s.kind === "audio") outbound += s.bytesSent || 0;
      if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    if (!pairId) stats.forEach((s) => s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && (pairId = s.id));
    const pair = pairId ? byId.get(pairId) : null;
    return {
      inbound,
      outbound,
      state: pc.connectionState,
      policy: pc.getConfiguration().iceTransportPolicy,
      local: pair ? byId.get(pair.localCandidateId)?.candidateType : null,
      remote: pair ? byId.get(pair.remoteCandidateId)?.candidateType : null,
    };
  });
}

/** Asserts audio flows both ways: inbound bytes grow on both pages. */
export async function assertAudioBothWays(a, b) {
  const deadline = Date.now() + T;
  let a1, b1;
  for (;;) {
    a1 = await callStats(a);
    b1 = await callStats(b);
    if (a1?.inbound > 0 && b1?.inbound > 0) break;
    if (Date.now() > deadline) assert.fail(`no audio received: ${JSON.stringify({ a1, b1 })}`);
    await a.waitForTimeout(250);
  }
  await a.waitForTimeout(1500);
  const a2 = await callStats(a);
  const b2 = await callStats(b);
  assert.ok(a2.inbound > a1.inbound, `caller's inbound audio grows (${a1.inbound} -> ${a2.inbound})`);
  assert.ok(b2.inbound > b1.inbound, `callee's inbound audio grows (${b1.inbound} -> ${b2.inbound})`);
  return { a: a2, b: b2 };
}

export const b64 = (bytes) => Buffer.from(bytes).toString("base64").replace(/=+$/, "");
export const canonical = (v) =>
  v && typeof v === "object" && !Array.isArray(v)
    ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`
    : Array.isArray(v) ? `[${v.map(canonical).join(",")}]` : JSON.stringify(v);

/**
 * A fresh cross-signing key set for `userId`, as `/keys/device_signing/upload`
 * takes it: the master key, and the self-signing and user-signing keys
 * signed by it. Returns the body and the master public key.
 */
export async function newCrossSigningKeys(userId) {
  const master = ed.utils.randomSecretKey();
  const masterPub = b64(await ed.getPublicKeyAsync(master));
  const key = async (usage, secret) => {
    const pub = b64(await ed.getPublicKeyAsync(secret));
    const obj = { user_id: userId, usage: [usage], keys: { [`ed25519:${pub}`]: pub } };
    if (usage === "master") return obj;
    const sig = b64(await ed.signAsync(new TextEncoder().encode(canonical(obj)), master));
    return { ...obj, signatures: { [userId]: { [`ed25519:${masterPub}`]: sig } } };
  };
  const body = {
    master_key: await key("master", master),
    self_signing_key: await key("self_signing", ed.utils.randomSecretKey()),
    user_signing_key: await key("user_signing", ed.utils.randomSecretKey()),
  };
  return { body, masterPub };
}

/**
 * Replaces a user's cross-signing keys on the server with a new, consistent
 * set (master; self-signing and user-signing keys signed by it), as a reset
 * on another device (or an attacker holding the password) would.
 * Returns the new master public key.
 */
export async function replaceCrossSigning(base, userId, password, token) {
  const { body, masterPub } = await newCrossSigningKeys(userId);
  const first = await apiAt(base, "POST", "/_matrix/client/v3/keys/device_signing/upload", body, token);
  assert.equal(first.status, 401, "replacing the master key needs the password");
  const auth = { type: "m.login.password", identifier: { type: "m.id.user", user: userId }, password, session: first.json.session };
  const second = await apiAt(base, "POST", "/_matrix/client/v3/keys/device_signing/upload", { ...body, auth }, token);
  assert.equal(second.status, 200, JSON.stringify(second.json));
  return masterPub;
}
