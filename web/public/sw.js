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

// Notifications: this worker handles no `push` or `notificationclick`
// events yet. Incoming calls and texts ring through the open page
// (src/lib/calls.ts); when the server sends Web Push, the listeners for
// those two events go here, below the caching above, which they need not
// touch.
