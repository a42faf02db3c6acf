// Small helpers shared by the interop scripts: accounts, matrix-js-sdk
// clients talking to the Hotline server under test, and waiting for events.
import { createClient, ClientEvent } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { format } from "node:util";

// matrix-js-sdk logs a lot, and some benign things at error level; SDK_LOG=debug (or warn, error) brings it back.
logger.setLevel(process.env.SDK_LOG ?? "silent");
// Benign messages the SDK prints in every run (its child loggers ignore the
// level above). SDK_LOG set shows everything.
const BENIGN = /^(MatrixRTCSessionManager Got room state event for unknown room|EventTimelineSet\.addLiveEvent: ignoring duplicate event)/;
if (!process.env.SDK_LOG) {
    for (const m of ["debug", "info", "trace"]) console[m] = () => {};
    for (const m of ["log", "warn", "error"]) {
        const orig = console[m].bind(console);
        console[m] = (...a) => (BENIGN.test(format(...a)) ? undefined : orig(...a));
    }
}

export const HS = process.env.HOTLINE_URL ?? "http://127.0.0.1:8008";

/** Registers `name` with m.login.dummy (the server runs with --allow-registration). */
export async function register(name, password, fetchFn = fetch) {
    const client = createClient({ baseUrl: HS, fetchFn });
    const res = await client.registerRequest({
        username: name,
        password,
        auth: { type: "m.login.dummy" },
        initial_device_display_name: `interop ${name}`,
    });
    return { userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id, password };
}

/** Logs in with a password, giving a new device. */
export async function login(userId, password, fetchFn = fetch) {
    const client = createClient({ baseUrl: HS, fetchFn });
    const res = await client.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: userId },
        password,
        initial_device_display_name: "interop login",
    });
    return { userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id, password };
}

export function makeClient(creds, fetchFn = fetch, extra = {}) {
    return createClient({
        baseUrl: HS,
        userId: creds.userId,
        accessToken: creds.accessToken,
        deviceId: creds.deviceId,
        fetchFn,
        timelineSupport: true,
        ...extra,
    });
}

/** Starts the client's /sync loop and resolves once the first sync is processed. */
export async function startSyncing(client, opts = {}) {
    const ready = new Promise((resolve, reject) => {
        const onSync = (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") {
                client.off(ClientEvent.Sync, onSync);
                resolve();
            } else if (state === "ERROR") {
                client.off(ClientEvent.Sync, onSync);
                reject(new Error(`first /sync failed: ${data?.error?.message ?? "unknown error"}`));
            }
        };
        client.on(ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit: 20, ...opts });
    await withTimeout(ready, 15000, `${client.getUserId()}'s first /sync`);
}

export function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise,
        new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
        }),
    ]).finally(() => clearTimeout(timer));
}

/**
 * Resolves with the emitted arguments the first time `emitter` emits `event`
 * with arguments for which `predicate` is true; rejects after `ms`.
 * Call it before the action that causes the event.
 */
export function waitForEvent(emitter, event, predicate, what, ms = 10000) {
    let listener;
    const p = new Promise((resolve) => {
        listener = (...args) => {
            let hit = false;
            try {
                hit = predicate(...args);
            } catch {
                hit = false;
            }
            if (hit) resolve(args);
        };
        emitter.on(event, listener);
    });
    return withTimeout(p, ms, what).finally(() => emitter.off(event, listener));
}

/** Polls `fn` until it returns a truthy value; rejects after `ms`. */
export async function eventually(fn, what, ms = 10000) {
    const deadline = Date.now() + ms;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

/** Unique names per run so a reused server never clashes. */
export const RUN = Date.now().toString(36) + Math.floor(Math.random() * 1e4).toString(36);
