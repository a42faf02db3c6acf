// Hotline's service worker: what makes the web app installable, and lets
// its shell (the page, its scripts and styles, its icons) open with no
// network, so the installed app says it can't reach the server instead of
// showing the browser's offline page.
//
// It keeps nothing else. Matrix and Hotline API answers (/_matrix/,
// /_hotline/, /_synapse/) hold private, ever-changing data: they go to the
// network untouched, as does every request with an Authorization header and
// every request to another origin (a homeserver named in the sign-in form's
// "Server" field).
//
// The build (vite.config.ts, precacheShell) writes the two constants below:
// the shell's files in that build and a version hashed from their contents.
// The browser installs a new worker when this file's bytes change, so each
// build with a different shell gets a fresh cache and the old one goes.
// (Under `vite dev` nothing registers this worker: src/main.tsx.)
const VERSION = "dev";
const SHELL = [];

const CACHE_PREFIX = "hotline-shell-";
const CACHE = CACHE_PREFIX + VERSION;
const SCOPE = new URL(self.registration.scope);
const PAGE = new URL("index.html", SCOPE).href;
// Vite names everything under assets/ by content hash: a name never holds
// other bytes, so a stored copy is always right.
const ASSETS = new URL("assets/", SCOPE).pathname;
const API = ["/_matrix/", "/_hotline/", "/_synapse/"];
// The server varies its answers on Accept-Encoding (gzip twins), which the
// stored copies, decoded, do not depend on.
const STORED = { cacheName: CACHE, ignoreVary: true };

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      // Where the browser can (Chromium's static routing), API requests skip
      // this worker altogether: a /sync long-poll never waits for it to
      // start, and nothing here could ever see (or keep) an answer. The
      // fetch handler below refuses them anyway, for the other browsers.
      if (event.addRoutes && self.URLPattern) {
        try {
          await event.addRoutes(
            API.map((p) => ({ condition: { urlPattern: new URLPattern({ pathname: `${p}*` }) }, source: "network" })),
          );
        } catch {
          // An older form of the API: the fetch handler's checks suffice.
        }
      }
      const cache = await caches.open(CACHE);
      // The files with fixed names (the page, the manifest, the icons) are
      // fetched past the HTTP cache, so the copy kept is this build's.
      await cache.addAll(
        SHELL.map((f) => {
          const url = new URL(f, SCOPE);
          return new Request(url, { cache: url.pathname.startsWith(ASSETS) ? "default" : "reload" });
        }),
      );
      // A new build takes over at once: its page is the one the server
      // sends now, and the old cache goes on activate.
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) {
        if (key.startsWith(CACHE_PREFIX) && key !== CACHE) await caches.delete(key);
      }
      // Control the pages already open (the one that registered this
      // worker included), not only the ones opened from now on.
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET" || req.headers.has("Authorization")) return;
  const url = new URL(req.url);
  if (url.origin !== SCOPE.origin || API.some((p) => url.pathname.includes(p))) return;

  if (req.mode === "navigate") {
    // Only the app's own page (its routes are in the hash, so it is always
    // the scope's root, with or without index.html and a query). Any other
    // page of the origin is left alone.
    const path = url.pathname;
    if (path === SCOPE.pathname || new URL(path, SCOPE).href === PAGE) event.respondWith(appPage(req));
    return;
  }
  if (url.pathname.startsWith(ASSETS)) {
    event.respondWith(asset(req));
    return;
  }
  if (SHELL.some((f) => new URL(f, SCOPE).href === url.href)) event.respondWith(networkFirst(req));
});

/**
 * The page from the network, so it is always the server's current one;
 * with no network (or a server behind a proxy that answers 5xx), the page
 * this worker stored at install, whose scripts and styles are stored with
 * it. (The page fetched online is not stored: it may name assets of a
 * newer build this cache does not hold.)
 */
async function appPage(req) {
  try {
    const resp = await fetch(req);
    if (resp.status < 500) return resp;
    return (await caches.match(PAGE, STORED)) || resp;
  } catch (err) {
    const stored = await caches.match(PAGE, STORED);
    if (stored) return stored;
    throw err;
  }
}

/** assets/: the stored copy, else the network's, stored for next time. */
async function asset(req) {
  const cache = await caches.open(CACHE);
  const stored = await cache.match(req, STORED);
  if (stored) return stored;
  const resp = await fetch(req);
  // The server answers any unknown path with the page (200, text/html): an
  // asset of an older build asked for after an update would be stored as
  // HTML under a script's name. Only real files are kept.
  if (resp.ok && resp.type === "basic" && !(resp.headers.get("Content-Type") || "").startsWith("text/html")) {
    await cache.put(req, resp.clone());
  }
  return resp;
}

/** The manifest and icons: current from the network, the stored copy offline. */
async function networkFirst(req) {
  try {
    return await fetch(req);
  } catch (err) {
    const stored = await caches.match(req, STORED);
    if (stored) return stored;
    throw err;
  }
}

// ---- Notifications: Web Push from the homeserver's own push gateway ----
//
// The server sends each call ring and text to this browser's push
// subscription (src/lib/push.ts sets it up), and the push service wakes
// this worker with the payload, already decrypted: `{event_id, room_id,
// type, sender, sender_display_name, room_name, prio, unread}`, and the
// event's `content` for a clear event (never for an encrypted one). It
// shows:
// - for a call (a MatrixRTC membership joining the room's call, or a call
//   invite or ring notification): "Incoming call", "NAME on ROOM", with
//   Answer and Decline, until acted on; when the caller leaves while it is
//   still showing, it becomes "Missed call";
// - for an invitation: "New line", "NAME wants to open a line with you";
// - for anything else: "NAME", "New message on ROOM": never the text,
//   whatever the payload holds.
// The worker cannot read encrypted events, and a call's own signalling
// (invite, candidates, hangup) is encrypted on a line: while a caller's
// ring shows, their encrypted events in that room are taken for the call's
// and shown as nothing more. While the app is open and visible, it rings
// and counts unread itself: the worker shows nothing.
//
// Tests: where no push service is reachable (the browser tests), the test
// receives the server's real, encrypted Web Push requests itself and hands
// each to this worker (DevTools' deliverPushMessage) as `{"aes128gcm":
// BASE64}`; the worker decrypts it with the test subscription's key that
// the page made and kept in IndexedDB (src/lib/push.ts, testSubscription).
// A real browser's push service never sends that shape: this path exists
// so the handling below can be proven where no push service is reachable.

const CALL_MEMBER_TYPES = ["m.call.member", "org.matrix.msc3401.call.member"];
const CALL_TYPES = [
  ...CALL_MEMBER_TYPES,
  "m.call.invite",
  "m.rtc.notification",
  "org.matrix.msc4075.rtc.notification",
  "org.matrix.msc4075.call.notify",
];
const ICON = new URL("icons/icon-192.png", SCOPE).href;

// One push at a time, in the order they came: a ring's notification must
// show before the call's signalling right behind it looks for it.
let pushes = Promise.resolve();
self.addEventListener("push", (event) => {
  const data = event.data;
  pushes = pushes.then(() => onPush(data)).catch(() => undefined);
  event.waitUntil(pushes);
});
self.addEventListener("notificationclick", (event) => event.waitUntil(onNotificationClick(event)));

async function onPush(data) {
  let push = null;
  try {
    push = await readPush(data);
  } catch {
    /* unreadable: the generic notification below */
  }
  if (await appVisible()) return;
  // Names only for the account signed in here (src/lib/push.ts keeps it;
  // signing out forgets it).
  const session = await kvGet("session").catch(() => null);
  if (!push || typeof push.room_id !== "string" || !session) {
    // A push must show something (userVisibleOnly), even one we can't read.
    await self.registration.showNotification("Hotline", { body: "Something new on your lines", tag: "hotline", icon: ICON });
    return;
  }
  if (typeof push.unread === "number" && self.navigator.setAppBadge) {
    self.navigator.setAppBadge(push.unread).catch(() => undefined);
  }
  const name = push.sender_display_name || push.sender || "Someone";
  const where = push.room_name || "Hotline";
  const ring = await ringShowing(push.room_id, push.sender);
  if (CALL_TYPES.includes(push.type)) {
    const left = CALL_MEMBER_TYPES.includes(push.type) && push.content && !joinsCall(push.content);
    if (!left) {
      await self.registration.showNotification("Incoming call", {
        body: `${name} on ${where}`,
        tag: push.room_id,
        renotify: true,
        requireInteraction: true,
        icon: ICON,
        actions: [
          { action: "answer", title: "Answer" },
          { action: "decline", title: "Decline" },
        ],
        data: { room_id: push.room_id, event_id: push.event_id, call: true, sender: push.sender },
      });
    } else if (ring) {
      // The caller gave up before anyone answered here.
      ring.close();
      await self.registration.showNotification("Missed call", {
        body: `${name} on ${where}`,
        tag: push.room_id,
        icon: ICON,
        data: { room_id: push.room_id, event_id: push.event_id, call: false },
      });
    }
    return;
  }
  // An urgent call or text (lib/availability.ts): rings through do not
  // disturb; the call or text itself follows.
  if (push.type === "org.hotline.urgent") {
    const kind = push.content?.kind === "text" ? "text" : "call";
    await self.registration.showNotification(`Urgent ${kind}`, {
      body: `${name} on ${where}`,
      tag: `urgent:${push.room_id}`,
      renotify: true,
      requireInteraction: true,
      icon: ICON,
      data: { room_id: push.room_id, event_id: push.event_id, call: false },
    });
    return;
  }
  // The ringing caller's encrypted signalling: the ring says it all.
  if (ring && push.type === "m.room.encrypted") return;
  if (push.type === "m.room.member" && push.content?.membership === "invite") {
    await self.registration.showNotification("New line", {
      body: `${name} wants to open a line with you`,
      tag: `text:${push.room_id}`,
      icon: ICON,
      data: { room_id: push.room_id, event_id: push.event_id, call: false },
    });
    return;
  }
  // Never the message itself, even when the payload carries it.
  await self.registration.showNotification(name, {
    body: `New message on ${where}`,
    tag: `text:${push.room_id}`,
    renotify: true,
    icon: ICON,
    data: { room_id: push.room_id, event_id: push.event_id, call: false },
  });
}

/** A MatrixRTC membership content that is in a call (MSC4143's, or MSC3401's list); `{}` is a leave. */
function joinsCall(content) {
  return Array.isArray(content.memberships) ? content.memberships.length > 0 : "application" in content;
}

/** The ring from `sender` in `roomId`, if it still shows. */
async function ringShowing(roomId, sender) {
  const shown = await self.registration.getNotifications({ tag: roomId });
  return shown.find((n) => n.data?.call && n.data.sender === sender) || null;
}

/** The app's page (the scope's root, or index.html), whatever its query and hash. */
function isAppPage(url) {
  const u = new URL(url);
  return u.origin === SCOPE.origin && (u.pathname === SCOPE.pathname || new URL(u.pathname, SCOPE).href === PAGE);
}

async function appVisible() {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  return windows.some((c) => c.visibilityState === "visible" && isAppPage(c.url));
}

async function onNotificationClick(event) {
  const n = event.notification;
  n.close();
  // Decline only dismisses the ring here (the caller's side rings on until
  // they give up, or another device answers).
  if (event.action === "decline") return;
  const room = n.data?.room_id;
  const answer = event.action === "answer" && !!room;
  const route = room ? `#/line/${encodeURIComponent(room)}` : "";
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((c) => isAppPage(c.url));
  if (open) {
    // The open app shows the room, and answers the call when it rings
    // there (src/main.tsx).
    if (room) open.postMessage({ type: "hotline:open", room, answer });
    await open.focus();
    return;
  }
  const query = answer ? `?answer=${encodeURIComponent(room)}` : "";
  await self.clients.openWindow(new URL(`./${query}${route}`, SCOPE).href);
}

// ---- the payload: as the push service delivered it, or (tests) decrypted here ----

async function readPush(data) {
  if (!data) return null;
  const json = data.json();
  if (json && typeof json.aes128gcm === "string") return JSON.parse(await decryptTestPush(unbase64(json.aes128gcm)));
  return json;
}

/**
 * RFC 8291's decryption of one aes128gcm record (RFC 8188) with the test
 * subscription's key: ECDH with the sender's key (the header's key id),
 * HKDF with the auth secret for the input keying material, then the
 * content key and nonce from the header's salt, AES-128-GCM, and the
 * padding (a 0x02 delimiter, then zeros) taken off.
 */
async function decryptTestPush(body) {
  const sub = await kvGet("test-subscription");
  if (!sub) throw new Error("no test subscription");
  const salt = body.subarray(0, 16);
  const rs = new DataView(body.buffer, body.byteOffset + 16, 4).getUint32(0);
  const idlen = body[20];
  const senderKey = body.subarray(21, 21 + idlen);
  const record = body.subarray(21 + idlen);
  if (idlen !== 65 || record.length > rs) throw new Error("one record from a P-256 sender expected");
  const sender = await crypto.subtle.importKey("raw", senderKey, { name: "ECDH", namedCurve: "P-256" }, false, []);
  const shared = new Uint8Array(await crypto.subtle.deriveBits({ name: "ECDH", public: sender }, sub.privateKey, 256));
  const text = (s) => new TextEncoder().encode(s);
  const ikm = await hkdf(sub.auth, shared, concat(text("WebPush: info\0"), sub.publicKey, senderKey), 32);
  const cek = await hkdf(salt, ikm, text("Content-Encoding: aes128gcm\0"), 16);
  const nonce = await hkdf(salt, ikm, text("Content-Encoding: nonce\0"), 12);
  const key = await crypto.subtle.importKey("raw", cek, "AES-GCM", false, ["decrypt"]);
  const padded = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce }, key, record));
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  if (end < 0 || padded[end] !== 2) throw new Error("not a final record");
  return new TextDecoder().decode(padded.subarray(0, end));
}

async function hkdf(salt, ikm, info, bytes) {
  const key = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, bytes * 8));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Base64 or base64url, padded or not. */
function unbase64(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, ""));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** A value of the IndexedDB store src/lib/push.ts writes (`hotline-push`, `kv`). */
function kvGet(key) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open("hotline-push", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("kv");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const db = open.result;
      const req = db.transaction("kv").objectStore("kv").get(key);
      req.onsuccess = () => (db.close(), resolve(req.result));
      req.onerror = () => (db.close(), reject(req.error));
    };
  });
}
