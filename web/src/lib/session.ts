// The signed-in session: credentials in localStorage, the MatrixClient, and
// its Rust crypto. Nothing here touches the DOM.
import {
  ClientEvent,
  createClient,
  IndexedDBStore,
  MatrixClient,
  MemoryStore,
  PendingEventOrdering,
} from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger";
import { LoggerLevel, Tracing } from "@matrix-org/matrix-sdk-crypto-wasm";
import { decodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api";
import type { SecretStorageKeyDescription } from "matrix-js-sdk/lib/secret-storage";
import { forgetOutbox } from "./delivery";

// The SDK logs every request at debug level; keep the console for problems
// (warnings and errors). Child loggers copy this factory when created.
{
  const l = logger as any;
  const parent = l.methodFactory;
  // MatrixRTC (group calls) is not used here; its manager logs an error for
  // state of rooms the client has not seen yet (a just-created line).
  l.methodFactory = (method: string, level: number, name: string) => {
    if ((method !== "warn" && method !== "error") || String(name).includes("MatrixRTC")) return () => undefined;
    const log = parent(method, level, name);
    // The server serves the spec's stable push rules only, on purpose (see
    // push_rules.rs); the SDK adds its two unstable ones itself and warns
    // each time it does.
    // (a function, not an arrow: the SDK's loggers call it with `this`, for their prefix)
    return function (this: unknown, ...args: unknown[]) {
      if (typeof args[0] === "string" && args[0].startsWith("Adding default global")) return;
      return log.apply(this, args);
    };
  };
  l.rebuild?.();
}

// The crypto library (Rust, in WebAssembly) logs through `tracing` to the
// console. matrix-js-sdk turns it on at debug level, which also costs the
// time to format every line; once it is up, only warnings and errors.
// Lines it logs while it opens its store, before that, are dropped here.
function quietCryptoLogs(): void {
  new Tracing(LoggerLevel.Warn).turnOn();
}
{
  const keep = (orig: (...a: unknown[]) => void) => (...args: unknown[]) => {
    if (typeof args[0] === "string" && /^(TRACE|DEBUG|INFO) matrix_sdk/.test(args[0])) return;
    orig(...args);
  };
  console.debug = keep(console.debug.bind(console));
  console.info = keep(console.info.bind(console));
}

export interface Credentials {
  baseUrl: string;
  userId: string;
  deviceId: string;
  accessToken: string;
}

const CREDS_KEY = "hotline.session";
const SETTINGS_KEY = "hotline.settings";

export interface Settings {
  /** Force all call media through the TURN relay (hides IP addresses). */
  relayOnly: boolean;
}

export function loadSettings(): Settings {
  try {
    return { relayOnly: false, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") };
  } catch {
    return { relayOnly: false };
  }
}

export function saveSettings(s: Settings): void {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(s));
}

export function loadCredentials(): Credentials | null {
  try {
    const c = JSON.parse(localStorage.getItem(CREDS_KEY) || "null");
    if (c && c.baseUrl && c.userId && c.deviceId && c.accessToken) return c;
  } catch {
    /* corrupt: treat as signed out */
  }
  return null;
}

export function saveCredentials(c: Credentials): void {
  localStorage.setItem(CREDS_KEY, JSON.stringify(c));
}

export function clearCredentials(): void {
  localStorage.removeItem(CREDS_KEY);
}

/** The homeserver is the origin that served the app, unless told otherwise. */
export function defaultBaseUrl(): string {
  return window.location.origin;
}

/** Turns "alice" or "@alice:server" into a login identifier. */
export function loginIdentifier(user: string): { type: "m.id.user"; user: string } {
  return { type: "m.id.user", user: user.trim() };
}

export class MatrixError extends Error {
  constructor(
    public status: number,
    public errcode: string,
    message: string,
    public body: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** A raw C-S API call, for the few requests made before a client exists. */
export async function api(
  baseUrl: string,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<Record<string, any>> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp: Response;
  try {
    resp = await fetch(baseUrl.replace(/\/$/, "") + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new MatrixError(0, "M_CONNECTION", "Can't reach the server. Check your connection.");
  }
  let json: Record<string, any> = {};
  try {
    json = await resp.json();
  } catch {
    /* not JSON */
  }
  if (!resp.ok && !(resp.status === 401 && json.flows)) {
    throw new MatrixError(resp.status, json.errcode || "M_UNKNOWN", json.error || resp.statusText, json);
  }
  return Object.assign(json, { __status: resp.status });
}

export async function passwordLogin(baseUrl: string, user: string, password: string): Promise<Credentials> {
  const r = await api(baseUrl, "POST", "/_matrix/client/v3/login", {
    type: "m.login.password",
    identifier: loginIdentifier(user),
    password,
    initial_device_display_name: deviceName(),
  });
  return { baseUrl, userId: r.user_id, deviceId: r.device_id, accessToken: r.access_token };
}

/**
 * First-time set-up: POST /register, answering the user-interactive auth
 * with the registration token stage (or the dummy stage when the server is
 * open and no token was given).
 */
export async function registerAccount(
  baseUrl: string,
  username: string,
  password: string,
  token: string,
): Promise<Credentials> {
  const body = {
    username: username.trim().replace(/^@/, "").replace(/:.*$/, ""),
    password,
    initial_device_display_name: deviceName(),
  };
  const first = await api(baseUrl, "POST", "/_matrix/client/v3/register", body);
  if (first.__status === 200) {
    return { baseUrl, userId: first.user_id, deviceId: first.device_id, accessToken: first.access_token };
  }
  const flows: { stages: string[] }[] = first.flows || [];
  const has = (stage: string) => flows.some((f) => f.stages.length === 1 && f.stages[0] === stage);
  let auth: Record<string, unknown>;
  if (token.trim()) {
    if (!has("m.login.registration_token")) {
      throw new MatrixError(403, "M_FORBIDDEN", "This server does not accept registration tokens.");
    }
    auth = { type: "m.login.registration_token", token: token.trim(), session: first.session };
  } else if (has("m.login.dummy")) {
    auth = { type: "m.login.dummy", session: first.session };
  } else {
    throw new MatrixError(401, "M_FORBIDDEN", "A registration token is required to create an account here.");
  }
  const r = await api(baseUrl, "POST", "/_matrix/client/v3/register", { ...body, auth });
  if (r.__status !== 200) {
    throw new MatrixError(401, "M_FORBIDDEN", "The registration token was not accepted.");
  }
  return { baseUrl, userId: r.user_id, deviceId: r.device_id, accessToken: r.access_token };
}

export function deviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua)
    ? "Edge"
    : /Firefox\//.test(ua)
      ? "Firefox"
      : /Chrom(e|ium)\//.test(ua)
        ? "Chrome"
        : /Safari\//.test(ua)
          ? "Safari"
          : "browser";
  const os = /Android/.test(ua)
    ? "Android"
    : /iPhone|iPad/.test(ua)
      ? "iOS"
      : /Mac OS/.test(ua)
        ? "macOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Linux/.test(ua)
            ? "Linux"
            : "";
  return `Hotline web (${browser}${os ? " on " + os : ""})`;
}

// ---- secret storage key, held in memory only while it is needed ----

let pendingSecretKey: Uint8Array | null = null;

/** Remembers the recovery key for the secret storage callbacks (memory only). */
export function useRecoveryKey(recoveryKey: string | null): void {
  pendingSecretKey = recoveryKey ? decodeRecoveryKey(recoveryKey.replace(/\s+/g, " ").trim()) : null;
}

export function setSecretKeyBytes(k: Uint8Array | null): void {
  pendingSecretKey = k;
}

async function getSecretStorageKey(
  { keys }: { keys: Record<string, SecretStorageKeyDescription> },
  _name: string,
): Promise<[string, Uint8Array] | null> {
  if (!pendingSecretKey || !client) return null;
  const defaultId = await client.secretStorage.getDefaultKeyId();
  const id = defaultId && keys[defaultId] ? defaultId : Object.keys(keys)[0];
  if (!id) return null;
  if (!(await client.secretStorage.checkKey(pendingSecretKey, keys[id]))) {
    throw new Error("That recovery key does not match this account.");
  }
  return [id, pendingSecretKey];
}

// ---- the client ----

let client: MatrixClient | null = null;

export function getClient(): MatrixClient {
  if (!client) throw new Error("not signed in");
  return client;
}

export function hasClient(): boolean {
  return client !== null;
}

// ---- device-list changes, as /sync reports them ----

type DeviceListListener = (changed: string[]) => void;
const deviceListListeners = new Set<DeviceListListener>();

/**
 * Calls `fn` with the users whose devices or cross-signing keys changed,
 * from each /sync response's `device_lists.changed` (the crypto layer
 * re-queries them, but tells nothing when an unverified user's identity
 * changes; the identity view wants to know at once).
 */
export function onDeviceListsChanged(fn: DeviceListListener): () => void {
  deviceListListeners.add(fn);
  return () => deviceListListeners.delete(fn);
}

/** Every /sync response passes through the store's `setSyncData`: look at it there. */
function watchSyncData(store: IndexedDBStore | MemoryStore): void {
  const persist = store.setSyncData.bind(store);
  store.setSyncData = (data) => {
    const changed = data?.device_lists?.changed;
    if (Array.isArray(changed) && changed.length) {
      for (const fn of [...deviceListListeners]) {
        try {
          fn(changed);
        } catch {
          /* a listener's problem is not the sync's */
        }
      }
    }
    return persist(data);
  };
}

export type CryptoState = "ready" | "unsupported" | "failed";

export interface Started {
  client: MatrixClient;
  crypto: CryptoState;
  cryptoError?: string;
}

/** Does the server have the end-to-end encryption endpoints? */
async function serverHasE2ee(c: Credentials): Promise<boolean> {
  try {
    await api(c.baseUrl, "POST", "/_matrix/client/v3/keys/query", { device_keys: {} }, c.accessToken);
    return true;
  } catch (e) {
    if (e instanceof MatrixError && (e.errcode === "M_UNRECOGNIZED" || e.status === 404 || e.status === 405)) {
      return false;
    }
    throw e;
  }
}

/** The server could not be reached at all (no network, or the server down): no HTTP answer. */
export function isConnectionError(e: unknown): boolean {
  return e instanceof MatrixError && e.errcode === "M_CONNECTION";
}

/** Whether the server answers HTTP at all, whatever it says. */
export async function serverAnswers(baseUrl: string): Promise<boolean> {
  try {
    await api(baseUrl, "GET", "/_matrix/client/versions");
    return true;
  } catch (e) {
    return !isConnectionError(e);
  }
}

/**
 * Builds the client, starts its Rust crypto and /sync. Throws a connection
 * error (isConnectionError) before starting anything when the server can't
 * be reached.
 */
export async function startSession(c: Credentials): Promise<Started> {
  // Asked first: with no answer (the installed app opened offline, or the
  // server down) the session would start without its crypto and stay so
  // once the connection is back; the app says it can't reach the server
  // and starts again when it answers (main.tsx).
  let e2ee: boolean | undefined;
  let e2eeError: unknown;
  try {
    e2ee = await serverHasE2ee(c);
  } catch (e) {
    if (isConnectionError(e)) throw e;
    e2eeError = e;
  }
  const settings = loadSettings();
  let store: IndexedDBStore | undefined;
  if (window.indexedDB) {
    store = new IndexedDBStore({ indexedDB: window.indexedDB, dbName: `hotline-sync:${c.userId}:${c.deviceId}` });
  }
  const clientStore = store || new MemoryStore({ localStorage: window.localStorage });
  watchSyncData(clientStore);
  const mx = createClient({
    baseUrl: c.baseUrl,
    userId: c.userId,
    deviceId: c.deviceId,
    accessToken: c.accessToken,
    timelineSupport: true,
    forceTURN: settings.relayOnly,
    fallbackICEServerAllowed: false,
    store: clientStore,
    cryptoCallbacks: { getSecretStorageKey },
  });
  client = mx;
  if (store) {
    try {
      await store.startup();
    } catch {
      store = undefined;
    }
  }
  let crypto: CryptoState = "ready";
  let cryptoError: string | undefined;
  try {
    if (e2ee === undefined) throw e2eeError;
    if (e2ee) {
      await mx.initRustCrypto({ useIndexedDB: true });
      quietCryptoLogs();
    } else {
      crypto = "unsupported";
    }
  } catch (e) {
    crypto = "failed";
    cryptoError = e instanceof Error ? e.message : String(e);
  }
  await mx.startClient({
    initialSyncLimit: 30,
    pendingEventOrdering: PendingEventOrdering.Detached,
    lazyLoadMembers: false,
  });
  return { client: mx, crypto, cryptoError };
}

/** Resolves when the first sync has been processed. */
export function firstSync(mx: MatrixClient): Promise<void> {
  return new Promise((resolve) => {
    const state = mx.getSyncState();
    if (state === "PREPARED" || state === "SYNCING") return resolve();
    const on = (s: string) => {
      if (s === "PREPARED" || s === "SYNCING") {
        mx.off(ClientEvent.Sync, on);
        resolve();
      }
    };
    mx.on(ClientEvent.Sync, on);
  });
}

/** Signs out: the server forgets the device, the browser forgets the keys. */
export async function signOut(): Promise<void> {
  const mx = client;
  client = null;
  pendingSecretKey = null;
  const who = loadCredentials()?.userId;
  clearCredentials();
  // Held and to-be-redelivered messages are plaintext: they go with the keys.
  if (who) forgetOutbox(who);
  if (!mx) return;
  try {
    await mx.logout(true);
  } catch {
    mx.stopClient();
  }
  try {
    await mx.clearStores();
  } catch {
    /* best effort */
  }
}

/**
 * The server already forgot this device (removed from another session):
 * forget the credentials now, and free the client and its crypto once any
 * /sync response still being processed has finished with it.
 */
export function forgetRevokedSession(): void {
  const mx = client;
  client = null;
  pendingSecretKey = null;
  clearCredentials();
  if (!mx) return;
  setTimeout(() => {
    mx.stopClient();
    mx.clearStores().catch(() => undefined);
  }, 2000);
}

export function stopSession(): void {
  client?.stopClient();
  client = null;
}
