import { useEffect, useState } from "preact/hooks";
import { AvailabilitySettings } from "./Availability";
import { humanError } from "../lib/errors";
import type { IMyDevice, MatrixClient } from "matrix-js-sdk";
import { loadSettings, saveSettings } from "../lib/session";
import { navigate } from "../lib/hooks";
import { shortWhen } from "../lib/format";
import { BackIcon, TicketIcon } from "./icons";
import { nameOf } from "../lib/lines";
import type { CryptoInfo } from "../main";
import { FingerprintBox, OwnIdentityStatus } from "./Enrol";
import { ownMasterKey, refreshIdentity, useIdentity } from "../lib/identity";
import { disablePush, enablePush, onPushStatus, pushStatus, PushStatus } from "../lib/push";

export function Settings(props: {
  mx: MatrixClient;
  crypto: CryptoInfo;
  onSignOut: () => void;
  onVerify: () => void;
  canInvite?: boolean;
}) {
  const { mx } = props;
  const [fingerprint, setFingerprint] = useState<string | null>(null);
  const own = useIdentity(mx.getUserId()!);
  const [settings, setSettings] = useState(loadSettings());
  const [devices, setDevices] = useState<IMyDevice[] | null>(null);
  const [removing, setRemoving] = useState<IMyDevice | null>(null);
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // The homeserver's relay (TURN): "checking", then "yes" or "no".
  const [turn, setTurn] = useState<{ relay: "checking" | "yes" | "no"; text: string }>({ relay: "checking", text: "checking" });
  const [push, setPush] = useState<PushStatus>(pushStatus());
  useEffect(() => onPushStatus(() => setPush(pushStatus())), []);

  const setPushOn = (on: boolean) => {
    // Failures land in the status line below (lib/push.ts words them).
    (on ? enablePush(mx) : disablePush(mx)).catch(() => setPush(pushStatus()));
  };

  const refresh = () =>
    mx.getDevices().then(
      (r) => setDevices(r.devices.sort((a, b) => (b.last_seen_ts || 0) - (a.last_seen_ts || 0))),
      (e) => setError(humanError(e, "Could not list your sessions.")),
    );

  useEffect(() => {
    ownMasterKey(mx).then(setFingerprint);
    refreshIdentity();
    refresh();
    mx.turnServer().then(
      (r: any) =>
        setTurn(
          r?.uris?.length
            ? { relay: "yes", text: `available (${r.uris.length} address${r.uris.length > 1 ? "es" : ""})` }
            : { relay: "no", text: "not configured" },
        ),
      () => setTurn({ relay: "no", text: "not available on this server" }),
    );
  }, []);

  const setRelay = (on: boolean) => {
    const s = { ...settings, relayOnly: on };
    setSettings(s);
    saveSettings(s);
    mx.setForceTURN(on);
  };

  const remove = async (e: Event) => {
    e.preventDefault();
    if (!removing) return;
    setBusy(true);
    setError(null);
    const auth = {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: mx.getUserId()! },
      password,
    };
    try {
      try {
        await mx.deleteDevice(removing.device_id);
      } catch (err: any) {
        if (err?.httpStatus !== 401) throw err;
        await mx.deleteDevice(removing.device_id, { ...auth, session: err.data?.session } as any);
      }
      setRemoving(null);
      setPassword("");
      refresh();
    } catch (err: any) {
      setError(err?.httpStatus === 401 || err?.errcode === "M_FORBIDDEN" ? "Wrong password." : humanError(err));
    } finally {
      setBusy(false);
    }
  };

  const mine = mx.getDeviceId();
  return (
    <section class="settings" aria-labelledby="settings-title">
      <header class="chat-head">
        <button class="icon-button back" type="button" onClick={() => navigate()} aria-label="Back to lines">
          <BackIcon />
        </button>
        <h1 id="settings-title">Settings</h1>
      </header>
      <div class="settings-body">
        <section aria-labelledby="acct-h">
          <h2 id="acct-h">Account</h2>
          <p>
            Signed in as <strong>{mx.getUserId()}</strong>
          </p>
          <button type="button" class="danger-outline" onClick={props.onSignOut}>
            Sign out
          </button>
        </section>

        {(fingerprint || own.kind !== "unknown") && (
          <section aria-labelledby="id-h">
            <h2 id="id-h">Official identity</h2>
            <OwnIdentityStatus mx={mx} fingerprint={fingerprint} />
            {fingerprint && (
              <>
                <p class="muted">
                  Your identity key fingerprint. Your protocol office compares it with you in person before vouching for
                  you; read them the 12 groups of five digits.
                </p>
                <FingerprintBox fingerprint={fingerprint} userId={mx.getUserId()!} />
              </>
            )}
            {props.canInvite && (
              <p>
                <a href="#/invites" class="button-link">
                  <TicketIcon size={16} /> Manage line invites
                </a>
              </p>
            )}
          </section>
        )}

        {props.canInvite && own.kind === "verified" && (
          <AvailabilitySettings
            mx={mx}
            principal={own.att.role === "aide" && own.att.principal ? own.att.principal : mx.getUserId()!}
            principalName={own.att.role === "aide" && own.att.principal ? nameOf(mx, own.att.principal).name : undefined}
          />
        )}

        <section aria-labelledby="enc-h">
          <h2 id="enc-h">Encryption</h2>
          {props.crypto.state === "ready" ? (
            <>
              <p data-testid="crypto-state">
                {props.crypto.verified ? "This device is verified and backs up its message keys." : "This device is not verified yet."}
              </p>
              {!props.crypto.verified && (
                <button type="button" onClick={props.onVerify}>
                  Verify with recovery key
                </button>
              )}
            </>
          ) : (
            <p class="warn-text" data-testid="crypto-state">
              {props.crypto.state === "unsupported"
                ? "This server does not support end-to-end encryption yet. Encrypted lines can't be used."
                : `Encryption could not start: ${props.crypto.error}`}
            </p>
          )}
        </section>

        <section aria-labelledby="calls-h">
          <h2 id="calls-h">Calls</h2>
          <label class="toggle">
            <input
              type="checkbox"
              role="switch"
              checked={settings.relayOnly}
              // Without a relay a relay-only call cannot connect, so the
              // setting cannot be turned on (only off, if it was on before).
              disabled={turn.relay !== "yes" && !settings.relayOnly}
              aria-describedby={turn.relay === "no" ? "relay-unavailable" : undefined}
              onChange={(e) => setRelay((e.target as HTMLInputElement).checked)}
              data-testid="relay-only"
            />
            <span>
              <strong>Relay calls through the server</strong>
              <br />
              <span class="muted">Hides your IP address from the other side. Calls may use a little more delay.</span>
            </span>
          </label>
          {turn.relay === "no" && (
            <p id="relay-unavailable" class="warn-text" data-testid="relay-unavailable">
              No relay server is configured on this homeserver, so calls cannot be relayed and connect directly.
              {settings.relayOnly && " Relay-only calls cannot connect until you turn this off or the server gets a relay."}
            </p>
          )}
          <p class="muted">Relay (TURN): {turn.text}</p>
          <p class="muted">
            Notifications for incoming calls:{" "}
            {typeof Notification === "undefined" ? (
              "not supported"
            ) : Notification.permission === "granted" ? (
              "on"
            ) : Notification.permission === "denied" ? (
              "blocked in the browser"
            ) : (
              <button type="button" class="link" onClick={() => Notification.requestPermission().then(() => setSettings({ ...settings }))}>
                turn on
              </button>
            )}
          </p>
        </section>

        <section aria-labelledby="notify-h">
          <h2 id="notify-h">Notifications</h2>
          <label class="toggle">
            <input
              type="checkbox"
              role="switch"
              checked={push.state === "on" || push.state === "starting"}
              disabled={push.state === "unsupported" || push.state === "blocked" || push.state === "starting"}
              aria-describedby="push-status"
              onChange={(e) => setPushOn((e.target as HTMLInputElement).checked)}
              data-testid="push-notifications"
            />
            <span>
              <strong>Calls and texts while Hotline is closed</strong>
              <br />
              <span class="muted">A notification says who is calling or who wrote, never what they wrote.</span>
            </span>
          </label>
          <p id="push-status" class="muted" role="status" data-testid="push-status">
            {push.state === "on"
              ? "On for this browser."
              : push.state === "starting"
                ? "Turning on…"
                : push.state === "unsupported"
                  ? "This browser can't show notifications while Hotline is closed."
                  : push.state === "blocked"
                    ? "Notifications are blocked for Hotline in this browser's site settings."
                    : push.state === "failed"
                      ? push.reason
                      : "Off for this browser."}
          </p>
        </section>

        <section aria-labelledby="sessions-h">
          <h2 id="sessions-h">Sessions</h2>
          <p class="muted">Devices signed in to your account. Remove any you don't recognise.</p>
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
          {devices === null ? (
            <p role="status">Loading…</p>
          ) : (
            <ul class="devices" data-testid="devices">
              {devices.map((d) => (
                <li key={d.device_id}>
                  <div>
                    <strong>{d.display_name || "Unnamed device"}</strong>
                    {d.device_id === mine && <span class="pill">This device</span>}
                    <br />
                    <span class="muted">
                      {d.device_id}
                      {d.last_seen_ts ? ` · last active ${shortWhen(d.last_seen_ts)}` : ""}
                      {d.last_seen_ip ? ` · ${d.last_seen_ip}` : ""}
                    </span>
                  </div>
                  {d.device_id !== mine && (
                    <button type="button" onClick={() => (setRemoving(d), setError(null))} aria-label={`Remove ${d.display_name || d.device_id}`}>
                      Remove
                    </button>
                  )}
                </li>
              ))}
            </ul>
          )}
          {removing && (
            <form class="form inline-dialog" onSubmit={remove} role="dialog" aria-labelledby="rm-h">
              <h3 id="rm-h">Remove “{removing.display_name || removing.device_id}”</h3>
              <label for="rm-password">Confirm with your password</label>
              <input
                id="rm-password"
                type="password"
                autoComplete="current-password"
                value={password}
                autoFocus
                onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
              />
              <div class="row">
                <button type="button" onClick={() => setRemoving(null)}>
                  Cancel
                </button>
                <button type="submit" class="primary danger" disabled={!password || busy}>
                  {busy ? "Removing…" : "Remove session"}
                </button>
              </div>
            </form>
          )}
        </section>
      </div>
    </section>
  );
}
