// The identity fingerprint as a protocol office compares it in person: 60
// decimal digits in 12 groups of 5, in the manner of Signal's safety
// numbers (base64 is case-sensitive and mixes l/I and O/0; digits are not).
//
// Derivation, version 1, the same as the server's
// (crates/hotline-service/src/fingerprint.rs; `hotline admin show-key`
// prints it; both check one test vector, web/test/fingerprint.test.mjs):
//
//   key  = the master key's 32 bytes (its unpadded base64 decoded)
//   h    = SHA-512(0x00 0x01 || key || user id as UTF-8)
//   5200 times: h = SHA-512(h || key)
//   the first 60 bytes of h in 12 chunks of 5; each chunk a big-endian
//   40-bit integer, mod 100000, written as 5 digits.

const ITERATIONS = 5200;
const VERSION = [0, 1];
export const FINGERPRINT_GROUPS = 12;

function bytesOfBase64(s: string): Uint8Array {
  const bare = s.replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]*$/.test(bare)) throw new Error("not base64");
  const bin = atob(bare + "=".repeat((4 - (bare.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function sha512(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-512", data as BufferSource));
}

/** The 12 groups of 5 digits for a master key (unpadded base64) of `userId`. */
export async function fingerprintGroups(masterKey: string, userId: string): Promise<string[]> {
  const key = bytesOfBase64(masterKey);
  let h = await sha512(concat(new Uint8Array(VERSION), key, new TextEncoder().encode(userId)));
  for (let i = 0; i < ITERATIONS; i++) h = await sha512(concat(h, key));
  const groups: string[] = [];
  for (let g = 0; g < FINGERPRINT_GROUPS; g++) {
    let n = 0;
    // 40 bits: exact in a double (53-bit mantissa).
    for (let i = 0; i < 5; i++) n = n * 256 + h[g * 5 + i];
    groups.push(String(n % 100000).padStart(5, "0"));
  }
  return groups;
}
