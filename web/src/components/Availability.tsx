// Availability on screen (lib/availability.ts): the counterpart's local time
// and state wherever one is about to call them, and the setter in Settings.
import { useEffect, useState } from "preact/hooks";
import type { MatrixClient, Room } from "matrix-js-sdk";
import {
  Availability,
  AvailabilityState,
  availabilityIn,
  describeAvailability,
  isQuiet,
  ownAvailability,
  setAvailability,
} from "../lib/availability";
import { humanError } from "../lib/errors";

/** Re-renders every half minute, so a local time and an "until" stay true. */
export function useMinuteTick(): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = window.setInterval(() => setNow(Date.now()), 30_000);
    return () => window.clearInterval(t);
  }, []);
  return now;
}

/** "03:10 in Borduria · asleep until 07:00" for a line's principal; nothing when they never set it. */
export function AvailabilityText(props: { room: Room; userId: string; class?: string; testid?: string }) {
  const now = useMinuteTick();
  const a = availabilityIn(props.room, props.userId);
  const text = describeAvailability(a, now);
  if (!text) return null;
  return (
    <span
      class={(props.class || "availability") + (isQuiet(a) ? " quiet" : "")}
      data-testid={props.testid || "availability"}
      data-state={a?.effective}
    >
      {text}
    </span>
  );
}

/** Today's (or tomorrow's, when past) `HH:MM` in the viewer's zone, as a timestamp. */
function nextTime(hhmm: string, now = Date.now()): number | null {
  const m = /^(\d{1,2}):(\d{2})$/.exec(hhmm);
  if (!m) return null;
  const d = new Date(now);
  d.setHours(Number(m[1]), Number(m[2]), 0, 0);
  if (d.getTime() <= now) d.setDate(d.getDate() + 1);
  return d.getTime();
}

/**
 * Settings: available / do not disturb / asleep, with an optional "until",
 * for `principal`: ourself, or the principal we are aide to.
 */
export function AvailabilitySettings(props: { mx: MatrixClient; principal: string; principalName?: string }) {
  const { mx, principal } = props;
  const forOther = principal !== mx.getUserId();
  const [current, setCurrent] = useState<Availability | null>(null);
  const [state, setState] = useState<AvailabilityState>("available");
  const [until, setUntil] = useState("");
  const [status, setStatus] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    ownAvailability(mx, principal).then(
      (a) => {
        setCurrent(a);
        if (a) setState(a.effective);
      },
      () => undefined,
    );
  }, [mx, principal]);
  const save = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setStatus(null);
    const ts = state !== "available" && until ? nextTime(until) : null;
    setBusy(true);
    try {
      const r = await setAvailability(mx, state, ts);
      const a: Availability = {
        state: r.state,
        effective: r.state,
        until: r.until ?? null,
        tz: r.tz ?? null,
        place: r.place || null,
        setBy: r.set_by ?? null,
      };
      setCurrent(a);
      setStatus(`Saved: ${describeAvailability(a)}`);
    } catch (err) {
      setError(humanError(err, forOther ? "Could not set their availability." : "Could not set your availability."));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="avail-h" data-testid="availability-settings">
      <h2 id="avail-h">Availability</h2>
      {forOther ? (
        <p class="muted" data-testid="availability-for">
          As aide to {props.principalName || principal}: shown to those who share a line with them, with their local
          time, before they call. While they are in do not disturb or asleep, calls do not ring them and texts arrive
          silently; an urgent call still rings. Your own devices ring as before.
        </p>
      ) : (
        <p class="muted">
          Shown to those who share a line with you, with your local time, before they call. While you are in do not
          disturb or asleep, calls do not ring you (you see them as missed) and texts arrive silently; an urgent call
          still rings.
        </p>
      )}
      {current && <p data-testid="availability-now">Now: {describeAvailability(current)}</p>}
      <form onSubmit={save} class="availability-form">
        <fieldset>
          <legend class="visually-hidden">Availability</legend>
          {(["available", "dnd", "asleep"] as AvailabilityState[]).map((s) => (
            <label key={s} class="radio">
              <input type="radio" name="availability" value={s} checked={state === s} onChange={() => setState(s)} />{" "}
              {s === "available" ? "Available" : s === "dnd" ? "Do not disturb" : "Asleep"}
            </label>
          ))}
        </fieldset>
        {state !== "available" && (
          <label>
            Until (optional){" "}
            <input type="time" value={until} onInput={(e) => setUntil((e.target as HTMLInputElement).value)} data-testid="availability-until" />
          </label>
        )}
        <button type="submit" class="primary" disabled={busy} data-testid="availability-save">
          Save availability
        </button>
      </form>
      {status && (
        <p role="status" data-testid="availability-status">
          {status}
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}
