// Lines: direct conversations, their counterpart, unread count and preview.
// A line between two principals may hold aides too (`org.hotline.aide`,
// written by the server): an aide sees the line as the one between the
// two principals, never as a conversation with one person.
import {
  EventStatus,
  EventTimeline,
  EventType,
  KnownMembership,
  MatrixClient,
  MatrixEvent,
  Preset,
  Room,
} from "matrix-js-sdk";
import { identityOf } from "./identity";
import { meshInvites } from "./rtc";

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
  /** A line between two principals (`org.hotline.line`), official or personal. */
  line: boolean;
  /** Such a line, kept in the official record (not made personal by both principals). */
  official: boolean;
  /**
   * Set when we are on this line as an aide: the principal we act for.
   * `counterpart` is then the other principal (or, for an invitation not
   * yet accepted, the principal who brought us onto it).
   */
  aideOf: string | null;
}

/** State event of a direct line between two principals, set by the server. */
export const LINE_EVENT = "org.hotline.line";

/** A line room's `org.hotline.line` content, or null for other rooms. */
export function lineState(room: Room): { principals: string[]; official: boolean } | null {
  const c = room.currentState.getStateEvents(LINE_EVENT, "")?.getContent();
  if (!c || !Array.isArray(c.principals)) return null;
  return { principals: c.principals.filter((p: unknown) => typeof p === "string"), official: c.official !== false };
}

/** A principal's consent to a personal line (lib/record.ts), keyed `_` + their user id. */
export const RECORD_EVENT = "org.hotline.record";

/**
 * State event marking an aide on a line, written by the server; its state
 * key is the aide's user id after an underscore, `_@lea:server` (a room's
 * rules let only a user send state keyed by their bare id).
 */
export const AIDE_EVENT = "org.hotline.aide";

/**
 * The state key of the server's per-user line state (an aide's marking, a
 * principal's consent, a recorder's marking): the user id after an
 * underscore, as the server's `policy::user_key` writes it.
 */
export function userKey(userId: string): string {
  return `_${userId}`;
}

/** The user such a state key names, or null. */
export function userOfKey(key: string | undefined): string | null {
  return key && key.startsWith("_@") ? key.slice(1) : null;
}

/**
 * An `org.hotline.aide` marking: `principal` (and `added_by`) while the aide
 * is on the line, `removed_by` once a principal took them off; `by_office`
 * names the protocol office when it did either for its principal
 * (`hotline admin line-aide`).
 */
export interface AideMarking {
  principal: string | null;
  addedBy: string | null;
  removedBy: string | null;
  byOffice: string | null;
}

export function markingFrom(content: Record<string, any> | undefined | null): AideMarking | null {
  if (!content) return null;
  const s = (v: unknown) => (typeof v === "string" && v ? v : null);
  return {
    principal: s(content.principal),
    addedBy: s(content.added_by),
    removedBy: s(content.removed_by),
    byOffice: s(content.by_office),
  };
}

export interface LineAide {
  userId: string;
  /** The principal of the line the aide acts for. */
  principal: string;
  membership: "join" | "invite";
}

/**
 * The aides on a line now: marked for one of its principals, and joined
 * (or invited). Nobody without the marking is an aide, whatever they say.
 */
export function lineAides(room: Room): LineAide[] {
  const line = lineState(room);
  if (!line) return [];
  const out: LineAide[] = [];
  for (const ev of room.currentState.getStateEvents(AIDE_EVENT)) {
    const userId = userOfKey(ev.getStateKey());
    const m = markingFrom(ev.getContent());
    if (!userId || !m?.principal || !line.principals.includes(m.principal) || line.principals.includes(userId)) continue;
    const membership = room.getMember(userId)?.membership;
    if (membership === KnownMembership.Join || membership === KnownMembership.Invite) {
      out.push({ userId, principal: m.principal, membership });
    }
  }
  // Grouped by principal, in the line's order of principals.
  return out.sort((a, b) => line.principals.indexOf(a.principal) - line.principals.indexOf(b.principal) || a.userId.localeCompare(b.userId));
}

/** The state type marking a records office's archiver on a line. */
export const RECORDER_EVENT = "org.hotline.recorder";

export interface LineRecorder {
  userId: string;
  /** The records office, as its server names it ("Records office of Avalon"). */
  office: string;
  membership: "join" | "invite";
}

/**
 * The records offices' archivers on a line now: marked by their server
 * (`org.hotline.recorder` keyed `_@archiver:server`, `{"office": NAME}`,
 * written by the server only) and joined or invited. Only an official line
 * has one; the server takes them off when it turns personal.
 */
export function lineRecorders(room: Room): LineRecorder[] {
  const line = lineState(room);
  if (!line?.official) return [];
  const out: LineRecorder[] = [];
  for (const ev of room.currentState.getStateEvents(RECORDER_EVENT)) {
    const userId = userOfKey(ev.getStateKey());
    const office = ev.getContent()?.office;
    if (!userId || typeof office !== "string" || !office) continue;
    const membership = room.getMember(userId)?.membership;
    if (membership === KnownMembership.Join || membership === KnownMembership.Invite) {
      out.push({ userId, office, membership });
    }
  }
  return out.sort((a, b) => a.office.localeCompare(b.office));
}

/** Whether `userId` is a records office's archiver marked on the line (any time). */
export function recorderOffice(room: Room, userId: string): string | null {
  const office = room.currentState.getStateEvents(RECORDER_EVENT, userKey(userId))?.getContent()?.office;
  return typeof office === "string" && office ? office : null;
}

/**
 * The principal we act for on this room when we are on it as an aide:
 * our marking names them. Before we accept, an invitation sent by our own
 * principal (as our verified attestation names them) that is not a direct
 * chat is their bringing us onto a line. With `past`, also the principal
 * we were an aide for before we were taken off (or left).
 */
export function aideOf(mx: MatrixClient, room: Room, past = false): string | null {
  const me = mx.getUserId()!;
  const line = lineState(room);
  if (line?.principals.includes(me)) return null;
  const ev = room.currentState.getStateEvents(AIDE_EVENT, userKey(me));
  const m = markingFrom(ev?.getContent());
  const valid = (p: string | null | undefined): p is string => !!p && (!line || line.principals.includes(p));
  if (valid(m?.principal)) return m!.principal;
  if (past && ev) {
    // The marking before the one that took us off (the server sends no
    // prev_content): the newest with a principal in the loaded timeline.
    const timeline = room.getLiveTimeline();
    const events = timeline.getEvents();
    for (let i = events.length - 1; i >= 0; i--) {
      const e = events[i];
      if (e.getType() !== AIDE_EVENT || e.getStateKey() !== userKey(me)) continue;
      const p = markingFrom(e.getContent())?.principal;
      if (valid(p)) return p;
    }
    const before = timeline.getState(EventTimeline.BACKWARDS)?.getStateEvents(AIDE_EVENT, userKey(me));
    const p = markingFrom(before?.getContent())?.principal;
    if (valid(p)) return p;
  }
  if (room.getMyMembership() === KnownMembership.Invite) {
    const mine = room.getMember(me)?.events.member;
    const own = identityOf(me);
    const inviter = mine?.getSender();
    if (
      mine &&
      inviter &&
      !mine.getContent().is_direct &&
      own.kind === "verified" &&
      own.att.role === "aide" &&
      own.att.principal === inviter
    ) {
      return inviter;
    }
  }
  return null;
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
  // On the line as an aide: the other principal (before we accept, the
  // principal who brought us onto it: the line is not known yet).
  const principal = aideOf(mx, room, room.getMyMembership() === KnownMembership.Leave);
  if (principal) {
    const others = line?.principals.filter((p) => p !== principal) || [];
    return others.length === 1 ? others[0] : principal;
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

/**
 * Who someone is, for labels that say what they are on a line: the name
 * their office vouches for when their attestation verifies here, else
 * their display name, which claims nothing (`verified` false: shown
 * marked unverified).
 */
export function nameOf(mx: MatrixClient, userId: string, room?: Room | null): { name: string; verified: boolean } {
  const s = identityOf(userId);
  if (s.kind === "verified") return { name: s.att.name, verified: true };
  return { name: displayName(mx, userId, room), verified: false };
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
  if (t === AIDE_EVENT) return true;
  // Official or personal: the consents and the line's changes (told as notices).
  if (t === RECORD_EVENT || (t === LINE_EVENT && ev.getStateKey() === "")) return true;
  // MatrixRTC memberships (m.call.member) are not shown: the call's own
  // entry (m.call.invite) tells the call.
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

function previewOf(mx: MatrixClient, room: Room, counterpart: string): { text: string; ts: number } {
  const me = mx.getUserId();
  const events = room.getLiveTimeline().getEvents();
  let mesh: Set<string> | null = null;
  for (let i = events.length - 1; i >= 0; i--) {
    const ev = events[i];
    const t = ev.getType();
    if (t === EventType.RoomMessage || t === EventType.RoomMessageEncrypted) {
      const rel = ev.getWireContent()["m.relates_to"] || ev.getContent()["m.relates_to"];
      if (rel?.rel_type === "m.replace") continue;
      // With aides on the line, whoever is not the counterpart is named.
      const sender = ev.getSender()!;
      const prefix = sender === me ? "You: " : sender !== counterpart ? `${displayName(mx, sender, room)}: ` : "";
      return { text: prefix + messageText(ev), ts: ev.getTs() };
    }
    if (t === EventType.CallInvite) {
      // The links of a line call's mesh are not calls anyone placed.
      if ((mesh ??= meshInvites(room, events)).has(ev.getId()!)) continue;
      const invitee = ev.getContent().invitee;
      if (ev.getSender() !== me && typeof invitee === "string" && invitee !== me) {
        // A call between others on the line (the principals, while we are an aide).
        return { text: `${displayName(mx, ev.getSender()!, room)} called ${displayName(mx, invitee, room)}`, ts: ev.getTs() };
      }
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
  let mesh: Set<string> | null = null;
  for (let i = events.length - 1; i >= 0; i--) {
    const ev = events[i];
    if (ev.getId() === readUpTo) break;
    if (ev.getSender() === me) break;
    const t = ev.getType();
    if (t === EventType.CallInvite && (mesh ??= meshInvites(room, events)).has(ev.getId()!)) continue;
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
    const p = previewOf(mx, room, cp);
    const aide = aideOf(mx, room);
    out.push({
      room,
      roomId: room.roomId,
      counterpart: cp,
      name: aide ? lineTitle(mx, room, aide, cp) : displayName(mx, cp, room),
      avatarMxc: member?.getMxcAvatarUrl() || mx.getUser(cp)?.avatarUrl || null,
      invite,
      inviter: invite ? room.getMember(mx.getUserId()!)?.events.member?.getSender() || null : null,
      unread: invite ? 1 : unreadCount(mx, room),
      preview: invite ? (aide ? "Brings you onto a line as their aide" : "Wants to open a line with you") : p.text,
      previewTs: p.ts || Math.max(0, room.getLastActiveTimestamp() || 0),
      encrypted: mx.isRoomEncrypted?.(room.roomId) ?? room.hasEncryptionStateEvent(),
      line: !!lineState(room),
      official: !!lineState(room)?.official,
      aideOf: aide,
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
  // A line we are on as an aide is the principals' line, not ours with
  // one person: each stands on its own.
  const key = (s: LineSummary) => (s.aideOf ? `aide\n${s.roomId}` : s.counterpart);
  const best = new Map<string, LineSummary>();
  for (const s of sorted) {
    const cur = best.get(key(s));
    if (!cur || rank(s) > rank(cur)) best.set(key(s), s);
  }
  return sorted.filter((s) => best.get(key(s)) === s);
}

/**
 * What an aide calls a line: "Maria Castell – Jon Varga", their own
 * principal first; before they accept (the other side not known yet),
 * their principal's name.
 */
export function lineTitle(mx: MatrixClient, room: Room, principal: string, counterpart: string): string {
  const mine = nameOf(mx, principal, room).name;
  return counterpart === principal ? mine : `${mine} – ${nameOf(mx, counterpart, room).name}`;
}

function rank(s: LineSummary): number {
  if (s.line) return 4;
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
    if (s.counterpart === userId && !s.invite && !s.aideOf) {
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
