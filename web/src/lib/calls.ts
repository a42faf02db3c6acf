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
import { displayName } from "./lines";

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
}

type Listener = (v: CallView | null) => void;

let current: CallView | null = null;
const listeners = new Set<Listener>();
let audioEl: HTMLAudioElement | null = null;
let ring: Ringer | null = null;
let notification: Notification | null = null;

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
  };
  call.on(CallEvent.State, (state: CallState) => {
    if (!current || current.call !== call) return;
    current.phase = phaseOf(call);
    if (state === CallState.Connected && !current.connectedAt) current.connectedAt = Date.now();
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
  call.on(CallEvent.Hangup, () => finish(call));
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

function finish(call: MatrixCall): void {
  stopRinging();
  if (!current || current.call !== call) return;
  current.phase = "ended";
  const reason = call.hangupReason;
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
                ? "Could not connect the call"
                : "Call ended";
  }
  if (audioEl) audioEl.srcObject = null;
  emit();
  const ended = current;
  setTimeout(() => {
    if (current === ended) {
      current = null;
      emit();
    }
  }, 2500);
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
  return () => mx.off(CallEventHandlerEvent.Incoming, onIncoming);
}

export async function placeCall(mx: MatrixClient, roomId: string): Promise<void> {
  if (current && current.phase !== "ended") throw new Error("You are already in a call");
  const call = mx.createCall(roomId);
  if (!call) throw new Error("Calls are not supported in this browser");
  attach(mx, call, roomId);
  await call.placeVoiceCall();
}

export async function answer(): Promise<void> {
  if (!current) return;
  stopRinging();
  current.phase = "connecting";
  emit();
  await current.call.answer(true, false);
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
