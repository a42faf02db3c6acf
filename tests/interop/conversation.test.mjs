// A direct conversation between two matrix-js-sdk clients through Hotline,
// over real /sync, plus a stranger who is refused. Every response the
// clients receive is validated against the Matrix spec's schemas (lib/spec.mjs);
// the last checks fail if any response broke its schema or if an endpoint the
// issue names was never exercised.
//
// Run by ./run.sh (which starts the server); by hand:
//   HOTLINE_URL=http://127.0.0.1:PORT node --test conversation.test.mjs
import { test, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { ClientEvent, RoomEvent, RoomMemberEvent, EventType, RelationType } from "matrix-js-sdk";
import { HS, RUN, register, login, makeClient, startSyncing, waitForEvent, eventually } from "./lib/hs.mjs";
import { SpecValidator, validatingFetch } from "./lib/spec.mjs";

const spec = new SpecValidator();
const vfetch = validatingFetch(spec);
const PASSWORD = "interop-password-1";

const s = {}; // state carried from one step to the next
const clients = [];
after(() => {
    clients.forEach((c) => c.stopClient());
    // matrix-js-sdk leaves timers behind after stopClient; don't wait for them.
    setTimeout(() => process.exit(), 1000).unref();
});

/** Sends a request as `client` and returns {status, body}, without throwing on errors. */
async function raw(client, method, path, body) {
    const res = await vfetch(`${HS}${path}`, {
        method,
        headers: {
            Authorization: `Bearer ${client.getAccessToken()}`,
            ...(body ? { "Content-Type": "application/json" } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let json;
    try {
        json = JSON.parse(text);
    } catch {
        json = undefined;
    }
    return { status: res.status, body: json, headers: res.headers };
}

const enc = encodeURIComponent;
const bodyOf = (ev) => ev.getContent()?.body;

test("two users register with m.login.dummy and get their own user ids", async () => {
    s.aliceCreds = await register(`alice-${RUN}`, PASSWORD, vfetch);
    s.bobCreds = await register(`bob-${RUN}`, PASSWORD, vfetch);
    s.carolCreds = await register(`carol-${RUN}`, PASSWORD, vfetch);
    assert.equal(s.aliceCreds.userId, `@alice-${RUN}:localhost`);
    assert.equal(s.bobCreds.userId, `@bob-${RUN}:localhost`);
    assert.ok(s.aliceCreds.accessToken && s.aliceCreds.deviceId);
    assert.notEqual(s.aliceCreds.accessToken, s.bobCreds.accessToken);
});

test("each client starts syncing, and whoami names the token's user and device", async () => {
    s.alice = makeClient(s.aliceCreds, vfetch);
    s.bob = makeClient(s.bobCreds, vfetch);
    s.carol = makeClient(s.carolCreds, vfetch);
    clients.push(s.alice, s.bob);
    await Promise.all([startSyncing(s.alice), startSyncing(s.bob)]);
    const who = await s.alice.whoami();
    assert.equal(who.user_id, s.aliceCreds.userId);
    assert.equal(who.device_id, s.aliceCreds.deviceId);
});

test("/versions, /capabilities and /pushrules/ answer with the shapes clients rely on", async () => {
    const versions = await s.alice.getVersions();
    assert.ok(versions.versions.includes("v1.1"), `versions: ${versions.versions}`);
    const caps = await raw(s.alice, "GET", "/_matrix/client/v3/capabilities");
    assert.equal(caps.status, 200);
    assert.equal(typeof caps.body.capabilities, "object");
    const rooms = caps.body.capabilities["m.room_versions"];
    assert.ok(rooms && rooms.available[rooms.default], `default room version ${rooms?.default} is not listed as available`);
    const rules = await s.alice.getPushRules();
    const ids = rules.global.override.map((r) => r.rule_id);
    assert.ok(ids.includes(".m.rule.master"), `override rules: ${ids}`);
    assert.ok(rules.global.underride.some((r) => r.rule_id === ".m.rule.message"), "underride has .m.rule.message");
});

test("a filter can be created and read back unchanged", async () => {
    const definition = { room: { timeline: { limit: 7 } }, presence: { types: [] } };
    const res = await raw(s.alice, "POST", `/_matrix/client/v3/user/${enc(s.aliceCreds.userId)}/filter`, definition);
    assert.equal(res.status, 200);
    assert.equal(typeof res.body.filter_id, "string");
    const back = await raw(s.alice, "GET", `/_matrix/client/v3/user/${enc(s.aliceCreds.userId)}/filter/${enc(res.body.filter_id)}`);
    assert.equal(back.status, 200);
    assert.deepEqual(back.body, definition);
});

test("alice opens a DM: bob is invited and his invite says is_direct", async () => {
    const invited = waitForEvent(s.bob, RoomEvent.MyMembership, (room, membership) => membership === "invite", "bob's invite");
    const { room_id } = await s.alice.createRoom({
        preset: "trusted_private_chat",
        is_direct: true,
        invite: [s.bobCreds.userId],
    });
    s.roomId = room_id;
    assert.match(room_id, /^!/);
    const [room] = await invited;
    assert.equal(room.roomId, s.roomId);
    const me = room.getMember(s.bobCreds.userId);
    assert.equal(me.membership, "invite");
    assert.equal(me.events.member.getContent().is_direct, true, "the invite member event carries is_direct: true");
    assert.equal(me.events.member.getSender(), s.aliceCreds.userId);
});

test("bob joins and alice sees his join arrive via sync", async () => {
    const joined = waitForEvent(
        s.alice,
        RoomMemberEvent.Membership,
        (ev, member) => member.roomId === s.roomId && member.userId === s.bobCreds.userId && member.membership === "join",
        "bob's join at alice",
    );
    await s.bob.joinRoom(s.roomId);
    await joined;
    const joinedRooms = await s.bob.getJoinedRooms();
    assert.ok(joinedRooms.joined_rooms.includes(s.roomId));
});

test("alice's account data (m.direct) and room account data come back via sync", async () => {
    const direct = waitForEvent(s.alice, ClientEvent.AccountData, (ev) => ev.getType() === "m.direct", "m.direct at alice");
    const roomData = waitForEvent(
        s.alice,
        RoomEvent.AccountData,
        (ev, room) => room.roomId === s.roomId && ev.getType() === "org.example.interop",
        "room account data at alice",
    );
    await s.alice.setAccountData("m.direct", { [s.bobCreds.userId]: [s.roomId] });
    await s.alice.setRoomAccountData(s.roomId, "org.example.interop", { pinned: true });
    const [[ev], [roomEv]] = await Promise.all([direct, roomData]);
    assert.deepEqual(ev.getContent(), { [s.bobCreds.userId]: [s.roomId] });
    assert.deepEqual(roomEv.getContent(), { pinned: true });
    const back = await raw(s.alice, "GET", `/_matrix/client/v3/user/${enc(s.aliceCreds.userId)}/account_data/m.direct`);
    assert.equal(back.status, 200);
    assert.deepEqual(back.body, { [s.bobCreds.userId]: [s.roomId] });
    const roomBack = await raw(s.alice, "GET", `/_matrix/client/v3/user/${enc(s.aliceCreds.userId)}/rooms/${enc(s.roomId)}/account_data/org.example.interop`);
    assert.equal(roomBack.status, 200);
    assert.deepEqual(roomBack.body, { pinned: true });
});

test("each account data change wakes the waiting /sync at once (10 rounds, 3 s each)", async () => {
    // A waiting /sync must return as soon as the change is committed, not at
    // its 30 s timeout: repeat so that a race between the wake-up and the
    // server's bookkeeping shows.
    for (let round = 1; round <= 10; round++) {
        const got = waitForEvent(
            s.alice,
            ClientEvent.AccountData,
            (ev) => ev.getType() === "org.example.round" && ev.getContent().round === round,
            `account data round ${round} at alice`,
            3000,
        );
        await s.alice.setAccountData("org.example.round", { round });
        await got;
    }
});

async function sendAndSee(from, to, text) {
    const seen = waitForEvent(
        to,
        RoomEvent.Timeline,
        (ev, room) => room?.roomId === s.roomId && ev.getType() === "m.room.message" && bodyOf(ev) === text,
        `"${text}" at ${to.getUserId()}`,
    );
    const { event_id } = await from.sendTextMessage(s.roomId, text);
    const [ev] = await seen;
    assert.equal(ev.getId(), event_id, "the synced event has the id send returned");
    assert.equal(ev.getSender(), from.getUserId());
    assert.equal(ev.getContent().msgtype, "m.text");
    return ev;
}

test("alice's message reaches bob via sync, and bob's reply reaches alice", async () => {
    s.helloAtBob = await sendAndSee(s.alice, s.bob, "hello bob");
    s.replyAtAlice = await sendAndSee(s.bob, s.alice, "hello alice");
});

test("alice's typing notification is seen by bob, then its end", async () => {
    const isAlice = (ev, member) => member.roomId === s.roomId && member.userId === s.aliceCreds.userId;
    const started = waitForEvent(s.bob, RoomMemberEvent.Typing, (ev, m) => isAlice(ev, m) && m.typing, "alice typing at bob");
    await s.alice.sendTyping(s.roomId, true, 20000);
    await started;
    const stopped = waitForEvent(s.bob, RoomMemberEvent.Typing, (ev, m) => isAlice(ev, m) && !m.typing, "alice stopped typing at bob");
    await s.alice.sendTyping(s.roomId, false);
    await stopped;
});

test("bob's read receipt on alice's message is seen by alice; his fully-read marker syncs to him", async () => {
    const msg = await sendAndSee(s.alice, s.bob, "did you read this?");
    const seen = waitForEvent(
        s.alice,
        RoomEvent.Receipt,
        (ev, room) => room.roomId === s.roomId && ev.getContent()[msg.getId()]?.["m.read"]?.[s.bobCreds.userId],
        "bob's m.read receipt at alice",
    );
    await s.bob.sendReadReceipt(msg);
    const [ev] = await seen;
    assert.equal(typeof ev.getContent()[msg.getId()]["m.read"][s.bobCreds.userId].ts, "number", "the receipt has a timestamp");
    const room = s.alice.getRoom(s.roomId);
    assert.equal(room.getReadReceiptForUserId(s.bobCreds.userId)?.eventId, msg.getId());
    assert.ok(room.getUsersReadUpTo(room.findEventById(msg.getId())).includes(s.bobCreds.userId));

    const marker = waitForEvent(
        s.bob,
        RoomEvent.AccountData,
        (ev, r) => r.roomId === s.roomId && ev.getType() === "m.fully_read" && ev.getContent().event_id === msg.getId(),
        "m.fully_read at bob",
    );
    const res = await raw(s.bob, "POST", `/_matrix/client/v3/rooms/${enc(s.roomId)}/read_markers`, { "m.fully_read": msg.getId() });
    assert.equal(res.status, 200);
    await marker;
});

test("a fresh client scrolls back through 30 messages and sees them all in order", async () => {
    const texts = Array.from({ length: 30 }, (_, i) => `history ${i + 1}`);
    for (const t of texts) await s.alice.sendTextMessage(s.roomId, t);
    await eventually(
        () => s.bob.getRoom(s.roomId).getLiveTimeline().getEvents().some((e) => bodyOf(e) === "history 30"),
        "bob synced the 30th message",
    );
    // A new device of bob's: it knows nothing and starts from a 5-event timeline.
    const creds = await login(s.bobCreds.userId, PASSWORD, vfetch);
    s.freshCreds = creds;
    const fresh = makeClient(creds, vfetch);
    clients.push(fresh);
    await startSyncing(fresh, { initialSyncLimit: 5 });
    const room = fresh.getRoom(s.roomId);
    assert.ok(room, "the fresh client knows the room");
    const timeline = () => room.getLiveTimeline().getEvents();
    assert.ok(timeline().length <= 5 + 1, `initial timeline is limited (${timeline().length} events)`);
    for (let i = 0; i < 20 && room.oldState.paginationToken !== null; i++) {
        await fresh.scrollback(room, 10);
    }
    assert.equal(room.oldState.paginationToken, null, "scrollback reached the start of the room");
    const bodies = timeline().filter((e) => e.getType() === "m.room.message").map(bodyOf);
    assert.deepEqual(bodies, ["hello bob", "hello alice", "did you read this?", ...texts]);
    const first = timeline()[0];
    assert.equal(first.getType(), "m.room.create", "the oldest event is the room's creation");
    fresh.stopClient();
});

test("/messages pages backwards and forwards in order with from/end tokens", async () => {
    const back = [];
    let from;
    for (let page = 0; page < 20; page++) {
        const q = new URLSearchParams({ dir: "b", limit: "7", ...(from ? { from } : {}) });
        const res = await raw(s.bob, "GET", `/_matrix/client/v3/rooms/${enc(s.roomId)}/messages?${q}`);
        assert.equal(res.status, 200);
        assert.ok(res.body.chunk.length <= 7, `page of ${res.body.chunk.length} events exceeds limit 7`);
        back.push(...res.body.chunk);
        if (!res.body.end) break;
        assert.notEqual(res.body.end, from, "end token moves");
        from = res.body.end;
    }
    const ids = back.map((e) => e.event_id);
    assert.equal(new Set(ids).size, ids.length, "no event twice");
    assert.equal(back.at(-1).type, "m.room.create", "backwards pagination ends at the creation");
    const texts = back.filter((e) => e.type === "m.room.message").map((e) => e.content.body).reverse();
    assert.deepEqual(texts, ["hello bob", "hello alice", "did you read this?", ...Array.from({ length: 30 }, (_, i) => `history ${i + 1}`)]);
    // Forwards from the start gives the same events in the opposite order.
    const fwd = [];
    from = undefined;
    for (let page = 0; page < 20; page++) {
        const q = new URLSearchParams({ dir: "f", limit: "9", ...(from ? { from } : {}) });
        const res = await raw(s.bob, "GET", `/_matrix/client/v3/rooms/${enc(s.roomId)}/messages?${q}`);
        assert.equal(res.status, 200);
        fwd.push(...res.body.chunk);
        if (!res.body.end || res.body.chunk.length === 0) break;
        from = res.body.end;
    }
    assert.deepEqual(fwd.map((e) => e.event_id), [...ids].reverse());
});

test("an edit (m.replace) reaches bob and replaces the message's content", async () => {
    const original = await sendAndSee(s.alice, s.bob, "meet at 10");
    const edited = waitForEvent(
        s.bob,
        RoomEvent.Timeline,
        (ev) => ev.getRelation()?.rel_type === RelationType.Replace && ev.getRelation()?.event_id === original.getId(),
        "the edit at bob",
    );
    const { event_id } = await s.alice.sendEvent(s.roomId, EventType.RoomMessage, {
        msgtype: "m.text",
        body: "* meet at 11",
        "m.new_content": { msgtype: "m.text", body: "meet at 11" },
        "m.relates_to": { rel_type: "m.replace", event_id: original.getId() },
    });
    const [edit] = await edited;
    assert.equal(edit.getId(), event_id);
    assert.equal(edit.getContent()["m.new_content"].body, "meet at 11");
    await eventually(() => original.replacingEventId() === event_id, "bob's client to apply the edit");
    assert.equal(original.getContent().body, "meet at 11", "bob now shows the edited text");
    s.editedId = original.getId();
    s.editId = event_id;
});

test("a redacted message's content is empty for the other user", async () => {
    const doomed = await sendAndSee(s.alice, s.bob, "this will be redacted");
    const redacted = waitForEvent(s.bob, RoomEvent.Redaction, (ev) => ev.event.redacts === doomed.getId() || ev.getContent().redacts === doomed.getId(), "the redaction at bob");
    const { event_id } = await s.alice.redactEvent(s.roomId, doomed.getId(), undefined, { reason: "typo" });
    assert.match(event_id, /^\$/);
    await redacted;
    assert.ok(doomed.isRedacted(), "bob's copy is redacted");
    assert.deepEqual(doomed.getContent(), {});
    // And the server itself serves it redacted.
    const res = await raw(s.bob, "GET", `/_matrix/client/v3/rooms/${enc(s.roomId)}/event/${enc(doomed.getId())}`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body.content, {}, "GET /event returns the redacted event with empty content");
    assert.equal(res.body.unsigned?.redacted_because?.event_id, event_id, "unsigned.redacted_because is the redaction");
    s.redactedId = doomed.getId();
});

test("media uploaded by bob downloads byte-for-byte for alice (authenticated v1)", async () => {
    const bytes = crypto.randomBytes(70000);
    const up = await s.bob.uploadContent(bytes, { type: "application/octet-stream", name: "blob.bin" });
    assert.match(up.content_uri, /^mxc:\/\/localhost\/[A-Za-z0-9_-]+$/);
    const [, server, mediaId] = up.content_uri.match(/^mxc:\/\/([^/]+)\/(.+)$/);
    const res = await fetch(`${HS}/_matrix/client/v1/media/download/${server}/${mediaId}`, {
        headers: { Authorization: `Bearer ${s.alice.getAccessToken()}` },
    });
    assert.equal(res.status, 200);
    const got = Buffer.from(await res.arrayBuffer());
    assert.equal(got.length, bytes.length);
    assert.ok(got.equals(bytes), "downloaded bytes equal the uploaded bytes");
    assert.equal(res.headers.get("content-type"), "application/octet-stream");
    const anon = await raw({ getAccessToken: () => "" }, "GET", `/_matrix/client/v1/media/download/${server}/${mediaId}`);
    assert.equal(anon.status, 401, "the v1 download needs an access token");
    s.mediaUri = up.content_uri;
});

test("room state, members, events and context read back what happened", async () => {
    const state = await s.alice.roomState(s.roomId);
    const types = new Set(state.map((e) => e.type));
    for (const t of ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member"]) assert.ok(types.has(t), `state has ${t}`);
    const bobMember = await s.alice.getStateEvent(s.roomId, "m.room.member", s.bobCreds.userId);
    assert.equal(bobMember.membership, "join");
    const members = await s.alice.members(s.roomId);
    assert.deepEqual(members.chunk.filter((e) => e.content.membership === "join").map((e) => e.state_key).sort(), [s.aliceCreds.userId, s.bobCreds.userId].sort());
    const joined = await s.alice.getJoinedRoomMembers(s.roomId);
    assert.deepEqual(Object.keys(joined.joined).sort(), [s.aliceCreds.userId, s.bobCreds.userId].sort());
    const ev = await s.alice.fetchRoomEvent(s.roomId, s.replyAtAlice.getId());
    assert.equal(ev.content.body, "hello alice");
    assert.equal(ev.sender, s.bobCreds.userId);
    const ctx = await raw(s.alice, "GET", `/_matrix/client/v3/rooms/${enc(s.roomId)}/context/${enc(s.replyAtAlice.getId())}?limit=4`);
    assert.equal(ctx.status, 200);
    assert.equal(ctx.body.event.event_id, s.replyAtAlice.getId());
    assert.equal(ctx.body.events_before.at(0)?.event_id, s.helloAtBob.getId(), "the event before bob's reply is alice's hello");
    assert.equal(ctx.body.events_after.at(0)?.content?.body, "did you read this?");
    // Single state event with an empty state key (trailing slash form).
    const create = await raw(s.alice, "GET", `/_matrix/client/v3/rooms/${enc(s.roomId)}/state/m.room.create/`);
    assert.equal(create.status, 200);
    assert.equal(typeof create.body, "object");
});

test("a room alias resolves to the room, and profiles and devices read back", async () => {
    const alias = `#dm-${RUN}:localhost`;
    await s.alice.createAlias(alias, s.roomId);
    const got = await s.bob.getRoomIdForAlias(alias);
    assert.equal(got.room_id, s.roomId);
    assert.ok(Array.isArray(got.servers) && got.servers.includes("localhost"));
    await s.alice.setDisplayName("Alice Interop");
    const profile = await s.bob.getProfileInfo(s.aliceCreds.userId);
    assert.equal(profile.displayname, "Alice Interop");
    const { devices } = await s.bob.getDevices();
    assert.ok(devices.some((d) => d.device_id === s.bobCreds.deviceId), "bob's own device is listed");
    assert.ok(devices.length >= 2, "bob's second (history) device is listed too");
});

test("login flows, profile fields, one device, username availability, media config and key queries answer per spec", async () => {
    const flows = await raw(s.bob, "GET", "/_matrix/client/v3/login");
    assert.equal(flows.status, 200);
    assert.ok(flows.body.flows.some((f) => f.type === "m.login.password"), "password login is offered");
    const name = await raw(s.bob, "GET", `/_matrix/client/v3/profile/${enc(s.aliceCreds.userId)}/displayname`);
    assert.equal(name.status, 200);
    assert.equal(name.body.displayname, "Alice Interop");
    const renamed = await raw(s.bob, "PUT", `/_matrix/client/v3/devices/${enc(s.bobCreds.deviceId)}`, { display_name: "bob's interop laptop" });
    assert.equal(renamed.status, 200);
    const device = await raw(s.bob, "GET", `/_matrix/client/v3/devices/${enc(s.bobCreds.deviceId)}`);
    assert.equal(device.status, 200);
    assert.equal(device.body.display_name, "bob's interop laptop");
    const taken = await raw(s.bob, "GET", `/_matrix/client/v3/register/available?username=${enc(`alice-${RUN}`)}`);
    assert.equal(taken.status, 400, "a taken username is refused");
    assert.equal(taken.body.errcode, "M_USER_IN_USE");
    const free = await raw(s.bob, "GET", `/_matrix/client/v3/register/available?username=${enc(`nobody-${RUN}`)}`);
    assert.equal(free.status, 200);
    assert.equal(free.body.available, true);
    const config = await raw(s.bob, "GET", "/_matrix/client/v1/media/config");
    assert.equal(config.status, 200);
    assert.ok(config.body["m.upload.size"] >= 70000, "the upload limit allows the file uploaded above");
    const keys = await raw(s.bob, "POST", "/_matrix/client/v3/keys/query", { device_keys: { [s.aliceCreds.userId]: [] } });
    assert.equal(keys.status, 200);
    assert.equal(typeof keys.body.device_keys, "object");
});

test("logging out a device ends its access token", async () => {
    const fresh = { getAccessToken: () => s.freshCreds.accessToken };
    const out = await raw(fresh, "POST", "/_matrix/client/v3/logout");
    assert.equal(out.status, 200);
    const who = await raw(fresh, "GET", "/_matrix/client/v3/account/whoami");
    assert.equal(who.status, 401);
    assert.equal(who.body.errcode, "M_UNKNOWN_TOKEN");
});

test("room tags reach alice's client as m.tag room account data, read back, and are hers alone", async () => {
    const tagsPath = `/_matrix/client/v3/user/${enc(s.aliceCreds.userId)}/rooms/${enc(s.roomId)}/tags`;
    const tagged = waitForEvent(s.alice, RoomEvent.Tags, (ev, room) => room.roomId === s.roomId && ev.getContent().tags?.["u.interop"], "m.tag at alice");
    await s.alice.setRoomTag(s.roomId, "u.interop", { order: 0.5 });
    const [ev] = await tagged;
    assert.deepEqual(ev.getContent().tags["u.interop"], { order: 0.5 });
    assert.deepEqual(s.alice.getRoom(s.roomId).tags["u.interop"], { order: 0.5 }, "the room model has the tag");
    const got = await raw(s.alice, "GET", tagsPath);
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, { tags: { "u.interop": { order: 0.5 } } });
    const bad = await raw(s.alice, "PUT", `${tagsPath}/u.bad`, { order: 7 });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errcode, "M_INVALID_PARAM", "order outside [0, 1]");
    const theirs = await raw(s.bob, "GET", tagsPath);
    assert.equal(theirs.status, 403);
    assert.equal(theirs.body.errcode, "M_FORBIDDEN");
    const untagged = waitForEvent(s.alice, RoomEvent.Tags, (ev, room) => room.roomId === s.roomId && !ev.getContent().tags?.["u.interop"], "m.tag without the tag at alice");
    await s.alice.deleteRoomTag(s.roomId, "u.interop");
    await untagged;
    assert.deepEqual((await raw(s.alice, "GET", tagsPath)).body, { tags: {} });
});

test("push rules are added, read, switched, retuned and deleted; each change reaches the client as m.push_rules", async () => {
    const rule = "/_matrix/client/v3/pushrules/global/content/interop-cake";
    const added = waitForEvent(s.alice, ClientEvent.AccountData, (ev) => ev.getType() === "m.push_rules" && ev.getContent().global?.content?.some((r) => r.rule_id === "interop-cake"), "m.push_rules with the new rule at alice");
    await s.alice.addPushRule("global", "content", "interop-cake", { pattern: "cake", actions: ["notify", { set_tweak: "highlight" }] });
    await added;
    assert.ok(s.alice.pushRules.global.content.some((r) => r.rule_id === "interop-cake"), "the client's rules have it");
    const got = await raw(s.alice, "GET", rule);
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, { rule_id: "interop-cake", pattern: "cake", actions: ["notify", { set_tweak: "highlight" }], default: false, enabled: true });
    await s.alice.setPushRuleEnabled("global", "content", "interop-cake", false);
    assert.deepEqual((await raw(s.alice, "GET", `${rule}/enabled`)).body, { enabled: false });
    const message = "/_matrix/client/v3/pushrules/global/underride/.m.rule.message";
    const before = (await raw(s.alice, "GET", `${message}/actions`)).body.actions;
    await s.alice.setPushRuleActions("global", "underride", ".m.rule.message", ["notify", { set_tweak: "sound", value: "bing" }]);
    assert.deepEqual((await raw(s.alice, "GET", `${message}/actions`)).body, { actions: ["notify", { set_tweak: "sound", value: "bing" }] });
    await s.alice.setPushRuleActions("global", "underride", ".m.rule.message", before);
    const replaceDefault = await raw(s.alice, "PUT", message, { actions: [] });
    assert.equal(replaceDefault.status, 400, "a server-default rule is not replaced");
    assert.equal(replaceDefault.body.errcode, "M_INVALID_PARAM");
    const removed = waitForEvent(s.alice, ClientEvent.AccountData, (ev) => ev.getType() === "m.push_rules" && !ev.getContent().global?.content?.some((r) => r.rule_id === "interop-cake"), "m.push_rules without the rule at alice");
    await s.alice.deletePushRule("global", "content", "interop-cake");
    await removed;
    const gone = await raw(s.alice, "GET", rule);
    assert.equal(gone.status, 404);
    assert.equal(gone.body.errcode, "M_NOT_FOUND");
    const global = await raw(s.alice, "GET", "/_matrix/client/v3/pushrules/global/");
    assert.equal(global.status, 200);
    for (const kind of ["override", "content", "room", "sender", "underride"]) assert.ok(Array.isArray(global.body[kind]), `${kind} is an array`);
});

test("alice's presence reaches bob over /sync; a stranger may not read it", async () => {
    const seen = waitForEvent(
        s.bob,
        ClientEvent.Event,
        (ev) => ev.getType() === "m.presence" && ev.getSender() === s.aliceCreds.userId && ev.getContent().presence === "unavailable",
        "alice's m.presence at bob",
    );
    await s.alice.setPresence({ presence: "unavailable", status_msg: "in the interop tests" });
    const [ev] = await seen;
    assert.equal(ev.getContent().status_msg, "in the interop tests");
    const user = s.bob.getUser(s.aliceCreds.userId);
    assert.equal(user.presence, "unavailable");
    assert.equal(user.presenceStatusMsg, "in the interop tests");
    const got = await s.bob.getPresence(s.aliceCreds.userId);
    assert.equal(got.presence, "unavailable");
    assert.equal(typeof got.last_active_ago, "number");
    const stranger = await raw(s.carol, "GET", `/_matrix/client/v3/presence/${enc(s.aliceCreds.userId)}/status`);
    assert.equal(stranger.status, 403);
    assert.equal(stranger.body.errcode, "M_FORBIDDEN");
    const notMine = await raw(s.bob, "PUT", `/_matrix/client/v3/presence/${enc(s.aliceCreds.userId)}/status`, { presence: "online" });
    assert.equal(notMine.status, 403);
});

test("a room created with visibility public is listed in the directory, and its creator can unlist it", async () => {
    const { room_id } = await s.alice.createRoom({ visibility: "public", preset: "public_chat", name: `Interop square ${RUN}`, topic: "All welcome" });
    s.publicRoomId = room_id;
    const vis = await vfetch(`${HS}/_matrix/client/v3/directory/list/room/${enc(room_id)}`);
    assert.equal(vis.status, 200);
    assert.deepEqual(await vis.json(), { visibility: "public" });
    const anon = await vfetch(`${HS}/_matrix/client/v3/publicRooms?limit=10`);
    assert.equal(anon.status, 200, "GET /publicRooms needs no access token");
    const page = await anon.json();
    const entry = page.chunk.find((r) => r.room_id === room_id);
    assert.ok(entry, "the room is listed");
    assert.equal(entry.name, `Interop square ${RUN}`);
    assert.equal(entry.topic, "All welcome");
    assert.equal(entry.num_joined_members, 1);
    assert.equal(entry.join_rule, "public");
    const searched = await s.bob.publicRooms({ filter: { generic_search_term: `square ${RUN}` } });
    assert.deepEqual(searched.chunk.map((r) => r.room_id), [room_id], "POST /publicRooms finds it by name");
    const refused = await raw(s.bob, "PUT", `/_matrix/client/v3/directory/list/room/${enc(room_id)}`, { visibility: "private" });
    assert.equal(refused.status, 403, "bob is not in the room");
    assert.equal(refused.body.errcode, "M_FORBIDDEN");
    await s.alice.setRoomDirectoryVisibility(room_id, "private");
    assert.deepEqual(await s.alice.getRoomDirectoryVisibility(room_id), { visibility: "private" });
    const after = await s.bob.publicRooms({ filter: { generic_search_term: `square ${RUN}` } });
    assert.deepEqual(after.chunk, [], "unlisted");
});

test("a user outside the room gets 403 M_FORBIDDEN for its /messages and /state", async () => {
    for (const path of [`/rooms/${enc(s.roomId)}/messages?dir=b`, `/rooms/${enc(s.roomId)}/state`, `/rooms/${enc(s.roomId)}/state/m.room.create/`, `/rooms/${enc(s.roomId)}/members`]) {
        const res = await raw(s.carol, "GET", `/_matrix/client/v3${path}`);
        assert.equal(res.status, 403, `${path} -> ${res.status} ${JSON.stringify(res.body)}`);
        assert.equal(res.body?.errcode, "M_FORBIDDEN", path);
    }
    const send = await raw(s.carol, "PUT", `/_matrix/client/v3/rooms/${enc(s.roomId)}/send/m.room.message/t${RUN}`, { msgtype: "m.text", body: "let me in" });
    assert.equal(send.status, 403);
    assert.equal(send.body?.errcode, "M_FORBIDDEN");
});

test("bob leaves: alice sees it, and bob can no longer send", async () => {
    const left = waitForEvent(
        s.alice,
        RoomMemberEvent.Membership,
        (ev, member) => member.roomId === s.roomId && member.userId === s.bobCreds.userId && member.membership === "leave",
        "bob's leave at alice",
    );
    const myLeave = waitForEvent(s.bob, RoomEvent.MyMembership, (room, m) => room.roomId === s.roomId && m === "leave", "bob's own leave via sync");
    await s.bob.leave(s.roomId);
    await Promise.all([left, myLeave]);
    const joinedRooms = await s.bob.getJoinedRooms();
    assert.ok(!joinedRooms.joined_rooms.includes(s.roomId));
    const send = await raw(s.bob, "PUT", `/_matrix/client/v3/rooms/${enc(s.roomId)}/send/m.room.message/after-leave-${RUN}`, { msgtype: "m.text", body: "still here?" });
    assert.equal(send.status, 403);
    assert.equal(send.body?.errcode, "M_FORBIDDEN");
});

// Room moderation in a group room (invite-only, alice the admin, bob a
// member): invite, PUT state, kick, ban, unban, forget, each seen by the
// other side through /sync.
const isGroup = (room) => room?.roomId === s.groupId;
const forbidden = (what) => (e) => {
    assert.equal(e.httpStatus, 403, `${what}: ${e.httpStatus} ${e.errcode}`);
    assert.equal(e.errcode, "M_FORBIDDEN", what);
    return true;
};
const myMembership = (client, membership, what) =>
    waitForEvent(client, RoomEvent.MyMembership, (room, m) => isGroup(room) && m === membership, what);
const bobAtAlice = (membership, what) =>
    waitForEvent(
        s.alice,
        RoomMemberEvent.Membership,
        (ev, member) => member.roomId === s.groupId && member.userId === s.bobCreds.userId && member.membership === membership,
        what,
    );

test("alice invites bob to an invite-only group room with /invite; bob sees the invite and joins", async () => {
    const { room_id } = await s.alice.createRoom({ preset: "private_chat", name: `Interop group ${RUN}` });
    s.groupId = room_id;
    const invited = myMembership(s.bob, "invite", "bob's group invite");
    await s.alice.invite(s.groupId, s.bobCreds.userId, "join us");
    const [room] = await invited;
    const member = room.getMember(s.bobCreds.userId);
    assert.equal(member.events.member.getSender(), s.aliceCreds.userId);
    assert.equal(member.events.member.getContent().reason, "join us");
    const joined = bobAtAlice("join", "bob's group join at alice");
    await s.bob.joinRoom(s.groupId);
    await joined;
});

test("alice sets the topic with PUT state and bob sees it; bob, below state_default, may not", async () => {
    const topic = waitForEvent(s.bob, RoomEvent.Timeline, (ev, room) => isGroup(room) && ev.getType() === "m.room.topic", "the topic at bob");
    const { event_id } = await s.alice.sendStateEvent(s.groupId, "m.room.topic", { topic: "moderation drill" }, "");
    const [ev] = await topic;
    assert.equal(ev.getId(), event_id);
    assert.equal(ev.getSender(), s.aliceCreds.userId);
    assert.equal(ev.getStateKey(), "");
    assert.equal(s.bob.getRoom(s.groupId).currentState.getStateEvents("m.room.topic", "").getContent().topic, "moderation drill");
    await assert.rejects(s.bob.sendStateEvent(s.groupId, "m.room.topic", { topic: "bob's topic" }, ""), forbidden("bob puts the topic"));
    const back = await raw(s.bob, "GET", `/_matrix/client/v3/rooms/${enc(s.groupId)}/state/m.room.topic/`);
    assert.equal(back.status, 200);
    assert.deepEqual(back.body, { topic: "moderation drill" }, "bob's refused topic changed nothing");
});

test("bob may not kick alice; alice kicks bob, who sees it and may not rejoin uninvited", async () => {
    await assert.rejects(s.bob.kick(s.groupId, s.aliceCreds.userId, "coup"), forbidden("bob kicks the admin"));
    const kicked = myMembership(s.bob, "leave", "bob's kick at bob");
    const atAlice = bobAtAlice("leave", "bob's kick at alice");
    await s.alice.kick(s.groupId, s.bobCreds.userId, "drill: kick");
    const [[room]] = await Promise.all([kicked, atAlice]);
    const ev = room.getMember(s.bobCreds.userId).events.member;
    assert.equal(ev.getSender(), s.aliceCreds.userId, "the leave was sent by alice: a kick");
    assert.equal(ev.getContent().membership, "leave");
    assert.equal(ev.getContent().reason, "drill: kick");
    await assert.rejects(s.bob.joinRoom(s.groupId), forbidden("a kicked user rejoins an invite-only room"));
    const send = await raw(s.bob, "PUT", `/_matrix/client/v3/rooms/${enc(s.groupId)}/send/m.room.message/kicked-${RUN}`, { msgtype: "m.text", body: "still here?" });
    assert.equal(send.status, 403);
    assert.equal(send.body?.errcode, "M_FORBIDDEN");
    // Invited again, he may.
    const invited = myMembership(s.bob, "invite", "bob's second invite");
    await s.alice.invite(s.groupId, s.bobCreds.userId);
    await invited;
    const joined = bobAtAlice("join", "bob's rejoin at alice");
    await s.bob.joinRoom(s.groupId);
    await joined;
});

test("alice bans bob: bob sees the ban and can neither join nor be invited", async () => {
    await assert.rejects(s.bob.ban(s.groupId, s.aliceCreds.userId, "coup"), forbidden("bob bans the admin"));
    const banned = myMembership(s.bob, "ban", "bob's ban at bob");
    const atAlice = bobAtAlice("ban", "bob's ban at alice");
    await s.alice.ban(s.groupId, s.bobCreds.userId, "drill: ban");
    const [[room]] = await Promise.all([banned, atAlice]);
    const ev = room.getMember(s.bobCreds.userId).events.member;
    assert.equal(ev.getSender(), s.aliceCreds.userId);
    assert.equal(ev.getContent().reason, "drill: ban");
    await assert.rejects(s.bob.joinRoom(s.groupId), forbidden("a banned user joins"));
    await assert.rejects(s.alice.invite(s.groupId, s.bobCreds.userId), forbidden("a banned user is invited"));
    const member = await s.alice.getStateEvent(s.groupId, "m.room.member", s.bobCreds.userId);
    assert.equal(member.membership, "ban", "still banned");
});

test("alice unbans bob: both see his membership return to leave, and he may be invited again", async () => {
    const unbanned = waitForEvent(s.bob, RoomEvent.MyMembership, (room, m, prev) => isGroup(room) && m === "leave" && prev === "ban", "bob's unban at bob");
    const atAlice = bobAtAlice("leave", "bob's unban at alice");
    await s.alice.unban(s.groupId, s.bobCreds.userId);
    await Promise.all([unbanned, atAlice]);
    const member = await s.alice.getStateEvent(s.groupId, "m.room.member", s.bobCreds.userId);
    assert.equal(member.membership, "leave", "unban means leave, not join");
    const invited = myMembership(s.bob, "invite", "bob's invite after the unban");
    await s.alice.invite(s.groupId, s.bobCreds.userId);
    await invited;
    const joined = bobAtAlice("join", "bob's join after the unban at alice");
    await s.bob.joinRoom(s.groupId);
    await joined;
});

test("bob may forget the group only after leaving; then it is gone from his /sync and /messages", async () => {
    const forgetPath = `/_matrix/client/v3/rooms/${enc(s.groupId)}/forget`;
    const early = await raw(s.bob, "POST", forgetPath, {});
    assert.equal(early.status, 400, `forget while joined: ${JSON.stringify(early.body)}`);
    const leaveRooms = async () => {
        const filter = enc(JSON.stringify({ room: { include_leave: true } }));
        const res = await raw(s.bob, "GET", `/_matrix/client/v3/sync?timeout=0&filter=${filter}`);
        assert.equal(res.status, 200);
        return Object.keys(res.body.rooms?.leave ?? {});
    };
    const left = bobAtAlice("leave", "bob's leave from the group at alice");
    await s.bob.leave(s.groupId);
    await left;
    assert.ok((await leaveRooms()).includes(s.groupId), "before forgetting, the left group is in the leave section");
    const history = await raw(s.bob, "GET", `/_matrix/client/v3/rooms/${enc(s.groupId)}/messages?dir=b&limit=5`);
    assert.equal(history.status, 200, "a left room's history up to the leave is readable");
    assert.deepEqual(await s.bob.forget(s.groupId), {});
    assert.equal(s.bob.getRoom(s.groupId), null, "bob's client dropped the room");
    assert.ok(!(await leaveRooms()).includes(s.groupId), "a forgotten room is gone from the leave section");
    const after = await raw(s.bob, "GET", `/_matrix/client/v3/rooms/${enc(s.groupId)}/messages?dir=b&limit=5`);
    assert.equal(after.status, 403, "a forgotten room's history is refused");
    assert.equal(after.body?.errcode, "M_FORBIDDEN");
    const member = await s.alice.getStateEvent(s.groupId, "m.room.member", s.bobCreds.userId);
    assert.equal(member.membership, "leave", "alice still sees bob's leave");
});

// The operations issue 2 names, then those of room tags, push rules, presence,
// the room directory and moderation; each must have had a 2xx response validated.
const REQUIRED = [
    "getVersions", "getCapabilities", "getPushRules", "sync", "createRoom", "getJoinedRooms",
    "sendMessage", "getRoomState", "getRoomStateWithKey", "getRoomEvents", "getMembersByRoom",
    "getJoinedMembersByRoom", "getOneRoomEvent", "getEventContext", "redactEvent",
    "setRoomAlias", "getRoomIdByAlias", "getUserProfile", "getDevices", "login", "register",
    "getTokenOwner", "defineFilter", "getFilter", "joinRoom", "leaveRoom", "setTyping",
    "postReceipt", "uploadContent", "setProfileField", "setAccountData", "getAccountData", "setAccountDataPerRoom", "getAccountDataPerRoom", "setReadMarker",
    "getLoginFlows", "getProfileField", "getDevice", "updateDevice", "checkUsernameAvailability", "getConfigAuthed",
    "queryKeys", "logout",
    "getRoomTags", "setRoomTag", "deleteRoomTag",
    "getPushRulesGlobal", "getPushRule", "setPushRule", "deletePushRule", "isPushRuleEnabled", "setPushRuleEnabled",
    "getPushRuleActions", "setPushRuleActions",
    "getPresence", "setPresence",
    "getRoomVisibilityOnDirectory", "setRoomVisibilityOnDirectory", "getPublicRooms", "queryPublicRooms",
    "inviteUser", "kick", "ban", "unban", "forgetRoom", "setRoomStateWithKey",
];

test("every response above validates against the spec's schema for its operation", () => {
    const bad = spec.violations();
    if (spec.unmatched.length) console.log(`# requests with no operation in the vendored spec:\n#   ${[...new Set(spec.unmatched)].join("\n#   ")}`);
    console.log(`# ${spec.results.length} responses validated, ${bad.length} with violations`);
    assert.equal(bad.length, 0, `schema violations:\n${spec.report(bad)}`);
});

test("the validated /sync responses included every section issue 2 names", () => {
    const syncs = spec.results.filter((r) => r.operationId === "sync" && r.status === 200).map((r) => ({ since: r.query.has("since"), b: r.body }));
    const rooms = (b, kind) => Object.values(b.rooms?.[kind] ?? {});
    const any = (pred) => syncs.some(pred);
    const seen = {
        initial: any((x) => !x.since),
        incremental: any((x) => x.since),
        "rooms.join timeline": any((x) => rooms(x.b, "join").some((r) => r.timeline?.events?.length)),
        "rooms.join state": any((x) => rooms(x.b, "join").some((r) => (r.state?.events ?? r.state_after?.events)?.length)),
        "rooms.join ephemeral": any((x) => rooms(x.b, "join").some((r) => r.ephemeral?.events?.length)),
        "rooms.join account_data": any((x) => rooms(x.b, "join").some((r) => r.account_data?.events?.length)),
        "rooms.invite invite_state": any((x) => rooms(x.b, "invite").some((r) => r.invite_state?.events?.length)),
        "rooms.leave": any((x) => rooms(x.b, "leave").length),
        account_data: any((x) => x.b.account_data?.events?.length),
        presence: any((x) => x.b.presence?.events?.some((e) => e.type === "m.presence")),
    };
    const missing = Object.entries(seen).filter(([, v]) => !v).map(([k]) => k);
    assert.deepEqual(missing, [], `sections never seen in ${syncs.length} validated /sync responses`);
});

test("the validation covered every endpoint issue 2 names", () => {
    const covered = spec.coveredOperations();
    const ops = new Set(spec.routes.map((r) => r.operationId));
    for (const op of REQUIRED) assert.ok(ops.has(op), `${op} is an operation in the vendored spec`);
    const missing = REQUIRED.filter((op) => !covered.has(op));
    assert.deepEqual(missing, [], "operations never validated");
});
