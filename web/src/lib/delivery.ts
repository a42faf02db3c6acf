// Messages the counterpart could not read when they were written.
//
// An encrypted message can only be read by the devices its room key was
// shared with when it was sent. A counterpart with no signed-in device (never
// signed in, or signed out everywhere) gets the key on no device, and a
// device that signs in later never gets it: the Rust crypto shares a Megolm
// session with a new device only from its current ratchet index on, and it
// has no way to share earlier indexes with another user's device (key
// forwarding answers only the user's own devices; history sharing is not in
// this matrix-js-sdk). So the app itself makes sure such a message arrives:
//
//   - "held": the sender chose to hold it; it is not on the server yet and is
//     sent, normally, once a device of the counterpart appears;
//   - "unread": it was sent while the counterpart had no device (encrypted
//     to nobody); once a device appears it is sent again as a new encrypted
//     event carrying `org.hotline.redelivery_of: <original event id>`, which
//     the receiving side shows in place of the undecryptable original.
//
// Both are kept in localStorage (`hotline.outbox:USER:ROOM`) until delivered,
// so they survive a reload of the sender's page; sign-out forgets them.
import { ClientEvent, MatrixClient, MatrixEvent } from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api";
import { useEffect, useState } from "preact/hooks";

export const REDELIVERY_OF = "org.hotline.redelivery_of";

export interface OutboxEntry {
  /** Local id (the original event id for "unread"). */
  id: string;
  kind: "held" | "unread";
  /** The counterpart it waits for. */
  to: string;
  /** The message content as the sender wrote it. */
  content: Record<string, unknown>;
  /** When it was written. */
  ts: number;
  /** The original event ("unread" only). */
  eventId?: string;
}

const PREFIX = "hotline.outbox:";
const keyOf = (userId: string, roomId: string) => `${PREFIX}${userId}:${roomId}`;

const listeners = new Set<() => void>();
function changed(): void {
  for (const fn of [...listeners]) fn();
}

export function outbox(userId: string, roomId: string): OutboxEntry[] {
  try {
    const v = JSON.parse(localStorage.getItem(keyOf(userId, roomId)) || "[]");
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

function save(userId: string, roomId: string, entries: OutboxEntry[]): void {
  if (entries.length) localStorage.setItem(keyOf(userId, roomId), JSON.stringify(entries));
  else localStorage.removeItem(keyOf(userId, roomId));
  changed();
}

/** Takes one entry out of a room's outbox. */
function drop(userId: string, roomId: string, id: string): void {
  save(
    userId,
    roomId,
    outbox(userId, roomId).filter((e) => e.id !== id),
  );
}

/** Room ids with something waiting, for this user. */
function roomsWaiting(userId: string): string[] {
  const p = `${PREFIX}${userId}:`;
  const out: string[] = [];
  for (let i = 0; i < localStorage.length; i++) {
    const k = localStorage.key(i);
    if (k?.startsWith(p)) out.push(k.slice(p.length));
  }
  return out;
}

/** Sign-out: forget everything this user had waiting. */
export function forgetOutbox(userId: string): void {
  for (const room of roomsWaiting(userId)) localStorage.removeItem(keyOf(userId, room));
  changed();
}

/** Keeps a message back until a device of `to` can read it. */
export function hold(mx: MatrixClient, roomId: string, to: string, content: Record<string, unknown>): void {
  const me = mx.getUserId()!;
  const id = `held-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  save(me, roomId, [...outbox(me, roomId), { id, kind: "held", to, content, ts: Date.now() }]);
  void deliver(mx, roomId);
}

/** Remembers a message sent while `to` had no device, to send again. */
export function rememberUnread(
  mx: MatrixClient,
  roomId: string,
  to: string,
  eventId: string,
  content: Record<string, unknown>,
): void {
  const me = mx.getUserId()!;
  const entries = outbox(me, roomId).filter((e) => e.id !== eventId);
  save(me, roomId, [...entries, { id: eventId, kind: "unread", to, content, ts: Date.now(), eventId }]);
  void deliver(mx, roomId);
}

/** Drops a held message (the sender cancelled it). */
export function cancelHeld(mx: MatrixClient, roomId: string, id: string): void {
  drop(mx.getUserId()!, roomId, id);
}

/**
 * How many devices of `userId` with published keys this client knows
 * (asking the server when the list is not cached): the devices a message
 * sent now would be encrypted for. `null` without crypto.
 */
export async function readableDevices(mx: MatrixClient, userId: string): Promise<number | null> {
  const crypto = mx.getCrypto();
  if (!crypto) return null;
  const map = await crypto.getUserDeviceInfo([userId], true);
  return map.get(userId)?.size ?? 0;
}

/** The outbox of one room, re-read whenever it changes. */
export function useOutbox(mx: MatrixClient, roomId: string): OutboxEntry[] {
  const me = mx.getUserId()!;
  const [entries, setEntries] = useState(() => outbox(me, roomId));
  useEffect(() => {
    const read = () => setEntries(outbox(me, roomId));
    read();
    listeners.add(read);
    return () => void listeners.delete(read);
  }, [mx, roomId]);
  return entries;
}

/** The counterpart's readable devices, kept current with device-list updates. */
export function useDeviceCount(mx: MatrixClient, userId: string | null): number | null {
  const [count, setCount] = useState<number | null>(null);
  useEffect(() => {
    setCount(null);
    const crypto = mx.getCrypto();
    if (!userId || !crypto) return;
    let live = true;
    const check = () =>
      readableDevices(mx, userId).then(
        (n) => live && setCount(n),
        () => undefined,
      );
    check();
    const onUpdate = (users: string[]) => users.includes(userId) && check();
    mx.on(CryptoEvent.DevicesUpdated as any, onUpdate);
    return () => {
      live = false;
      mx.off(CryptoEvent.DevicesUpdated as any, onUpdate);
    };
  }, [mx, userId]);
  return count;
}

const delivering = new Set<string>();

/**
 * Sends what waits in one room once its counterpart has a device: held
 * messages as they are, unread ones again with `org.hotline.redelivery_of`.
 * Each entry leaves the outbox only once its send succeeded.
 */
export async function deliver(mx: MatrixClient, roomId: string): Promise<void> {
  const me = mx.getUserId();
  if (!me || delivering.has(roomId) || !mx.getRoom(roomId)) return;
  delivering.add(roomId);
  try {
    const ready = new Map<string, boolean>();
    for (;;) {
      const next = [...outbox(me, roomId)].sort((a, b) => a.ts - b.ts);
      let sent = false;
      for (const e of next) {
        if (!ready.has(e.to)) ready.set(e.to, ((await readableDevices(mx, e.to)) ?? 0) > 0);
        if (!ready.get(e.to)) continue;
        const content = e.kind === "unread" ? { ...e.content, [REDELIVERY_OF]: e.eventId } : e.content;
        await mx.sendMessage(roomId, content as any);
        drop(me, roomId, e.id);
        sent = true;
        break;
      }
      if (!sent) return;
    }
  } catch {
    /* not sent this time: the entry stays and is tried again on the next device update or sync */
  } finally {
    delivering.delete(roomId);
  }
}

/**
 * Watches for the counterparts' devices: a device-list update (the server
 * reports a new device in /sync, the crypto layer fetches its keys, then
 * emits DevicesUpdated) delivers at once; a look every half minute of
 * syncing and one at start catch anything missed (a reload, a failed send).
 */
export function startDelivery(mx: MatrixClient): () => void {
  const me = mx.getUserId()!;
  const all = () => {
    for (const room of roomsWaiting(me)) void deliver(mx, room);
  };
  const onUpdate = (users: string[]) => {
    for (const room of roomsWaiting(me)) {
      if (outbox(me, room).some((e) => users.includes(e.to))) void deliver(mx, room);
    }
  };
  let last = 0;
  const onSync = () => {
    if (Date.now() - last < 30_000) return;
    last = Date.now();
    all();
  };
  mx.on(CryptoEvent.DevicesUpdated as any, onUpdate);
  mx.on(ClientEvent.Sync, onSync);
  all();
  return () => {
    mx.off(CryptoEvent.DevicesUpdated as any, onUpdate);
    mx.off(ClientEvent.Sync, onSync);
  };
}

/**
 * A timeline as the reader sees it: each redelivery takes the place of its
 * original (which the reader could not decrypt), and `sentAt` keeps the
 * original's time for it. Only the original's sender can redeliver it.
 */
export function foldRedeliveries(events: MatrixEvent[]): { events: MatrixEvent[]; sentAt: Map<MatrixEvent, number> } {
  const byId = new Map(events.map((e) => [e.getId(), e]));
  const redelivered = new Map<string, MatrixEvent>();
  for (const e of events) {
    const of = redeliveryOf(e);
    const orig = of ? byId.get(of) : undefined;
    if (of && orig && orig.getSender() === e.getSender() && !redelivered.has(of)) redelivered.set(of, e);
  }
  const standsIn = new Set(redelivered.values());
  const sentAt = new Map<MatrixEvent, number>();
  const out: MatrixEvent[] = [];
  for (const e of events) {
    if (standsIn.has(e)) continue;
    const r = redelivered.get(e.getId()!);
    if (r) sentAt.set(r, e.getTs());
    out.push(r ?? e);
  }
  return { events: out, sentAt };
}

/** The original event a redelivery stands for, if it is one. */
export function redeliveryOf(ev: MatrixEvent): string | null {
  const v = ev.getContent()?.[REDELIVERY_OF];
  return typeof v === "string" ? v : null;
}
