// Lines: direct conversations, their counterpart, unread count and preview.
import {
  EventStatus,
  EventType,
  KnownMembership,
  MatrixClient,
  MatrixEvent,
  Preset,
  Room,
} from "matrix-js-sdk";

export interface LineSummary {
  room: Room;
  roomId: string;
  counterpart: string; // user id
  name: string;
  avatarMxc: string | null;
  invite: boolean; // we are invited, not yet joined
  inviter: string | null;
  unread: number;
  preview: string;
  previewTs: number;
  encrypted: boolean;
  /** An official direct line opened from a line invite (`org.hotline.line`). */
  official: boolean;
}

/** State event of a direct line between two principals, set by the server. */
export const LINE_EVENT = "org.hotline.line";

/** A line room's `org.hotline.line` content, or null for other rooms. */
export function lineState(room: Room): { principals: string[]; official: boolean } | null {
  const c = room.currentState.getStateEvents(LINE_EVENT, "")?.getContent();
  if (!c || !Array.isArray(c.principals)) return null;
  return { principals: c.principals.filter((p: unknown) => typeof p === "string"), official: c.official !== false };
}

/** m.direct account data inverted: room id -> user id. */
export function directMap(mx: MatrixClient): Map<string, string> {
  const m = new Map<string, string>();
  const content = (mx.getAccountData(EventType.Direct)?.getContent() || {}) as Record<string, string[]>;
  for (const [user, rooms] of Object.entries(content)) {
    if (Array.isArray(rooms)) for (const r of rooms) m.set(r, user);
  }
  return m;
}

/** The other party of a direct room, or null when the room is not a line. */
export function counterpartOf(mx: MatrixClient, room: Room, direct?: Map<string, string>): string | null {
  const me = mx.getUserId()!;
  // A direct line between two principals: the other principal, whether or
  // not the room is in our m.direct yet.
  const line = lineState(room);
  if (line && line.principals.includes(me)) {
    const others = line.principals.filter((p) => p !== me);
    if (others.length === 1) return others[0];
  }
  const d = (direct || directMap(mx)).get(room.roomId);
  if (d) return d;
  const mine = room.getMember(me);
  if (room.getMyMembership() === KnownMembership.Invite) {
    const ev = mine?.events.member;
    if (ev?.getContent().is_direct) return ev.getSender() || null;
    return null;
  }
  // A room created as direct by the other side, not yet in our m.direct.
  if (mine?.events.member?.getPrevContent()?.membership === KnownMembership.Invite) {
    const inv = mine.events.member.getPrevContent();
    if (inv.is_direct) {
      const others = room.getMembers().filter((m) => m.userId !== me);
      if (others.length === 1) return others[0].userId;
    }
  }
  // Joined elsewhere (another client): a two-person room without a name is
  // a line, as other Matrix clients treat it.
  const others = room
    .getMembers()
    .filter((m) => m.userId !== me && (m.membership === "join" || m.membership === "invite" || m.membership === "leave"));
  const named = room.currentState.getStateEvents(EventType.RoomName, "")?.getContent().name;
  if (others.length === 1 && !named) return others[0].userId;
  return null;
}

export function displayName(mx: MatrixClient, userId: string, room?: Room | null): string {
  const m = room?.getMember(userId);
  if (m?.rawDisplayName && m.rawDisplayName !== userId) return m.rawDisplayName;
  const u = mx.getUser(userId);
  if (u?.displayName && u.displayName !== userId) return u.displayName;
  return localpart(userId);
}

export function localpart(userId: string): string {
  return userId.replace(/^@/, "").replace(/:.*$/, "");
}

/** Events shown in a chat timeline (edits are folded into their original). */
export function isShown(ev: MatrixEvent): boolean {
  const t = ev.getType();
  if (t === EventType.RoomMessage || t === EventType.RoomMessageEncrypted) {
    const rel = ev.getContent()["m.relates_to"] || ev.getWireContent()["m.relates_to"];
    if (rel?.rel_type === "m.replace") return false;
    return true;
  }
  if (t === EventType.CallInvite) return true;
  if (t === EventType.RoomMember) return true;
  if (t === EventType.RoomEncryption) return true;
  return false;
}

export function messageText(ev: MatrixEvent): string {
  if (ev.isRedacted()) return "Message deleted";
  if (ev.isDecryptionFailure()) return "Unable to decrypt this message";
  if (ev.getType() === EventType.RoomMessageEncrypted) return "Decrypting…";
  const c = latestContent(ev);
  switch (c.msgtype) {
    case "m.image":
      return "Photo";
    case "m.file":
      return `File: ${c.body || "attachment"}`;
    case "m.audio":
      return "Audio";
    case "m.video":
      return "Video";
    default:
      return typeof c.body === "string" ? c.body : "";
  }
}

/** The content to show: the latest edit's m.new_content, else the original. */
export function latestContent(ev: MatrixEvent): Record<string, any> {
  const r = ev.replacingEvent();
  if (r && !r.isRedacted()) {
    const nc = r.getContent()["m.new_content"];
    if (nc) return nc;
  }
  return ev.getContent();
}

function previewOf(mx: MatrixClient, room: Room): { text: string; ts: number } {
  const me = mx.getUserId();
  const events = room.getLiveTimeline().getEvents();
  for (let i = events.length - 1; i >= 0; i--) {
    const ev = events[i];
    const t = ev.getType();
    if (t === EventType.RoomMessage || t === EventType.RoomMessageEncrypted) {
      const rel = ev.getWireContent()["m.relates_to"] || ev.getContent()["m.relates_to"];
      if (rel?.rel_type === "m.replace") continue;
      const prefix = ev.getSender() === me ? "You: " : "";
      return { text: prefix + messageText(ev), ts: ev.getTs() };
    }
    if (t === EventType.CallInvite) {
      return { text: ev.getSender() === me ? "Outgoing call" : "Incoming call", ts: ev.getTs() };
    }
  }
  const last = events[events.length - 1];
  return { text: "", ts: last ? last.getTs() : 0 };
}

/** Messages from the other side after our read receipt. */
export function unreadCount(mx: MatrixClient, room: Room): number {
  const me = mx.getUserId()!;
  if (room.getMyMembership() !== KnownMembership.Join) return 0;
  const readUpTo = room.getEventReadUpTo(me);
  const events = room.getLiveTimeline().getEvents();
  let n = 0;
  for (let i = events.length - 1; i >= 0; i--) {
    const ev = events[i];
    if (ev.getId() === readUpTo) break;
    if (ev.getSender() === me) break;
    const t = ev.getType();
    if ((t === EventType.RoomMessage || t === EventType.RoomMessageEncrypted || t === EventType.CallInvite) && isShown(ev)) n++;
  }
  return n;
}

export function lineSummaries(mx: MatrixClient): LineSummary[] {
  const direct = directMap(mx);
  const out: LineSummary[] = [];
  for (const room of mx.getRooms()) {
    const membership = room.getMyMembership();
    if (membership !== KnownMembership.Join && membership !== KnownMembership.Invite) continue;
    const cp = counterpartOf(mx, room, direct);
    if (!cp) continue;
    const invite = membership === KnownMembership.Invite;
    const member = room.getMember(cp);
    const p = previewOf(mx, room);
    out.push({
      room,
      roomId: room.roomId,
      counterpart: cp,
      name: displayName(mx, cp, room),
      avatarMxc: member?.getMxcAvatarUrl() || mx.getUser(cp)?.avatarUrl || null,
      invite,
      inviter: invite ? room.getMember(mx.getUserId()!)?.events.member?.getSender() || null : null,
      unread: invite ? 1 : unreadCount(mx, room),
      preview: invite ? "Wants to open a line with you" : p.text,
      previewTs: p.ts || Math.max(0, room.getLastActiveTimestamp() || 0),
      encrypted: mx.isRoomEncrypted?.(room.roomId) ?? room.hasEncryptionStateEvent(),
      official: !!lineState(room)?.official,
    });
  }
  out.sort((a, b) => (a.invite !== b.invite ? (a.invite ? -1 : 1) : b.previewTs - a.previewTs));
  return onePerPerson(out);
}

/**
 * One entry per person, as in Signal or WhatsApp. Two rooms with the same
 * counterpart happen (both sides opened a line at once, an invite to a new
 * room while an old one stands): the list shows the one that is the line:
 * the official line, else one both have joined, else an invitation they are
 * waiting in, else the most recent. `findLine` opens the same one.
 */
function onePerPerson(sorted: LineSummary[]): LineSummary[] {
  const best = new Map<string, LineSummary>();
  for (const s of sorted) {
    const cur = best.get(s.counterpart);
    if (!cur || rank(s) > rank(cur)) best.set(s.counterpart, s);
  }
  return sorted.filter((s) => best.get(s.counterpart) === s);
}

function rank(s: LineSummary): number {
  if (s.official) return 4;
  const other = s.room.getMember(s.counterpart)?.membership;
  if (s.invite) return 2; // they are waiting in it
  if (other === "join") return 3;
  return other === "invite" ? 1 : 0; // 0: they left it
}

/** Adds (or keeps) a room in our m.direct account data. */
export async function markDirect(mx: MatrixClient, userId: string, roomId: string): Promise<void> {
  const content = { ...((mx.getAccountData(EventType.Direct)?.getContent() || {}) as Record<string, string[]>) };
  const rooms = content[userId] || [];
  if (rooms.includes(roomId)) return;
  content[userId] = [...rooms, roomId];
  await mx.setAccountData(EventType.Direct, content);
}

/** An existing line with this user, if any. */
export function findLine(mx: MatrixClient, userId: string): Room | null {
  for (const s of lineSummaries(mx)) {
    if (s.counterpart === userId && !s.invite) {
      const other = s.room.getMember(userId)?.membership;
      if (other === "join" || other === "invite") return s.room;
    }
  }
  return null;
}

export function normaliseUserId(input: string, myUserId: string): string {
  let s = input.trim();
  if (!s) return s;
  if (!s.startsWith("@")) s = "@" + s;
  if (!s.includes(":")) s = s + ":" + myUserId.split(":").slice(1).join(":");
  return s;
}

/** New line: an encrypted direct room with one user, recorded in m.direct. */
export async function createLine(mx: MatrixClient, userId: string): Promise<string> {
  const { room_id } = await mx.createRoom({
    is_direct: true,
    preset: Preset.TrustedPrivateChat,
    invite: [userId],
    initial_state: [
      {
        type: EventType.RoomEncryption,
        state_key: "",
        content: { algorithm: "m.megolm.v1.aes-sha2" },
      },
    ],
  });
  await markDirect(mx, userId, room_id);
  return room_id;
}

export function isPending(ev: MatrixEvent): boolean {
  return ev.status !== null && ev.status !== EventStatus.SENT;
}
