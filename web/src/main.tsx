import { render } from "preact";
import { humanError } from "./lib/errors";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { MatrixClient } from "matrix-js-sdk";
import "./styles.css";
import {
  Credentials,
  firstSync,
  forgetRevokedSession,
  isConnectionError,
  loadCredentials,
  saveCredentials,
  serverAnswers,
  signOut,
  startSession,
  stopSession,
} from "./lib/session";
import { createLine, findLine, lineSummaries, normaliseUserId } from "./lib/lines";
import { startIdentity, stopIdentity, useIdentity, useIdentityVersion } from "./lib/identity";
import { isInviteCode } from "./lib/lineInvites";
import {
  answerWhenRinging,
  CallView,
  clearStaleMemberships,
  onCall,
  watchIncomingCalls,
} from "./lib/calls";
import { askAtSignIn, forgetPush, startPush } from "./lib/push";
import { navigate, useClientTick, useRoute } from "./lib/hooks";
import { startDelivery } from "./lib/delivery";
import { SignIn } from "./components/SignIn";
import { KeySetup, keyStatus, KeyStatus, skippedRecovery } from "./components/KeySetup";
import { LineList } from "./components/LineList";
import { Chat } from "./components/Chat";
import { Settings } from "./components/Settings";
import { ActiveCall, IncomingCall } from "./components/CallPanel";
import { EnrolForm, FingerprintStep } from "./components/Enrol";
import { OfficialPicker } from "./components/OfficialPicker";
import { LineInvites, RedeemInvite } from "./components/LineInvites";
import { ContactLog } from "./components/ContactLog";
import { Watermark } from "./components/Watermark";
import { AlertIcon, CloseIcon, LockIcon } from "./components/icons";

export interface CryptoInfo {
  state: "ready" | "unsupported" | "failed";
  error?: string;
  verified: boolean;
}

type Phase =
  | { kind: "signed-out"; notice?: string }
  | { kind: "starting"; creds: Credentials }
  | { kind: "unreachable"; creds: Credentials }
  | { kind: "keys"; mx: MatrixClient; status: Exclude<KeyStatus, "ready">; crypto: CryptoInfo }
  | { kind: "fingerprint"; mx: MatrixClient; crypto: CryptoInfo }
  | { kind: "ready"; mx: MatrixClient; crypto: CryptoInfo };

let signInPassword: string | null = null;

// Opened from a call notification's "Answer" (public/sw.js): `?answer=ROOM`,
// the room in the hash route as usual. Taken off the address at once, so a
// reload answers nothing.
let launchAnswer = new URLSearchParams(window.location.search).get("answer");
if (launchAnswer) window.history.replaceState(null, "", window.location.pathname + window.location.hash);
/** Set while an official goes through enrolment: key set-up ends on their fingerprint. */
let enrolling = false;

function App() {
  const route = useRoute();
  const [phase, setPhase] = useState<Phase>(() => {
    const c = loadCredentials();
    return c ? { kind: "starting", creds: c } : { kind: "signed-out" };
  });

  // The directory of officials is read once per session, for every screen.
  const sessionClient = "mx" in phase ? phase.mx : null;
  useEffect(() => {
    if (sessionClient) startIdentity(sessionClient);
    else if (phase.kind === "signed-out") stopIdentity();
  }, [sessionClient, phase.kind]);

  useEffect(() => {
    if (phase.kind !== "starting") return;
    let cancelled = false;
    (async () => {
      try {
        const { client, crypto, cryptoError } = await startSession(phase.creds);
        const info: CryptoInfo = { state: crypto, error: cryptoError, verified: false };
        if (crypto === "ready") {
          const status = await keyStatus(client).catch(() => "ready" as const);
          info.verified = status === "ready";
          if (status !== "ready" && !(status === "needs-recovery" && skippedRecovery(client))) {
            if (!cancelled) setPhase({ kind: "keys", mx: client, status, crypto: info });
            return;
          }
        }
        if (!cancelled) setPhase({ kind: "ready", mx: client, crypto: info });
        enrolling = false;
      } catch (e: any) {
        if (e?.errcode === "M_UNKNOWN_TOKEN" || e?.httpStatus === 401) {
          stopSession();
          await signOut();
          setPhase({ kind: "signed-out", notice: "Your session ended. Sign in again." });
        } else if (isConnectionError(e)) {
          // Still signed in: nothing is wrong with the session, only the way to the server.
          if (!cancelled) setPhase({ kind: "unreachable", creds: phase.creds });
        } else {
          setPhase({ kind: "signed-out", notice: humanError(e, "Could not start") });
        }
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [phase.kind === "starting" ? phase.creds : null]);

  // The server forgot this device (signed out elsewhere, or removed).
  useEffect(() => {
    if (phase.kind !== "ready") return;
    const onLogout = () => {
      forgetRevokedSession();
      forgetPush();
      setPhase({ kind: "signed-out", notice: "This device was signed out." });
    };
    phase.mx.on("Session.logged_out" as any, onLogout);
    return () => phase.mx.off("Session.logged_out" as any, onLogout);
  }, [phase.kind === "ready" ? phase.mx : null]);

  if (phase.kind === "signed-out") {
    if (route[0] === "enrol" && route[1]) {
      return (
        <EnrolForm
          code={route[1]}
          onEnrolled={(c, password) => {
            signInPassword = password;
            enrolling = true;
            saveCredentials(c);
            askAtSignIn();
            setPhase({ kind: "starting", creds: c });
          }}
        />
      );
    }
    const inviteNotice = route[0] === "line" && isInviteCode(route[1]) ? "Sign in to open the direct line you were invited to." : undefined;
    return (
      <SignIn
        notice={[phase.notice, inviteNotice].filter(Boolean).join(" ") || undefined}
        onSignedIn={(c, password) => {
          signInPassword = password;
          saveCredentials(c);
          askAtSignIn();
          setPhase({ kind: "starting", creds: c });
        }}
      />
    );
  }
  if (phase.kind === "starting") {
    return (
      <main class="splash" aria-busy="true">
        <span class="brand-mark big" aria-hidden="true">
          <LockIcon size={30} />
        </span>
        <p role="status">Opening your lines…</p>
      </main>
    );
  }
  if (phase.kind === "unreachable") {
    return <Unreachable creds={phase.creds} onRetry={() => setPhase({ kind: "starting", creds: phase.creds })} />;
  }
  if (phase.kind === "keys") {
    return (
      <KeySetup
        mx={phase.mx}
        status={phase.status}
        password={signInPassword}
        enrolment={enrolling}
        onDone={async () => {
          signInPassword = null;
          const verified = (await keyStatus(phase.mx).catch(() => "needs-recovery")) === "ready";
          const crypto = { ...phase.crypto, verified };
          setPhase(enrolling ? { kind: "fingerprint", mx: phase.mx, crypto } : { kind: "ready", mx: phase.mx, crypto });
        }}
      />
    );
  }
  if (phase.kind === "fingerprint") {
    return (
      <FingerprintStep
        mx={phase.mx}
        onDone={() => {
          enrolling = false;
          navigate();
          setPhase({ kind: "ready", mx: phase.mx, crypto: phase.crypto });
        }}
      />
    );
  }
  return (
    <Main
      mx={phase.mx}
      crypto={phase.crypto}
      onSignOut={async () => {
        await signOut();
        forgetPush();
        setPhase({ kind: "signed-out", notice: "You signed out." });
      }}
      onVerify={() => setPhase({ kind: "keys", mx: phase.mx, status: "needs-recovery", crypto: phase.crypto })}
    />
  );
}

function Main(props: { mx: MatrixClient; crypto: CryptoInfo; onSignOut: () => void; onVerify: () => void }) {
  const { mx } = props;
  const tick = useClientTick(mx);
  const route = useRoute();
  const [synced, setSynced] = useState(mx.isInitialSyncComplete());
  const [call, setCall] = useState<CallView | null>(null);
  const [newLine, setNewLine] = useState(false);
  const [dismissed, setDismissed] = useState(false);
  const own = useIdentity(mx.getUserId()!);

  useEffect(() => {
    let stopDelivery: (() => void) | null = null;
    let live = true;
    firstSync(mx).then(() => {
      setSynced(true);
      // A line call this device never said it left (lib/calls.ts).
      if (live) clearStaleMemberships(mx);
      // Messages waiting for a counterpart's device (lib/delivery.ts).
      if (live) stopDelivery = startDelivery(mx);
    });
    const stopIncoming = watchIncomingCalls(mx);
    const stopCall = onCall(setCall);
    // Notifications while the app is closed (lib/push.ts), and what the
    // service worker's notifications ask of an open app: a room to show,
    // a call to answer.
    startPush(mx);
    if (launchAnswer) answerWhenRinging(mx, launchAnswer);
    launchAnswer = null;
    const onWorkerMessage = (e: MessageEvent) => {
      const d = e.data;
      if (d?.type !== "hotline:open" || typeof d.room !== "string") return;
      navigate("line", d.room);
      if (d.answer) answerWhenRinging(mx, d.room);
    };
    navigator.serviceWorker?.addEventListener("message", onWorkerMessage);
    return () => {
      live = false;
      stopDelivery?.();
      stopIncoming();
      stopCall();
      navigator.serviceWorker?.removeEventListener("message", onWorkerMessage);
    };
  }, [mx]);

  // (The directory names our principal, which tells an invitation onto a
  // line as their aide from others.)
  const idVersion = useIdentityVersion();
  const lines = useMemo(() => (synced ? lineSummaries(mx) : []), [tick, synced, idVersion]);

  // Line invites are for principals and their aides, as our own verified
  // attestation says (asking the server would be a 403 for everyone else,
  // on every page load).
  const ownRole = own.kind === "verified" ? own.att.role : null;
  const canInvite = ownRole === "principal" || ownRole === "aide";

  useEffect(() => {
    if (synced && !performance.getEntriesByName("hotline:lines").length) performance.mark("hotline:lines");
  }, [synced]);

  // Unread total in the tab title.
  useEffect(() => {
    const n = lines.reduce((a, l) => a + l.unread, 0);
    document.title = call?.phase === "ringing-in" ? `Incoming call · Hotline` : n ? `(${n}) Hotline` : "Hotline";
  }, [lines, call?.phase]);

  const inviteCode = route[0] === "line" && isInviteCode(route[1]) ? route[1] : null;
  // `#/line/{code}/{server}`: the server that issued it (another
  // government's: redeemed through this one).
  const inviteServer = inviteCode ? route[2] : undefined;
  const selected = route[0] === "line" && !inviteCode ? route[1] : null;
  const room = selected ? mx.getRoom(selected) : null;
  const page = inviteCode
    ? "redeem"
    : route[0] === "invites"
      ? "invites"
      : route[0] === "contact-log"
        ? "contact-log"
        : route[0] === "enrol"
          ? "enrol"
          : null;
  const view = route[0] === "settings" ? "settings" : page ? "page" : room ? "chat" : "list";

  const banner =
    !dismissed &&
    (props.crypto.state !== "ready"
      ? props.crypto.state === "unsupported"
        ? "This server does not support end-to-end encryption yet: encrypted lines can't be read or sent."
        : `Encryption could not start on this device: ${props.crypto.error}`
      : !props.crypto.verified
        ? "This device is not verified: earlier messages may be unreadable. Verify it in Settings."
        : null);

  return (
    <div class={"shell view-" + view + (call ? " has-call" : "")}>
      {call && call.phase === "ringing-in" && <IncomingCall mx={mx} call={call} />}
      <LineList
        mx={mx}
        lines={lines}
        selected={selected}
        onNewLine={() => setNewLine(true)}
        loading={!synced}
        canInvite={canInvite}
        invitesOpen={page === "invites"}
        logOpen={page === "contact-log"}
      />
      <main class="pane">
        {banner && (
          <div class="banner warn" role="status" data-testid="crypto-banner">
            <AlertIcon size={16} /> <span>{banner}</span>
            <button type="button" class="icon-button small" onClick={() => setDismissed(true)} aria-label="Dismiss">
              <CloseIcon />
            </button>
          </div>
        )}
        {call && call.phase !== "ringing-in" && <ActiveCall mx={mx} call={call} />}
        {view === "settings" ? (
          <Settings mx={mx} crypto={props.crypto} onSignOut={props.onSignOut} onVerify={props.onVerify} canInvite={canInvite} />
        ) : page === "invites" ? (
          <LineInvites mx={mx} />
        ) : page === "contact-log" ? (
          canInvite ? (
            <ContactLog mx={mx} />
          ) : (
            <div class="placeholder-pane">
              <h1>Contact log</h1>
              <p class="muted">The contact log is kept for principals and their aides.</p>
            </div>
          )
        ) : page === "redeem" ? (
          <RedeemInvite key={inviteCode} mx={mx} code={inviteCode!} server={inviteServer} />
        ) : page === "enrol" ? (
          <div class="placeholder-pane">
            <span class="brand-mark big" aria-hidden="true">
              <LockIcon size={30} />
            </span>
            <h1>Enrolment link</h1>
            <p class="muted">
              This link sets up a new official's account. You are signed in as {mx.getUserId()}: sign out first to use
              it on this device.
            </p>
            <div class="row center">
              <button type="button" onClick={() => navigate()}>
                Back to my lines
              </button>
              <button type="button" class="danger-outline" onClick={props.onSignOut}>
                Sign out
              </button>
            </div>
          </div>
        ) : room ? (
          <Chat mx={mx} room={room} tick={tick} call={call} cryptoOk={props.crypto.state === "ready"} />
        ) : (
          <div class="placeholder-pane">
            <span class="brand-mark big" aria-hidden="true">
              <LockIcon size={30} />
            </span>
            <h1>Hotline</h1>
            <p class="muted">Choose a line, or open a new one. Texts and calls are end-to-end encrypted.</p>
          </div>
        )}
      </main>
      {newLine && <NewLineDialog mx={mx} onClose={() => setNewLine(false)} />}
      <Watermark mx={mx} roomId={room ? room.roomId : (call?.roomId ?? null)} />
    </div>
  );
}

/**
 * Signed in, but the server did not answer (offline, as the installed app
 * opens from its stored shell, or the server down). Starts again by itself
 * once the server answers: checked when the browser reports the network
 * back, and every 10 s (a server coming back up changes nothing the
 * browser sees).
 */
function Unreachable({ creds, onRetry }: { creds: Credentials; onRetry: () => void }) {
  let server = creds.baseUrl;
  try {
    server = new URL(creds.baseUrl).host;
  } catch {
    /* shown as stored */
  }
  useEffect(() => {
    let live = true;
    const check = async () => {
      if (live && (await serverAnswers(creds.baseUrl)) && live) onRetry();
    };
    window.addEventListener("online", check);
    const timer = setInterval(check, 10_000);
    return () => {
      live = false;
      window.removeEventListener("online", check);
      clearInterval(timer);
    };
  }, [creds]);
  return (
    <main class="splash unreachable" aria-labelledby="unreachable-title">
      <span class="brand-mark big" aria-hidden="true">
        <LockIcon size={30} />
      </span>
      <h1 id="unreachable-title">Can't reach the server</h1>
      <p role="status" data-testid="unreachable">
        Hotline can't reach {server} right now. Check your connection: your lines open as soon as the server answers.
      </p>
      <button type="button" class="primary" onClick={onRetry}>
        Try again
      </button>
    </main>
  );
}

function NewLineDialog({ mx, onClose }: { mx: MatrixClient; onClose: () => void }) {
  const [who, setWho] = useState("");
  const [picked, setPicked] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    ref.current?.showModal();
  }, []);
  const submit = async (e: Event) => {
    e.preventDefault();
    const userId = picked || normaliseUserId(who, mx.getUserId()!);
    if (!/^@[^:\s]+:\S+$/.test(userId)) {
      setError("Enter a user id like @name:server.");
      return;
    }
    if (userId === mx.getUserId()) {
      setError("That's you. Enter someone else's user id.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const existing = findLine(mx, userId);
      if (existing) {
        onClose();
        navigate("line", existing.roomId);
        return;
      }
      try {
        await mx.getProfileInfo(userId);
      } catch (err: any) {
        if (err?.httpStatus === 404) {
          setError(`There is no user ${userId}.`);
          setBusy(false);
          return;
        }
      }
      const roomId = await createLine(mx, userId);
      onClose();
      navigate("line", roomId);
    } catch (err: any) {
      setError(humanError(err, "Could not open the line."));
      setBusy(false);
    }
  };
  return (
    <dialog ref={ref} class="dialog" aria-labelledby="newline-title" onClose={onClose} onCancel={onClose}>
      <form onSubmit={submit} class="form">
        <h2 id="newline-title">New line</h2>
        <p class="muted">
          Open an end-to-end encrypted line with one person: pick a verified official, or enter a user id.
        </p>
        <label for="newline-user">Official or user id</label>
        <OfficialPicker
          id="newline-user"
          label="Official or user id"
          autoFocus
          value={picked}
          onChange={setPicked}
          onText={setWho}
          roles={["principal", "aide"]}
          exclude={[mx.getUserId()!]}
          placeholder="Name, title, country, or @name:server"
          otherUser={(t) => {
            const u = normaliseUserId(t, mx.getUserId()!);
            return /^@[^:\s]+:\S+$/.test(u) && u !== mx.getUserId() ? u : null;
          }}
        />
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <div class="row end">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={(!picked && !who.trim()) || busy}>
            {busy ? "Opening…" : "Open line"}
          </button>
        </div>
      </form>
    </dialog>
  );
}

render(<App />, document.getElementById("app")!);

// The service worker (public/sw.js) makes the app installable and lets its
// shell open offline. Only a build registers it: under `vite dev` it would
// serve stored pages across hot reloads. Registered once the page has
// loaded, so its downloads wait for the page's own. A failure costs only
// the offline shell, so it is a warning. (Outside a secure context, such
// as plain http to a host other than localhost, there is no
// navigator.serviceWorker and nothing is tried.)
if (import.meta.env.PROD && "serviceWorker" in navigator && /^https?:$/.test(location.protocol)) {
  const register = () =>
    navigator.serviceWorker
      .register("./sw.js", { scope: "./" })
      .catch((e) => console.warn("Hotline: the app could not be made available offline:", e));
  if (document.readyState === "complete") register();
  else window.addEventListener("load", register, { once: true });
}
