// Unit test of src/lib/fingerprint.ts (the real module, transpiled by
// TypeScript on the fly): the digit form of an identity key gives the same
// digits as the server's derivation for the shared test vector (the same
// key, user id and digits are checked by the Rust unit test in
// crates/hotline-service/src/fingerprint.rs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..");

async function loadModule() {
  const src = readFileSync(join(WEB, "src", "lib", "fingerprint.ts"), "utf8");
  const out = ts.transpileModule(src, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    fileName: "fingerprint.ts",
  });
  const dir = join(WEB, "node_modules", ".cache", "hotline-unit");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `fingerprint-${process.pid}.mjs`);
  writeFileSync(file, out.outputText);
  try {
    return await import(pathToFileURL(file).href);
  } finally {
    rmSync(file, { force: true });
  }
}

const VECTOR = {
  key: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", // bytes 0..31
  user: "@alma:gov.example",
  digits: "37387 05678 88433 13374 79125 81185 78117 34644 96669 84652 72533 29707",
};

test("fingerprint digits: the shared test vector gives the server's digits", async () => {
  const { fingerprintGroups } = await loadModule();
  assert.equal((await fingerprintGroups(VECTOR.key, VECTOR.user)).join(" "), VECTOR.digits);
  // Padded base64 is the same key.
  assert.equal((await fingerprintGroups(VECTOR.key + "=", VECTOR.user)).join(" "), VECTOR.digits);
});

test("fingerprint digits: another user or another key gives other digits", async () => {
  const { fingerprintGroups } = await loadModule();
  const other = await fingerprintGroups(VECTOR.key, "@bruno:gov.example");
  assert.equal(other.length, 12);
  for (const g of other) assert.match(g, /^\d{5}$/);
  assert.notEqual(other.join(" "), VECTOR.digits);
  const flipped = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh4"; // last byte 31 -> 30
  assert.notEqual((await fingerprintGroups(flipped, VECTOR.user)).join(" "), VECTOR.digits);
});
