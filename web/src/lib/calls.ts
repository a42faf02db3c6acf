// 1:1 voice calls with matrix-js-sdk's MatrixCall (m.call.invite, answer,
// candidates, hangup), so any Matrix client can call a Hotline user and back.
import { MatrixClient } from "matrix-js-sdk";
import { CallEventHandlerEvent } from "matrix-js-sdk/lib/webrtc/callEventHandler";
import {
  CallErrorCode,
  CallEvent,
  CallState,
  MatrixCall,
} from "matrix-js-sdk/lib/webrtc/call";
import { displayName, LINE_EVENT } from "./lines";

export type CallPhase = "ringing-in" | "ringing-out" | "connecting" | "connected" | "ended";

export interface CallView {
  call: MatrixCall;
  roomId: string;
  counterpart: string;
  name: string;
  phase: CallPhase;
  muted: boolean;
  connectedAt: number | null;
  endedReason: string | null;
  /** The call ended because it could not connect (the message stays until dismissed). */
  failed: boolean;
}

/**
 * How long a call may stay "Connecting…" (answer sent or received, no ICE
 * candidate pair working yet) before it is ended as failed. On a working
 * network ICE connects in well under a second, through a relay in one or two;
 * matrix-js-sdk alone would keep restarting ICE forever.
 */
export const CONNECT_TIMEOUT_MS = 7000;

const NO_RELAY =
  "relay-only calls are on, but this homeserver has no relay server (TURN). " +
  "Turn off \u201cRelay calls through the server\u201d in Settings to call directly.";

// ---- MatrixRTC membership on lines ----
// A line's texts and calls go into the principal's contact log, which the
// server reads from what it holds in clear text. In an encrypted room a 1:1
// call's m.call.* events are encrypted, so while this device is in a call on
// a line it also publishes its MatrixRTC membership (MSC4143 `m.call.member`,
// state keyed `_{userId}_{deviceId}`; line rooms give it power 0): joined
// when it joins the call (the caller on placing it, the callee on
// answering), `{}` when it leaves (hang up, ended by the other side, failed,
// page closed). Ordinary rooms keep plain 1:1 calls only.

/** MSC4143 MatrixRTC membership state. */
export const CALL_MEMBER_EVENT = "m.call.member";
/** How long a membership lasts if this device never says it left (MSC4143's default, 4 hours). */
const MEMBERSHIP_EXPIRES_MS = 14_400_000;

interface Membership {
  roomId: string;
  key: string;
  /** The join, sent or failed; a leave waits for it so it lands after. */
  joined: Promise<void>;
  left: boolean;
}

const memberships = new WeakMap<MatrixCall, Membership>();
const openMemberships = new Set<Membership>();

function isLineRoom(mx: MatrixClient, roomId: string): boolean {
  return !!mx.getRoom(roomId)?.currentState.getStateEvents(LINE_EVENT, "");
}

function membershipKey(mx: MatrixClient): string {
  return `_${mx.getUserId()}_${mx.getDeviceId()}`;
}

/** This device joins the line's call (MatrixRTC membership), once per call. */
function joinMembership(mx: MatrixClient, call: MatrixCall, roomId: string): void {
  if (memberships.has(call) || !isLineRoom(mx, roomId) || !mx.getDeviceId()) return;
  const key = membershipKey(mx);
  const content = {
    application: "m.call",
    call_id: "",
    scope: "m.room",
    device_id: mx.getDeviceId(),
    expires: MEMBERSHIP_EXPIRES_MS,
    focus_active: { type: "mesh" },
    foci_preferred: [],
    created_ts: Date.now(),
  };
  const m: Membership = {
    roomId,
    key,
    joined: mx.sendStateEvent(roomId, CALL_MEMBER_EVENT as any, content as any, key).then(
      () => undefined,
      () => undefined,
    ),
    left: false,
  };
  memberships.set(call, m);
  openMemberships.add(m);
}

/** This device left the call: its membership becomes `{}`. */
function leaveMembership(mx: MatrixClient, call: MatrixCall): void {
  const m = memberships.get(call);
  if (!m || m.left) return;
  m.left = true;
  m.joined
    .then(() => mx.sendStateEvent(m.roomId, CALL_MEMBER_EVENT as any, {} as any, m.key))
    .catch(() => undefined)
    .finally(() => openMemberships.delete(m));
}

/**
 * Closing the page ends the call: the membership is emptied with a request
 * that outlives the page (keepalive), best effort.
 */
function leaveOnUnload(mx: MatrixClient): () => void {
  const onHide = () => {
    const token = mx.getAccessToken();
    for (const m of openMemberships) {
      if (m.left || !token) continue;
      m.left = true;
      const url =
        mx.getHomeserverUrl().replace(/\/$/, "") +
        `/_matrix/client/v3/rooms/${encodeURIComponent(m.roomId)}/state/${CALL_MEMBER_EVENT}/${encodeURIComponent(m.key)}`;
      fetch(url, {
        method: "PUT",
        keepalive: true,
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: "{}",
      }).catch(() => undefined);
    }
    openMemberships.clear();
  };
  window.addEventListener("pagehide", onHide);
  return () => window.removeEventListener("pagehide", onHide);
}

/**
 * A membership of this device left standing on a line (the page closed
 * before it could say so, the browser crashed) is emptied at start, unless
 * this device is in a call there.
 */
export function clearStaleMemberships(mx: MatrixClient): void {
  const key = membershipKey(mx);
  for (const room of mx.getRooms()) {
    if (room.getMyMembership() !== "join" || !room.currentState.getStateEvents(LINE_EVENT, "")) continue;
    const ev = room.currentState.getStateEvents(CALL_MEMBER_EVENT, key);
    if (!ev || Object.keys(ev.getContent()).length === 0) continue;
    if (current && current.roomId === room.roomId && current.phase !== "ended") continue;
    mx.sendStateEvent(room.roomId, CALL_MEMBER_EVENT as any, {} as any, key).catch(() => undefined);
  }
}

type Listener = (v: CallView | null) => void;

let current: CallView | null = null;
const listeners = new Set<Listener>();
let audioEl: HTMLAudioElement | null = null;
let ring: Ringer | null = null;
let notification: Notification | null = null;
let connectTimer: number | null = null;
// The types of local ICE candidates each call gathered ("host", "srflx",
// "relay"), kept past the end of the call to explain a failure.
const gathered = new WeakMap<MatrixCall, Set<string>>();

function trackCandidates(call: MatrixCall, pc: RTCPeerConnection | undefined): void {
  if (!pc || gathered.has(call)) return;
  const types = new Set<string>();
  gathered.set(call, types);
  pc.addEventListener("icecandidate", (e) => {
    if (e.candidate?.type) types.add(e.candidate.type);
  });
}

function emit(): void {
  const v = current ? { ...current } : null;
  for (const l of listeners) l(v);
}

export function onCall(l: Listener): () => void {
  listeners.add(l);
  l(current ? { ...current } : null);
  return () => listeners.delete(l);
}

export function currentCall(): CallView | null {
  return current;
}

function phaseOf(call: MatrixCall): CallPhase {
  switch (call.state) {
    case CallState.Ringing:
      return "ringing-in";
    case CallState.InviteSent:
    case CallState.Fledgling:
    case CallState.WaitLocalMedia:
    case CallState.CreateOffer:
      return call.direction === "inbound" ? "connecting" : "ringing-out";
    case CallState.CreateAnswer:
    case CallState.Connecting:
      return "connecting";
    case CallState.Connected:
      return "connected";
    case CallState.Ended:
      return "ended";
    default:
      return "connecting";
  }
}

function remoteAudio(): HTMLAudioElement {
  if (!audioEl) {
    audioEl = document.createElement("audio");
    audioEl.autoplay = true;
    audioEl.setAttribute("aria-hidden", "true");
    document.body.appendChild(audioEl);
  }
  return audioEl;
}

function attach(mx: MatrixClient, call: MatrixCall, roomId: string): void {
  const counterpart = call.getOpponentMember()?.userId || call.invitee || guessCounterpart(mx, roomId) || "";
  current = {
    call,
    roomId,
    counterpart,
    name: counterpart ? displayName(mx, counterpart, mx.getRoom(roomId)) : "Unknown",
    phase: phaseOf(call),
    muted: false,
    connectedAt: null,
    endedReason: null,
    failed: false,
  };
  trackCandidates(call, call.peerConn);
  call.on(CallEvent.PeerConnectionCreated, (pc: RTCPeerConnection) => trackCandidates(call, pc));
  call.on(CallEvent.State, (state: CallState) => {
    if (!current || current.call !== call) return;
    current.phase = phaseOf(call);
    if (state === CallState.Connected && !current.connectedAt) current.connectedAt = Date.now();
    // Only the first connection is watched: a connected call that loses its
    // network path goes back to Connecting and matrix-js-sdk restarts ICE
    // (and hangs up after 30 s without it).
    if (state === CallState.Connecting && !current.connectedAt) watchConnect(mx, call);
    if (state === CallState.Connected || state === CallState.Ended) clearConnectTimer();
    if (state === CallState.Ended) leaveMembership(mx, call);
    if (state !== CallState.Ringing) stopRinging();
    if (state === CallState.InviteSent) startRinging("out");
    emit();
  });
  call.on(CallEvent.FeedsChanged, () => {
    const feed = call.getRemoteFeeds().find((f) => f.stream.getAudioTracks().length > 0);
    const el = remoteAudio();
    if (feed && el.srcObject !== feed.stream) {
      el.srcObject = feed.stream;
      el.play().catch(() => undefined);
    }
  });
  call.on(CallEvent.Hangup, () => finish(mx, call));
  call.on(CallEvent.Error, (err) => {
    if (current && current.call === call) {
      current.endedReason = err.message || "Call failed";
      emit();
    }
  });
  emit();
}

function guessCounterpart(mx: MatrixClient, roomId: string): string | null {
  const room = mx.getRoom(roomId);
  const me = mx.getUserId();
  const other = room?.getMembers().find((m) => m.userId !== me);
  return other?.userId || null;
}

function clearConnectTimer(): void {
  if (connectTimer !== null) clearTimeout(connectTimer);
  connectTimer = null;
}

function watchConnect(mx: MatrixClient, call: MatrixCall): void {
  if (connectTimer !== null) return;
  connectTimer = window.setTimeout(async () => {
    connectTimer = null;
    if (!current || current.call !== call || call.state !== CallState.Connecting) return;
    const why = await whyNotConnected(mx, call);
    if (!current || current.call !== call || call.state !== CallState.Connecting) return;
    fail(call, why);
  }, CONNECT_TIMEOUT_MS);
}

/** Ends the call as failed, telling the other side (reason ice_failed). */
function fail(call: MatrixCall, why: string): void {
  if (!current || current.call !== call) return;
  current.endedReason = `The call could not connect: ${why}`;
  current.failed = true;
  call.hangup(CallErrorCode.IceFailed, false);
}

/** The likeliest reason ICE found no working candidate pair, from the peer connection's own stats. */
async function whyNotConnected(mx: MatrixClient, call: MatrixCall): Promise<string> {
  let remote: number | null = null;
  try {
    const stats = await call.peerConn?.getStats();
    remote = 0;
    stats?.forEach((s: any) => {
      if (s.type === "remote-candidate") remote!++;
    });
  } catch {
    // a closed connection has no stats
  }
  return localReason(mx, call) || (remote === 0 ? "no network address came from the other side." : pathReason());
}

/** What this side can tell about its own part of a failed connection, if anything. */
function localReason(mx: MatrixClient, call: MatrixCall): string | null {
  const relayOnly = mx.forceTURN;
  if (relayOnly && mx.getTurnServers().length === 0) return NO_RELAY;
  const local = gathered.get(call) || new Set<string>();
  if (relayOnly && !local.has("relay")) return "the relay server (TURN) could not be reached, and calls here are relay-only.";
  if (local.size === 0) return "this device found no network address to call from.";
  return null;
}

function pathReason(): string {
  return `no network path between you and ${current?.name || "the other side"} worked (ICE failed).`;
}

/** Relay-only with no relay: such a call cannot connect, so it ends at once. */
async function relayMissing(mx: MatrixClient): Promise<boolean> {
  if (!mx.forceTURN) return false;
  if (mx.getTurnServers().length === 0) await mx.checkTurnServers().catch(() => undefined);
  return mx.getTurnServers().length === 0;
}

function finish(mx: MatrixClient, call: MatrixCall): void {
  stopRinging();
  clearConnectTimer();
  leaveMembership(mx, call);
  if (!current || current.call !== call) return;
  current.phase = "ended";
  const reason = call.hangupReason;
  if (reason === CallErrorCode.IceFailed || reason === CallErrorCode.NoUserMedia) current.failed = true;
  if (!current.endedReason) {
    current.endedReason =
      reason === CallErrorCode.UserHangup
        ? "Call ended"
        : reason === "user_busy"
          ? "Busy"
          : reason === CallErrorCode.InviteTimeout
            ? "No answer"
            : reason === CallErrorCode.NoUserMedia
              ? "No microphone available"
              : reason === CallErrorCode.IceFailed
                ? // The other side gave up first; what this side saw may say more.
                  `The call could not connect: ${localReason(mx, call) || pathReason()}`
                : "Call ended";
  }
  if (audioEl) audioEl.srcObject = null;
  emit();
  const ended = current;
  // A failure stays until dismissed (or a while), to be read.
  setTimeout(
    () => {
      if (current === ended) {
        current = null;
        emit();
      }
    },
    ended.failed ? 60_000 : 2500,
  );
}

/** Listens for incoming calls; returns a function to stop. */
export function watchIncomingCalls(mx: MatrixClient): () => void {
  const onIncoming = (call: MatrixCall) => {
    if (current && current.phase !== "ended") {
      call.reject();
      return;
    }
    attach(mx, call, call.roomId!);
    startRinging("in");
    notifyIncoming(current!.name);
  };
  mx.on(CallEventHandlerEvent.Incoming, onIncoming);
  const stopUnload = leaveOnUnload(mx);
  return () => {
    mx.off(CallEventHandlerEvent.Incoming, onIncoming);
    stopUnload();
  };
}

/**
 * Calls `invitee` in a room. The invite names them (`invitee`, VoIP v1), so
 * on a line with aides only the called person rings, not everyone in it.
 */
export async function placeCall(mx: MatrixClient, roomId: string, invitee?: string): Promise<void> {
  if (current && current.phase !== "ended") throw new Error("You are already in a call");
  const call = mx.createCall(roomId);
  if (!call) throw new Error("Calls are not supported in this browser");
  if (invitee && invitee !== mx.getUserId()) call.invitee = invitee;
  attach(mx, call, roomId);
  if (await relayMissing(mx)) {
    fail(call, NO_RELAY);
    return;
  }
  // On a line, the caller is in the call from placing it (MatrixRTC).
  joinMembership(mx, call, roomId);
  try {
    await call.placeVoiceCall();
  } catch (e) {
    leaveMembership(mx, call);
    throw e;
  }
}

export async function answer(mx: MatrixClient): Promise<void> {
  if (!current) return;
  const call = current.call;
  const roomId = current.roomId;
  stopRinging();
  current.phase = "connecting";
  emit();
  if (await relayMissing(mx)) {
    fail(call, NO_RELAY);
    return;
  }
  // The callee joins the line's call on answering.
  if (call.state === CallState.Ended) return;
  joinMembership(mx, call, roomId);
  await call.answer(true, false);
}

export function decline(): void {
  if (!current) return;
  stopRinging();
  current.call.reject();
}

export function hangUp(): void {
  if (!current) return;
  stopRinging();
  if (current.phase === "ended") {
    current = null;
    emit();
    return;
  }
  current.call.hangup(CallErrorCode.UserHangup, false);
}

export function toggleMute(): void {
  if (!current) return;
  const muted = !current.muted;
  current.call.setMicrophoneMuted(muted);
  current.muted = muted;
  emit();
}

// ---- ringing: a WebAudio tone (no asset) and a browser notification ----

class Ringer {
  private ctx: AudioContext;
  private timer: number;
  constructor(kind: "in" | "out") {
    this.ctx = new AudioContext();
    const beep = () => {
      const t = this.ctx.currentTime;
      const freqs = kind === "in" ? [880, 660] : [440];
      freqs.forEach((f, i) => {
        const o = this.ctx.createOscillator();
        const g = this.ctx.createGain();
        o.frequency.value = f;
        g.gain.setValueAtTime(0, t + i * 0.25);
        g.gain.linearRampToValueAtTime(kind === "in" ? 0.15 : 0.06, t + i * 0.25 + 0.02);
        g.gain.linearRampToValueAtTime(0, t + i * 0.25 + (kind === "in" ? 0.22 : 1.0));
        o.connect(g).connect(this.ctx.destination);
        o.start(t + i * 0.25);
        o.stop(t + i * 0.25 + 1.1);
      });
    };
    beep();
    this.timer = window.setInterval(beep, kind === "in" ? 2000 : 3000);
  }
  stop(): void {
    clearInterval(this.timer);
    this.ctx.close().catch(() => undefined);
  }
}

function startRinging(kind: "in" | "out"): void {
  stopRinging();
  try {
    ring = new Ringer(kind);
  } catch {
    ring = null;
  }
}

function stopRinging(): void {
  ring?.stop();
  ring = null;
  notification?.close();
  notification = null;
}

function notifyIncoming(name: string): void {
  if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
  try {
    notification = new Notification("Incoming call", {
      body: `${name} is calling you on Hotline`,
      tag: "hotline-call",
      requireInteraction: true,
    });
    notification.onclick = () => window.focus();
  } catch {
    notification = null;
  }
}

/** Asks for notification permission (from a user gesture). */
export function askNotificationPermission(): void {
  if (typeof Notification !== "undefined" && Notification.permission === "default") {
    Notification.requestPermission().catch(() => undefined);
  }
}
