import { useEffect, useState } from "preact/hooks";
import { humanError } from "../lib/errors";
import { ClientEvent, KnownMembership, MatrixClient, RoomEvent } from "matrix-js-sdk";
import {
  createInvite,
  InviteState,
  inviteState,
  LineInvite,
  InvitePreview,
  listInvites,
  previewInvite,
  redeemInvite,
  revokeInvite,
  shareUrl,
} from "../lib/lineInvites";
import { displayName } from "../lib/lines";
import { MatrixError } from "../lib/session";
import { identityOf, titleLine, useIdentity, useIdentityVersion } from "../lib/identity";
import { dateTime, relative } from "../lib/format";
import { navigate } from "../lib/hooks";
import { QrCode } from "./QrCode";
import { OfficialPicker } from "./OfficialPicker";
import { BackIcon, CheckIcon, CopyIcon, QrIcon, SealCheckIcon, ShieldAlertIcon, TicketIcon } from "./icons";

const VALIDITY: [string, number][] = [
  ["1 hour", 3600_000],
  ["1 day", 86400_000],
  ["7 days", 7 * 86400_000],
  ["30 days", 30 * 86400_000],
  ["90 days", 90 * 86400_000],
];

const STATE_LABEL: Record<InviteState, string> = {
  active: "Active",
  used: "Used up",
  expired: "Expired",
  revoked: "Revoked",
};

function principalName(mx: MatrixClient, userId: string): string {
  const s = identityOf(userId);
  if (s.kind === "verified") return `${s.att.name}, ${titleLine(s.att)}`;
  return displayName(mx, userId);
}

function CopyButton({ text }: { text: string }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone(true);
      setTimeout(() => setDone(false), 2000);
    } catch {
      /* the link stays selectable in the field */
    }
  };
  return (
    <button type="button" onClick={copy} aria-label="Copy invite link">
      {done ? <CheckIcon size={16} /> : <CopyIcon />} {done ? "Copied" : "Copy"}
    </button>
  );
}

/** The link with copy button and QR code, for one invite. */
function Share({ mx, inv }: { mx: MatrixClient; inv: LineInvite }) {
  const url = shareUrl(inv);
  return (
    <div class="share" data-testid="invite-share">
      <QrCode text={url} label={`QR code of the line invite link for ${principalName(mx, inv.principal)}`} />
      <div class="share-side">
        <label for={`link-${inv.code}`}>Invite link</label>
        <div class="copy-row">
          <input
            id={`link-${inv.code}`}
            readOnly
            value={url}
            data-testid="invite-link"
            onFocus={(e) => (e.target as HTMLInputElement).select()}
          />
          <CopyButton text={url} />
        </div>
        <p class="muted small">
          Share it in person or over a channel you trust. Whoever redeems it opens a direct line with{" "}
          {principalName(mx, inv.principal)}.
        </p>
      </div>
    </div>
  );
}

function summary(inv: LineInvite, now: number): string {
  const parts: string[] = [];
  if (inv.max_uses !== null) parts.push(inv.max_uses === 1 ? (inv.uses ? "used once" : "single use") : `used ${inv.uses} of ${inv.max_uses}`);
  else parts.push(`used ${inv.uses} times`);
  if (inv.expires_ts !== null) {
    parts.push(inv.expires_ts > now ? `expires ${relative(inv.expires_ts, now)}` : `expired ${dateTime(inv.expires_ts)}`);
  }
  if (inv.for_user) parts.push(`only for ${forName(inv.for_user)}`);
  return parts.join(" · ");
}

/** An official by name and title when the directory vouches for them, else their user id. */
function forName(userId: string): string {
  const s = identityOf(userId);
  return s.kind === "verified" ? `${s.att.name} (${titleLine(s.att)})` : userId;
}

/**
 * `#/invites`: a principal's (or their aide's) line invites: create one
 * (uses, validity, optionally bound to one counterpart), share its link or
 * QR code, see each one's state, revoke.
 */
export function LineInvites({ mx }: { mx: MatrixClient }) {
  useIdentityVersion();
  const [invites, setInvites] = useState<LineInvite[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [uses, setUses] = useState("1");
  const [validity, setValidity] = useState(String(7 * 86400_000));
  const [forUser, setForUser] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState<LineInvite | null>(null);
  const [shown, setShown] = useState<string | null>(null);
  const now = Date.now();

  const load = () =>
    listInvites(mx).then(
      (l) => {
        setInvites(l);
        setError(null);
      },
      (e) => setError(humanError(e)),
    );
  // Kept current while open: a redemption elsewhere shows as "Used up".
  useEffect(() => {
    load();
    const again = () => document.visibilityState === "visible" && load();
    const t = setInterval(again, 10_000);
    window.addEventListener("focus", again);
    return () => {
      clearInterval(t);
      window.removeEventListener("focus", again);
    };
  }, [mx]);

  const create = async (e: Event) => {
    e.preventDefault();
    setError(null);
    const n = Number(uses);
    if (!Number.isInteger(n) || n < 1 || n > 1000) {
      setError("Uses must be a whole number from 1 to 1000.");
      return;
    }
    setBusy(true);
    try {
      const inv = await createInvite(mx, { maxUses: n, expiresInMs: Number(validity), forUser: forUser || undefined });
      setCreated(inv);
      setShown(null);
      setForUser(null);
      await load();
    } catch (err) {
      setError(humanError(err));
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (inv: LineInvite) => {
    if (!confirm("Revoke this line invite? Its link stops working at once.")) return;
    try {
      await revokeInvite(mx, inv.code);
      if (created?.code === inv.code) setCreated(null);
      await load();
    } catch (err) {
      setError(humanError(err));
    }
  };

  const me = mx.getUserId()!;
  const own = identityOf(me);
  // A principal reads "with you"; an aide reads their principal's name.
  const principal =
    invites?.[0]?.principal || created?.principal || (own.kind === "verified" && own.att.role === "principal" ? me : null);
  return (
    <section class="settings" aria-labelledby="invites-title">
      <header class="chat-head">
        <button class="icon-button back" type="button" onClick={() => navigate()} aria-label="Back to lines">
          <BackIcon />
        </button>
        <h1 id="invites-title">Line invites</h1>
      </header>
      <div class="settings-body">
        <p class="muted intro">
          A line invite is a direct number: the principal who redeems it gets an end-to-end encrypted line with
          {principal === me ? " you" : principal ? ` ${principalName(mx, principal)}` : " the principal you work for"}. Each one expires, can be limited to a
          number of uses or to one counterpart, and can be revoked at any time.
        </p>
        <section aria-labelledby="new-invite-h">
          <h2 id="new-invite-h">New invite</h2>
          <form class="form invite-form" onSubmit={create}>
            <div class="invite-fields">
              <div>
                <label for="invite-uses">Uses</label>
                <input
                  id="invite-uses"
                  type="number"
                  min={1}
                  max={1000}
                  inputMode="numeric"
                  value={uses}
                  onInput={(e) => setUses((e.target as HTMLInputElement).value)}
                />
              </div>
              <div>
                <label for="invite-validity">Valid for</label>
                <select id="invite-validity" value={validity} onChange={(e) => setValidity((e.target as HTMLSelectElement).value)}>
                  {VALIDITY.map(([label, ms]) => (
                    <option value={String(ms)} key={ms}>
                      {label}
                    </option>
                  ))}
                </select>
              </div>
            </div>
            <label for="invite-for">Only for (optional)</label>
            <OfficialPicker
              id="invite-for"
              label="Only for"
              value={forUser}
              onChange={setForUser}
              roles={["principal"]}
              exclude={[mx.getUserId()!, ...(principal ? [principal] : [])]}
              placeholder="Search principals by name, title or country"
            />
            <p class="muted small">
              Bound to one counterpart (a principal the directory vouches for), nobody else can redeem it, even with
              the link.
            </p>
            {error && (
              <p class="error" role="alert">
                {error}
              </p>
            )}
            <div class="row">
              <button class="primary" type="submit" disabled={busy}>
                <TicketIcon size={16} /> {busy ? "Creating…" : "Create invite"}
              </button>
            </div>
          </form>
          {created && (
            <div class="created" aria-live="polite" data-testid="created-invite">
              <h3>
                <SealCheckIcon size={16} /> Invite ready · {summary(created, now)}
              </h3>
              <Share mx={mx} inv={created} />
            </div>
          )}
        </section>

        <section aria-labelledby="invites-h">
          <h2 id="invites-h">Invites</h2>
          {invites === null ? (
            <p role="status">{error ? "Could not load the invites." : "Loading…"}</p>
          ) : invites.length === 0 ? (
            <p class="muted">No invites yet.</p>
          ) : (
            <ul class="invites" data-testid="invites">
              {invites.map((inv) => {
                const st = inviteState(inv, now);
                return (
                  <li key={inv.code} data-code={inv.code} data-state={st}>
                    <div class="invite-row">
                      <div class="invite-main">
                        <span class={`pill state-${st}`}>{STATE_LABEL[st]}</span>
                        <code class="invite-code">{inv.code.slice(0, 6)}…</code>
                        <span class="muted small">
                          {summary(inv, now)} · created {dateTime(inv.created_ts)}
                          {inv.created_by !== inv.principal ? ` by ${displayName(mx, inv.created_by)}` : ""}
                        </span>
                        {!!inv.redeemed_by?.length && (
                          <span class="small redeemers" data-testid="redeemed-by">
                            Redeemed by{" "}
                            {inv.redeemed_by.map((r, i) => (
                              <span key={r.user_id}>
                                {i ? ", " : ""}
                                <strong>{principalName(mx, r.user_id)}</strong> ({dateTime(r.ts)})
                              </span>
                            ))}
                          </span>
                        )}
                      </div>
                      <div class="row">
                        {st === "active" && (
                          <button
                            type="button"
                            onClick={() => setShown(shown === inv.code ? null : inv.code)}
                            aria-expanded={shown === inv.code}
                            aria-label={`${shown === inv.code ? "Hide" : "Show"} link and QR code of invite ${inv.code.slice(0, 6)}`}
                          >
                            <QrIcon /> {shown === inv.code ? "Hide" : "Show"}
                          </button>
                        )}
                        {st === "active" && (
                          <button
                            type="button"
                            class="danger-outline"
                            onClick={() => revoke(inv)}
                            aria-label={`Revoke invite ${inv.code.slice(0, 6)}`}
                          >
                            Revoke
                          </button>
                        )}
                      </div>
                    </div>
                    {shown === inv.code && <Share mx={mx} inv={inv} />}
                  </li>
                );
              })}
            </ul>
          )}
        </section>
      </div>
    </section>
  );
}

/** Resolves once we have joined the room in our own /sync (or after a timeout). */
function joined(mx: MatrixClient, roomId: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve) => {
    const check = () => mx.getRoom(roomId)?.getMyMembership() === KnownMembership.Join;
    if (check()) return resolve();
    const done = () => {
      mx.off(ClientEvent.Room, on);
      mx.off(RoomEvent.MyMembership, on);
      clearTimeout(t);
      resolve();
    };
    const on = () => check() && done();
    const t = setTimeout(done, timeoutMs);
    mx.on(ClientEvent.Room, on);
    mx.on(RoomEvent.MyMembership, on);
  });
}

/**
 * `#/line/{code}`: someone shared a line invite. Confirm, redeem, and go to
 * the new line; the server's refusals (used up, expired, revoked, meant for
 * someone else, not a principal) are shown as it words them.
 */
export function RedeemInvite({ mx, code, server }: { mx: MatrixClient; code: string; server?: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [preview, setPreview] = useState<InvitePreview | null>(null);
  const [refused, setRefused] = useState<string | null>(null);
  // Who is calling, before anything is accepted; refused codes say why.
  useEffect(() => {
    let live = true;
    setPreview(null);
    setRefused(null);
    previewInvite(mx, code, server).then(
      (p) => live && setPreview(p),
      (err) =>
        live &&
        setRefused(
          err instanceof MatrixError && err.status === 404
            ? "This line invite does not exist. Check that the link is complete."
            : err instanceof MatrixError && err.errcode === "M_LIMIT_EXCEEDED"
              ? "Too many invites looked up. Wait a minute and open the link again."
              : humanError(err),
        ),
    );
    return () => {
      live = false;
    };
  }, [mx, code, server]);
  const open = async () => {
    setBusy(true);
    setError(null);
    try {
      const roomId = await redeemInvite(mx, code, server);
      await joined(mx, roomId);
      navigate("line", roomId);
    } catch (err) {
      setError(
        err instanceof MatrixError && err.status === 404
          ? "This line invite does not exist. Check that the link is complete."
          : humanError(err),
      );
      setBusy(false);
    }
  };
  return (
    <section class="settings" aria-labelledby="redeem-title">
      <header class="chat-head">
        <button class="icon-button back" type="button" onClick={() => navigate()} aria-label="Back to lines">
          <BackIcon />
        </button>
        <h1 id="redeem-title">Open a direct line</h1>
      </header>
      <div class="settings-body">
        <section class="redeem" aria-labelledby="redeem-h">
          <span class="brand-mark big" aria-hidden="true">
            <TicketIcon size={30} />
          </span>
          <h2 id="redeem-h">You have a line invite</h2>
          {preview ? (
            <>
              <Issuer preview={preview} />
              <p>
                Opening it creates an official, end-to-end encrypted line between you and {preview.name}. You both
                join at once; either of you can text or call.
              </p>
            </>
          ) : (
            !refused && <p role="status">Checking who sent it…</p>
          )}
          <p class="muted small">
            Invite <code>{code.slice(0, 6)}…</code>
          </p>
          {(refused || error) && (
            <p class="error" role="alert" data-testid="redeem-error">
              {refused || error}
            </p>
          )}
          <div class="row center">
            <button type="button" onClick={() => navigate()}>
              Not now
            </button>
            {preview && (
              <button type="button" class="primary" onClick={open} disabled={busy}>
                {busy ? "Opening…" : "Open the line"}
              </button>
            )}
          </div>
        </section>
      </div>
    </section>
  );
}

/**
 * The principal who sent an invite, as the server names them, checked
 * against their attestation in the directory (signature by this server's
 * key, current identity key): "verified" only when the attested name,
 * title and country are the ones shown.
 */
function Issuer({ preview }: { preview: InvitePreview }) {
  const s = useIdentity(preview.principal);
  const verified =
    s.kind === "verified" &&
    s.att.name === preview.name &&
    s.att.title === preview.title &&
    s.att.country === preview.country;
  const status = verified ? "verified" : s.kind === "unknown" ? "unknown" : "unverified";
  return (
    <div class={`issuer ${status}`} data-testid="invite-issuer" data-status={status}>
      <p class="issuer-name">
        {verified ? <SealCheckIcon size={18} /> : <ShieldAlertIcon size={18} />} <strong>{preview.name}</strong>
      </p>
      <p class="issuer-title">
        {preview.title} · {preview.country}
      </p>
      <p class="muted small">
        {preview.office} · <code>{preview.principal}</code>
      </p>
      <p class="small issuer-check">
        {verified && s.kind === "verified"
          ? `Verified: attested by ${s.att.office}`
          : status === "unknown"
            ? "Checking the directory…"
            : "Not verified: no valid attestation of this identity in the directory. Do not open the line unless you expected it."}
      </p>
      <p class="small" data-testid="invite-expiry">
        {preview.expires_ts === null ? "Does not expire" : `Expires ${dateTime(preview.expires_ts)} (${relative(preview.expires_ts, Date.now())})`}
      </p>
    </div>
  );
}
