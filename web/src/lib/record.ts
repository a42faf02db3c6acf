// Official or personal (docs/DESIGN.md capability 7). A line is official,
// kept in the official record, unless both principals together make it
// personal. `PUT /_hotline/v1/lines/{roomId}/record` (docs/hotline-api.yaml)
// with `{"official": false}` is one principal's consent, which the server
// writes as `org.hotline.record` state keyed `_@principal:server`
// (`{"personal": true}`); with the other's consent already standing, the same
// commit sets the line's `org.hotline.line` to `official: false` (and
// `record_changed_by`). `{"official": true}` by either principal makes it
// official again and withdraws both consents (`{"withdrawn_by": USER}`).
// Everyone on the line reads the state from these events, written by the
// server only.
import { EventTimeline, MatrixClient, MatrixEvent, Room } from "matrix-js-sdk";
import { LINE_EVENT, lineState, nameOf, RECORD_EVENT, userKey, userOfKey } from "./lines";
import { api } from "./session";

export { RECORD_EVENT };


const consents = (c: Record<string, any> | undefined | null) => c?.personal === true;

/** Asks for the line to be official (alone) or personal (both principals must). Answers whether it is official now. */
export async function setLineRecord(mx: MatrixClient, roomId: string, official: boolean): Promise<boolean> {
  const r = await api(
    mx.getHomeserverUrl(),
    "PUT",
    `/_hotline/v1/lines/${encodeURIComponent(roomId)}/record`,
    { official },
    mx.getAccessToken() || undefined,
  );
  return r.official !== false;
}

export interface RecordState {
  /** Kept in the official record (the default). */
  official: boolean;
  /** The principals whose consent to a personal line stands. */
  asking: string[];
  principals: string[];
}

/** Where a line stands now, or null for a room that is not a line. */
export function recordState(room: Room): RecordState | null {
  const line = lineState(room);
  if (!line) return null;
  const asking = line.principals.filter((p) => consents(room.currentState.getStateEvents(RECORD_EVENT, userKey(p))?.getContent()));
  return { official: line.official, asking: line.official ? asking : [], principals: line.principals };
}

/**
 * The notices the record's changes show along a stretch of the timeline,
 * told as each was when it happened (the server sends no prev_content, so
 * the state is followed from the stretch's start): "Maria Castell asked to
 * make this line personal", "This line is now personal: not recorded",
 * "Jon Varga made this line official again". A consent withdrawn as the line
 * turns official again says nothing (the line's own notice does).
 */
export function recordNotices(mx: MatrixClient, room: Room, events: MatrixEvent[]): Map<MatrixEvent, string | null> {
  const out = new Map<MatrixEvent, string | null>();
  const line = lineState(room);
  if (!line) return out;
  const n = (u: string) => nameOf(mx, u, room).name;
  const start = room.getLiveTimeline().getState(EventTimeline.BACKWARDS);
  const startLine = start?.getStateEvents(LINE_EVENT, "")?.getContent();
  let official = startLine ? startLine.official !== false : true;
  let known = !!startLine;
  const asking = new Set<string>();
  for (const p of line.principals) {
    if (consents(start?.getStateEvents(RECORD_EVENT, userKey(p))?.getContent())) asking.add(p);
  }
  for (const ev of events) {
    const t = ev.getType();
    if (t === LINE_EVENT && ev.getStateKey() === "") {
      const c = ev.getContent();
      const now = c.official !== false;
      const by = typeof c.record_changed_by === "string" ? c.record_changed_by : ev.getSender();
      // The line's first state says nothing: it is the line opening.
      if (!known || now === official) out.set(ev, null);
      else out.set(ev, now ? `${by ? n(by) : "A principal"} made this line official again` : "This line is now personal: not recorded");
      if (now && !official) asking.clear();
      official = now;
      known = true;
      continue;
    }
    if (t !== RECORD_EVENT) continue;
    const who = userOfKey(ev.getStateKey());
    const c = ev.getContent();
    if (!who) {
      out.set(ev, null);
      continue;
    }
    if (consents(c)) {
      const other = [...asking].some((p) => p !== who);
      out.set(ev, other ? `${n(who)} agreed to make this line personal` : `${n(who)} asked to make this line personal`);
      asking.add(who);
    } else {
      const by = typeof c.withdrawn_by === "string" ? c.withdrawn_by : null;
      // Withdrawn while the line is personal: it is turning official (told by the line's notice).
      if (!official || !asking.has(who)) out.set(ev, null);
      else if (by && by !== who) out.set(ev, `${n(by)} kept this line official`);
      else out.set(ev, `${n(who)} withdrew the request to make this line personal`);
      asking.delete(who);
    }
  }
  return out;
}
