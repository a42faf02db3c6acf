#!/usr/bin/env node
// One side of an end-to-end encrypted conversation: a matrix-js-sdk client
// with its Rust crypto (matrix-sdk-crypto-wasm, in memory) that logs in,
// gets into an encrypted room, sends one message and waits until it has
// decrypted the counterpart's message. Used by e2ee.test.mjs (two of these)
// and by Rust tests (a matrix-sdk client on the other side).
//
// Usage:
//   node e2ee_peer.mjs --homeserver URL --user @me:localhost --password PW
//        (--room ROOM_ID | --peer @them:localhost | --invite @them:localhost)
//        --send TEXT --expect TEXT [--timeout SECONDS]
//
//   --room ID       join this room (invited or public) and use it
//   --peer USER     wait for an invite from USER to an encrypted room and join it
//   --invite USER   create an encrypted DM (is_direct) and invite USER
//   --register      register the user first (m.login.dummy; needs open registration)
//   --send TEXT     the message to send (encrypted)
//   --expect TEXT   the message to wait for from the other member
//   --timeout S     give up after S seconds (default 60)
//   --validate      also validate every response against the spec's schemas
//                   (lib/spec.mjs); the result then lists "schema_violations"
//                   and the operations covered, and violations make it fail
//   Each option may also be given as an environment variable: E2EE_HOMESERVER,
//   E2EE_USER, E2EE_PASSWORD, E2EE_ROOM, E2EE_PEER, E2EE_INVITE, E2EE_SEND,
//   E2EE_EXPECT, E2EE_TIMEOUT.
//
// Before sending, it waits until another member is joined and has at least
// one device with uploaded keys, so the room key is shared with that device.
// After sending it checks the raw event over /messages (no decryption): it
// must be m.room.encrypted with Megolm ciphertext and no plaintext.
//
// Output: JSON lines on stdout.
//   {"event":"ready","user_id","device_id","room_id"}   joined, crypto running, and this
//                                                       device's keys are on the server: a
//                                                       counterpart sending after this line
//                                                       shares its room key with this device
//   {"event":"sent","room_id","event_id"}               own message sent, raw check passed
//   {"event":"result","ok":true,"user_id","device_id","room_id","sent_event_id",
//    "received_event_id","received_text","sender","sender_device"}   then exit 0
// On failure: {"event":"result","ok":false,"error":"..."} and exit 1.
// matrix-js-sdk and the crypto library log through console; that goes to
// stderr, and only with SDK_LOG set, so stdout carries nothing but these lines.
import { parseArgs, format } from "node:util";
import { createClient, ClientEvent, MatrixEventEvent } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

import { SpecValidator, validatingFetch } from "./lib/spec.mjs";

logger.setLevel(process.env.SDK_LOG ?? "silent");
for (const m of ["log", "debug", "info", "trace", "warn", "error"]) {
    console[m] = process.env.SDK_LOG ? (...a) => process.stderr.write(`${format(...a)}\n`) : () => {};
}

const { values: args } = parseArgs({
    options: {
        homeserver: { type: "string", default: process.env.E2EE_HOMESERVER ?? process.env.HOTLINE_URL },
        user: { type: "string", default: process.env.E2EE_USER },
        password: { type: "string", default: process.env.E2EE_PASSWORD },
        room: { type: "string", default: process.env.E2EE_ROOM },
        peer: { type: "string", default: process.env.E2EE_PEER },
        invite: { type: "string", default: process.env.E2EE_INVITE },
        send: { type: "string", default: process.env.E2EE_SEND },
        expect: { type: "string", default: process.env.E2EE_EXPECT },
        timeout: { type: "string", default: process.env.E2EE_TIMEOUT ?? "60" },
        validate: { type: "boolean", default: false },
        register: { type: "boolean", default: false },
    },
});

function emit(obj) {
    process.stdout.write(`${JSON.stringify(obj)}\n`);
}
function fail(error) {
    emit({ event: "result", ok: false, user_id: args.user, error: String(error?.message ?? error) });
    process.exit(1);
}

const missing = ["homeserver", "user", "password", "send", "expect"].filter((k) => !args[k]);
if (missing.length) fail(`missing --${missing.join(", --")}`);
if ([args.room, args.peer, args.invite].filter(Boolean).length !== 1) fail("give exactly one of --room, --peer, --invite");
const deadline = Date.now() + Number(args.timeout) * 1000;
let stage = "starting";
const failures = []; // events from others that could not be decrypted
setTimeout(
    () => fail(`timed out after ${args.timeout} s ${stage}` + (failures.length ? `; undecryptable: ${failures.join("; ")}` : "")),
    Number(args.timeout) * 1000,
).unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, fn) {
    stage = `waiting for ${what}`;
    while (Date.now() < deadline) {
        const v = await fn();
        if (v) return v;
        await sleep(100);
    }
    throw new Error(`timed out ${stage}` + (failures.length ? `; undecryptable: ${failures.join("; ")}` : ""));
}

const spec = args.validate ? new SpecValidator() : null;
const fetchFn = spec ? validatingFetch(spec) : fetch;

async function main() {
    const hs = args.homeserver.replace(/\/$/, "");
    stage = "logging in";
    const anon = createClient({ baseUrl: hs, fetchFn });
    if (args.register) {
        stage = "registering";
        const localpart = args.user.replace(/^@/, "").split(":")[0];
        await anon.registerRequest({ username: localpart, password: args.password, auth: { type: "m.login.dummy" }, inhibit_login: true });
        stage = "logging in";
    }
    const login = await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: args.user },
        password: args.password,
        initial_device_display_name: "e2ee_peer (matrix-js-sdk)",
    });
    const client = createClient({ baseUrl: hs, userId: login.user_id, deviceId: login.device_id, accessToken: login.access_token, fetchFn });
    stage = "initialising Rust crypto";
    await client.initRustCrypto({ useIndexedDB: false });
    const crypto = client.getCrypto();
    if (!crypto) throw new Error("no crypto backend after initRustCrypto");

    // Collect every message the client decrypts (or fails to).
    const decrypted = [];
    const onEvent = (ev) => {
        if (ev.getRoomId() !== roomId || ev.getSender() === login.user_id) return;
        if (ev.isDecryptionFailure()) failures.push(`${ev.getId()}: ${ev.decryptionFailureReason ?? ev.getContent().body}`);
        else if (ev.isEncrypted() && ev.getType() === "m.room.message") decrypted.push(ev);
    };
    client.on(MatrixEventEvent.Decrypted, onEvent);

    stage = "first sync";
    const synced = new Promise((resolve) =>
        client.on(ClientEvent.Sync, (state) => (state === "PREPARED" || state === "SYNCING") && resolve()),
    );
    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false });
    await synced;

    let roomId;
    if (args.invite) {
        stage = "creating the encrypted room";
        ({ room_id: roomId } = await client.createRoom({
            preset: "trusted_private_chat",
            is_direct: true,
            invite: [args.invite],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        }));
    } else {
        roomId =
            args.room ??
            (await until(`an invite from ${args.peer}`, () =>
                client
                    .getRooms()
                    .find((r) => r.getMyMembership() === "invite" && r.getMember(login.user_id)?.events.member?.getSender() === args.peer)
                    ?.roomId,
            ));
        stage = `joining ${roomId}`;
        await client.joinRoom(roomId);
    }
    const room = await until("the room in sync", () => client.getRoom(roomId)?.getMyMembership() === "join" && client.getRoom(roomId));
    await until("the room to be encrypted", () => crypto.isEncryptionEnabledInRoom(roomId));
    await until("this device's keys on the server", async () => {
        const res = await fetchFn(`${hs}/_matrix/client/v3/keys/query`, {
            method: "POST",
            headers: { Authorization: `Bearer ${login.access_token}`, "Content-Type": "application/json" },
            body: JSON.stringify({ device_keys: { [login.user_id]: [login.device_id] } }),
        });
        const body = await res.json();
        return body.device_keys?.[login.user_id]?.[login.device_id]?.keys?.[`curve25519:${login.device_id}`];
    });
    emit({ event: "ready", user_id: login.user_id, device_id: login.device_id, room_id: roomId });

    // Events that arrived before the listener saw the room id.
    for (const ev of room.getLiveTimeline().getEvents()) {
        if (ev.isBeingDecrypted()) continue;
        onEvent(ev);
    }

    // The counterpart: another member, joined, with a device that has keys.
    const other = await until("another member to join", () => {
        const m = room.getJoinedMembers().find((m) => m.userId !== login.user_id);
        return m?.userId;
    });
    await until(`${other}'s device keys`, async () => {
        const info = await crypto.getUserDeviceInfo([other], true);
        return (info.get(other)?.size ?? 0) > 0;
    });

    stage = "sending";
    const { event_id: sentId } = await client.sendTextMessage(roomId, args.send);

    // The raw event as the server stores and serves it, without decryption.
    stage = "checking the raw event";
    const res = await fetchFn(`${hs}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`, {
        headers: { Authorization: `Bearer ${login.access_token}` },
    });
    const rawText = await res.text();
    if (res.status !== 200) throw new Error(`/messages answered ${res.status}: ${rawText}`);
    const raw = JSON.parse(rawText).chunk.find((e) => e.event_id === sentId);
    if (!raw) throw new Error(`own event ${sentId} not in /messages`);
    if (raw.type !== "m.room.encrypted") throw new Error(`own event went out as ${raw.type}, not m.room.encrypted`);
    if (raw.content.algorithm !== "m.megolm.v1.aes-sha2" || typeof raw.content.ciphertext !== "string")
        throw new Error(`own event is not Megolm ciphertext: ${JSON.stringify(raw.content)}`);
    if (rawText.includes(args.send)) throw new Error("the plaintext of the sent message appears in /messages");
    emit({ event: "sent", room_id: roomId, event_id: sentId });

    const got = await until(`"${args.expect}" from ${other}`, () =>
        decrypted.find((ev) => ev.getContent().body === args.expect),
    );
    const validation = spec
        ? { schema_violations: spec.report().split("\n").filter(Boolean), operations_validated: [...spec.coveredOperations()].sort() }
        : {};
    const ok = !spec || spec.violations().length === 0;
    emit({
        event: "result",
        ok,
        ...(ok ? {} : { error: "responses broke the spec's schemas" }),
        user_id: login.user_id,
        device_id: login.device_id,
        room_id: roomId,
        sent_event_id: sentId,
        received_event_id: got.getId(),
        received_text: got.getContent().body,
        received_wire_type: got.getWireType(),
        sender: got.getSender(),
        sender_device: got.getWireContent().device_id ?? null,
        ...validation,
    });
    client.stopClient();
    process.exit(ok ? 0 : 1);
}

main().catch((e) => fail(`${stage}: ${e?.message ?? e}`));
