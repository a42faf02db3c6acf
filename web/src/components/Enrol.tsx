import { useEffect, useRef, useState } from "preact/hooks";
import { humanError } from "../lib/errors";
import type { MatrixClient } from "matrix-js-sdk";
import { api, Credentials, defaultBaseUrl, deviceName, MatrixError } from "../lib/session";
import { groupFingerprint } from "../lib/attestation";
import { fingerprintGroups } from "../lib/fingerprint";
import { ownMasterKey, refreshIdentity, titleLine, useIdentity } from "../lib/identity";
import { navigate } from "../lib/hooks";
import { LockIcon, SealCheckIcon, ShieldAlertIcon } from "./icons";

function Brand() {
  return (
    <div class="brand">
      <span class="brand-mark" aria-hidden="true">
        <LockIcon size={22} />
      </span>
      <span class="brand-name">Hotline</span>
    </div>
  );
}

/** Whose enrolment it is, as the protocol office enrolled them (from the enrolment answer). */
export interface Enrollee {
  userId: string;
  name: string;
  title: string;
  country: string;
  office: string;
}

const ENROLLEE_KEY = "hotline.enrollee";

function saveEnrollee(e: Enrollee): void {
  try {
    sessionStorage.setItem(ENROLLEE_KEY, JSON.stringify(e));
  } catch {
    /* shown from the profile instead */
  }
}

function loadEnrollee(userId: string): Enrollee | null {
  try {
    const e = JSON.parse(sessionStorage.getItem(ENROLLEE_KEY) || "null");
    return e && e.userId === userId ? e : null;
  } catch {
    return null;
  }
}

/**
 * Whose enrolment this is: name, title and user id, on every enrolment
 * screen (key set-up, fingerprint), so a shared or mixed-up link is seen
 * at once. From the enrolment answer; after a reload, from the
 * attestation once vouched, else the profile's name.
 */
export function WhoseEnrolment({ mx }: { mx: MatrixClient }) {
  const userId = mx.getUserId()!;
  const s = useIdentity(userId);
  const e = loadEnrollee(userId);
  const att = s.kind === "verified" ? s.att : null;
  const name = e?.name ?? att?.name ?? mx.getUser(userId)?.displayName ?? null;
  const title = e ? `${e.title} · ${e.country}` : att ? titleLine(att) : null;
  return <EnrolleeLine name={name} title={title} userId={userId} />;
}

function EnrolleeLine(props: { name: string | null; title: string | null; userId: string; office?: string }) {
  return (
    <p class="enrollee" data-testid="enrollee">
      Enrolment of {props.name ? <strong>{props.name}</strong> : null}
      {props.title ? `, ${props.title}` : ""}
      <br />
      <code>{props.userId}</code>
      {props.office && (
        <>
          <br />
          <span class="muted">by {props.office}</span>
        </>
      )}
    </p>
  );
}

/**
 * `#/enrol/{code}`: the one-time link from the protocol office. The
 * official sets a password; the server signs in a first device.
 */
export function EnrolForm(props: { code: string; onEnrolled: (c: Credentials, password: string) => void }) {
  // Whose enrolment the link opens, before anything is set: a link sent to
  // the wrong person shows at once. A used or expired link says so here.
  const [who, setWho] = useState<(Enrollee & { role: string }) | null>(null);
  const [linkError, setLinkError] = useState<string | null>(null);
  // Used, expired or unknown: no password form to fill in vain.
  const [linkDead, setLinkDead] = useState(false);
  useEffect(() => {
    let live = true;
    api(defaultBaseUrl(), "GET", `/_hotline/v1/enrol/${encodeURIComponent(props.code)}`).then(
      (r) => live && setWho({ userId: r.user_id, name: r.name, title: r.title, country: r.country, office: r.office, role: r.role }),
      (err) => {
        if (!live) return;
        setLinkError(humanError(err));
        setLinkDead(err instanceof MatrixError && (err.status === 403 || err.status === 404));
      },
    );
    return () => {
      live = false;
    };
  }, [props.code]);
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    if (password.length < 8) {
      setError("Use at least 8 characters for your password.");
      return;
    }
    if (password !== confirm) {
      setError("The passwords do not match.");
      return;
    }
    setBusy(true);
    const baseUrl = defaultBaseUrl();
    try {
      const r = await api(baseUrl, "POST", `/_hotline/v1/enrol/${encodeURIComponent(props.code)}`, {
        password,
        initial_device_display_name: deviceName(),
      });
      if (r.official) saveEnrollee({ userId: r.user_id, ...r.official });
      props.onEnrolled({ baseUrl, userId: r.user_id, deviceId: r.device_id, accessToken: r.access_token }, password);
    } catch (err) {
      setError(humanError(err));
      setBusy(false);
    }
  };

  return (
    <main class="auth" aria-labelledby="enrol-title">
      <div class="auth-card">
        <Brand />
        <h1 id="enrol-title">Set your password</h1>
        {who ? (
          <EnrolleeLine name={who.name} title={`${who.title} · ${who.country}`} userId={who.userId} office={who.office} />
        ) : linkError ? (
          <p class="error" role="alert" data-testid="enrol-link-error">
            {linkError}
          </p>
        ) : null}
        {!linkDead && (
          <>
            <p class="muted">
              Your protocol office enrolled you in Hotline. Choose a password to finish setting up your account; this
              link works only once.
            </p>
            <form class="form" onSubmit={submit} noValidate>
              <label for="enrol-password">New password</label>
              <input
                id="enrol-password"
                type="password"
                autoComplete="new-password"
                autoFocus
                required
                value={password}
                onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
              />
              <label for="enrol-confirm">Confirm password</label>
              <input
                id="enrol-confirm"
                type="password"
                autoComplete="new-password"
                required
                value={confirm}
                onInput={(e) => setConfirm((e.target as HTMLInputElement).value)}
              />
              {error && (
                <p class="error" role="alert">
                  {error}
                </p>
              )}
              <button class="primary wide" type="submit" disabled={busy || !password || !confirm}>
                {busy ? "Setting up…" : "Set password and continue"}
              </button>
            </form>
          </>
        )}
        <p class="switch">
          Already set up?{" "}
          <button class="link" type="button" onClick={() => navigate()}>
            Sign in
          </button>
        </p>
      </div>
    </main>
  );
}

/**
 * The master key fingerprint as the office compares it: 12 groups of 5
 * digits (lib/fingerprint.ts; `hotline admin show-key` prints the same),
 * and the key's base64 on request.
 */
export function FingerprintBox({ fingerprint, userId }: { fingerprint: string; userId: string }) {
  const [groups, setGroups] = useState<string[] | null>(null);
  useEffect(() => {
    let live = true;
    setGroups(null);
    fingerprintGroups(fingerprint, userId).then(
      (g) => live && setGroups(g),
      () => live && setGroups([]),
    );
    return () => {
      live = false;
    };
  }, [fingerprint, userId]);
  return (
    <div class="fingerprint-box">
      <output
        class="fingerprint digits"
        aria-label="Identity key fingerprint, 12 groups of 5 digits"
        aria-busy={groups === null}
        data-testid="fingerprint"
        data-ready={groups !== null}
      >
        {groups?.map((g, i) => (
          <span key={i}>
            {g}
            {i < groups.length - 1 ? " " : ""}
          </span>
        ))}
      </output>
      <details class="fingerprint-base64">
        <summary>Show the key as base64</summary>
        <code data-testid="fingerprint-base64">{groupFingerprint(fingerprint)}</code>
      </details>
    </div>
  );
}

/** One's own vouched-for state, in words (enrolment, Settings). */
export function OwnIdentityStatus({ mx, fingerprint }: { mx: MatrixClient; fingerprint: string | null }) {
  const s = useIdentity(mx.getUserId()!);
  let body;
  switch (s.kind) {
    case "verified":
      body = (
        <p class="own-id ok" data-status="verified">
          <SealCheckIcon size={18} />
          <span>
            Vouched for by <strong>{s.att.office}</strong>: {s.att.name}, {titleLine(s.att)}.
          </span>
        </p>
      );
      break;
    case "key-mismatch":
      body = (
        <p class="own-id bad" data-status="key-mismatch">
          <ShieldAlertIcon size={18} />
          <span>
            Your identity key is not the one {s.att.office} vouched for. Your lines are paused until you show the
            fingerprint below to your protocol office and they vouch again.
          </span>
        </p>
      );
      break;
    case "revoked":
      body = (
        <p class="own-id bad" data-status="revoked">
          <ShieldAlertIcon size={18} />
          <span>Your protocol office revoked its attestation of your identity.</span>
        </p>
      );
      break;
    case "unverified":
      body = (
        <p class="own-id pending" data-status="unverified">
          <span class="dot" aria-hidden="true" />
          <span>
            {fingerprint ? "Not vouched for yet." : "No identity key yet."}
            {s.reason ? ` (${s.reason})` : ""}
          </span>
        </p>
      );
      break;
    default:
      body = (
        <p class="own-id pending" data-status="unknown">
          <span class="dot" aria-hidden="true" />
          <span>Checking…</span>
        </p>
      );
  }
  return (
    <div role="status" data-testid="own-identity">
      {body}
    </div>
  );
}

/**
 * After enrolment and key set-up: the fingerprint the official shows the
 * protocol office, who compare it in person and vouch. Updates live once
 * they have.
 */
export function FingerprintStep({ mx, onDone }: { mx: MatrixClient; onDone: () => void }) {
  const [fp, setFp] = useState<string | null>(null);
  const s = useIdentity(mx.getUserId()!);
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    ownMasterKey(mx).then(setFp);
    heading.current?.focus();
  }, [mx]);
  // Until vouched for, look again every few seconds.
  const vouched = s.kind === "verified";
  useEffect(() => {
    if (vouched) return;
    const t = setInterval(() => refreshIdentity(), 4000);
    return () => clearInterval(t);
  }, [vouched]);
  return (
    <main class="auth" aria-labelledby="fp-title">
      <div class="auth-card">
        <Brand />
        <h1 id="fp-title" tabIndex={-1} ref={heading}>
          Your identity fingerprint
        </h1>
        <WhoseEnrolment mx={mx} />
        <p class="muted">
          <strong>Show this to your protocol office to be vouched for.</strong> They compare the digits, in person,
          with the ones their system shows for your account, then vouch for you: your counterparts then see you as
          verified.
        </p>
        {fp ? (
          <FingerprintBox fingerprint={fp} userId={mx.getUserId()!} />
        ) : (
          <p class="error" role="alert">
            This device has no identity key yet. Set up secure keys first.
          </p>
        )}
        <OwnIdentityStatus mx={mx} fingerprint={fp} />
        <button class={"wide" + (vouched ? " primary" : "")} type="button" onClick={onDone}>
          {vouched ? "Continue to Hotline" : "Continue without waiting"}
        </button>
      </div>
    </main>
  );
}
