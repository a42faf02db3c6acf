import { useEffect, useRef } from "preact/hooks";
import type { MatrixClient, Room } from "matrix-js-sdk";
import { answer, CallParticipant, CallView, decline, hangUp, lineCallMembers, toggleMute } from "../lib/calls";
import { duration } from "../lib/format";
import { useNow } from "../lib/hooks";
import { identityOf, useIdentityVersion } from "../lib/identity";
import { lineAides, lineState, nameOf } from "../lib/lines";
import { Avatar } from "./Avatar";
import { IdentityMark } from "./IdentityMark";
import { AideLabel } from "./People";
import { HangupIcon, MicIcon, MicOffIcon, PeopleIcon, PhoneIcon } from "./icons";

/** Incoming call: a modal alert with answer and decline, focused on arrival. */
export function IncomingCall({ mx, call }: { mx: MatrixClient; call: CallView }) {
  const answerBtn = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    const prev = document.activeElement as HTMLElement | null;
    answerBtn.current?.focus();
    return () => prev?.focus?.();
  }, []);
  const room = mx.getRoom(call.roomId);
  const member = room?.getMember(call.counterpart);
  // Rung into a line call going on: who else is in it.
  const others = call.line
    ? [...new Set(lineCallMembers(mx, call.roomId).map((m) => m.userId))]
        .filter((u) => u !== call.counterpart)
        .map((u) => nameOf(mx, u, room).name)
    : [];
  return (
    <div class="overlay">
      <div class="incoming" role="alertdialog" aria-modal="true" aria-labelledby="incoming-title" aria-describedby="incoming-desc" data-testid="incoming-call">
        <div class="pulse">
          <Avatar mx={mx} userId={call.counterpart} name={call.name} mxc={member?.getMxcAvatarUrl()} size={88} />
        </div>
        <h2 id="incoming-title" title={call.counterpart}>
          {call.name}
          <IdentityMark userId={call.counterpart} />
        </h2>
        <p id="incoming-desc" class="muted">
          {others.length ? `Calls you into a call with ${others.join(", ")}` : "Incoming voice call"}
        </p>
        <div class="call-actions">
          <button type="button" class="round danger" onClick={decline} aria-label="Decline call">
            <HangupIcon size={26} />
          </button>
          <button type="button" class="round ok" ref={answerBtn} onClick={() => answer(mx)} aria-label="Answer call">
            <PhoneIcon size={26} />
          </button>
        </div>
      </div>
    </div>
  );
}

/** The call in progress: who, state and timer, mute and hang up. */
export function ActiveCall({ mx, call }: { mx: MatrixClient; call: CallView }) {
  const now = useNow(1000, call.phase === "connected");
  const member = mx.getRoom(call.roomId)?.getMember(call.counterpart);
  if (call.line) return <LineCallBar mx={mx} call={call} now={now} />;
  const status =
    call.phase === "ringing-out"
      ? "Ringing…"
      : call.phase === "connecting"
        ? "Connecting…"
        : call.phase === "connected"
          ? duration(now - (call.connectedAt || now))
          : call.endedReason || "Call ended";
  return (
    <div class={"active-call " + call.phase + (call.failed ? " failed" : "")} role="region" aria-label="Call" data-testid="active-call" data-phase={call.phase}>
      <a class="active-who" href={`#/line/${encodeURIComponent(call.roomId)}`}>
        <Avatar mx={mx} userId={call.counterpart} name={call.name} mxc={member?.getMxcAvatarUrl()} size={40} />
        <span class="active-text">
          <strong>
            {call.name}
            <IdentityMark userId={call.counterpart} compact />
          </strong>
          <span class="call-status" role="timer" aria-live="off" data-testid="call-status">
            {status}
          </span>
        </span>
      </a>
      <CallControls call={call} status={status} />
    </div>
  );
}

/**
 * What every call's panel ends with: the screen reader's word on its
 * phase, "Dismiss" for a failed call, and mute and hang-up while it lasts.
 */
function CallControls({ call, status }: { call: CallView; status: string }) {
  return (
    <>
      <span class="visually-hidden" aria-live="assertive">
        {call.phase === "connected" ? "Call connected" : call.phase === "ended" ? status : ""}
      </span>
      {call.phase === "ended" && call.failed && (
        <button type="button" class="dismiss-call" onClick={hangUp} data-testid="dismiss-call">
          Dismiss
        </button>
      )}
      {call.phase !== "ended" && (
        <div class="call-controls">
          <button
            type="button"
            class={"round small" + (call.muted ? " on" : "")}
            onClick={toggleMute}
            aria-pressed={call.muted}
            aria-label={call.muted ? "Unmute microphone" : "Mute microphone"}
            title={call.muted ? "Unmute" : "Mute"}
          >
            {call.muted ? <MicOffIcon /> : <MicIcon />}
          </button>
          <button type="button" class="round small danger" onClick={hangUp} aria-label="Hang up" title="Hang up">
            <HangupIcon />
          </button>
        </div>
      )}
    </>
  );
}

function statusOf(call: CallView, now: number): string {
  return call.phase === "ringing-out"
    ? "Ringing…"
    : call.phase === "connecting"
      ? "Connecting…"
      : call.phase === "connected"
        ? duration(now - (call.connectedAt || now))
        : call.endedReason || "Call ended";
}

/** A participant's role on the line: their title as a principal, "Aide: NAME (for PRINCIPAL)" as an aide. */
function Role({ mx, room, userId }: { mx: MatrixClient; room: Room | null; userId: string }) {
  const aide = room ? lineAides(room).find((a) => a.userId === userId) : undefined;
  if (room && aide) return <AideLabel mx={mx} room={room} aide={userId} principal={aide.principal} />;
  if (room && lineState(room)?.principals.includes(userId)) {
    const s = identityOf(userId);
    return <>{s.kind === "verified" ? s.att.title : "Principal"}</>;
  }
  return null;
}

const LINK_TEXT: Record<CallParticipant["link"], string> = {
  self: "",
  waiting: "Joining…",
  connecting: "Connecting…",
  connected: "",
  failed: "Could not connect",
  ended: "Not connected",
};

/**
 * A line call (up to six): everyone in it with name, role and identity
 * badge, the latest join or leave (also read out), the timer, mute and
 * hang up.
 */
function LineCallBar({ mx, call, now }: { mx: MatrixClient; call: CallView; now: number }) {
  useIdentityVersion();
  const room = mx.getRoom(call.roomId);
  const line = call.line!;
  const status = statusOf(call, now);
  const people = line.participants;
  const ringing = line.ringing && call.phase !== "ended" ? nameOf(mx, line.ringing, room).name : null;
  return (
    <div
      class={"active-call line-call " + call.phase + (call.failed ? " failed" : "")}
      role="region"
      aria-label="Call"
      data-testid="active-call"
      data-phase={call.phase}
      data-line="true"
    >
      <div class="line-call-main">
        <a class="active-who" href={`#/line/${encodeURIComponent(call.roomId)}`}>
          <span class="line-call-icon" aria-hidden="true">
            <PeopleIcon size={20} />
          </span>
          <span class="active-text">
            <strong>{people.length > 1 ? `Call on the line · ${people.length} in the call` : "Call on the line"}</strong>
            <span class="call-status" role="timer" aria-live="off" data-testid="call-status">
              {ringing ? (call.phase === "ringing-out" ? `Ringing ${ringing}…` : `${status} · ringing ${ringing}…`) : status}
            </span>
          </span>
        </a>
        {people.length > 0 && call.phase !== "ended" && (
          <ul class="call-people" aria-label="In the call" data-testid="call-participants">
            {people.map((p) => {
              const n = nameOf(mx, p.userId, room).name;
              return (
                <li key={p.userId} data-testid="call-participant" data-user={p.userId} data-link={p.link}>
                  <Avatar mx={mx} userId={p.userId} name={n} mxc={room?.getMember(p.userId)?.getMxcAvatarUrl()} size={28} />
                  <span class="call-person">
                    <span class="call-person-name">
                      <span data-testid="call-participant-name">{n}</span>
                      {p.self && <span class="muted"> (you)</span>}
                      <IdentityMark userId={p.userId} compact />
                    </span>
                    <span class="call-person-role" data-testid="call-participant-role">
                      <Role mx={mx} room={room} userId={p.userId} />
                      {LINK_TEXT[p.link] && <span class="call-link"> · {LINK_TEXT[p.link]}</span>}
                    </span>
                  </span>
                </li>
              );
            })}
          </ul>
        )}
        <p class="call-news" role="status" aria-live="polite" data-testid="call-news">
          {call.phase !== "ended" ? line.news || "" : ""}
        </p>
      </div>
      <CallControls call={call} status={status} />
    </div>
  );
}
