#!/usr/bin/env node
// Sets up the demo deployment's officials the way real ones are set up,
// so a newcomer sees verified lines at once:
//
//   1. redeem each official's enrolment code on their own government's
//      server (sets the password),
//   2. on that first device (matrix-js-sdk with its Rust crypto, in
//      memory), create the cross-signing keys, secret storage and key
//      backup, protected by a new recovery key,
//   3. have the office vouch: `hotline admin vouch USER --master-key KEY`
//      with the master key the device just created (in a real deployment
//      the office compares that fingerprint in person),
//   4. open the demo's lines: one principal's office creates a line invite
//      (POST /_hotline/v1/line_invites) and the other principal redeems it,
//      through their own server (`?server=` the issuing one when the two
//      are different governments' servers, which ask each other over
//      federation),
//   5. bring aides onto those lines: the aide's office does it
//      (`hotline admin line-aide add AIDE --line ROOM`, which the line shows
//      as the office's doing) and the aide accepts.
//
// Usage: node demo-officials.mjs --bin HOTLINE --password PW --out FILE
//          --server GOV,URL,CONFIG [--server ...] [--line A,B ...]
//          [--line-aide A,B:AIDE ...] GOV:USER=CODE [GOV:USER=CODE ...]
// GOV names a server: URL is its client API, CONFIG its configuration file
// (for the admin commands). Lines name officials by user name.
// Writes one line per official to FILE: government, user id, password,
// recovery key.
// The recovery key unlocks the official's keys on any new device (the web
// app asks for it after sign-in).
import { parseArgs, format } from "node:util";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createClient, ClientEvent } from "matrix-js-sdk";
import { CrossSigningKey } from "matrix-js-sdk/lib/crypto-api/index.js";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel(process.env.SDK_LOG ?? "silent");
for (const m of ["log", "debug", "info", "trace", "warn", "error"]) {
  console[m] = process.env.SDK_LOG ? (...a) => process.stderr.write(`${format(...a)}\n`) : () => {};
}

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    bin: { type: "string" },
    server: { type: "string", multiple: true, default: [] },
    password: { type: "string" },
    out: { type: "string" },
    line: { type: "string", multiple: true, default: [] },
    "line-aide": { type: "string", multiple: true, default: [] },
  },
});
for (const k of ["bin", "password", "out"]) {
  if (!args[k]) throw new Error(`missing --${k}`);
}
const servers = new Map(
  args.server.map((s) => {
    const [gov, url, config] = s.split(",");
    if (!gov || !url || !config) throw new Error(`--server ${s}: expected GOV,URL,CONFIG`);
    return [gov, { url: url.replace(/\/$/, ""), config }];
  }),
);
if (!servers.size) throw new Error("missing --server");

async function api(hs, method, path, token, body) {
  const res = await fetch(`${hs}${path}`, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body ? { "Content-Type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${json.errcode ?? ""} ${json.error ?? ""}`);
  return json;
}

/** Enrols one official's first device and returns their keys. */
async function setUpOfficial(hs, localpart, code) {
  let key;
  const session = await api(hs, "POST", `/_hotline/v1/enrol/${encodeURIComponent(code)}`, null, {
    password: args.password,
    initial_device_display_name: "Protocol office set-up",
  });
  const client = createClient({
    baseUrl: hs,
    userId: session.user_id,
    deviceId: session.device_id,
    accessToken: session.access_token,
    // Secret storage asks for its key when it stores the cross-signing
    // and backup keys; it is the recovery key created below.
    cryptoCallbacks: { getSecretStorageKey: async ({ keys }) => [Object.keys(keys)[0], key.privateKey] },
  });
  await client.initRustCrypto({ useIndexedDB: false });
  const synced = new Promise((resolve) =>
    client.on(ClientEvent.Sync, (state) => (state === "PREPARED" || state === "SYNCING") && resolve()),
  );
  await client.startClient({ initialSyncLimit: 1 });
  await synced;
  const crypto = client.getCrypto();
  key = await crypto.createRecoveryKeyFromPassphrase();
  await crypto.bootstrapCrossSigning({
    setupNewCrossSigning: true,
    authUploadDeviceSigningKeys: async (makeRequest) => {
      await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: session.user_id },
        password: args.password,
      });
    },
  });
  await crypto.bootstrapSecretStorage({
    createSecretStorageKey: async () => key,
    setupNewSecretStorage: true,
    setupNewKeyBackup: true,
  });
  const master = await crypto.getCrossSigningKeyId(CrossSigningKey.Master);
  if (!master) throw new Error(`${session.user_id}: no master key after bootstrap`);
  // The client keeps running until the process exits: stopping it frees
  // the crypto machine under the key-backup task still working on it.
  return { client, hs, localpart, userId: session.user_id, token: session.access_token, master, recoveryKey: key.encodedPrivateKey };
}

function hotline(config, ...a) {
  return execFileSync(args.bin, ["--config", config, ...a], { encoding: "utf8" });
}

const officials = new Map();
for (const p of positionals) {
  const m = /^([^:]+):([^=]+)=(.+)$/.exec(p);
  if (!m) throw new Error(`${p}: expected GOV:USER=CODE`);
  const [, gov, localpart, code] = m;
  const server = servers.get(gov);
  if (!server) throw new Error(`${p}: no --server ${gov}`);
  const o = await setUpOfficial(server.url, localpart, code);
  hotline(server.config, "admin", "vouch", localpart, "--master-key", o.master);
  officials.set(localpart, { ...o, gov });
  process.stderr.write(`demo: ${o.userId} enrolled and vouched\n`);
}

const lines = new Map();
for (const pair of args.line) {
  const [a, b] = pair.split(",").map((l) => officials.get(l));
  if (!a || !b) throw new Error(`--line ${pair}: both must be officials set up here`);
  const invite = await api(a.hs, "POST", "/_hotline/v1/line_invites", a.token, { max_uses: 1, for_user: b.userId });
  // Redeemed through the counterpart's own server, which asks the issuing
  // one when that is another (the invite names it).
  const across = a.hs !== b.hs ? `?server=${encodeURIComponent(invite.server)}` : "";
  const path = `/_hotline/v1/line_invites/${encodeURIComponent(invite.code)}/redeem${across}`;
  const { room_id } = await api(b.hs, "POST", path, b.token, {});
  lines.set(pair, room_id);
  process.stderr.write(`demo: line ${a.userId} <-> ${b.userId} (${room_id})\n`);
}

for (const spec of args["line-aide"]) {
  const [pair, localpart] = spec.split(":");
  const room = lines.get(pair);
  const aide = officials.get(localpart);
  if (!room || !aide) throw new Error(`--line-aide ${spec}: expected a --line A,B and an aide set up here`);
  hotline(servers.get(aide.gov).config, "admin", "line-aide", "add", localpart, "--line", room);
  await api(aide.hs, "POST", `/_matrix/client/v3/join/${encodeURIComponent(room)}`, aide.token, {});
  process.stderr.write(`demo: ${aide.userId} is on the line ${pair} as aide (${room})\n`);
}

// The set-up device is the office's, not the official's: sign it out. The
// keys stay in the official's secret storage, behind the recovery key.
// Signing out deletes the device and its keys on the server, so the demo
// starts with no device for anyone: a device left behind with its keys
// published, that nobody holds, would make a sender believe someone can
// read what they write (the web app warns only when nobody can), and the
// first text would be encrypted for that dead device alone.
for (const o of officials.values()) await api(o.hs, "POST", "/_matrix/client/v3/logout", o.token, {});

// Check it with a throwaway session per server that publishes no keys (a
// warning, not a failure: the officials are set up either way).
for (const { url: hs } of servers.values()) {
  const here = [...officials.values()].filter((o) => o.hs === hs);
  if (!here.length) continue;
  try {
    const s = await api(hs, "POST", "/_matrix/client/v3/login", null, {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: here[0].userId },
      password: args.password,
      initial_device_display_name: "Protocol office check",
    });
    const device_keys = Object.fromEntries(here.map((o) => [o.userId, []]));
    const q = await api(hs, "POST", "/_matrix/client/v3/keys/query", s.access_token, { device_keys });
    await api(hs, "POST", "/_matrix/client/v3/logout", s.access_token, {});
    for (const [user, devices] of Object.entries(q.device_keys ?? {})) {
      const left = Object.keys(devices ?? {});
      if (left.length) process.stderr.write(`demo: warning: ${user}: set-up device(s) ${left.join(", ")} still have published keys\n`);
    }
  } catch (e) {
    process.stderr.write(`demo: warning: could not check the set-up devices are gone: ${e.message}\n`);
  }
}

writeFileSync(
  args.out,
  [...officials.values()].map((o) => `${o.gov.padEnd(9)} ${o.userId.padEnd(38)} ${args.password}  ${o.recoveryKey}\n`).join(""),
);
process.exit(0);
