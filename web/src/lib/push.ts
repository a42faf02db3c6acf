// Notifications while Hotline is closed: Web Push through the homeserver's
// own push gateway (crates/hotline-api/src/web_push.rs).
//
// This browser subscribes with the server's VAPID key (GET
// /_hotline/v1/push/web) and registers an HTTP pusher for app
// `org.hotline.web` in Sygnal's WebPush convention: pushkey = the
// subscription's p256dh key, data.endpoint and data.auth = its endpoint and
// auth secret, data.url = the server's /_matrix/push/v1/notify. The server
// then sends each call ring and text, encrypted to this browser, through
// the browser's push service to the service worker (public/sw.js), which
// shows "Incoming call" or "NAME: New message on ROOM", never message text.
// The pusher goes with the device when it signs out (server side).
//
// Turned on by allowing notifications when the app asks at sign-in, or in
// Settings → Notifications (which also turns it off); then set again at
// each start (a subscription the browser renewed is sent again). Never
// subscribed without one of those clicks: a browser that cannot subscribe
// (Chromium's incognito windows) says so in the console, which a start
// should not do behind the person's back.
//
// What the worker needs is kept in IndexedDB (`hotline-push`, store `kv`):
// the homeserver's URL and the user id, never the access token.
//
// Tests: Chromium's push service is out of reach where the browser tests
// run (and in an incognito context `subscribe` is refused outright). When
// the page's localStorage names a test endpoint (`hotline.pushTestEndpoint`,
// set only by web/test/e2e.mjs) and the real subscription fails, the page
// makes the subscription a push service would (testSubscription: a P-256
// key pair and auth secret from WebCrypto, the private key kept
// non-extractable in IndexedDB for the worker) with that endpoint, so the
// test receives the server's real Web Push requests and hands them to the
// worker, which decrypts them itself.
import type { IPusherRequest, MatrixClient } from "matrix-js-sdk";
import { deviceName } from "./session";

export const PUSH_APP_ID = "org.hotline.web";
const SETTING_KEY = "hotline.push";
const TEST_ENDPOINT_KEY = "hotline.pushTestEndpoint";
const DB = "hotline-push";
const STORE = "kv";

export type PushStatus =
  | { state: "unsupported" | "blocked" | "off" | "starting" | "on" }
  | { state: "failed"; reason: string };

/** Whether this browser can get push at all (a build with its service worker). */
export function pushSupported(): boolean {
  return (
    import.meta.env.PROD &&
    typeof Notification !== "undefined" &&
    "serviceWorker" in navigator &&
    typeof PushManager !== "undefined"
  );
}

interface Stored {
  /** Turned off in Settings on this browser. */
  off?: boolean;
  /** The pushkey registered last, to take its pusher off when it changes. */
  pushkey?: string;
}

function loadStored(): Stored {
  try {
    return JSON.parse(localStorage.getItem(SETTING_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

function saveStored(s: Stored): void {
  localStorage.setItem(SETTING_KEY, JSON.stringify(s));
}

let status: PushStatus = { state: "off" };
const listeners = new Set<(s: PushStatus) => void>();

function setStatus(s: PushStatus): void {
  status = s;
  for (const l of listeners) l(s);
}

export function pushStatus(): PushStatus {
  if (!pushSupported()) return { state: "unsupported" };
  if (Notification.permission === "denied") return { state: "blocked" };
  return status;
}

export function onPushStatus(l: (s: PushStatus) => void): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}

// ---- IndexedDB, shared with public/sw.js (the same database and store) ----

function openDb(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function kv(mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest): Promise<any> {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = op(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

const b64url = (buf: ArrayBuffer | Uint8Array): string =>
  btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, "-")
    .replace(/\//g, "_")
    .replace(/=+$/, "");

function unb64url(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

interface Subscription {
  endpoint: string;
  p256dh: string;
  auth: string;
}

/**
 * The subscription a push service would hand out, made here for the tests
 * (see the top of this file): a P-256 key pair (the private key
 * non-extractable, kept in IndexedDB for the worker to decrypt with) and a
 * 16-byte auth secret, at the test's endpoint.
 */
async function testSubscription(endpoint: string): Promise<Subscription> {
  // Kept across starts, as a browser keeps its subscription.
  const kept = await kv("readonly", (s) => s.get("test-subscription"));
  if (kept?.endpoint === endpoint) return { endpoint, p256dh: b64url(kept.publicKey), auth: b64url(kept.auth) };
  const pair = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const auth = crypto.getRandomValues(new Uint8Array(16));
  await kv("readwrite", (s) => s.put({ privateKey: pair.privateKey, publicKey, auth, endpoint }, "test-subscription"));
  return { endpoint, p256dh: b64url(publicKey), auth: b64url(auth) };
}

/** This browser's subscription for `vapid`, made (or made again for a new key) as needed. */
async function subscribe(vapid: string): Promise<Subscription> {
  const reg = await navigator.serviceWorker.getRegistration();
  if (!reg) throw new Error("Notifications start once the app has finished installing. Reload the page and try again.");
  const key = unb64url(vapid);
  let sub = await reg.pushManager.getSubscription();
  const sameKey = (a: ArrayBuffer | null | undefined) => !!a && b64url(a) === b64url(key);
  if (sub && !sameKey(sub.options.applicationServerKey)) {
    await sub.unsubscribe();
    sub = null;
  }
  sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  const p256dh = sub.getKey("p256dh");
  const auth = sub.getKey("auth");
  if (!p256dh || !auth) throw new Error("This browser's push subscription has no encryption keys.");
  return { endpoint: sub.endpoint, p256dh: b64url(p256dh), auth: b64url(auth) };
}

/**
 * Turns notifications on for this browser: permission (asked if not yet
 * given: call from a click), the subscription, the pusher. Throws an Error
 * whose message is a sentence for the person.
 */
export async function enablePush(mx: MatrixClient): Promise<void> {
  if (!pushSupported()) throw new Error("This browser can't show notifications while Hotline is closed.");
  setStatus({ state: "starting" });
  try {
    if (Notification.permission === "default") await Notification.requestPermission();
    if (Notification.permission !== "granted") throw new Error("Notifications are blocked for Hotline in this browser's site settings.");
    const baseUrl = mx.getHomeserverUrl().replace(/\/$/, "");
    const resp = await fetch(`${baseUrl}/_hotline/v1/push/web`).catch(() => null);
    const info = resp?.ok ? await resp.json().catch(() => null) : null;
    if (typeof info?.vapid_public_key !== "string") throw new Error("This server does not send notifications to browsers.");
    let sub: Subscription;
    try {
      sub = await subscribe(info.vapid_public_key);
    } catch (e) {
      const testEndpoint = localStorage.getItem(TEST_ENDPOINT_KEY);
      if (!testEndpoint) {
        throw new Error(`This browser could not subscribe to notifications: ${(e as Error)?.message || e}`);
      }
      sub = await testSubscription(testEndpoint);
    }
    await kv("readwrite", (s) => s.put({ baseUrl, userId: mx.getUserId() }, "session"));
    const stored = loadStored();
    if (stored.pushkey && stored.pushkey !== sub.p256dh) {
      // A new subscription (new key): the old one's pusher would only fail.
      await mx.removePusher(stored.pushkey, PUSH_APP_ID).catch(() => undefined);
    }
    await mx.setPusher(pusher(mx, sub));
    saveStored({ pushkey: sub.p256dh });
    setStatus({ state: "on" });
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    setStatus({ state: "failed", reason: /^[A-Z]/.test(reason) ? reason : "Notifications could not be turned on." });
    throw e;
  }
}

function pusher(mx: MatrixClient, sub: Subscription): IPusherRequest {
  const baseUrl = mx.getHomeserverUrl().replace(/\/$/, "");
  return {
    kind: "http",
    app_id: PUSH_APP_ID,
    pushkey: sub.p256dh,
    app_display_name: "Hotline",
    device_display_name: deviceName(),
    lang: navigator.language || "en",
    // Sygnal's WebPush keys beside the gateway's URL (the SDK types only
    // the spec's).
    data: { url: `${baseUrl}/_matrix/push/v1/notify`, endpoint: sub.endpoint, auth: sub.auth } as IPusherRequest["data"],
  };
}

/** Turns notifications off for this browser: the pusher goes, and the subscription. */
export async function disablePush(mx: MatrixClient): Promise<void> {
  const stored = loadStored();
  saveStored({ off: true });
  setStatus({ state: "off" });
  if (stored.pushkey) await mx.removePusher(stored.pushkey, PUSH_APP_ID);
  await unsubscribe();
}

async function unsubscribe(): Promise<void> {
  if (!("serviceWorker" in navigator)) return;
  const reg = await navigator.serviceWorker.getRegistration().catch(() => undefined);
  const sub = await reg?.pushManager.getSubscription().catch(() => null);
  await sub?.unsubscribe().catch(() => undefined);
  await kv("readwrite", (s) => s.clear()).catch(() => undefined);
}

/** The answer to the sign-in's question, until the session starts. */
let askedAtSignIn: Promise<NotificationPermission> | null = null;

/**
 * At sign-in (a click): asks for notification permission when it was
 * never asked here. For the open app's rings (lib/calls.ts) and, allowed,
 * for notifications while it is closed, turned on as the session starts.
 */
export function askAtSignIn(): void {
  if (typeof Notification === "undefined" || Notification.permission !== "default") return;
  askedAtSignIn = Notification.requestPermission().catch(() => "default" as NotificationPermission);
}

/**
 * At each start of a session: notifications while closed set again if this
 * browser has them on, or turned on if they were just allowed at sign-in.
 * A failure is kept for Settings to show, not logged: a browser without a
 * push service is no error of the app's.
 */
export async function startPush(mx: MatrixClient): Promise<void> {
  const justAllowed = askedAtSignIn ? (await askedAtSignIn) === "granted" : false;
  askedAtSignIn = null;
  if (!pushSupported() || Notification.permission !== "granted") return;
  const stored = loadStored();
  if (stored.off || (!stored.pushkey && !justAllowed)) return;
  await enablePush(mx).catch(() => undefined);
}

/** Signing out: the server drops the pusher with the device; the browser forgets the rest. */
export function forgetPush(): void {
  localStorage.removeItem(SETTING_KEY);
  setStatus({ state: "off" });
  unsubscribe().catch(() => undefined);
}
