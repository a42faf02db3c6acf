// Flows of a client nobody here wrote, against a real `hotline serve`
// (started by scripts/web.sh test): matrix-js-sdk's own `InteractiveAuth`,
// the class Element and other released clients drive user-interactive auth
// with. Its `poll()` resubmits the request with `auth` carrying only the
// session; a server that answers that with an error makes the client show
// the error in its password dialog. Hotline answers the plain challenge.
//
// Environment (set by scripts/web.sh): HOTLINE_URL.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient, InteractiveAuth } from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("silent");
const URL_ = process.env.HOTLINE_URL;
if (!URL_) throw new Error("HOTLINE_URL must be set: run through scripts/web.sh test");

/** Registers a new account through InteractiveAuth, as a client's sign-up form does. */
async function register(username, password) {
  const mx = createClient({ baseUrl: URL_ });
  const states = [];
  const ia = new InteractiveAuth({
    matrixClient: mx,
    doRequest: (auth) => mx.registerRequest({ username, password, auth: auth ?? undefined, initial_device_display_name: "released client" }),
    stateUpdated: (stage, status) => states.push({ stage, ...status }),
    requestEmailToken: () => Promise.reject(new Error("no email stage offered")),
  });
  const session = await ia.attemptAuth();
  return { session, states };
}

test("registration through matrix-js-sdk's InteractiveAuth completes the server's flow, with no error shown", async () => {
  const { session, states } = await register(`ia${Date.now()}`, "correct horse battery staple");
  assert.ok(session.access_token, "signed in at the end of the flow");
  assert.ok(session.device_id);
  assert.deepEqual(
    states.filter((s) => s.errcode || s.error),
    [],
    "no stage was told an error",
  );
});

test("deleting a device through InteractiveAuth: its poll with only the session is answered with the challenge, not an error", async () => {
  const password = "another correct horse";
  const { session } = await register(`iadel${Date.now()}`, password);
  const mx = createClient({ baseUrl: URL_, accessToken: session.access_token, userId: session.user_id, deviceId: session.device_id });
  // A second device, the one deleted (signed in on a client of its own:
  // a login takes over the client's access token).
  const second = await createClient({ baseUrl: URL_ }).loginWithPassword(session.user_id, password);
  const states = [];
  let polled = false;
  let ia;
  ia = new InteractiveAuth({
    matrixClient: mx,
    doRequest: (auth) => mx.deleteDevice(second.device_id, auth ?? undefined),
    stateUpdated: async (stage, status) => {
      states.push({ stage, ...status });
      assert.equal(stage, "m.login.password");
      if (!polled) {
        // A released client polls while its password dialog is open.
        polled = true;
        await ia.poll();
        return;
      }
      ia.submitAuthDict({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: session.user_id },
        password,
      });
    },
    requestEmailToken: () => Promise.reject(new Error("no email stage offered")),
  });
  await ia.attemptAuth();
  assert.ok(polled, "the client polled");
  assert.ok(states.length >= 2, `the poll was answered with the stage again: ${JSON.stringify(states)}`);
  assert.deepEqual(
    states.filter((s) => s.errcode || s.error),
    [],
    "the poll's answer told the dialog no error",
  );
  const { devices } = await mx.getDevices();
  assert.ok(!devices.some((d) => d.device_id === second.device_id), "the device is deleted");
  assert.ok(devices.some((d) => d.device_id === session.device_id), "the other device stays");
});
