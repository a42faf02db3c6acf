// Aides on a line, visibly (docs/DESIGN.md capability 6). A principal of a
// line brings one of their own aides onto it, either principal takes any
// aide off it (`/_hotline/v1/lines/{roomId}/aides/{userId}`, documented in
// docs/hotline-api.yaml). The server writes the marking, `org.hotline.aide`
// state keyed by the aide (`_@aide:server`; `{"principal", "added_by"}`,
// then `{"removed_by"}`), with the invite or the removal: every member reads who
// an aide is and for whom from it, never from what a member could write.
import { EventTimeline, EventType, MatrixClient, MatrixEvent, Room } from "matrix-js-sdk";
import type { Attestation } from "./attestation";
import { verifiedOfficials } from "./identity";
import { AIDE_EVENT, AideMarking, lineState, markingFrom, nameOf, userOfKey } from "./lines";
import { api } from "./session";

function path(roomId: string, userId: string): string {
  return `/_hotline/v1/lines/${encodeURIComponent(roomId)}/aides/${encodeURIComponent(userId)}`;
}

/** Brings one of our aides onto a line we are a principal of: the server marks and invites them. */
export async function addAide(mx: MatrixClient, roomId: string, userId: string): Promise<void> {
  await api(mx.getHomeserverUrl(), "PUT", path(roomId, userId), {}, mx.getAccessToken() || undefined);
}

/** Takes an aide off a line we are a principal of (ours or the other side's). */
export async function removeAide(mx: MatrixClient, roomId: string, userId: string): Promise<void> {
  await api(mx.getHomeserverUrl(), "DELETE", path(roomId, userId), undefined, mx.getAccessToken() || undefined);
}

/** Our own aides, as the directory vouches for them (attestations with role aide naming us). */
export function myAides(me: string): Attestation[] {
  return verifiedOfficials().filter((a) => a.role === "aide" && a.principal === me && a.user_id !== me);
}

/**
 * The aide markings along a stretch of the timeline, as they stood at each
 * event (from the state at the stretch's start), so that a message keeps
 * the label its sender had when it was sent, and a membership change is
 * told as what it was then.
 */
export interface AideTrail {
  /** The principal each event's sender was on the line as an aide for. */
  senderFor: Map<MatrixEvent, string>;
  /** For membership events: the target's marking as it stood then. */
  markingAt: Map<MatrixEvent, AideMarking>;
  /** For membership events: the target's membership just before (the server sends no prev_content). */
  membershipBefore: Map<MatrixEvent, string | undefined>;
  /** Whether anyone was an aide on the line over the stretch (or is now). */
  any: boolean;
}

export function aideTrail(room: Room, events: MatrixEvent[]): AideTrail {
  const trail: AideTrail = { senderFor: new Map(), markingAt: new Map(), membershipBefore: new Map(), any: false };
  const line = lineState(room);
  if (!line) return trail;
  const valid = (m: AideMarking | null | undefined, user: string) =>
    !!m?.principal && line.principals.includes(m.principal) && !line.principals.includes(user);
  const now = new Map<string, AideMarking>();
  const membership = new Map<string, string | undefined>();
  const start = room.getLiveTimeline().getState(EventTimeline.BACKWARDS);
  for (const ev of start?.getStateEvents(AIDE_EVENT) || []) {
    const m = markingFrom(ev.getContent());
    const aide = userOfKey(ev.getStateKey());
    if (m && aide) now.set(aide, m);
  }
  for (const ev of room.currentState.getStateEvents(AIDE_EVENT)) {
    const aide = userOfKey(ev.getStateKey());
    if (aide && valid(markingFrom(ev.getContent()), aide)) trail.any = true;
  }
  for (const ev of events) {
    const t = ev.getType();
    const key = ev.getStateKey();
    if (t === AIDE_EVENT) {
      const aide = userOfKey(key);
      const m = markingFrom(ev.getContent());
      if (m && aide) now.set(aide, m);
      if (aide && valid(m, aide)) trail.any = true;
      continue;
    }
    if (t === EventType.RoomMember && key) {
      const m = now.get(key);
      if (m) trail.markingAt.set(ev, m);
      trail.membershipBefore.set(ev, membership.has(key) ? membership.get(key) : start?.getMember(key)?.membership);
      membership.set(key, ev.getContent().membership);
      continue;
    }
    const sender = ev.getSender();
    const m = sender ? now.get(sender) : undefined;
    if (sender && valid(m, sender)) {
      trail.senderFor.set(ev, m!.principal!);
      trail.any = true;
    }
  }
  return trail;
}

/**
 * The notice a marking or an aide's membership change shows in the
 * timeline ("Lea Moreau joined the line as aide to Maria Castell", "Jon
 * Varga removed Lea Moreau from the line"); `null` to show nothing (told by
 * the marking beside it), `undefined` when it is not about an aide.
 */
export function aideNotice(mx: MatrixClient, room: Room, ev: MatrixEvent, trail: AideTrail): string | null | undefined {
  const who = ev.getType() === AIDE_EVENT ? userOfKey(ev.getStateKey()) : ev.getStateKey();
  if (!who) return ev.getType() === AIDE_EVENT ? null : undefined;
  const n = (u: string) => nameOf(mx, u, room).name;
  const line = lineState(room);
  if (ev.getType() === AIDE_EVENT) {
    const m = markingFrom(ev.getContent());
    if (m?.principal && line?.principals.includes(m.principal)) {
      if (m.byOffice) return `${m.byOffice} added ${n(who)} to the line as aide to ${n(m.principal)}`;
      const by = m.addedBy || ev.getSender()!;
      return by === m.principal
        ? `${n(by)} added ${n(who)} to the line as their aide`
        : `${n(by)} added ${n(who)} to the line as aide to ${n(m.principal)}`;
    }
    if (m?.removedBy) return `${m.byOffice || n(m.removedBy)} removed ${n(who)} from the line`;
    return null;
  }
  if (ev.getType() !== EventType.RoomMember) return undefined;
  const m = trail.markingAt.get(ev);
  if (!m) return undefined;
  const membership = ev.getContent().membership;
  const before = trail.membershipBefore.has(ev) ? trail.membershipBefore.get(ev) : ev.getPrevContent().membership;
  if (m.principal && line?.principals.includes(m.principal)) {
    // The invite is the marking's own notice ("… added … as their aide").
    if (membership === "invite") return null;
    if (membership === "join" && before !== "join") return `${n(who)} joined the line as aide to ${n(m.principal)}`;
    if (membership === "leave" && ev.getSender() === who) {
      return before === "invite" ? `${n(who)} declined to join the line` : `${n(who)} left the line`;
    }
    return undefined;
  }
  // Taken off the line: the marking's notice says by whom.
  if (m.removedBy && membership === "leave" && ev.getSender() === m.removedBy) return null;
  return undefined;
}
