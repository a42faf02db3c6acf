// A Matrix client that is not the Hotline UI: plain matrix-js-sdk with its
// Rust crypto and MatrixCall, driven by the end-to-end tests through
// window.interop. It proves an ordinary Matrix client (as in Element) can
// call a Hotline web user and be called back.
import { ClientEvent, createClient, KnownMembership, MatrixClient, RoomEvent } from "matrix-js-sdk";
import { CallEventHandlerEvent } from "matrix-js-sdk/lib/webrtc/callEventHandler";
import { CallEvent, CallState, MatrixCall } from "matrix-js-sdk/lib/webrtc/call";

import { logger } from "matrix-js-sdk/lib/logger";

// Quiet the SDK's debug logging (and MatrixRTC, which this client does not use).
{
  const l = logger as any;
  const parent = l.methodFactory;
  l.methodFactory = (method: string, level: number, name: string) =>
    (method === "warn" || method === "error") && !String(name).includes("MatrixRTC") ? parent(method, level, name) : () => undefined;
  l.rebuild?.();
}

const log = (m: string) => {
  document.getElementById("log")!.textContent += m + "\n";
};

interface Interop {
  client?: MatrixClient;
  call?: MatrixCall;
  callState?: string;
  autoAnswer: boolean;
  start(hs: string, user: string, password: string): Promise<string>;
  placeCall(roomId: string): Promise<void>;
  hangup(): void;
  sendText(roomId: string, body: string): Promise<void>;
  texts(roomId: string): string[];
}

function track(call: MatrixCall): void {
  w.interop.call = call;
  w.interop.callState = call.state;
  call.on(CallEvent.State, (s: CallState) => {
    w.interop.callState = s;
    log(`call ${call.callId}: ${s}`);
  });
  call.on(CallEvent.FeedsChanged, () => {
    const feed = call.getRemoteFeeds()[0];
    const el = document.getElementById("remote") as HTMLAudioElement;
    if (feed && el.srcObject !== feed.stream) el.srcObject = feed.stream;
  });
  call.on(CallEvent.Hangup, () => log(`call ${call.callId}: hung up (${call.hangupReason})`));
}

const w = window as unknown as { interop: Interop };
w.interop = {
  autoAnswer: true,
  async start(hs, user, password) {
    const login = await createClient({ baseUrl: hs }).loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user },
      password,
      initial_device_display_name: "matrix-js-sdk interop",
    });
    const client = createClient({
      baseUrl: hs,
      userId: login.user_id,
      deviceId: login.device_id,
      accessToken: login.access_token,
    });
    this.client = client;
    await client.initRustCrypto({ useIndexedDB: false });
    client.on(CallEventHandlerEvent.Incoming, (call: MatrixCall) => {
      log(`incoming call ${call.callId}`);
      track(call);
      if (this.autoAnswer) call.answer(true, false);
    });
    client.on(RoomEvent.MyMembership, (room, membership) => {
      if (membership === KnownMembership.Invite) client.joinRoom(room.roomId).catch((e) => log(`join failed: ${e}`));
    });
    const synced = new Promise<void>((resolve) =>
      client.on(ClientEvent.Sync, (s) => (s === "PREPARED" || s === "SYNCING") && resolve()),
    );
    await client.startClient({ initialSyncLimit: 20 });
    await synced;
    for (const room of client.getRooms()) {
      if (room.getMyMembership() === KnownMembership.Invite) await client.joinRoom(room.roomId);
    }
    log(`signed in as ${login.user_id} (${login.device_id})`);
    return login.user_id;
  },
  async placeCall(roomId) {
    const call = this.client!.createCall(roomId)!;
    track(call);
    await call.placeVoiceCall();
  },
  hangup() {
    this.call?.hangup("user_hangup" as any, false);
  },
  async sendText(roomId, body) {
    await this.client!.sendTextMessage(roomId, body);
  },
  texts(roomId) {
    const room = this.client!.getRoom(roomId);
    return (room?.getLiveTimeline().getEvents() || [])
      .filter((e) => e.getType() === "m.room.message")
      .map((e) => e.getContent().body as string);
  },
};
log("ready");
