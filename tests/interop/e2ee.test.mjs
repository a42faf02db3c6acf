// End-to-end encryption between two independent matrix-js-sdk clients with
// the Rust crypto (matrix-sdk-crypto-wasm): two e2ee_peer.mjs processes, one
// creating an encrypted DM, the other joining it; each must decrypt the
// other's message, the server must only ever have seen ciphertext, and every
// response (keys upload/query/claim, sendToDevice, to_device in /sync, ...)
// must validate against the spec's schemas.
//
// Run by ./run.sh; by hand: HOTLINE_URL=http://127.0.0.1:PORT [HOTLINE_DATA_DIR=DIR] node --test e2ee.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { HS, RUN, register } from "./lib/hs.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const PASSWORD = "interop-e2ee-password";

/** Runs e2ee_peer.mjs; resolves with its exit code and the JSON lines it printed. */
function peer(args) {
    return new Promise((resolve) => {
        const child = spawn(process.execPath, [path.join(here, "e2ee_peer.mjs"), "--homeserver", HS, "--timeout", "40", "--validate", ...args], {
            stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        let err = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (err += d));
        child.on("close", (code) => {
            const lines = out.split("\n").filter(Boolean).map((l) => JSON.parse(l));
            resolve({ code, lines, result: lines.find((l) => l.event === "result"), stderr: err });
        });
    });
}

const s = {};

test("two js-sdk crypto clients decrypt each other's messages in an encrypted DM", async () => {
    const a = await register(`ecila-${RUN}`, PASSWORD);
    const b = await register(`bob-e2ee-${RUN}`, PASSWORD);
    s.texts = [`the eagle lands at dawn ${RUN}`, `the owl flies at dusk ${RUN}`];
    const [ra, rb] = await Promise.all([
        peer(["--user", a.userId, "--password", PASSWORD, "--invite", b.userId, "--send", s.texts[0], "--expect", s.texts[1]]),
        peer(["--user", b.userId, "--password", PASSWORD, "--peer", a.userId, "--send", s.texts[1], "--expect", s.texts[0]]),
    ]);
    s.results = [ra.result, rb.result];
    for (const [name, r] of [["inviter", ra], ["invitee", rb]]) {
        assert.ok(r.result, `${name} printed a result (exit ${r.code}); stderr: ${r.stderr.slice(-2000)}`);
        assert.equal(r.result.ok, true, `${name}: ${r.result.error}\n${(r.result.schema_violations ?? []).join("\n")}`);
        assert.equal(r.code, 0);
        assert.deepEqual(r.lines.map((l) => l.event), ["ready", "sent", "result"], `${name} went through ready, sent, result`);
    }
    assert.equal(ra.result.room_id, rb.result.room_id, "both are in the same room");
    assert.equal(ra.result.received_text, s.texts[1]);
    assert.equal(rb.result.received_text, s.texts[0]);
    assert.equal(ra.result.received_event_id, rb.result.sent_event_id);
    assert.equal(rb.result.received_event_id, ra.result.sent_event_id);
    assert.equal(ra.result.received_wire_type, "m.room.encrypted");
    assert.equal(rb.result.received_wire_type, "m.room.encrypted");
    s.a = a;
    s.roomId = ra.result.room_id;
});

test("the E2EE endpoints' responses validate against the spec's schemas", () => {
    assert.ok(s.results, "the conversation ran");
    const covered = new Set(s.results.flatMap((r) => r.operations_validated ?? []));
    for (const op of ["uploadKeys", "queryKeys", "claimKeys", "sendToDevice", "sync", "createRoom", "joinRoom", "sendMessage", "getRoomEvents"]) {
        assert.ok(covered.has(op), `${op} was exercised and validated (covered: ${[...covered].join(", ")})`);
    }
    for (const r of s.results) assert.deepEqual(r.schema_violations, [], `${r.user_id}'s responses`);
});

test("the server holds ciphertext only: no plaintext in /messages or in its data directory", async () => {
    assert.ok(s.roomId, "the conversation ran");
    const res = await fetch(`${HS}/_matrix/client/v3/rooms/${encodeURIComponent(s.roomId)}/messages?dir=b&limit=100`, {
        headers: { Authorization: `Bearer ${s.a.accessToken}` },
    });
    const text = await res.text();
    assert.equal(res.status, 200);
    const chunk = JSON.parse(text).chunk;
    const messages = chunk.filter((e) => e.type === "m.room.encrypted");
    assert.equal(messages.length, 2, "both messages are m.room.encrypted");
    assert.ok(!chunk.some((e) => e.type === "m.room.message"), "no clear m.room.message in the room");
    for (const t of s.texts) assert.ok(!text.includes(t), `"${t}" is not in /messages`);
    const dir = process.env.HOTLINE_DATA_DIR;
    if (!dir) return; // run by hand against a server whose files we can't see
    const files = fs.readdirSync(dir, { recursive: true }).map((f) => path.join(dir, f)).filter((f) => fs.statSync(f).isFile());
    assert.ok(files.some((f) => f.endsWith("hotline.db")), `the data directory ${dir} has the database`);
    for (const f of files) {
        const bytes = fs.readFileSync(f);
        for (const t of s.texts) assert.ok(!bytes.includes(t), `"${t}" found in ${f}`);
    }
});
