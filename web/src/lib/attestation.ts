// Official identity attestations (docs/DESIGN.md capability 4): Matrix canonical
// JSON and Ed25519 verification of the server-signed statements
// "this user is NAME, TITLE of COUNTRY, with this master key".
//
// Mirrors `verify_attestation` in crates/hotline-service/src/identity.rs,
// plus the checks a client makes on its own: the type, the user the
// attestation is about, and the issuer's key taken from the issuer's server
// key document (`/_matrix/key/v2/server`, itself self-signed), never from
// the directory that carries the attestation. No DOM: node runs it in the
// unit tests (web/test/attestation.test.mjs).
import { verifyAsync } from "@noble/ed25519";

export const ATTESTATION_TYPE = "org.hotline.attestation.v1";

/** A verified attestation's fields. */
export interface Attestation {
  issuer: string;
  user_id: string;
  name: string;
  title: string;
  country: string;
  office: string;
  /** `recorder`: a records office's archiver, vouched for like an official. */
  role: "principal" | "aide" | "recorder";
  /** For an aide: the principal served. */
  principal?: string;
  /** The official's cross-signing master public key, unpadded base64. */
  master_key: string;
  issued_ts: number;
  expires_ts: number;
}

/** Why an attestation (or a server key document) was refused. */
export class AttestationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AttestationError";
  }
}

// ---- canonical JSON (Matrix spec, appendix "Canonical JSON") ----

/** Compares strings by Unicode code point, which is the byte order of their UTF-8. */
export function compareCodePoints(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const ca = a.codePointAt(i)!;
    const cb = b.codePointAt(j)!;
    if (ca !== cb) return ca - cb;
    i += ca > 0xffff ? 2 : 1;
    j += cb > 0xffff ? 2 : 1;
  }
  return a.length - i - (b.length - j);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Matrix canonical JSON: object keys sorted by code point, no insignificant
 * whitespace, integers only (within ±(2^53 − 1)), strings as UTF-8 with the
 * shortest escapes (what `JSON.stringify` writes for well-formed strings).
 */
export function canonicalJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      if (!Number.isSafeInteger(value)) {
        throw new AttestationError("canonical JSON allows only integers between -(2^53-1) and 2^53-1");
      }
      return String(value); // -0 is written "0", as serde_json writes it
    case "string":
      if (LONE_SURROGATE.test(value)) throw new AttestationError("a string is not valid Unicode");
      return JSON.stringify(value);
    case "object": {
      if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).sort(compareCodePoints);
      return "{" + keys.map((k) => canonicalJson(k) + ":" + canonicalJson(obj[k])).join(",") + "}";
    }
    default:
      throw new AttestationError(`canonical JSON has no ${typeof value} values`);
  }
}

/** The bytes a Matrix signature covers: canonical JSON without `signatures` and `unsigned`. */
export function signingBytes(object: Record<string, unknown>): Uint8Array {
  const rest: Record<string, unknown> = { ...object };
  delete rest.signatures;
  delete rest.unsigned;
  return new TextEncoder().encode(canonicalJson(rest));
}

// ---- base64 (standard alphabet; padding optional, as the Rust side accepts) ----

/** Decodes unpadded (or padded) standard base64; refuses anything not canonical. */
export function decodeBase64(s: string): Uint8Array {
  const bare = s.replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]*$/.test(bare) || bare.length % 4 === 1) throw new AttestationError("not base64");
  const bin = atob(bare + "=".repeat((4 - (bare.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  // Non-zero trailing bits decode too, but the Rust decoder refuses them:
  // one signature, one spelling.
  if (encodeBase64(out) !== bare) throw new AttestationError("not canonical base64");
  return out;
}

/** Unpadded standard base64, as Matrix writes keys and signatures. */
export function encodeBase64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/=+$/, "");
}

/** Verifies one Ed25519 signature (unpadded base64) over `message` by `publicKey` (unpadded base64). */
export async function verifyEd25519(publicKey: string, signature: string, message: Uint8Array): Promise<boolean> {
  let key: Uint8Array;
  let sig: Uint8Array;
  try {
    key = decodeBase64(publicKey);
    sig = decodeBase64(signature);
  } catch {
    return false;
  }
  if (key.length !== 32 || sig.length !== 64) return false;
  try {
    // RFC 8032 verification (not the more permissive ZIP-215 rules).
    return await verifyAsync(sig, message, key, { zip215: false });
  } catch {
    return false;
  }
}

// ---- the issuer's server key ----

export interface ServerKey {
  key: string;
  /** Set for an old key: signatures made before this time still count. */
  expiredTs?: number;
}

/** An issuer's signing keys, from its self-signed `/_matrix/key/v2/server` document. */
export interface ServerKeys {
  serverName: string;
  keys: Map<string, ServerKey>;
}

function isObject(v: unknown): v is Record<string, any> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Checks a `/_matrix/key/v2/server` response: it is for `expectedServer`
 * and signed by one of its own current keys. Returns the keys that may sign
 * attestations.
 */
export async function verifyServerKeys(doc: unknown, expectedServer?: string): Promise<ServerKeys> {
  if (!isObject(doc)) throw new AttestationError("server key document is not a JSON object");
  const serverName = doc.server_name;
  if (typeof serverName !== "string" || !serverName) throw new AttestationError("server key document has no server_name");
  if (expectedServer !== undefined && serverName !== expectedServer) {
    throw new AttestationError(`server key document is for ${serverName}, not ${expectedServer}`);
  }
  const keys = new Map<string, ServerKey>();
  if (isObject(doc.verify_keys)) {
    for (const [id, v] of Object.entries(doc.verify_keys)) {
      if (id.startsWith("ed25519:") && isObject(v) && typeof v.key === "string") keys.set(id, { key: v.key });
    }
  }
  if (keys.size === 0) throw new AttestationError("server key document has no ed25519 key");
  const sigs = isObject(doc.signatures) && isObject(doc.signatures[serverName]) ? doc.signatures[serverName] : {};
  const message = signingBytes(doc);
  let selfSigned = false;
  for (const [id, k] of keys) {
    if (typeof sigs[id] === "string" && (await verifyEd25519(k.key, sigs[id], message))) {
      selfSigned = true;
      break;
    }
  }
  if (!selfSigned) throw new AttestationError("server key document is not signed by its own key");
  if (isObject(doc.old_verify_keys)) {
    for (const [id, v] of Object.entries(doc.old_verify_keys)) {
      if (id.startsWith("ed25519:") && isObject(v) && typeof v.key === "string" && typeof v.expired_ts === "number") {
        if (!keys.has(id)) keys.set(id, { key: v.key, expiredTs: v.expired_ts });
      }
    }
  }
  return { serverName, keys };
}

// ---- attestations ----

export interface VerifyOptions {
  /** The time to check expiry against (ms since the epoch). */
  now: number;
  /** The user the attestation must be about. */
  userId?: string;
}

/**
 * Verifies an attestation: its type, issuer, user, fields, a signature by
 * one of the issuer's keys over its canonical JSON, and that it has not
 * expired. Throws an `AttestationError` saying why not.
 */
export async function verifyAttestation(att: unknown, issuer: ServerKeys, opts: VerifyOptions): Promise<Attestation> {
  if (!isObject(att)) throw new AttestationError("not a JSON object");
  if (att.type !== ATTESTATION_TYPE) throw new AttestationError(`type is not ${ATTESTATION_TYPE}`);
  if (att.issuer !== issuer.serverName) throw new AttestationError("issuer mismatch");
  const str = (k: string): string => {
    const v = att[k];
    if (typeof v !== "string" || !v) throw new AttestationError(`no ${k}`);
    return v;
  };
  const int = (k: string): number => {
    const v = att[k];
    if (!Number.isSafeInteger(v)) throw new AttestationError(`no ${k}`);
    return v;
  };
  const a: Attestation = {
    issuer: issuer.serverName,
    user_id: str("user_id"),
    name: str("name"),
    title: str("title"),
    country: str("country"),
    office: str("office"),
    role: str("role") as Attestation["role"],
    master_key: str("master_key"),
    issued_ts: int("issued_ts"),
    expires_ts: int("expires_ts"),
  };
  if (a.role !== "principal" && a.role !== "aide" && a.role !== "recorder") {
    throw new AttestationError("role is neither principal, aide nor recorder");
  }
  if (att.principal !== undefined) {
    if (typeof att.principal !== "string") throw new AttestationError("principal is not a user id");
    a.principal = att.principal;
  }
  if (opts.userId !== undefined && a.user_id !== opts.userId) {
    throw new AttestationError(`attestation is for ${a.user_id}, not ${opts.userId}`);
  }

  const sigs = isObject(att.signatures) ? att.signatures[issuer.serverName] : undefined;
  if (!isObject(sigs) || Object.keys(sigs).length === 0) throw new AttestationError("no signature by the issuer");
  const message = signingBytes(att);
  let known = false;
  for (const [id, sig] of Object.entries(sigs)) {
    const k = issuer.keys.get(id);
    if (!k || typeof sig !== "string") continue;
    if (k.expiredTs !== undefined && k.expiredTs <= a.issued_ts) continue;
    known = true;
    if (await verifyEd25519(k.key, sig, message)) {
      if (a.expires_ts <= opts.now) throw new AttestationError("attestation expired");
      return a;
    }
  }
  throw new AttestationError(known ? "signature does not verify" : "no signature by a key of the issuer");
}

// ---- the directory (`GET /_hotline/v1/directory`) ----

export type DirectoryEntry =
  | { status: "verified"; attestation: Attestation }
  | { status: "revoked"; revokedTs: number; attestation?: Attestation }
  | { status: "invalid"; reason: string };

/**
 * Verifies every attestation of a directory against the issuer's keys and
 * applies its revocations: user id → entry. An attestation that fails is
 * "invalid" (with the reason), never trusted; a revocation newer than the
 * user's attestation (or without one) makes them "revoked".
 */
export async function verifyDirectory(dir: unknown, issuer: ServerKeys, now: number): Promise<Map<string, DirectoryEntry>> {
  const out = new Map<string, DirectoryEntry>();
  if (!isObject(dir)) return out;
  for (const att of Array.isArray(dir.attestations) ? dir.attestations : []) {
    const userId = isObject(att) && typeof att.user_id === "string" ? att.user_id : null;
    if (!userId) continue;
    let entry: DirectoryEntry;
    try {
      entry = { status: "verified", attestation: await verifyAttestation(att, issuer, { now, userId }) };
    } catch (e) {
      entry = { status: "invalid", reason: e instanceof Error ? e.message : String(e) };
    }
    const prev = out.get(userId);
    // Several for one user: the newest verified one counts.
    if (
      !prev ||
      (entry.status === "verified" && (prev.status !== "verified" || entry.attestation.issued_ts > prev.attestation.issued_ts))
    ) {
      out.set(userId, entry);
    }
  }
  for (const r of Array.isArray(dir.revocations) ? dir.revocations : []) {
    if (!isObject(r) || typeof r.user_id !== "string" || !Number.isSafeInteger(r.revoked_ts)) continue;
    const prev = out.get(r.user_id);
    if (prev?.status === "verified" && prev.attestation.issued_ts > r.revoked_ts) continue; // vouched again since
    out.set(r.user_id, {
      status: "revoked",
      revokedTs: r.revoked_ts,
      attestation: prev?.status === "verified" ? prev.attestation : undefined,
    });
  }
  return out;
}

/** The server part of a user id: `@pm:gov-b.example:8448` → `gov-b.example:8448`. */
export function serverOf(userId: string): string {
  const i = userId.indexOf(":");
  return i < 0 ? "" : userId.slice(i + 1);
}

/**
 * Keeps of `keys` only those the user's own server pinned for that server
 * (`pinned`: key id → key, as `GET /_hotline/v1/directory/{server}` names
 * them): a peer's attestation counts only when signed by a key pinned
 * there. Throws when none is left.
 */
export function keepPinned(keys: ServerKeys, pinned: unknown): ServerKeys {
  const pins = isObject(pinned) ? pinned : {};
  const kept = new Map<string, ServerKey>();
  for (const [id, k] of keys.keys) {
    if (pins[id] === k.key) kept.set(id, k);
  }
  if (kept.size === 0) throw new AttestationError(`no key of ${keys.serverName} is pinned by this server`);
  return { serverName: keys.serverName, keys: kept };
}

/**
 * Another government's directory as the user's own server hands it
 * (`GET /_hotline/v1/directory/{server}`: `directory`, `server_keys`,
 * `pinned_keys`): its key document checked (self-signed, for `peer`), only
 * the pinned keys kept, every attestation verified with them. Entries are
 * kept only for `peer`'s own users: a government vouches for its own
 * officials, never another's.
 */
export async function verifyPeerDirectory(answer: unknown, peer: string, now: number): Promise<Map<string, DirectoryEntry>> {
  if (!isObject(answer)) throw new AttestationError("the peer directory answer is not a JSON object");
  const keys = keepPinned(await verifyServerKeys(answer.server_keys, peer), answer.pinned_keys);
  if (!isObject(answer.directory) || answer.directory.issuer !== peer) {
    throw new AttestationError(`the directory is not ${peer}'s`);
  }
  const out = new Map<string, DirectoryEntry>();
  for (const [userId, entry] of await verifyDirectory(answer.directory, keys, now)) {
    if (serverOf(userId) === peer) out.set(userId, entry);
  }
  return out;
}

/** A master key fingerprint grouped for reading aloud: "AbCd EfGh …". */
export function groupFingerprint(key: string): string {
  return key.replace(/\s+/g, "").replace(/(.{4})(?=.)/g, "$1 ");
}
