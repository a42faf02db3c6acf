// #/contact-log: the principal's contact log (lib/contactLog.ts), newest
// first: when, with whom, text or call, which way, how long. Metadata only.
import { useEffect, useState } from "preact/hooks";
import type { MatrixClient } from "matrix-js-sdk";
import { callLength, ContactEntry, contactLog, downloadContactLog, Window } from "../lib/contactLog";
import { humanError } from "../lib/errors";
import { dateTime, iso } from "../lib/format";
import { navigate } from "../lib/hooks";
import { lookForIdentity, useIdentityVersion } from "../lib/identity";
import { nameOf } from "../lib/lines";
import { IdentityMark } from "./IdentityMark";
import { BackIcon, DownloadIcon, MissedIcon, PhoneIcon } from "./icons";

/** A day in the date inputs (local midnight), as ms; `end` the midnight after it. */
function dayMs(v: string, end = false): number | undefined {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(v)) return undefined;
  const [y, m, d] = v.split("-").map(Number);
  return new Date(y, m - 1, d + (end ? 1 : 0)).getTime();
}

export function ContactLog({ mx }: { mx: MatrixClient }) {
  useIdentityVersion();
  const me = mx.getUserId()!;
  const [entries, setEntries] = useState<ContactEntry[] | null>(null);
  const [principal, setPrincipal] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const [saving, setSaving] = useState(false);
  const [saved, setSaved] = useState<string | null>(null);
  const win = (): Window => ({ from: dayMs(from), to: dayMs(to, true) });

  const load = () =>
    contactLog(mx, win()).then(
      (log) => {
        setEntries(log.entries);
        setPrincipal(log.principal);
        setError(null);
        for (const u of new Set(log.entries.flatMap((e) => [e.counterpart, e.by]))) lookForIdentity(u);
      },
      (e) => setError(humanError(e, "Could not read the contact log.")),
    );
  // Kept current while open (a call going on, a text just sent).
  useEffect(() => {
    load();
    const again = () => document.visibilityState === "visible" && load();
    const t = setInterval(again, 10_000);
    window.addEventListener("focus", again);
    return () => {
      clearInterval(t);
      window.removeEventListener("focus", again);
    };
  }, [mx, from, to]);

  const download = async () => {
    setSaving(true);
    setSaved(null);
    setError(null);
    try {
      const file = await downloadContactLog(mx, win());
      setSaved(`Saved as ${file}.`);
    } catch (e) {
      setError(humanError(e, "Could not download the contact log."));
    } finally {
      setSaving(false);
    }
  };

  const n = (u: string) => nameOf(mx, u, null).name;
  const subject = principal || me;
  const target = subject === me ? "you" : n(subject);
  // "You → Bruno Keller", "Bruno Keller → you", "Aide Lea Moreau → Bruno Keller".
  const way = (e: ContactEntry): string => {
    const who = (u: string) =>
      u === me
        ? "You"
        : u === subject || u === e.counterpart
          ? n(u)
          : e.direction === "incoming"
            ? `Aide ${n(u)} (for ${n(e.counterpart)})`
            : `Aide ${n(u)}`;
    return e.direction === "outgoing" ? `${who(e.by)} → ${n(e.counterpart)}` : `${who(e.by)} → ${target}`;
  };
  const length = (e: ContactEntry): string =>
    e.kind !== "call" ? "" : e.ongoing ? "Ongoing" : !e.answered ? "Missed" : callLength(e.duration_ms ?? 0);

  return (
    <section class="settings" aria-labelledby="log-title">
      <header class="chat-head">
        <button class="icon-button back" type="button" onClick={() => navigate()} aria-label="Back to lines">
          <BackIcon />
        </button>
        <h1 id="log-title">Contact log</h1>
      </header>
      <div class="settings-body contact-log-body">
        <p class="muted intro">
          Every text and call on {subject === me ? "your" : `${n(subject)}'s`} lines: when, with whom, which way and how
          long. It holds no message text: the server never has it.
        </p>
        <section aria-labelledby="log-h">
          <div class="contact-log-tools">
            <h2 id="log-h">Texts and calls</h2>
            <div class="row">
              <label class="small">
                From{" "}
                <input type="date" value={from} onChange={(e) => setFrom((e.target as HTMLInputElement).value)} aria-label="From date" />
              </label>
              <label class="small">
                To{" "}
                <input type="date" value={to} onChange={(e) => setTo((e.target as HTMLInputElement).value)} aria-label="To date" />
              </label>
              <button type="button" onClick={download} disabled={saving}>
                <DownloadIcon /> {saving ? "Downloading…" : "Download CSV"}
              </button>
            </div>
          </div>
          {saved && (
            <p class="notice small" role="status">
              {saved}
            </p>
          )}
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
          {entries === null ? (
            <p role="status">{error ? "" : "Loading…"}</p>
          ) : entries.length === 0 ? (
            <p class="muted" data-testid="contact-log-empty">
              No texts or calls on record{from || to ? " in these dates" : " yet"}.
            </p>
          ) : (
            <div class="contact-log-wrap">
              <table class="contact-log" data-testid="contact-log">
                <thead>
                  <tr>
                    <th scope="col">Time</th>
                    <th scope="col">With</th>
                    <th scope="col">Kind</th>
                    <th scope="col">Direction</th>
                    <th scope="col">Length</th>
                    <th scope="col">
                      <span class="visually-hidden">Urgent</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {entries.map((e) => (
                    <tr
                      key={e.event_id + e.kind}
                      data-testid="contact-row"
                      data-kind={e.kind}
                      data-direction={e.direction}
                      data-event-id={e.event_id}
                    >
                      <td>
                        <time dateTime={iso(e.ts)}>{dateTime(e.ts)}</time>
                      </td>
                      <td>
                        {n(e.counterpart)} <IdentityMark userId={e.counterpart} compact />
                      </td>
                      <td>
                        {e.kind === "call" ? (
                          <span class="call-kind">
                            {e.answered === false && !e.ongoing ? <MissedIcon size={14} /> : <PhoneIcon size={14} />} Call
                          </span>
                        ) : (
                          "Text"
                        )}
                      </td>
                      <td data-testid="contact-direction">{way(e)}</td>
                      <td class={"num" + (e.kind === "call" && e.answered === false && !e.ongoing ? " missed" : "")} data-testid="contact-length">
                        {length(e)}
                      </td>
                      <td>{e.urgent && <span class="urgent-mark">Urgent</span>}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </section>
      </div>
    </section>
  );
}
