// 1:1 voice calls with matrix-js-sdk's MatrixCall (m.call.invite, answer,
// candidates, hangup), so any Matrix client can call a Hotline user and back;
// on a line, a call of up to six (both principals and their aides): a full
// mesh of such 1:1 calls between the devices whose MatrixRTC membership says
// they are in it (see "line calls" below).
import { EventStatus, MatrixClient, MatrixEvent, RoomStateEvent } from "matrix-js-sdk";
import { CallEventHandlerEvent } from "matrix-js-sdk/lib/webrtc/callEventHandler";
import {
  CallDirection,
  CallErrorCode,
  CallEvent,
  CallState,
  MatrixCall,
} from "matrix-js-sdk/lib/webrtc/call";
import { displayName, LINE_EVENT, lineAides, lineState, nameOf } from "./lines";
import { ringsFor } from "./availability";
import {
  CALL_MEMBER_EVENT,
  callMembers,
  joinOrder,
  MEMBERSHIP_EXPIRES_MS,
  memberKey,
  RtcMember,
} from "./rtc";

export type CallPhase = "ringing-in" | "ringing-out" | "connecting" | "connected" | "ended";

export interface CallView {
  /**
   * The call: a 1:1 call's, or a line call's first (the one that rang);
   * null for a line call joined from the header before anyone answered.
   */
  call: MatrixCall | null;
  roomId: string;
  counterpart: string;
  name: string;
  phase: CallPhase;
  muted: boolean;
  connectedAt: number | null;
  endedReason: string | null;
  /** The call ended because it could not connect (the message stays until dismissed). */
  failed: boolean;
  /** On a line: who is in the call, and the latest join or leave. */
  line: LineCallView | null;
}

/** A line call as the UI shows it. */
export interface LineCallView {
  /** Everyone in the call, this device's user too: the principals first (the line's order), then the aides. */
  participants: CallParticipant[];
  /** The latest "NAME joined the call" / "NAME left the call", if any. */
  news: string | null;
  /** Someone rung into the call who has not answered yet. */
  ringing: string | null;
}

export interface CallParticipant {
  userId: string;
  /** Their membership's state key (null: someone in the call without one, another client). */
  key: string | null;
  self: boolean;
  /** How this device is connected to them. */
  link: "self" | "waiting" | "connecting" | "connected" | "failed" | "ended";
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
// server reads from what it holds in clear text. In an encrypted room a
// call's m.call.* events are encrypted, so while this device is in a call on
// a line it also publishes its MatrixRTC membership (MSC4143 `m.call.member`,
// state keyed `_{userId}_{deviceId}`; line rooms give it power 0): joined
// when it joins the call (the caller on placing it, the callee on
// answering, anyone on "Join call"), `{}` when it leaves (hang up, nobody
// else left, failed, page closed). Ordinary rooms keep plain 1:1 calls only.

export { CALL_MEMBER_EVENT };

interface Membership {
  roomId: string;
  key: string;
  createdTs: number;
  /** The join, sent or failed; a leave waits for it so it lands after. */
  joined: Promise<void>;
  left: boolean;
}

const openMemberships = new Set<Membership>();

function isLineRoom(mx: MatrixClient, roomId: string): boolean {
  return !!mx.getRoom(roomId)?.currentState.getStateEvents(LINE_EVENT, "");
}

function membershipKey(mx: MatrixClient): string {
  return memberKey(mx.getUserId()!, mx.getDeviceId()!);
}

/** This device joins the line's call (MatrixRTC membership). */
function joinMembership(mx: MatrixClient, roomId: string): Membership {
  const key = membershipKey(mx);
  const createdTs = Date.now();
  const content = {
    application: "m.call",
    call_id: "",
    scope: "m.room",
    device_id: mx.getDeviceId(),
    expires: MEMBERSHIP_EXPIRES_MS,
    focus_active: { type: "mesh" },
    foci_preferred: [],
    created_ts: createdTs,
  };
  const m: Membership = {
    roomId,
    key,
    createdTs,
    joined: mx.sendStateEvent(roomId, CALL_MEMBER_EVENT as any, content as any, key).then(
      () => undefined,
      () => undefined,
    ),
    left: false,
  };
  openMemberships.add(m);
  return m;
}

/** This device left the call: its membership becomes `{}` (after `first`: the call's last events). */
function leaveMembership(mx: MatrixClient, m: Membership, first: Promise<void> = Promise.resolve()): void {
  if (m.left) return;
  Promise.all([m.joined, first])
    .then(() => {
      if (m.left) return;
      m.left = true;
      return mx.sendStateEvent(m.roomId, CALL_MEMBER_EVENT as any, {} as any, m.key);
    })
    .catch(() => undefined)
    .finally(() => openMemberships.delete(m));
}

/**
 * Resolves once the room has no call event of ours still being sent (a
 * hangup is encrypted, then sent), or after `max` ms: the server takes an
 * encrypted event for a call's signalling only up to a second after its
 * sender's membership ends, so the membership is emptied after them.
 */
function callEventsSent(mx: MatrixClient, roomId: string, max = 3000): Promise<void> {
  const room = mx.getRoom(roomId);
  const started = Date.now();
  return new Promise((resolve) => {
    const check = () => {
      let pending: MatrixEvent[] = [];
      try {
        pending = (room?.getPendingEvents() || []).filter(
          (e) =>
            e.getType().startsWith("m.call.") &&
            e.status !== null &&
            e.status !== EventStatus.SENT &&
            e.status !== EventStatus.NOT_SENT &&
            e.status !== EventStatus.CANCELLED,
        );
      } catch {
        pending = [];
      }
      if (!pending.length || Date.now() - started > max) resolve();
      else setTimeout(check, 100);
    };
    setTimeout(check, 0);
  });
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
    line: null,
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
async function whyNotConnected(mx: MatrixClient, call: MatrixCall, name = current?.name): Promise<string> {
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
  return localReason(mx, call) || (remote === 0 ? "no network address came from the other side." : pathReason(name));
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

function pathReason(name = current?.name): string {
  return `no network path between you and ${name || "the other side"} worked (ICE failed).`;
}

/** Relay-only with no relay: such a call cannot connect, so it ends at once. */
async function relayMissing(mx: MatrixClient): Promise<boolean> {
  if (!mx.forceTURN) return false;
  if (mx.getTurnServers().length === 0) await mx.checkTurnServers().catch(() => undefined);
  return mx.getTurnServers().length === 0;
}

/** Whether a call's end was a failure to connect (the message stays until dismissed). */
function failedEnd(call: MatrixCall): boolean {
  const reason = call.hangupReason;
  return reason === CallErrorCode.IceFailed || reason === CallErrorCode.NoUserMedia;
}

/** Why a call ended, in words. */
function endedText(mx: MatrixClient, call: MatrixCall, name = current?.name): string {
  const reason = call.hangupReason;
  return reason === CallErrorCode.UserHangup
    ? "Call ended"
    : reason === "user_busy"
      ? "Busy"
      : reason === CallErrorCode.InviteTimeout
        ? "No answer"
        : reason === CallErrorCode.NoUserMedia
          ? "No microphone available"
          : reason === CallErrorCode.IceFailed
            ? // The other side gave up first; what this side saw may say more.
              `The call could not connect: ${localReason(mx, call) || pathReason(name)}`
            : "Call ended";
}

function finish(mx: MatrixClient, call: MatrixCall): void {
  stopRinging();
  clearConnectTimer();
  if (!current || current.call !== call) return;
  current.phase = "ended";
  if (failedEnd(call)) current.failed = true;
  if (!current.endedReason) current.endedReason = endedText(mx, call);
  if (audioEl) audioEl.srcObject = null;
  emit();
  dropWhenDone(current);
}

/** An ended call's bar goes after a moment; a failure stays until dismissed (or a while), to be read. */
function dropWhenDone(ended: CallView): void {
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

// ---- line calls: a mesh of up to six ----
//
// On a line (a room with `org.hotline.line`) a call is a MatrixRTC session
// with focus `mesh`: who is in it is the room's `m.call.member` state (see
// lib/rtc.ts), and each pair of devices in it talks over a 1:1 MatrixCall
// of their own (room events `m.call.*`, the invite naming its `invitee`, so
// only that person's devices look at it). The later joiner of a pair places
// that pair's call (join order: the membership's `created_ts`, then user
// id, then device id); a device in the call answers by itself an invite
// from a device that is in it too, and refuses one from anyone else (busy).
// A device not in the call ignores an invite meant for another device of
// its user that is in it, and rings for any other (the first call, or
// someone rung into the call). Anyone on the line can join a call going on
// (`joinLineCall`, "Join call" in the chat header); at most six can be in it.

export const MAX_LINE_CALL = 6;
const FULL = `This call is full: at most ${MAX_LINE_CALL} people can be in a call on a line.`;
/** How long a member who is to call us (the later joiner of the pair) may take to do so. */
const EXPECT_MS = 20_000;

interface Link {
  call: MatrixCall;
  peer: string;
  /** The peer device's membership key, once known (an outgoing call's, when answered). */
  key: string | null;
  audio: HTMLAudioElement;
  timer: number | null;
  connected: boolean;
  failure: string | null;
}

let lineCall: LineCall | null = null;

/** One membership of a member: a device that leaves and joins again is a new one. */
function stint(m: RtcMember): string {
  return `${m.key}\n${m.createdTs}`;
}

class LineCall {
  readonly me: string;
  readonly myKey: string;
  readonly links = new Map<MatrixCall, Link>();
  /** The call that rang (placed by us from "Call NAME", or received). */
  ring: MatrixCall | null = null;
  membership: Membership | null = null;
  ended = false;
  answering = false;
  muted = false;
  connectedAt: number | null = null;
  /** Other members (`stint`: a membership, by key and time), when first seen. */
  private seen = new Map<string, number>();
  /** Other members' membership keys, once seen. */
  private seenKeys = new Set<string>();
  /** Members (`stint`) this device had (or tried) a call with. */
  private linked = new Set<string>();
  /** Who was in the call at the last look (user → name), to tell joins and leaves; null before we joined. */
  private roster: Map<string, string> | null = null;
  private news: string | null = null;
  private lastEnded: Link | null = null;
  private stops: (() => void)[] = [];

  constructor(
    readonly mx: MatrixClient,
    readonly roomId: string,
  ) {
    this.me = mx.getUserId()!;
    this.myKey = membershipKey(mx);
    const onState = (ev: MatrixEvent) => {
      if (ev.getRoomId() === roomId && (ev.getType() === CALL_MEMBER_EVENT || ev.getType() === "m.room.member")) this.update();
    };
    mx.on(RoomStateEvent.Events, onState);
    const timer = window.setInterval(() => this.update(), 5000);
    this.stops.push(
      () => mx.off(RoomStateEvent.Events, onState),
      () => clearInterval(timer),
    );
  }

  get joined(): boolean {
    return !!this.membership;
  }

  /** The others in the call, by their membership. */
  others(): RtcMember[] {
    return callMembers(this.mx.getRoom(this.roomId)).filter((m) => m.key !== this.myKey);
  }

  private mine(): RtcMember {
    return {
      key: this.myKey,
      userId: this.me,
      deviceId: this.mx.getDeviceId()!,
      createdTs: this.membership?.createdTs ?? Date.now(),
      expiresAt: Infinity,
    };
  }

  /** Whether this device places the call of its pair with `o`: the later joiner does. */
  private placesCallTo(o: RtcMember): boolean {
    return joinOrder(this.mine(), o) > 0;
  }

  private linkTo(o: RtcMember): Link | undefined {
    for (const l of this.links.values()) {
      if (l.call.state === CallState.Ended) continue;
      if (l.key === o.key || (l.key === null && l.peer === o.userId)) return l;
    }
    return undefined;
  }

  /** The membership `key` names now has (or had) a call with us. */
  private markLinked(key: string | null): void {
    const o = key ? this.others().find((m) => m.key === key) : undefined;
    if (o) this.linked.add(stint(o));
  }

  /** Publishes our membership; resolves once the server has it. */
  async join(): Promise<void> {
    if (this.membership) return;
    this.membership = joinMembership(this.mx, this.roomId);
    await this.membership.joined;
  }

  /** A 1:1 call of the mesh (or the one that rang): its audio, state and end. */
  addLink(call: MatrixCall, peer: string, key: string | null): Link {
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.setAttribute("aria-hidden", "true");
    document.body.appendChild(audio);
    const link: Link = { call, peer, key, audio, timer: null, connected: false, failure: null };
    this.links.set(call, link);
    this.markLinked(key);
    trackCandidates(call, call.peerConn);
    call.on(CallEvent.PeerConnectionCreated, (pc: RTCPeerConnection) => trackCandidates(call, pc));
    call.on(CallEvent.State, (state: CallState) => {
      if (this.ended) return;
      if (state === CallState.Connected) {
        link.connected = true;
        if (!this.connectedAt) this.connectedAt = Date.now();
      }
      const party = (call as any).opponentPartyId;
      const who = call.getOpponentMember()?.userId;
      if (
        state !== CallState.Ended &&
        call.direction === CallDirection.Outbound &&
        typeof party === "string" &&
        who &&
        link.key !== memberKey(who, party)
      ) {
        // The device that answered.
        const answered = memberKey(who, party);
        if (call !== this.ring && !this.others().some((o) => o.key === answered)) {
          // A call of the mesh answered by a device that is not in the call
          // (not one of ours: it ignores such invites) would listen unlisted.
          link.failure = "The call could not connect: it was answered by a device that is not in the call.";
          call.hangup(CallErrorCode.UserHangup, false);
          return;
        }
        link.key = answered;
        this.markLinked(answered);
      }
      // Only the first connection is watched (see watchConnect).
      if (state === CallState.Connecting && !link.connected) this.watchLink(link);
      if ((state === CallState.Connected || state === CallState.Ended) && link.timer !== null) {
        clearTimeout(link.timer);
        link.timer = null;
      }
      if (call === this.ring) {
        if (state !== CallState.Ringing) stopRinging();
        if (state === CallState.InviteSent) startRinging("out");
      }
      this.render();
    });
    call.on(CallEvent.FeedsChanged, () => {
      const feed = call.getRemoteFeeds().find((f) => f.stream.getAudioTracks().length > 0);
      if (feed && audio.srcObject !== feed.stream) {
        audio.srcObject = feed.stream;
        audio.play().catch(() => undefined);
      }
    });
    call.on(CallEvent.Hangup, () => this.linkEnded(link));
    call.on(CallEvent.Error, (err) => {
      if (!link.failure && call === this.ring && !this.joined) link.failure = err.message || "Call failed";
    });
    return link;
  }

  private watchLink(link: Link): void {
    if (link.timer !== null) return;
    link.timer = window.setTimeout(async () => {
      link.timer = null;
      if (this.ended || link.call.state !== CallState.Connecting) return;
      const why = await whyNotConnected(this.mx, link.call, this.nameOf(link.peer));
      if (this.ended || link.call.state !== CallState.Connecting) return;
      link.failure = `The call could not connect: ${why}`;
      link.call.hangup(CallErrorCode.IceFailed, false);
    }, CONNECT_TIMEOUT_MS);
  }

  private linkEnded(link: Link): void {
    if (link.timer !== null) clearTimeout(link.timer);
    link.timer = null;
    link.audio.srcObject = null;
    link.audio.remove();
    if (this.ended) return;
    if (!link.failure && link.call.hangupReason === CallErrorCode.IceFailed) {
      link.failure = endedText(this.mx, link.call, this.nameOf(link.peer));
    }
    this.lastEnded = link;
    if (link.call === this.ring) stopRinging();
    if (!this.joined) {
      // The ring ended before we answered (declined, cancelled, answered elsewhere).
      this.finishWith(link);
      return;
    }
    this.update();
  }

  private finishWith(link: Link | null): void {
    const call = link?.call;
    const failed = !!link?.failure || (!!call && failedEnd(call));
    const reason = link?.failure || (call ? endedText(this.mx, call, this.nameOf(link!.peer)) : "Call ended");
    this.end(reason, failed);
  }

  /** Places the missing calls of the mesh, drops those with whoever left, tells joins and leaves, ends when alone. */
  update(): void {
    if (this.ended) return;
    const room = this.mx.getRoom(this.roomId);
    if (!room || room.getMyMembership() !== "join") {
      this.end("You are no longer on this line.", false);
      return;
    }
    if (!this.joined) {
      this.render();
      return;
    }
    const now = Date.now();
    const others = this.others();
    // More than six: the latest joiners leave again.
    const order = [...others, this.mine()].sort(joinOrder);
    if (order.findIndex((m) => m.key === this.myKey) >= MAX_LINE_CALL) {
      this.end(FULL, true);
      return;
    }
    for (const o of others) {
      if (!this.seen.has(stint(o))) this.seen.set(stint(o), now);
      this.seenKeys.add(o.key);
      if (this.linkTo(o)) this.linked.add(stint(o));
      if (this.linked.has(stint(o)) || !this.placesCallTo(o)) continue;
      this.linked.add(stint(o));
      this.placeLink(o).catch(() => undefined);
    }
    // A peer whose membership is gone (left, expired, taken off the line)
    // is no longer in the call: our call with them ends too.
    const keys = new Set(others.map((o) => o.key));
    for (const l of this.links.values()) {
      if (l.call.state === CallState.Ended || !l.key) continue;
      if (!keys.has(l.key) && this.seenKeys.has(l.key)) l.call.hangup(CallErrorCode.UserHangup, false);
    }
    // Nobody else left: no call of ours going on, nobody about to call us.
    const live = [...this.links.values()].some((l) => l.call.state !== CallState.Ended);
    const awaited = others.some((o) => !this.linked.has(stint(o)) && now - (this.seen.get(stint(o)) ?? now) < EXPECT_MS);
    if (!live && !awaited) {
      if (this.lastEnded) {
        this.finishWith(this.lastEnded);
        return;
      }
      if (now - this.membership!.createdTs > EXPECT_MS) {
        this.end("Nobody in the call answered.", false);
        return;
      }
    }
    this.tell();
    this.render();
  }

  private async placeLink(o: RtcMember): Promise<void> {
    const call = this.mx.createCall(this.roomId);
    if (!call) return;
    call.invitee = o.userId;
    this.addLink(call, o.userId, o.key);
    this.render();
    if (this.ended) return;
    await call.placeVoiceCall();
    if (this.muted) await call.setMicrophoneMuted(true);
  }

  /** An invite while this device is in the call: answered when its sender's device is in it too. */
  incoming(call: MatrixCall): void {
    const sender = call.getOpponentMember()?.userId;
    const party = (call as any).opponentPartyId;
    const key = sender && typeof party === "string" ? memberKey(sender, party) : null;
    const inCall = !!key && this.others().some((o) => o.key === key);
    if (this.ended || !this.joined || !inCall) {
      call.reject();
      return;
    }
    this.addLink(call, sender!, key);
    call
      .answer(true, false)
      .then(() => (this.muted ? call.setMicrophoneMuted(true) : undefined))
      .catch(() => undefined);
    this.update();
  }

  /** Who this device is connected to, and everyone in the call. */
  participants(): CallParticipant[] {
    const room = this.mx.getRoom(this.roomId);
    const out: CallParticipant[] = [];
    const seen = new Set<string>([this.me]);
    // (stable: others in join order within a rank)
    const linkState = (l: Link | undefined): CallParticipant["link"] =>
      !l ? "waiting" : l.call.state === CallState.Connected ? "connected" : l.call.state === CallState.Ended ? (l.failure ? "failed" : "ended") : "connecting";
    const links = [...this.links.values()];
    const latest = (user: string, key: string | null) =>
      links.filter((l) => l.peer === user && (key === null || l.key === key || l.key === null)).pop();
    for (const o of this.others()) {
      if (seen.has(o.userId)) continue;
      seen.add(o.userId);
      out.push({ userId: o.userId, key: o.key, self: false, link: linkState(latest(o.userId, o.key)) });
    }
    // Someone in a call with us without a membership (another Matrix client).
    for (const l of links) {
      if (seen.has(l.peer) || l.call.state === CallState.Ended || l.call.state === CallState.InviteSent) continue;
      if (l.call === this.ring && !this.joined) continue;
      seen.add(l.peer);
      out.push({ userId: l.peer, key: l.key, self: false, link: linkState(l) });
    }
    // Principals first (the line's order), then the aides by principal, then anyone else.
    const line = room ? lineState(room) : null;
    const aides = room ? lineAides(room).map((a) => a.userId) : [];
    const rank = (u: string) => {
      const p = line?.principals.indexOf(u) ?? -1;
      if (p >= 0) return p;
      const a = aides.indexOf(u);
      return a >= 0 ? 10 + a : 100;
    };
    out.push({ userId: this.me, key: this.myKey, self: true, link: "self" });
    return out.sort((a, b) => rank(a.userId) - rank(b.userId));
  }

  private nameOf(userId: string): string {
    return nameOf(this.mx, userId, this.mx.getRoom(this.roomId)).name;
  }

  /** "NAME joined the call" / "NAME left the call", against who was in it at the last look. */
  private tell(): void {
    const now = new Map<string, string>();
    for (const p of this.participants()) if (!p.self) now.set(p.userId, this.nameOf(p.userId));
    if (this.roster) {
      const joined = [...now.keys()].filter((u) => !this.roster!.has(u));
      const left = [...this.roster.keys()].filter((u) => !now.has(u));
      const told = [
        ...joined.map((u) => `${now.get(u)} joined the call`),
        ...left.map((u) => `${this.roster!.get(u)} left the call`),
      ];
      if (told.length) this.news = told.join(". ");
    }
    this.roster = now;
  }

  phase(): CallPhase {
    if (this.ended) return "ended";
    if (!this.joined) return this.answering ? "connecting" : "ringing-in";
    const links = [...this.links.values()];
    if (links.some((l) => l.call.state === CallState.Connected)) return "connected";
    if (this.ring && this.ring.direction === CallDirection.Outbound && this.ring.state !== CallState.Ended) {
      const p = phaseOf(this.ring);
      if (p === "ringing-out") return p;
    }
    return "connecting";
  }

  /** The view of this call, as `current`. */
  render(): void {
    if (!current || current.line === null || lineCall !== this) return;
    const room = this.mx.getRoom(this.roomId);
    const ringing =
      this.ring && this.ring.direction === CallDirection.Outbound && this.ring.state !== CallState.Ended && this.ring.state !== CallState.Connected
        ? this.ring.invitee || null
        : null;
    current.phase = this.phase();
    current.connectedAt = this.connectedAt;
    current.muted = this.muted;
    current.line = {
      participants: this.joined ? this.participants() : [],
      news: this.news,
      ringing: ringing && !this.others().some((o) => o.userId === ringing) ? ringing : null,
    };
    if (room && current.counterpart === "" && this.ring) current.counterpart = this.ring.getOpponentMember()?.userId || "";
    emit();
  }

  /** Leaves the call: hangs up every call of the mesh, then empties the membership. */
  end(reason: string | null, failed: boolean): void {
    if (this.ended) return;
    this.ended = true;
    stopRinging();
    for (const l of this.links.values()) {
      if (l.timer !== null) clearTimeout(l.timer);
      l.timer = null;
      // (A call never placed has nothing to tell anyone.)
      if (l.call.state !== CallState.Ended && l.call.state !== CallState.Fledgling) l.call.hangup(CallErrorCode.UserHangup, false);
      l.audio.srcObject = null;
      l.audio.remove();
    }
    if (this.membership) leaveMembership(this.mx, this.membership, callEventsSent(this.mx, this.roomId));
    for (const stop of this.stops) stop();
    if (!current || lineCall !== this) return;
    current.phase = "ended";
    current.failed = failed;
    current.endedReason = current.endedReason || reason || "Call ended";
    emit();
    dropWhenDone(current);
  }
}

/** The line call this device is in (or rung for), in this room. */
function lineCallIn(roomId: string): LineCall | null {
  return lineCall && !lineCall.ended && lineCall.roomId === roomId ? lineCall : null;
}

/** A new line call as `current`. */
function startLineCall(mx: MatrixClient, roomId: string, ring: MatrixCall | null, counterpart: string): LineCall {
  const lc = new LineCall(mx, roomId);
  lineCall = lc;
  lc.ring = ring;
  current = {
    call: ring,
    roomId,
    counterpart,
    name: counterpart ? displayName(mx, counterpart, mx.getRoom(roomId)) : "Unknown",
    phase: "connecting",
    muted: false,
    connectedAt: null,
    endedReason: null,
    failed: false,
    line: { participants: [], news: null, ringing: null },
  };
  return lc;
}

/** Whether another device of ours is in the room's call (an invite there is for it). */
function ownOtherDeviceInCall(mx: MatrixClient, roomId: string): boolean {
  const me = mx.getUserId();
  const mine = membershipKey(mx);
  return callMembers(mx.getRoom(roomId)).some((m) => m.userId === me && m.key !== mine);
}

/** Who is in a line's call now, by membership (this device's own left out). */
export function lineCallMembers(mx: MatrixClient, roomId: string): RtcMember[] {
  const mine = membershipKey(mx);
  return callMembers(mx.getRoom(roomId)).filter((m) => m.key !== mine);
}

/**
 * Joins the call going on in a line (the header's "Join call"): publishes
 * this device's membership, then calls everyone already in it.
 */
export async function joinLineCall(mx: MatrixClient, roomId: string): Promise<void> {
  if (current && current.phase !== "ended") throw new Error("You are already in a call");
  const others = lineCallMembers(mx, roomId);
  if (!others.length) throw new Error("The call has ended.");
  if (others.some((m) => m.userId === mx.getUserId())) throw new Error("You are in this call on another device.");
  if (others.length >= MAX_LINE_CALL) throw new Error(FULL);
  if (!mx.supportsVoip()) throw new Error("Calls are not supported in this browser");
  const lc = startLineCall(mx, roomId, null, others[0].userId);
  lc.answering = true;
  lc.render();
  if (await relayMissing(mx)) {
    lc.end(`The call could not connect: ${NO_RELAY}`, true);
    return;
  }
  await lc.join();
  lc.update();
}

/** Listens for incoming calls; returns a function to stop. */
export function watchIncomingCalls(mx: MatrixClient): () => void {
  const onIncoming = (call: MatrixCall) => {
    const roomId = call.roomId!;
    const line = isLineRoom(mx, roomId);
    // In this line's call: a peer joining the mesh (or refused).
    const lc = lineCallIn(roomId);
    if (lc && lc.joined) {
      lc.incoming(call);
      return;
    }
    // Meant for our device that is in the call, not this one.
    if (line && ownOtherDeviceInCall(mx, roomId)) return;
    // Do not disturb, asleep: a call that is not urgent does not ring. It
    // is left unanswered, so the line shows it as a missed call.
    const room = mx.getRoom(roomId);
    const from = call.getOpponentMember()?.userId || "";
    if (line && room && from && !ringsFor(mx, room, from)) return;
    if (current && current.phase !== "ended") {
      call.reject();
      return;
    }
    if (line) {
      // The first call on the line rings (or someone in a call going on rings us into it).
      const caller = call.getOpponentMember()?.userId || "";
      const party = (call as any).opponentPartyId;
      const ringing = startLineCall(mx, roomId, call, caller);
      ringing.addLink(call, caller, typeof party === "string" ? memberKey(caller, party) : null);
      ringing.render();
    } else {
      attach(mx, call, roomId);
    }
    startRinging("in");
    notifyIncoming(current!.name);
    // "Answer" on the service worker's notification opened the app for this call.
    if (answerIntent && answerIntent.roomId === roomId && Date.now() < answerIntent.until) {
      answerIntent = null;
      answer(mx).catch(() => undefined);
    }
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
 * On a line whose call is going on, this joins it instead.
 */
export async function placeCall(mx: MatrixClient, roomId: string, invitee?: string): Promise<void> {
  if (current && current.phase !== "ended") throw new Error("You are already in a call");
  if (isLineRoom(mx, roomId)) {
    if (lineCallMembers(mx, roomId).length) return joinLineCall(mx, roomId);
    return placeLineCall(mx, roomId, invitee);
  }
  const call = mx.createCall(roomId);
  if (!call) throw new Error("Calls are not supported in this browser");
  if (invitee && invitee !== mx.getUserId()) call.invitee = invitee;
  attach(mx, call, roomId);
  if (await relayMissing(mx)) {
    fail(call, NO_RELAY);
    return;
  }
  await call.placeVoiceCall();
}

/** The first call on a line: our membership from placing it, then the invite (it rings). */
async function placeLineCall(mx: MatrixClient, roomId: string, invitee?: string): Promise<void> {
  const call = mx.createCall(roomId);
  if (!call) throw new Error("Calls are not supported in this browser");
  if (invitee && invitee !== mx.getUserId()) call.invitee = invitee;
  const lc = startLineCall(mx, roomId, call, call.invitee || guessCounterpart(mx, roomId) || "");
  lc.addLink(call, call.invitee || current!.counterpart, null);
  lc.render();
  if (await relayMissing(mx)) {
    lc.end(`The call could not connect: ${NO_RELAY}`, true);
    return;
  }
  // The caller is in the call from placing it (MatrixRTC).
  await lc.join();
  if (lc.ended) return;
  lc.render();
  try {
    await call.placeVoiceCall();
  } catch (e) {
    lc.end(null, false);
    throw e;
  }
}

export async function answer(mx: MatrixClient): Promise<void> {
  if (!current) return;
  const lc = current.line ? lineCallIn(current.roomId) : null;
  if (lc) return answerLine(mx, lc);
  const call = current.call!;
  stopRinging();
  current.phase = "connecting";
  emit();
  if (await relayMissing(mx)) {
    fail(call, NO_RELAY);
    return;
  }
  if (call.state === CallState.Ended) return;
  await call.answer(true, false);
}

/** The callee joins the line's call on answering; then calls whoever else is in it. */
async function answerLine(mx: MatrixClient, lc: LineCall): Promise<void> {
  const call = lc.ring!;
  stopRinging();
  lc.answering = true;
  lc.render();
  if (lineCallMembers(mx, lc.roomId).length >= MAX_LINE_CALL) {
    call.reject();
    lc.end(FULL, true);
    return;
  }
  if (await relayMissing(mx)) {
    lc.end(`The call could not connect: ${NO_RELAY}`, true);
    call.hangup(CallErrorCode.IceFailed, false);
    return;
  }
  if (call.state === CallState.Ended) return;
  await lc.join();
  if ((call.state as CallState) === CallState.Ended || lc.ended) {
    lc.update();
    return;
  }
  lc.update();
  await call.answer(true, false);
  if (lc.muted) await call.setMicrophoneMuted(true);
}

/**
 * A call the person chose to answer from a notification while the app was
 * closed (public/sw.js, "Answer"): answered now if it rings here already,
 * else when it does (the app has to start and sync first), within
 * ANSWER_WINDOW_MS.
 */
let answerIntent: { roomId: string; until: number } | null = null;
const ANSWER_WINDOW_MS = 90_000;

export function answerWhenRinging(mx: MatrixClient, roomId: string): void {
  if (current && current.roomId === roomId && current.phase === "ringing-in") {
    answer(mx).catch(() => undefined);
    return;
  }
  answerIntent = { roomId, until: Date.now() + ANSWER_WINDOW_MS };
}

export function decline(): void {
  if (!current) return;
  stopRinging();
  current.call?.reject();
}

export function hangUp(): void {
  if (!current) return;
  stopRinging();
  if (current.phase === "ended") {
    current = null;
    emit();
    return;
  }
  const lc = current.line ? lineCallIn(current.roomId) : null;
  if (lc) {
    lc.end("Call ended", false);
    return;
  }
  current.call?.hangup(CallErrorCode.UserHangup, false);
}

export function toggleMute(): void {
  if (!current) return;
  const muted = !current.muted;
  const lc = current.line ? lineCallIn(current.roomId) : null;
  if (lc) {
    lc.muted = muted;
    for (const l of lc.links.values()) if (l.call.state !== CallState.Ended) l.call.setMicrophoneMuted(muted);
  } else {
    current.call?.setMicrophoneMuted(muted);
  }
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

