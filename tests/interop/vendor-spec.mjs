#!/usr/bin/env node
// Copies the parts of the Matrix spec that the interop tests validate against
// into ./spec, keeping the spec's layout (data/api/client-server/...,
// data/event-schemas/schema/...) so that relative $refs still resolve, plus
// the spec's LICENSE (Apache-2.0). Only the API files listed below and the
// files they $ref (transitively; refs inside examples are not followed) are
// copied. The copies are committed; run this again to refresh them:
//
//   node tests/interop/vendor-spec.mjs [path/to/matrix-spec]   (default ../shared/matrix-spec beside the repo)
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.resolve(process.argv[2] ?? path.join(here, "../../../shared/matrix-spec"));
const dst = path.join(here, "spec");

// The client-server API files whose operations Hotline serves and the tests call.
export const API_FILES = [
    "account-data.yaml", "authed-content-repo.yaml", "capabilities.yaml", "content-repo.yaml",
    "create_room.yaml", "cross_signing.yaml", "device_management.yaml", "directory.yaml",
    "event_context.yaml", "filter.yaml", "inviting.yaml", "joining.yaml", "key_backup.yaml",
    "keys.yaml", "kicking.yaml", "banning.yaml", "leaving.yaml", "list_joined_rooms.yaml", "list_public_rooms.yaml",
    "login.yaml", "logout.yaml", "message_pagination.yaml", "presence.yaml", "profile.yaml",
    "pushrules.yaml", "read_markers.yaml", "receipts.yaml", "redaction.yaml", "registration.yaml",
    "relations.yaml", "room_send.yaml", "room_state.yaml", "rooms.yaml", "sync.yaml", "tags.yaml",
    "to_device.yaml", "typing.yaml", "versions.yaml", "voip.yaml", "whoami.yaml",
].map((f) => `data/api/client-server/${f}`);

// Event schemas: the content of these event types is checked wherever an
// event of the type appears in a response (lib/spec.mjs).
export const EVENT_FILES = [
    "m.direct", "m.fully_read", "m.presence", "m.push_rules", "m.reaction", "m.receipt", "m.tag", "m.typing",
    "m.room.avatar", "m.room.canonical_alias", "m.room.create", "m.room.encrypted", "m.room.encryption",
    "m.room.guest_access", "m.room.history_visibility", "m.room.join_rules", "m.room.member", "m.room.message",
    "m.room.message$m.text", "m.room.message$m.notice", "m.room.message$m.emote", "m.room.message$m.file",
    "m.room.message$m.image", "m.room.name", "m.room.pinned_events", "m.room.power_levels", "m.room.redaction",
    "m.room.server_acl", "m.room.tombstone", "m.room.topic", "m.room_key", "m.room_key_request", "m.forwarded_room_key",
    "m.room_key.withheld", "m.secret.request", "m.secret.send", "m.dummy",
].map((t) => `data/event-schemas/schema/${t}.yaml`);

function refsOf(node, out) {
    if (Array.isArray(node)) node.forEach((n) => refsOf(n, out));
    else if (node && typeof node === "object") {
        for (const [k, v] of Object.entries(node)) {
            if (k === "example" || k === "examples") continue;
            if (k === "$ref" && typeof v === "string") out.push(v);
            else refsOf(v, out);
        }
    }
    return out;
}

const seen = new Set();
const queue = [...API_FILES, ...EVENT_FILES];
while (queue.length) {
    const rel = queue.shift();
    if (seen.has(rel)) continue;
    if (!fs.existsSync(path.join(src, rel))) {
        // e.g. the identity-service API, referenced only by requestToken request bodies
        console.warn(`not in this copy of the spec, skipped: ${rel}`);
        continue;
    }
    seen.add(rel);
    const text = fs.readFileSync(path.join(src, rel), "utf8");
    for (const ref of refsOf(YAML.parse(text), [])) {
        const file = ref.split("#")[0];
        if (file) queue.push(path.posix.normalize(path.posix.join(path.posix.dirname(rel), file)));
    }
}

fs.rmSync(dst, { recursive: true, force: true });
for (const rel of [...seen, "LICENSE"]) {
    fs.mkdirSync(path.dirname(path.join(dst, rel)), { recursive: true });
    fs.copyFileSync(path.join(src, rel), path.join(dst, rel));
}
fs.writeFileSync(
    path.join(dst, "README.md"),
    "Copied from the Matrix specification (https://github.com/matrix-org/matrix-spec, Apache-2.0, see LICENSE)\n" +
        "by `node tests/interop/vendor-spec.mjs`: the client-server API files and event schemas the interop\n" +
        "tests validate responses against and the files they reference, in the spec's own layout.\n" +
        "Do not edit by hand.\n",
);
console.log(`copied ${seen.size} files into ${path.relative(process.cwd(), dst)}`);
