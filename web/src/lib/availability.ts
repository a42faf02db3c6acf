// Availability and the urgent override (docs/DESIGN.md capability 9).
//
// A principal (or their aide for them) sets available / do not disturb /
// asleep, with an optional "until" and their time zone:
// `PUT /_hotline/v1/availability` (docs/hotline-api.yaml). The server writes
// it as `org.hotline.availability` state keyed `_@principal:server` into each
// of the principal's lines, so everyone who shares a line reads it from the
// line's state (through /sync), and nobody else does.
//
// Once "until" is past the effective state is "available", computed here as
// the server computes it for its pushes.
//
// Urgent: the caller's client sends a clear-text `org.hotline.urgent`
// timeline event (`{"kind": "call"|"text"}`) into the line just before the
// call or text. matrix-js-sdk would encrypt it in an encrypted room, so it
// goes out as a raw authed request. The server accepts it within the line's
// daily quota or refuses it (429, why, and when the quota resets). A call
// from the signal's side within two minutes of it rings through do not
// disturb and sleep, on every device of the callee (their web app here, their
// phones through the server's pushes).
import type { MatrixClient, Room } from "matrix-js-sdk";
import { lineState, userKey } from "./lines";
import { api, MatrixError } from "./session";

export const AVAILABILITY_EVENT = "org.hotline.availability";
export const URGENT_EVENT = "org.hotline.urgent";
/** As the server's `URGENT_RING_WINDOW_MS`. */
export const URGENT_RING_WINDOW_MS = 2 * 60 * 1000;

export type AvailabilityState = "available" | "dnd" | "asleep";

export interface Availability {
  state: AvailabilityState;
  /** The state in force now ("until" past: available). */
  effective: AvailabilityState;
  until: number | null;
  tz: string | null;
  place: string | null;
  setBy: string | null;
}

function parse(c: Record<string, any> | null | undefined, now = Date.now()): Availability | null {
  if (!c || typeof c.state !== "string") return null;
  const state: AvailabilityState = c.state === "dnd" || c.state === "asleep" ? c.state : "available";
  const until = typeof c.until === "number" ? c.until : null;
  return {
    state,
    effective: until !== null && until <= now ? "available" : state,
    until,
    tz: typeof c.tz === "string" ? c.tz : null,
    place: typeof c.place === "string" && c.place ? c.place : null,
    setBy: typeof c.set_by === "string" ? c.set_by : null,
  };
}

/** A principal's availability as their line with us says, or null when never set. */
export function availabilityIn(room: Room, userId: string): Availability | null {
  return parse(room.currentState.getStateEvents(AVAILABILITY_EVENT, userKey(userId))?.getContent());
}

/** Whether a state keeps a non-urgent contact from ringing. */
export const isQuiet = (a: Availability | null) => !!a && (a.effective === "dnd" || a.effective === "asleep");

const LABEL: Record<AvailabilityState, string> = { available: "available", dnd: "do not disturb", asleep: "asleep" };

/** "03:10", in `tz` (the viewer's zone when unknown or not one Intl knows). */
export function timeIn(ts: number, tz: string | null): string {
  const opts: Intl.DateTimeFormatOptions = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  try {
    return new Intl.DateTimeFormat(undefined, tz ? { ...opts, timeZone: tz } : opts).format(ts);
  } catch {
    return new Intl.DateTimeFormat(undefined, opts).format(ts);
  }
}

/** "03:10 in Borduria · asleep until 07:00"; "" when nothing is known. */
export function describeAvailability(a: Availability | null, now = Date.now()): string {
  if (!a) return "";
  const where = a.tz ? `${timeIn(now, a.tz)} in ${a.place || a.tz}` : "";
  let what: string = LABEL[a.effective];
  if (a.effective !== "available" && a.until) what += ` until ${timeIn(a.until, a.tz)}`;
  return where ? `${where} · ${what}` : what;
}

/** Sets the availability of the principal we act for (ourself, or our principal as their aide). */
export async function setAvailability(
  mx: MatrixClient,
  state: AvailabilityState,
  until: number | null,
  tz: string = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
): Promise<Record<string, any>> {
  return api(mx.getHomeserverUrl(), "PUT", "/_hotline/v1/availability", { state, until, tz }, mx.getAccessToken() || undefined);
}

/** The availability of the principal we act for, as the server keeps it. */
export async function ownAvailability(mx: MatrixClient, principal: string): Promise<Availability | null> {
  const r = await api(
    mx.getHomeserverUrl(),
    "GET",
    `/_hotline/v1/availability/${encodeURIComponent(principal)}`,
    undefined,
    mx.getAccessToken() || undefined,
  );
  return parse(r);
}

/** How many urgent contacts our side has left on a line today, and when the next comes back. */
export async function urgentQuota(mx: MatrixClient, roomId: string): Promise<{ limit: number; remaining: number; resetsTs: number | null }> {
  const r = await api(
    mx.getHomeserverUrl(),
    "GET",
    `/_hotline/v1/lines/${encodeURIComponent(roomId)}/urgent`,
    undefined,
    mx.getAccessToken() || undefined,
  );
  return { limit: r.limit, remaining: r.remaining, resetsTs: typeof r.resets_ts === "number" ? r.resets_ts : null };
}

/** A refused urgent contact: the server's reason and when the quota resets. */
export class UrgentRefused extends Error {
  constructor(
    message: string,
    public resetsTs: number | null,
  ) {
    super(message);
  }
}

/**
 * Sends the clear-text urgent signal before a call or text (raw: matrix-js-sdk
 * would encrypt it). Throws UrgentRefused with the server's reason past the quota.
 */
export async function sendUrgent(mx: MatrixClient, roomId: string, kind: "call" | "text"): Promise<void> {
  const txn = `urgent-${Date.now()}-${Math.random().toString(36).slice(2)}`;
  try {
    await api(
      mx.getHomeserverUrl(),
      "PUT",
      `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/${URGENT_EVENT}/${txn}`,
      { kind },
      mx.getAccessToken() || undefined,
    );
  } catch (e) {
    if (e instanceof MatrixError && e.errcode === "M_LIMIT_EXCEEDED") {
      const resets = e.body["org.hotline.resets_ts"];
      throw new UrgentRefused(e.message, typeof resets === "number" ? resets : null);
    }
    throw e;
  }
}

/**
 * Whether a contact from `sender` rings us now on the line `room` (the
 * server's `rings_for`): yes, unless we are a principal in do not disturb or
 * asleep there and the sender's side sent no urgent signal in the last
 * two minutes.
 */
export function ringsFor(mx: MatrixClient, room: Room, sender: string, now = Date.now()): boolean {
  const me = mx.getUserId()!;
  if (!lineState(room)) return true;
  if (!isQuiet(availabilityIn(room, me))) return true;
  const events = room.getLiveTimeline().getEvents();
  for (let i = events.length - 1; i >= 0; i--) {
    const ev = events[i];
    if (now - ev.getTs() > URGENT_RING_WINDOW_MS) break;
    if (ev.getType() === URGENT_EVENT && sideOf(room, ev.getSender()!) === sideOf(room, sender)) return true;
  }
  return false;
}

/** The principal a line member acts for (themself, or the principal their aide marking names). */
function sideOf(room: Room, userId: string): string {
  const marking = room.currentState.getStateEvents("org.hotline.aide", userKey(userId))?.getContent();
  return typeof marking?.principal === "string" ? marking.principal : userId;
}
