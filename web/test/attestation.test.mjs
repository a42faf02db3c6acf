// Unit tests of src/lib/attestation.ts (the real module, transpiled by
// TypeScript on the fly) against attestations signed by the real Rust
// server.
//
// Fixtures:
// - test/fixtures/attestation.json, produced once by a real `hotline serve`
//   (HOTLINE_WRITE_FIXTURE=1 rewrites it); checked at the time it was made;
// - when HOTLINE_URL, HOTLINE_BIN and HOTLINE_DATA are set (scripts/web.sh
//   test), a fresh one from the running server: two principals enrolled with
//   `hotline admin enroll`, a cross-signing master key uploaded for each,
//   `hotline admin vouch` with its fingerprint, one then revoked with
//   `hotline admin revoke`; the directory and the server key document read
//   over HTTP.
//
//   npm run test:unit  (or scripts/web.sh unit): the committed fixture only
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";
import * as ed from "@noble/ed25519";

const HERE = dirname(fileURLToPath(import.meta.url));
const WEB = join(HERE, "..");
const FIXTURE = join(HERE, "fixtures", "attestation.json");

// The module under test, compiled as it is in the app (no bundler-only syntax).
async function loadModule() {
  const src = readFileSync(join(WEB, "src", "lib", "attestation.ts"), "utf8");
  const out = ts.transpileModule(src, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    fileName: "attestation.ts",
  });
  // Inside web/ so that `@noble/ed25519` resolves from web/node_modules.
  const dir = join(WEB, "node_modules", ".cache", "hotline-unit");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `attestation-${process.pid}.mjs`);
  writeFileSync(file, out.outputText);
  try {
    return await import(pathToFileURL(file).href);
  } finally {
    rmSync(file, { force: true });
  }
}

const A = await loadModule();

// ---- a fixture from the running server ----

async function http(url, method, path, body, token) {
  const resp = await fetch(url + path, {
    method,
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(json)}`);
  return json;
}

async function liveFixture(url, bin, data) {
  const admin = (...args) => execFileSync(bin, ["--data-dir", data, "admin", ...args]).toString();
  const stamp = Date.now().toString(36);
  const official = async (user, name, title, country) => {
    const out = admin("enroll", user, "--name", name, "--title", title, "--country", country,
      "--office", `Office of the ${title}`, "--role", "principal", "--base-url", url);
    const code = /^code (\S+)$/m.exec(out)?.[1];
    assert.ok(code, `enroll prints the code: ${out}`);
    const s = await http(url, "POST", `/_hotline/v1/enrol/${code}`, {
      password: "unit-test-password",
      initial_device_display_name: "attestation unit test",
    });
    // A cross-signing master key, as a client's bootstrap uploads it.
    const secret = ed.utils.randomSecretKey();
    const pub = A.encodeBase64(await ed.getPublicKeyAsync(secret));
    await http(url, "POST", "/_matrix/client/v3/keys/device_signing/upload", {
      master_key: { user_id: s.user_id, usage: ["master"], keys: { [`ed25519:${pub}`]: pub } },
    }, s.access_token);
    // The office reads the fingerprint aloud, grouped, spaces and all.
    const vouched = JSON.parse(admin("vouch", user, "--master-key", A.groupFingerprint(pub)));
    assert.equal(vouched.master_key, pub);
    return { userId: s.user_id, token: s.access_token, masterKey: pub };
  };
  const genuine = await official(`unit-pm-${stamp}`, `Ilse Varga ${stamp}`, "Prime Minister", "Syldavia");
  const revoked = await official(`unit-fm-${stamp}`, `Otto Brandt ${stamp}`, "Foreign Minister", "Borduria");
  admin("revoke", revoked.userId);
  const directory = await http(url, "GET", "/_hotline/v1/directory", undefined, genuine.token);
  const serverKeys = await http(url, "GET", "/_matrix/key/v2/server");
  return {
    generated_ts: Date.now(),
    genuine: { user_id: genuine.userId, name: `Ilse Varga ${stamp}`, title: "Prime Minister", country: "Syldavia", master_key: genuine.masterKey },
    revoked: { user_id: revoked.userId },
    server_keys: serverKeys,
    directory,
  };
}

const fixtures = [];
{
  const { HOTLINE_URL: url, HOTLINE_BIN: bin, HOTLINE_DATA: data } = process.env;
  if (url && bin && data) {
    const live = await liveFixture(url, bin, data);
    fixtures.push(["live server", live]);
    if (process.env.HOTLINE_WRITE_FIXTURE === "1") {
      mkdirSync(dirname(FIXTURE), { recursive: true });
      writeFileSync(FIXTURE, JSON.stringify(live, null, 2) + "\n");
      console.log(`# wrote ${FIXTURE}`);
    }
  }
  fixtures.unshift(["committed fixture", JSON.parse(readFileSync(FIXTURE, "utf8"))]);
}

const clone = (v) => structuredClone(v);

for (const [label, fx] of fixtures) {
  const issuer = fx.directory.issuer;
  const now = fx.generated_ts;
  const genuineAtt = () => clone(fx.directory.attestations.find((a) => a.user_id === fx.genuine.user_id));
  const keys = () => A.verifyServerKeys(fx.server_keys, issuer);
  const verify = async (att, opts = {}) => A.verifyAttestation(att, await keys(), { now, userId: fx.genuine.user_id, ...opts });

  test(`${label}: the genuine attestation verifies`, async () => {
    const a = await verify(genuineAtt());
    assert.equal(a.user_id, fx.genuine.user_id);
    assert.equal(a.name, fx.genuine.name);
    assert.equal(a.title, fx.genuine.title);
    assert.equal(a.country, fx.genuine.country);
    assert.equal(a.role, "principal");
    assert.equal(a.master_key, fx.genuine.master_key);
    assert.equal(a.issuer, issuer);
    assert.ok(a.expires_ts > now);
  });

  test(`${label}: the server key document is self-signed and matches the directory's keys`, async () => {
    const k = await keys();
    assert.equal(k.serverName, issuer);
    for (const [id, v] of Object.entries(fx.directory.verify_keys)) assert.equal(k.keys.get(id)?.key, v.key);
    // A key swapped into the document without its signature is refused.
    const doc = clone(fx.server_keys);
    const id = Object.keys(doc.verify_keys)[0];
    doc.verify_keys[id].key = A.encodeBase64(await ed.getPublicKeyAsync(ed.utils.randomSecretKey()));
    await assert.rejects(A.verifyServerKeys(doc, issuer), /not signed by its own key/);
    await assert.rejects(A.verifyServerKeys(fx.server_keys, "other.example"), /not other\.example/);
  });

  for (const [field, value] of [
    ["title", "King"],
    ["country", "Ruritania"],
    ["name", "Someone Else"],
    ["master_key", A.encodeBase64(new Uint8Array(32).fill(7))],
    ["expires_ts", 4_102_444_800_000],
    ["role", "aide"],
    ["office", "Office of Someone Else"],
  ]) {
    test(`${label}: an altered ${field} fails`, async () => {
      const att = genuineAtt();
      assert.notEqual(att[field], value);
      att[field] = value;
      await assert.rejects(verify(att), /signature does not verify/);
    });
  }

  test(`${label}: an added field fails`, async () => {
    const att = genuineAtt();
    att.principal = "@someone:else";
    await assert.rejects(verify(att), /signature does not verify/);
  });

  test(`${label}: a signature by another key (forged) fails`, async () => {
    const att = genuineAtt();
    att.title = "Emperor";
    const forger = ed.utils.randomSecretKey();
    const [keyId] = Object.keys(att.signatures[issuer]);
    att.signatures = { [issuer]: { [keyId]: A.encodeBase64(await ed.signAsync(A.signingBytes(att), forger)) } };
    await assert.rejects(verify(att), /signature does not verify/);
    // The forger's key in the directory changes nothing: keys come from the server key document.
    const dir = clone(fx.directory);
    dir.verify_keys = { [keyId]: { key: A.encodeBase64(await ed.getPublicKeyAsync(forger)) } };
    dir.attestations = [att];
    const entries = await A.verifyDirectory(dir, await keys(), now);
    assert.equal(entries.get(fx.genuine.user_id)?.status, "invalid");
    // The same forger signing under an unknown key id is not the issuer.
    att.signatures = { [issuer]: { "ed25519:forged": att.signatures[issuer][keyId] } };
    await assert.rejects(verify(att), /no signature by a key of the issuer/);
  });

  test(`${label}: a missing signature fails`, async () => {
    const att = genuineAtt();
    delete att.signatures;
    await assert.rejects(verify(att), /no signature by the issuer/);
    const other = genuineAtt();
    other.signatures = { "other.example": other.signatures[issuer] };
    await assert.rejects(verify(other), /no signature by the issuer/);
    const emptied = genuineAtt();
    emptied.signatures[issuer] = {};
    await assert.rejects(verify(emptied), /no signature by the issuer/);
  });

  test(`${label}: a corrupted signature fails`, async () => {
    const att = genuineAtt();
    const [keyId] = Object.keys(att.signatures[issuer]);
    const sig = A.decodeBase64(att.signatures[issuer][keyId]);
    sig[10] ^= 1;
    att.signatures[issuer][keyId] = A.encodeBase64(sig);
    await assert.rejects(verify(att), /signature does not verify/);
  });

  test(`${label}: an expired attestation fails`, async () => {
    const att = genuineAtt();
    await assert.rejects(verify(att, { now: att.expires_ts }), /expired/);
    await assert.rejects(verify(att, { now: att.expires_ts + 1 }), /expired/);
    await verify(att, { now: att.expires_ts - 1 });
  });

  test(`${label}: an attestation about someone else, of another type or issuer fails`, async () => {
    await assert.rejects(verify(genuineAtt(), { userId: "@impostor:localhost" }), /not @impostor:localhost/);
    const typed = genuineAtt();
    typed.type = "org.hotline.attestation.v0";
    await assert.rejects(verify(typed), /type is not/);
    const moved = genuineAtt();
    moved.issuer = "other.example";
    await assert.rejects(verify(moved), /issuer mismatch/);
  });

  test(`${label}: the directory: genuine verified, revoked revoked`, async () => {
    const entries = await A.verifyDirectory(fx.directory, await keys(), now);
    const g = entries.get(fx.genuine.user_id);
    assert.equal(g?.status, "verified");
    assert.equal(g.attestation.master_key, fx.genuine.master_key);
    assert.equal(entries.get(fx.revoked.user_id)?.status, "revoked");
    assert.ok(fx.directory.revocations.some((r) => r.user_id === fx.revoked.user_id), "the server lists the revocation");
    assert.ok(!fx.directory.attestations.some((a) => a.user_id === fx.revoked.user_id), "and no longer the attestation");
    // A revocation after the attestation revokes it; one before it (vouched again since) does not.
    const att = genuineAtt();
    const later = { ...clone(fx.directory), revocations: [{ user_id: att.user_id, revoked_ts: att.issued_ts + 1 }] };
    const r = (await A.verifyDirectory(later, await keys(), now)).get(att.user_id);
    assert.equal(r?.status, "revoked");
    assert.equal(r.attestation?.title, fx.genuine.title);
    const earlier = { ...clone(fx.directory), revocations: [{ user_id: att.user_id, revoked_ts: att.issued_ts - 1 }] };
    assert.equal((await A.verifyDirectory(earlier, await keys(), now)).get(att.user_id)?.status, "verified");
    // Expired in the directory: invalid, not verified.
    const late = (await A.verifyDirectory(fx.directory, await keys(), att.expires_ts + 1)).get(att.user_id);
    assert.equal(late?.status, "invalid");
    assert.match(late.reason, /expired/);
  });

  test(`${label}: another government's directory counts only with a key its user's server pinned, and only for its own users`, async () => {
    const [keyId, { key }] = Object.entries(fx.server_keys.verify_keys)[0];
    const answer = (pinned) => ({ directory: clone(fx.directory), server_keys: clone(fx.server_keys), pinned_keys: pinned });
    const entries = await A.verifyPeerDirectory(answer({ [keyId]: key }), issuer, now);
    assert.equal(entries.get(fx.genuine.user_id)?.status, "verified");
    assert.equal(entries.get(fx.revoked.user_id)?.status, "revoked");
    // Nothing pinned, or another key pinned under the same id: nothing counts.
    await assert.rejects(A.verifyPeerDirectory(answer({}), issuer, now), /pinned/);
    const other = A.encodeBase64(await ed.getPublicKeyAsync(ed.utils.randomSecretKey()));
    await assert.rejects(A.verifyPeerDirectory(answer({ [keyId]: other }), issuer, now), /pinned/);
    // The directory or key document of another server than the one asked.
    await assert.rejects(A.verifyPeerDirectory(answer({ [keyId]: key }), "gov-x.example", now), /gov-x.example/);
    const foreign = answer({ [keyId]: key });
    foreign.directory.issuer = "gov-x.example";
    await assert.rejects(A.verifyPeerDirectory(foreign, issuer, now), /not/);
    // An attestation of a user of another server is no entry at all.
    const elsewhere = answer({ [keyId]: key });
    elsewhere.directory.attestations.push({ ...genuineAtt(), user_id: "@pm:elsewhere.example" });
    const e = await A.verifyPeerDirectory(elsewhere, issuer, now);
    assert.ok(!e.has("@pm:elsewhere.example"));
    assert.equal(e.get(fx.genuine.user_id)?.status, "verified");
  });
}

test("canonical JSON: the Matrix spec's examples", () => {
  const cases = [
    [{}, "{}"],
    [{ one: 1, two: "Two" }, '{"one":1,"two":"Two"}'],
    [{ b: "2", a: "1" }, '{"a":"1","b":"2"}'],
    [
      { auth: { success: true, mxid: "@john.doe:example.com", profile: { display_name: "John Doe", three_pids: [{ medium: "email", address: "john.doe@example.org" }, { medium: "msisdn", address: "123456789" }] } } },
      '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ],
    [{ a: "日本語" }, '{"a":"日本語"}'],
    [{ 本: 2, 日: 1 }, '{"日":1,"本":2}'],
    [{ a: "\u65E5" }, '{"a":"日"}'],
    [{ a: null }, '{"a":null}'],
    [{ a: -0 }, '{"a":0}'],
    [{ a: "\u0000\u001f\"\\\n" }, '{"a":"\\u0000\\u001f\\"\\\\\\n"}'],
    // Code point order, not UTF-16 order: U+1F600 sorts after U+FF21.
    [{ "\u{1F600}": 1, "\uFF21": 2 }, '{"Ａ":2,"😀":1}'],
  ];
  for (const [v, s] of cases) assert.equal(A.canonicalJson(v), s);
  assert.throws(() => A.canonicalJson({ a: 1.5 }), /integers/);
  assert.throws(() => A.canonicalJson({ a: 2 ** 53 }), /integers/);
  assert.throws(() => A.canonicalJson({ a: "\uD800" }), /not valid Unicode/);
});

test("base64: unpadded standard alphabet, canonical only", () => {
  assert.deepEqual([...A.decodeBase64("AAEC")], [0, 1, 2]);
  assert.deepEqual([...A.decodeBase64("AAE")], [0, 1]);
  assert.deepEqual([...A.decodeBase64("AAE=")], [0, 1]);
  assert.equal(A.encodeBase64(new Uint8Array([0, 1])), "AAE");
  assert.throws(() => A.decodeBase64("AAF"), /canonical/); // non-zero trailing bits
  assert.throws(() => A.decodeBase64("AA-_"), /not base64/);
  assert.throws(() => A.decodeBase64("A"), /not base64/);
  assert.equal(A.groupFingerprint("abcdEFGHijklMNOPqr"), "abcd EFGH ijkl MNOP qr");
});
