import { useEffect, useRef } from "preact/hooks";
import type { MatrixClient } from "matrix-js-sdk";
import { answer, CallView, decline, hangUp, toggleMute } from "../lib/calls";
import { duration } from "../lib/format";
import { useNow } from "../lib/hooks";
import { Avatar } from "./Avatar";
import { IdentityMark } from "./IdentityMark";
import { HangupIcon, MicIcon, MicOffIcon, PhoneIcon } from "./icons";

/** Incoming call: a modal alert with answer and decline, focused on arrival. */
export function IncomingCall({ mx, call }: { mx: MatrixClient; call: CallView }) {
  const answerBtn = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    const prev = document.activeElement as HTMLElement | null;
    answerBtn.current?.focus();
    return () => prev?.focus?.();
  }, []);
  const member = mx.getRoom(call.roomId)?.getMember(call.counterpart);
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
          Incoming voice call
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
    </div>
  );
}
