// Who is in a line's call: the MatrixRTC memberships (MSC4143 `m.call.member`,
// state keyed `_{userId}_{deviceId}`, `application: "m.call"`, `call_id: ""`,
// focus `mesh`) that stand in the room, read from its state. A membership
// counts while it has content, has not expired (`created_ts + expires`), was
// sent by the user its key names, and that user is joined to the room (an
// aide taken off the line mid-call can no longer empty their own).
import { EventTimeline, EventType, KnownMembership, MatrixEvent, Room } from "matrix-js-sdk";

/** MSC4143 MatrixRTC membership state. */
export const CALL_MEMBER_EVENT = "m.call.member";
/** How long a membership lasts if its device never says it left (MSC4143's default, 4 hours). */
export const MEMBERSHIP_EXPIRES_MS = 14_400_000;

export interface RtcMember {
  /** The state key, `_{userId}_{deviceId}`. */
  key: string;
  userId: string;
  deviceId: string;
  createdTs: number;
  expiresAt: number;
}

/** The key of one device's membership. */
export function memberKey(userId: string, deviceId: string): string {
  return `_${userId}_${deviceId}`;
}

/** A membership event read as a member of the room's mesh call, or null (left, expired, another focus, forged key). */
export function rtcMemberOf(ev: MatrixEvent | null | undefined, now: number): RtcMember | null {
  if (!ev) return null;
  const c = ev.getContent();
  const userId = ev.getSender();
  const key = ev.getStateKey();
  if (!userId || !key || c.application !== "m.call" || (c.call_id ?? "") !== "" || typeof c.device_id !== "string") return null;
  // Only the mesh: a member of another focus (an SFU) could not be reached peer to peer.
  if (c.focus_active?.type !== "mesh") return null;
  if (key !== memberKey(userId, c.device_id)) return null;
  const createdTs = typeof c.created_ts === "number" ? c.created_ts : ev.getTs();
  const expiresAt = createdTs + (typeof c.expires === "number" ? c.expires : MEMBERSHIP_EXPIRES_MS);
  if (expiresAt <= now) return null;
  return { key, userId, deviceId: c.device_id, createdTs, expiresAt };
}

/** Join order: earlier `created_ts` first, ties by user id, then device id. */
export function joinOrder(a: { createdTs: number; userId: string; deviceId: string }, b: typeof a): number {
  if (a.createdTs !== b.createdTs) return a.createdTs - b.createdTs;
  if (a.userId !== b.userId) return a.userId < b.userId ? -1 : 1;
  return a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0;
}

/** The members of the room's mesh call now, in join order. */
export function callMembers(room: Room | null | undefined, now = Date.now()): RtcMember[] {
  if (!room) return [];
  const out: RtcMember[] = [];
  for (const ev of room.currentState.getStateEvents(CALL_MEMBER_EVENT)) {
    const m = rtcMemberOf(ev, now);
    if (m && room.getMember(m.userId)?.membership === KnownMembership.Join) out.push(m);
  }
  return out.sort(joinOrder);
}

/**
 * The call invites in a stretch of the room's live timeline that link two
 * members of a call already going on (the invitee was in the call when it
 * was sent): the mesh's own signalling, not a call anyone placed. Their
 * ids; the timeline and the list of lines leave them out.
 */
export function meshInvites(room: Room, events: MatrixEvent[] = room.getLiveTimeline().getEvents()): Set<string> {
  const out = new Set<string>();
  if (!events.some((e) => e.getType() === EventType.CallInvite)) return out;
  const live = new Map<string, MatrixEvent>();
  const start = room.getLiveTimeline().getState(EventTimeline.BACKWARDS);
  for (const ev of start?.getStateEvents(CALL_MEMBER_EVENT) || []) live.set(ev.getStateKey()!, ev);
  for (const ev of events) {
    const t = ev.getType();
    if (t === CALL_MEMBER_EVENT && ev.getStateKey() !== undefined) {
      live.set(ev.getStateKey()!, ev);
      continue;
    }
    if (t !== EventType.CallInvite) continue;
    const invitee = ev.getContent().invitee;
    if (typeof invitee !== "string" || !ev.getId()) continue;
    for (const m of live.values()) {
      if (rtcMemberOf(m, ev.getTs())?.userId === invitee) {
        out.add(ev.getId()!);
        break;
      }
    }
  }
  return out;
}
