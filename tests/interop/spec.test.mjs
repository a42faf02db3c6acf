// The validator itself: it must reject what the spec rejects, or a green
// conversation test would prove nothing. No server needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SpecValidator } from "./lib/spec.mjs";

const v = new SpecValidator();
const HS = "http://127.0.0.1:1";
const messages = (r) => r.errors.map((e) => `${e.instancePath} ${e.message}`).join("; ");

test("paths resolve to their spec operations, literal segments before parameters", () => {
    const op = (m, p) => v.route(m, p)?.operationId;
    assert.equal(op("GET", "/_matrix/client/versions"), "getVersions");
    assert.equal(op("GET", "/_matrix/client/v3/pushrules/"), "getPushRules");
    assert.equal(op("GET", "/_matrix/client/v3/pushrules/global/"), "getPushRulesGlobal");
    assert.equal(op("GET", "/_matrix/client/v3/rooms/%21r%3Ahs/state"), "getRoomState");
    assert.equal(op("GET", "/_matrix/client/v3/rooms/%21r%3Ahs/state/m.room.create/"), "getRoomStateWithKey");
    assert.equal(op("PUT", "/_matrix/client/v3/rooms/%21r%3Ahs/send/m.room.message/t1"), "sendMessage");
    assert.equal(op("POST", "/_matrix/client/v3/rooms/%21r%3Ahs/invite"), "inviteUser");
    assert.equal(op("POST", "/_matrix/client/r0/login"), "login", "r0 maps onto v3");
    assert.equal(op("GET", "/_matrix/client/v3/no/such/thing"), undefined);
});

test("a response that matches its schema passes", () => {
    const r = v.check("GET", `${HS}/_matrix/client/v3/account/whoami`, 200, { user_id: "@a:hs", device_id: "D" });
    assert.equal(r.ok, true, messages(r));
});

test("a missing required field, a wrong type and a bad identifier format are violations", () => {
    assert.equal(v.check("GET", `${HS}/_matrix/client/versions`, 200, { unstable_features: {} }).ok, false, "versions is required");
    assert.equal(v.check("GET", `${HS}/_matrix/client/versions`, 200, { versions: "v1.1" }).ok, false, "versions is an array");
    const r = v.check("GET", `${HS}/_matrix/client/v3/account/whoami`, 200, { user_id: "alice" });
    assert.equal(r.ok, false);
    assert.match(messages(r), /user_id must match format "mx-user-id"/);
    const room = v.check("POST", `${HS}/_matrix/client/v3/createRoom`, 200, { room_id: "not-a-room" });
    assert.equal(room.ok, false, "room_id must be an mx-room-id");
});

test("an undocumented 2xx status, a non-JSON body and a bad error body are violations", () => {
    assert.equal(v.check("GET", `${HS}/_matrix/client/v3/account/whoami`, 201, { user_id: "@a:hs" }).ok, false);
    assert.equal(v.check("GET", `${HS}/_matrix/client/v3/account/whoami`, 200, undefined).ok, false);
    assert.equal(v.check("GET", `${HS}/_matrix/client/v3/account/whoami`, 200, { user_id: "@a:hs" }, "text/plain").ok, false);
    assert.equal(v.check("GET", `${HS}/_matrix/client/v3/rooms/%21r%3Ahs/messages`, 403, { error: "no errcode" }).ok, false);
    assert.equal(v.check("GET", `${HS}/_matrix/client/v3/rooms/%21r%3Ahs/messages`, 403, { errcode: "M_FORBIDDEN", error: "x" }).ok, true);
});

test("/sync checks nested events, and event contents against their event schemas", () => {
    const sync = (events) => ({
        next_batch: "s1",
        rooms: { join: { "!r:hs": { timeline: { events, limited: false } } } },
    });
    const member = (content) => ({ type: "m.room.member", state_key: "@a:hs", sender: "@a:hs", event_id: "$e", origin_server_ts: 1, content });
    assert.equal(v.check("GET", `${HS}/_matrix/client/v3/sync`, 200, sync([member({ membership: "join" })])).ok, true);
    const noMembership = v.check("GET", `${HS}/_matrix/client/v3/sync`, 200, sync([member({ displayname: "A" })]));
    assert.equal(noMembership.ok, false);
    assert.match(messages(noMembership), /content must have required property 'membership' \(event schema m.room.member\)/);
    const noSender = v.check("GET", `${HS}/_matrix/client/v3/sync`, 200, sync([{ type: "m.room.message", event_id: "$e", origin_server_ts: 1, content: { msgtype: "m.text", body: "x" } }]));
    assert.equal(noSender.ok, false, "a timeline event needs a sender");
    const textWithoutBody = v.check("GET", `${HS}/_matrix/client/v3/sync`, 200, sync([{ type: "m.room.message", sender: "@a:hs", event_id: "$e", origin_server_ts: 1, content: { msgtype: "m.text" } }]));
    assert.equal(textWithoutBody.ok, false, "m.text needs a body");
    const redacted = { type: "m.room.message", sender: "@a:hs", event_id: "$e", origin_server_ts: 1, content: {}, unsigned: { redacted_because: { type: "m.room.redaction", sender: "@a:hs", event_id: "$r", origin_server_ts: 2, redacts: "$e", content: { redacts: "$e" } } } };
    assert.equal(v.check("GET", `${HS}/_matrix/client/v3/sync`, 200, sync([redacted])).ok, true, "a redacted event's empty content is fine");
});
