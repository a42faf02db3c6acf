// Unit test of src/lib/watermark.ts (the real module, transpiled by
// TypeScript on the fly): the web app draws the tile the server's decoder
// reads. The expected codeword and tile are the files the Rust unit test in
// crates/hotline-trace/src/payload.rs checks, read from there: one vector,
// checked on both sides.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..");
const VECTORS = join(WEB, "..", "crates", "hotline-trace", "testdata");

async function loadModule() {
  const src = readFileSync(join(WEB, "src", "lib", "watermark.ts"), "utf8");
  const out = ts.transpileModule(src, {
    compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    fileName: "watermark.ts",
  });
  const dir = join(WEB, "node_modules", ".cache", "hotline-unit");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `watermark-${process.pid}.mjs`);
  writeFileSync(file, out.outputText);
  try {
    return await import(pathToFileURL(file).href);
  } finally {
    rmSync(file, { force: true });
  }
}

const VECTOR = { tag: 0xdeadbeef, line: 0x123456, minute: 0xabcdef };
const hex = (bytes) => Buffer.from(bytes).toString("hex");

test("watermark: the shared test vector gives the server's codeword and tile", async () => {
  const { codeword, tileCells } = await loadModule();
  assert.equal(hex(codeword(VECTOR)), readFileSync(join(VECTORS, "vector-codeword.txt"), "utf8").trim());
  const tile = tileCells(VECTOR).map((row) => row.map((c) => (c ? "#" : ".")).join("")).join("\n");
  assert.equal(tile, readFileSync(join(VECTORS, "vector-tile.txt"), "utf8").trim());
});

test("watermark: line numbers are FNV-1a-32 of the room id, low 24 bits", async () => {
  const { lineHash, crc16 } = await loadModule();
  assert.equal(lineHash("a"), 0x0c292c); // FNV-1a-32("a") = 0xe40c292c, as the Rust test
  assert.equal(crc16(new TextEncoder().encode("123456789")), 0x29b1); // CRC-16/CCITT-FALSE check value
});

test("watermark: minutes wrap at 2^24", async () => {
  const { minuteOf } = await loadModule();
  assert.equal(minuteOf(0x1000000 * 60_000 + 5 * 60_000 + 59_999), 5);
});
