import { Fragment } from "preact";
import { humanError } from "../lib/errors";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import {
  Direction,
  EventStatus,
  EventType,
  KnownMembership,
  MatrixClient,
  MatrixEvent,
  Room,
} from "matrix-js-sdk";
import {
  AIDE_EVENT,
  aideOf,
  LINE_EVENT,
  counterpartOf,
  displayName,
  isShown,
  lineAides,
  lineRecorders,
  lineState,
  lineTitle,
  markDirect,
  recorderOffice,
  messageText,
  nameOf,
} from "../lib/lines";
import { aideNotice, aideTrail } from "../lib/aides";
import { recordNotices, RECORD_EVENT } from "../lib/record";
import {
  blocksLine,
  identityOf,
  IdentityStatus,
  lookForIdentity,
  refreshIdentity,
  titleLine,
  useIdentity,
  useIdentityVersion,
} from "../lib/identity";
import { dateTime } from "../lib/format";
import { mediaObjectUrl, sendFile } from "../lib/attachments";
import { bytes, dayLabel, duration, iso, timeOfDay } from "../lib/format";
import { navigate } from "../lib/hooks";
import { CallView, hangUp, joinLineCall, lineCallMembers, placeCall } from "../lib/calls";
import { availabilityIn, describeAvailability, isQuiet, sendUrgent, URGENT_EVENT, URGENT_RING_WINDOW_MS, urgentQuota, UrgentRefused } from "../lib/availability";
import { AvailabilityText, useMinuteTick } from "./Availability";
import { meshInvites } from "../lib/rtc";
import {
  cancelHeld,
  hold,
  foldRedeliveries,
  readableDevices,
  rememberUnread,
  useDeviceCount,
  useOutbox,
} from "../lib/delivery";
import { DecryptionFailureCode } from "matrix-js-sdk/lib/crypto-api";
import { Avatar } from "./Avatar";
import { IdentityMark } from "./IdentityMark";
import { AideLabel, PeopleDialog, PersonName, RecordSection } from "./People";
import {
  AlertIcon,
  ArchiveIcon,
  AttachIcon,
  BackIcon,
  CheckIcon,
  ClockIcon,
  DoubleCheckIcon,
  EditIcon,
  LockIcon,
  MissedIcon,
  PeopleIcon,
  ShieldAlertIcon,
  PhoneIcon,
  RetryIcon,
  SendIcon,
  TrashIcon,
} from "./icons";

interface CallRecord {
  outgoing: boolean;
  answeredAt: number | null;
  endedAt: number | null;
  reason: string | null;
  rejected: boolean;
}

/** Call history from the room's m.call.* events, by call id. */
function callRecords(mx: MatrixClient, events: MatrixEvent[]): Map<string, CallRecord> {
  const me = mx.getUserId();
  const calls = new Map<string, CallRecord>();
  for (const ev of events) {
    const t = ev.getType();
    if (!t.startsWith("m.call.")) continue;
    const id = ev.getContent().call_id as string | undefined;
    if (!id) continue;
    if (t === EventType.CallInvite) {
      calls.set(id, { outgoing: ev.getSender() === me, answeredAt: null, endedAt: null, reason: null, rejected: false });
      continue;
    }
    const rec = calls.get(id);
    if (!rec) continue;
    if (t === EventType.CallAnswer && !rec.answeredAt) rec.answeredAt = ev.getTs();
    if (t === EventType.CallHangup || t === EventType.CallReject) {
      if (!rec.endedAt) rec.endedAt = ev.getTs();
      rec.reason = ev.getContent().reason || null;
      if (t === EventType.CallReject) rec.rejected = true;
    }
  }
  return calls;
}

function CallEntry(props: { ev: MatrixEvent; rec?: CallRecord; active: boolean; between?: [string, string] }) {
  const { ev, rec, active } = props;
  const outgoing = rec?.outgoing ?? false;
  let label: string;
  let missed = false;
  if (props.between) {
    // A call between others on the line (the principals, seen by an aide).
    const [from, to] = props.between;
    label =
      rec?.answeredAt && rec.endedAt
        ? `${from} called ${to} · ${duration(rec.endedAt - rec.answeredAt)}`
        : rec?.answeredAt
          ? `${from} and ${to} are in a call`
          : `${from} called ${to}`;
  } else if (active && (!rec || !rec.endedAt)) label = rec?.answeredAt ? "Call in progress" : outgoing ? "Ringing…" : "Incoming call";
  else if (rec?.answeredAt && rec.endedAt) label = `${outgoing ? "Outgoing" : "Incoming"} call · ${duration(rec.endedAt - rec.answeredAt)}`;
  else if (rec?.rejected || rec?.reason === "user_busy") label = outgoing ? "Call declined" : "Declined call";
  else if (rec?.endedAt) {
    label = outgoing ? "Cancelled call" : "Missed call";
    missed = !outgoing;
  } else if (Date.now() - ev.getTs() > ((ev.getContent().lifetime as number) || 60000)) {
    label = outgoing ? "Unanswered call" : "Missed call";
    missed = !outgoing;
  } else label = outgoing ? "Calling…" : "Incoming call";
  return (
    <div class={"call-entry" + (missed ? " missed" : "")} data-testid="call-entry">
      {missed ? <MissedIcon /> : <PhoneIcon size={16} />}
      <span>{label}</span>
      <time>{timeOfDay(ev.getTs())}</time>
    </div>
  );
}

function MediaImage({ mx, content }: { mx: MatrixClient; content: Record<string, any> }) {
  const [src, setSrc] = useState<string | null>(null);
  const [err, setErr] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    mediaObjectUrl(mx, content).then(
      (u) => live && setSrc(u),
      (e) => live && setErr(humanError(e, "Could not load the image.")),
    );
    return () => {
      live = false;
    };
  }, [content.file?.url, content.url]);
  const w = content.info?.w;
  const h = content.info?.h;
  const scale = w && h ? Math.min(1, 320 / w, 320 / h) : 1;
  const style = w && h ? { width: `${Math.round(w * scale)}px`, aspectRatio: `${w} / ${h}` } : undefined;
  if (err) return <span class="media-error">Image unavailable: {err}</span>;
  return src ? (
    <a href={src} target="_blank" rel="noopener" class="image-link">
      <img class="image" src={src} alt={content.body || "Image"} style={style} data-testid="chat-image" />
    </a>
  ) : (
    <span class="image placeholder" style={style} role="img" aria-label="Loading image" />
  );
}

function MediaFile({ mx, content }: { mx: MatrixClient; content: Record<string, any> }) {
  const [busy, setBusy] = useState(false);
  const open = async () => {
    setBusy(true);
    try {
      const url = await mediaObjectUrl(mx, content);
      const a = document.createElement("a");
      a.href = url;
      a.download = content.body || "file";
      a.click();
    } finally {
      setBusy(false);
    }
  };
  return (
    <button type="button" class="file" onClick={open} disabled={busy}>
      <AttachIcon />
      <span>
        {content.body || "File"}
        {content.info?.size ? <small> · {bytes(content.info.size)}</small> : null}
      </span>
    </button>
  );
}

/**
 * Why a message could not be decrypted, in words, from the crypto layer's
 * own classification (`event.decryptionFailureReason`).
 */
export function undecryptableReason(code: DecryptionFailureCode | null, sender: string): string {
  const again = `${sender}'s app will deliver it again when it is next open.`;
  switch (code) {
    case DecryptionFailureCode.HISTORICAL_MESSAGE_NO_KEY_BACKUP:
    case DecryptionFailureCode.HISTORICAL_MESSAGE_WORKING_BACKUP:
      return `Sent before this device signed in; ${again}`;
    case DecryptionFailureCode.HISTORICAL_MESSAGE_BACKUP_UNCONFIGURED:
      return `Sent before this device signed in, and this device can't open your key backup; ${again}`;
    case DecryptionFailureCode.HISTORICAL_MESSAGE_USER_NOT_JOINED:
      return "Sent before you joined this line, so it was not encrypted for you.";
    case DecryptionFailureCode.MEGOLM_UNKNOWN_INBOUND_SESSION_ID:
      return `Its key has not reached this device: it shows here as soon as the key arrives. If ${sender} sent it while you had no signed-in device, ${again}`;
    case DecryptionFailureCode.OLM_UNKNOWN_MESSAGE_INDEX:
      return `This device received the key for this conversation only after this message was sent; ${again}`;
    case DecryptionFailureCode.MEGOLM_KEY_WITHHELD_FOR_UNVERIFIED_DEVICE:
      return `${sender}'s device does not share keys with unverified devices. Verify this device with your recovery key.`;
    case DecryptionFailureCode.MEGOLM_KEY_WITHHELD:
      return `${sender}'s device withheld the key for this message from this device.`;
    case DecryptionFailureCode.SENDER_IDENTITY_PREVIOUSLY_VERIFIED:
      return `${sender}'s identity changed since it was verified, so this message is not shown.`;
    case DecryptionFailureCode.UNSIGNED_SENDER_DEVICE:
      return `Sent from a device ${sender} has not verified, so this message is not shown.`;
    case DecryptionFailureCode.UNKNOWN_SENDER_DEVICE:
      return "Sent from a device that can't be identified, so this message is not shown.";
    default:
      return `The message is damaged or uses encryption this app does not understand${code ? ` (${code})` : ""}.`;
  }
}

function Body({ mx, ev, room }: { mx: MatrixClient; ev: MatrixEvent; room: Room }) {
  if (ev.isRedacted()) return <span class="deleted">Message deleted</span>;
  if (ev.isDecryptionFailure()) {
    return (
      <span class="utd" data-testid="utd" data-reason={ev.decryptionFailureReason || ""}>
        <AlertIcon size={16} /> Unable to decrypt this message.{" "}
        {undecryptableReason(ev.decryptionFailureReason, displayName(mx, ev.getSender()!, room))}
      </span>
    );
  }
  if (ev.getType() === EventType.RoomMessageEncrypted) return <span class="muted">Decrypting…</span>;
  const c = ev.getContent();
  if (c.msgtype === "m.image") return <MediaImage mx={mx} content={c} />;
  if (c.msgtype === "m.file" || c.msgtype === "m.audio" || c.msgtype === "m.video") return <MediaFile mx={mx} content={c} />;
  return <span class="text">{messageText(ev)}</span>;
}

/** Who sent a message, above it, when more than two people are on the line. */
function SenderLabel(props: { mx: MatrixClient; room: Room; sender: string; aideFor?: string }) {
  const { mx, room, sender, aideFor } = props;
  return (
    <div class={"sender" + (aideFor ? " aide" : "")} data-testid="sender">
      {aideFor ? <AideLabel mx={mx} room={room} aide={sender} principal={aideFor} /> : <PersonName mx={mx} room={room} userId={sender} />}
    </div>
  );
}

function memberLine(mx: MatrixClient, ev: MatrixEvent, room: Room): string | null {
  const c = ev.getContent();
  const prev = ev.getPrevContent();
  // A records office's archiver: what it is there for, not its account name.
  const office = recorderOffice(room, ev.getStateKey()!);
  if (office) {
    if (c.membership === "invite") return null;
    if (c.membership === "join" && prev.membership !== "join") return `${office} joined to keep this line's official record`;
    if (c.membership === "leave") return `${office} no longer records this line`;
    return null;
  }
  const who = displayName(mx, ev.getStateKey()!, room);
  const by = displayName(mx, ev.getSender()!, room);
  if (c.membership === "invite") return `${by} opened a line with ${who}`;
  if (c.membership === "join" && prev.membership !== "join") {
    return ev.getStateKey() === room.getCreator() ? null : `${who} joined the line`;
  }
  if (c.membership === "leave") return ev.getSender() === ev.getStateKey() ? `${who} left the line` : `${by} removed ${who}`;
  return null;
}

export function Chat(props: {
  mx: MatrixClient;
  room: Room;
  tick: number;
  call: CallView | null;
  cryptoOk: boolean;
}) {
  const { mx, room } = props;
  const me = mx.getUserId()!;
  const counterpart = counterpartOf(mx, room) || room.getMembers().find((m) => m.userId !== me)?.userId || me;
  const name = displayName(mx, counterpart, room);
  const member = room.getMember(counterpart);
  const invited = room.getMyMembership() === KnownMembership.Invite;
  // Taken off the line (or left it): read-only.
  const left = room.getMyMembership() === KnownMembership.Leave;
  const encrypted = room.hasEncryptionStateEvent();
  const other = member?.membership;
  const line = lineState(room);
  // On the line as an aide: the principal we act for (and were, once off it).
  const asAide = aideOf(mx, room);
  const wasAide = asAide || (left ? aideOf(mx, room, true) : null);
  const title = wasAide ? lineTitle(mx, room, wasAide, counterpart) : name;
  const aides = lineAides(room);
  const recorders = lineRecorders(room);
  const [people, setPeople] = useState(false);
  // An aide new to this device: their office's word is read at once.
  const aideIds = aides.map((a) => a.userId).join("\n");
  useEffect(() => {
    for (const a of aides) lookForIdentity(a.userId);
  }, [aideIds]);
  useIdentityVersion();
  const self = useIdentity(me);
  // A line stops while a principal's identity can't be trusted (key
  // changed since their office vouched, or revoked): the counterpart's, or
  // for an aide either principal's; and while our own key differs from our
  // attestation (the server refuses our sends then).
  const watched = asAide && line ? line.principals : [counterpart];
  const blocking = watched.find((u) => blocksLine(identityOf(u)));
  const them = identityOf(blocking || counterpart);
  const ownKeyOff = !asAide && self.kind === "key-mismatch";
  const paused = !!line && (!!blocking || ownKeyOff);

  const [text, setText] = useState("");
  const [editing, setEditing] = useState<MatrixEvent | null>(null);
  // Urgent (lib/availability.ts): the next text or call rings through do
  // not disturb and sleep, within the line's daily quota.
  const [urgentText, setUrgentText] = useState(false);
  const [quota, setQuota] = useState<{ limit: number; remaining: number; resetsTs: number | null } | null>(null);
  const [urgentError, setUrgentError] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [atStart, setAtStart] = useState(false);
  const [focused, setFocused] = useState<string | null>(null);
  const [away, setAway] = useState(false);
  const scroller = useRef<HTMLDivElement>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const stick = useRef(true);
  const prevHeight = useRef<number | null>(null);
  const typingSent = useRef(0);
  const receiptSent = useRef<string | null>(null);
  const holdButton = useRef<HTMLButtonElement>(null);
  const [asking, setAsking] = useState(false);

  // Can anyone on the other side read what is sent now? A counterpart with no
  // device (never signed in, or signed out everywhere) gets the room key on
  // none, and a device that signs in later can't read it: warn before
  // sending, offer to hold the message (lib/delivery.ts sends it when a
  // device appears).
  const devices = useDeviceCount(mx, encrypted && props.cryptoOk && counterpart !== me ? counterpart : null);
  const noDevice =
    encrypted && props.cryptoOk && counterpart !== me && devices === 0 && (other === "join" || other === "invite");
  const waiting = useOutbox(mx, room.roomId);
  const held = waiting.filter((e) => e.kind === "held");
  const unreadIds = new Set(waiting.filter((e) => e.kind === "unread").map((e) => e.eventId));

  const live = room.getLiveTimeline().getEvents();
  const pending = room.getPendingEvents();
  const all = [...live, ...pending];
  const calls = useMemo(() => callRecords(mx, all), [props.tick, room.roomId]);
  // The invites that only link two members of a line call going on (the mesh's own signalling).
  const meshLinks = useMemo(() => meshInvites(room, all), [props.tick, room.roomId]);
  const folded = foldRedeliveries(all);
  const shown = folded.events.filter(isShown);
  // Who was an aide when: labels and notices as they were at each event.
  const trail = useMemo(() => aideTrail(room, all), [props.tick, room.roomId, all.length]);
  // Official or personal, as each change happened.
  const recordTold = useMemo(() => recordNotices(mx, room, all), [props.tick, room.roomId, all.length]);
  // More than two people on the line: the other side's messages are named.
  const group = trail.any || aides.length > 0;
  const tsOf = (e: MatrixEvent) => folded.sentAt.get(e) ?? e.getTs();

  // Reset per room.
  useEffect(() => {
    setText("");
    setEditing(null);
    setError(null);
    setAtStart(false);
    setAway(false);
    setAsking(false);
    setPeople(false);
    receiptSent.current = null;
    stick.current = true;
    if (!invited) setTimeout(() => input.current?.focus(), 0);
  }, [room.roomId]);

  // Keep at the bottom when already there; keep position when history arrives above.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    if (prevHeight.current !== null) {
      el.scrollTop += el.scrollHeight - prevHeight.current;
      prevHeight.current = null;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
  });

  // Read receipt, while the chat is visible, for the newest event from the
  // other side this device could read: never for one it failed (or has yet)
  // to decrypt, since a receipt tells the sender it was read. Only when it
  // is not read already: "read" is by timeline order (our receipt on it or
  // on a later event covers it), and each event gets one receipt at most
  // from here.
  useEffect(() => {
    if (invited || left || document.visibilityState !== "visible") return;
    const lastOther = [...live]
      .reverse()
      .find(
        (e) =>
          e.getSender() !== me &&
          e.getId() &&
          !e.getId()!.startsWith("~") &&
          !e.isDecryptionFailure() &&
          !e.isBeingDecrypted() &&
          e.getType() !== EventType.RoomMessageEncrypted,
      );
    if (!lastOther || receiptSent.current === lastOther.getId()) return;
    // Our receipt the server confirmed (not one synthesized from our own
    // events: our join or reply after their text does not mean we saw it).
    const readUpTo = room.getEventReadUpTo(me, true);
    const at = (id: string | null) => (id ? live.findIndex((e) => e.getId() === id) : -1);
    if (readUpTo && at(readUpTo) >= at(lastOther.getId()!)) return;
    receiptSent.current = lastOther.getId()!;
    mx.sendReadReceipt(lastOther).catch(() => {
      receiptSent.current = null;
    });
  }, [props.tick, room.roomId, invited, left]);

  // Stay at the bottom when the pane resizes (a call bar appears, the
  // keyboard opens on a phone).
  useEffect(() => {
    const el = scroller.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(() => {
      if (stick.current) el.scrollTop = el.scrollHeight;
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, [room.roomId, invited]);

  // Load older messages when the top is reached (and first, if the screen isn't full).
  const loadOlder = async () => {
    if (loadingOlder || atStart) return;
    const el = scroller.current;
    setLoadingOlder(true);
    try {
      if (el) prevHeight.current = el.scrollHeight;
      await mx.scrollback(room, 30);
      const tl = room.getLiveTimeline();
      if (!tl.getPaginationToken(Direction.Backward) || room.oldState.paginationToken === null) setAtStart(true);
    } catch {
      prevHeight.current = null;
    } finally {
      setLoadingOlder(false);
    }
  };

  useEffect(() => {
    const el = scroller.current;
    if (el && el.scrollHeight <= el.clientHeight + 40 && !atStart && !invited) loadOlder();
  }, [room.roomId, props.tick, atStart]);

  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
    if (away === stick.current) setAway(!stick.current);
    if (el.scrollTop < 120) loadOlder();
  };

  const typing = room
    .getMembers()
    .filter((m) => m.typing && m.userId !== me)
    .map((m) => displayName(mx, m.userId, room));

  const onInput = (e: Event) => {
    const v = (e.target as HTMLTextAreaElement).value;
    setText(v);
    const now = Date.now();
    if (v && now - typingSent.current > 3000) {
      typingSent.current = now;
      mx.sendTyping(room.roomId, true, 5000).catch(() => undefined);
    } else if (!v && typingSent.current) {
      typingSent.current = 0;
      mx.sendTyping(room.roomId, false, 0).catch(() => undefined);
    }
  };

  /** Clears the composer after a message left it. */
  const composed = () => {
    setError(null);
    setText("");
    setAsking(false);
    typingSent.current = 0;
    mx.sendTyping(room.roomId, false, 0).catch(() => undefined);
    stick.current = true;
  };

  const holdNow = () => {
    const body = text.trim();
    if (!body || paused) return;
    composed();
    hold(mx, room.roomId, counterpart, { msgtype: "m.text", body });
    setTimeout(() => input.current?.focus(), 0);
  };

  const sendAnyway = async () => {
    const body = text.trim();
    if (!body || paused) return;
    composed();
    setTimeout(() => input.current?.focus(), 0);
    const content = { msgtype: "m.text", body };
    try {
      const r = await mx.sendMessage(room.roomId, content as any);
      // Encrypted for nobody: remembered, and sent again when a device appears.
      rememberUnread(mx, room.roomId, counterpart, r.event_id, content);
    } catch (err) {
      setError(explainSend(err));
    }
  };

  const send = async (e?: Event) => {
    e?.preventDefault();
    const body = text.trim();
    if (!body || paused) return;
    if (!editing && encrypted && props.cryptoOk && counterpart !== me && (noDevice || devices === null)) {
      // Ask first when nobody could read it (looked up now if not known yet).
      const n = noDevice ? 0 : await readableDevices(mx, counterpart).catch(() => null);
      if (n === 0 && (other === "join" || other === "invite")) {
        setAsking(true);
        setTimeout(() => holdButton.current?.focus(), 0);
        return;
      }
    }
    setError(null);
    setText("");
    typingSent.current = 0;
    mx.sendTyping(room.roomId, false, 0).catch(() => undefined);
    stick.current = true;
    try {
      if (editing) {
        const target = editing;
        setEditing(null);
        await mx.sendMessage(room.roomId, {
          msgtype: "m.text",
          body: `* ${body}`,
          "m.new_content": { msgtype: "m.text", body },
          "m.relates_to": { rel_type: "m.replace", event_id: target.getId()! },
        } as any);
      } else {
        if (urgentText) {
          try {
            await sendUrgent(mx, room.roomId, "text");
          } catch (err) {
            // Refused: the text stays in the composer, to send without urgency.
            setText(body);
            setError(urgentWhy(err));
            refreshQuota();
            return;
          } finally {
            setUrgentText(false);
          }
          refreshQuota();
        }
        await mx.sendTextMessage(room.roomId, body);
      }
    } catch (err) {
      // The local echo is kept as "failed" with a retry button; explain why.
      setError(explainSend(err));
    }
  };

  const onKey = (e: KeyboardEvent) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === "Escape" && editing) {
      setEditing(null);
      setText("");
    } else if (e.key === "ArrowUp" && !text) {
      const last = [...live].reverse().find((ev) => ev.getSender() === me && canEdit(ev));
      if (last) {
        e.preventDefault();
        startEdit(last);
      }
    }
  };

  const canEdit = (ev: MatrixEvent) =>
    ev.getSender() === me &&
    !ev.isRedacted() &&
    ev.status === null &&
    ev.getType() !== EventType.RoomMessageEncrypted &&
    ev.getContent().msgtype === "m.text";

  const startEdit = (ev: MatrixEvent) => {
    setEditing(ev);
    setText(ev.getContent().body || "");
    setTimeout(() => input.current?.focus(), 0);
  };

  const remove = async (ev: MatrixEvent) => {
    if (!confirm("Delete this message for everyone?")) return;
    try {
      await mx.redactEvent(room.roomId, ev.getId()!);
    } catch (err) {
      setError(humanError(err, "Could not delete the message."));
    }
  };

  const onFile = async (e: Event) => {
    const files = (e.target as HTMLInputElement).files;
    if (!files?.length) return;
    setError(null);
    stick.current = true;
    for (const f of Array.from(files)) {
      try {
        const sent = await sendFile(mx, room.roomId, f, encrypted);
        if (noDevice) rememberUnread(mx, room.roomId, counterpart, sent.eventId, sent.content);
      } catch (err) {
        setError(`Could not send ${f.name}: ${explainSend(err)}`);
      }
    }
    (e.target as HTMLInputElement).value = "";
  };

  const accept = async () => {
    try {
      await mx.joinRoom(room.roomId);
      // A line we join as an aide is the principals' line, not a direct
      // chat of ours with one of them.
      if (!asAide) await markDirect(mx, counterpart, room.roomId);
    } catch (err) {
      setError(humanError(err, "Could not accept the invitation."));
    }
  };
  const declineInvite = async () => {
    try {
      await mx.leave(room.roomId);
      navigate();
    } catch (err) {
      setError(humanError(err, "Could not decline the invitation."));
    }
  };

  const call = async () => {
    setError(null);
    setUrgentError(null);
    if (line && isQuiet(theirAvailability)) refreshQuota();
    try {
      await placeCall(mx, room.roomId, counterpart);
    } catch (err) {
      setError(humanError(err, "Could not place the call."));
    }
  };

  // Availability: the counterpart's, shown before calling; while they are in
  // do not disturb or asleep the call is placed but does not ring them.
  const now = useMinuteTick();
  const theirAvailability = line && !asAide ? availabilityIn(room, counterpart) : null;
  const refreshQuota = () => {
    if (!line) return;
    urgentQuota(mx, room.roomId).then(setQuota, () => undefined);
  };
  useEffect(() => {
    setQuota(null);
    setUrgentText(false);
    setUrgentError(null);
    if (line) refreshQuota();
  }, [room.roomId]);
  const urgentWhy = (err: unknown) =>
    err instanceof UrgentRefused
      ? `Not sent as urgent: ${err.message}`
      : humanError(err, "Could not send the urgent signal.");
  // Our own urgent signal of the last two minutes makes our call ring through.
  const urgentLately = (() => {
    const evs = room.getLiveTimeline().getEvents();
    for (let i = evs.length - 1; i >= 0; i--) {
      if (Date.now() - evs[i].getTs() > URGENT_RING_WINDOW_MS) break;
      if (evs[i].getType() === URGENT_EVENT && evs[i].getSender() === me) return true;
    }
    return false;
  })();
  const ringingOut = !!props.call && props.call.roomId === room.roomId && props.call.phase !== "ended" && props.call.phase !== "ringing-in";
  const notRinging = ringingOut && isQuiet(theirAvailability) && !urgentLately;
  const callUrgently = async () => {
    setUrgentError(null);
    try {
      await sendUrgent(mx, room.roomId, "call");
    } catch (err) {
      setUrgentError(urgentWhy(err));
      refreshQuota();
      return;
    }
    refreshQuota();
    // Placed again after the signal: this one rings through. Once our
    // membership of the first is gone, else placing would join it.
    hangUp();
    for (let i = 0; i < 50 && lineCallMembers(mx, room.roomId).some((m) => m.userId === me); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    try {
      await placeCall(mx, room.roomId, counterpart);
    } catch (err) {
      setUrgentError(humanError(err, "Could not place the call."));
    }
  };
  const leaveText = () => {
    hangUp();
    input.current?.focus();
  };
  const urgentLeft = quota ? ` (${quota.remaining} of ${quota.limit} left today)` : "";

  // A call going on in this line that this device is not in: who is in it, and "Join call".
  const [joinError, setJoinError] = useState<string | null>(null);
  const inCallHere = props.call && props.call.roomId === room.roomId && props.call.phase !== "ended";
  const lineCallNow = line && !invited && !left && !inCallHere ? lineCallMembers(mx, room.roomId) : [];
  const inLineCall = [...new Set(lineCallNow.map((m) => m.userId))];
  const mineElsewhere = inLineCall.includes(me);
  useEffect(() => setJoinError(null), [room.roomId, inLineCall.length]);
  const join = async () => {
    setJoinError(null);
    try {
      await joinLineCall(mx, room.roomId);
    } catch (err) {
      setJoinError(humanError(err, "Could not join the call."));
    }
  };

  // Everything up to the other side's read receipt is read (receipts are
  // "read up to": a receipt on a later event covers the earlier ones). By
  // timeline position, not display position: a redelivery is shown in its
  // original's place but sits later in the timeline.
  const theirs = room.getEventReadUpTo(counterpart);
  const theirsPos = theirs ? all.findIndex((e) => e.getId() === theirs) : -1;
  const posOf = new Map(all.map((e, i) => [e, i]));
  const isRead = (ev: MatrixEvent) => theirsPos >= 0 && (posOf.get(ev) ?? Infinity) <= theirsPos;

  let lastDay = "";

  /** Why we can no longer write here: who took us off, and as whose aide. */
  function leftText(): string {
    const by = room.getMember(me)?.events.member?.getSender();
    const as = wasAide ? ` as aide to ${nameOf(mx, wasAide, room).name}` : "";
    if (by && by !== me) return `${nameOf(mx, by, room).name} removed you from this line. You are no longer on it${as}.`;
    return `You left this line. You are no longer on it${as}.`;
  }

  return (
    <section class="chat" aria-labelledby="chat-title">
      <header class="chat-head">
        <button class="icon-button back" type="button" onClick={() => navigate()} aria-label="Back to lines">
          <BackIcon />
        </button>
        <Avatar mx={mx} userId={counterpart} name={name} mxc={member?.getMxcAvatarUrl()} size={36} />
        <div class="chat-who">
          {wasAide ? (
            // An aide's view: the line between the two principals.
            <h1 id="chat-title" title={line ? `The line between ${title.replace(" – ", " and ")}` : undefined}>
              {title}
            </h1>
          ) : (
            <h1 id="chat-title" title={counterpart}>
              {name}
              <IdentityMark userId={counterpart} />
            </h1>
          )}
          <p class="chat-sub">
            {typing.length ? (
              <span class="typing-inline">{group ? `${typing.join(", ")} typing…` : "typing…"}</span>
            ) : encrypted ? (
              <span class="enc">
                <LockIcon size={12} /> {line ? (line.official ? "Official line · " : "Personal line · ") : ""}End-to-end encrypted
              </span>
            ) : (
              <span class="warn-text">Not encrypted</span>
            )}
          </p>
          {line && !asAide && !invited && (
            <p class="chat-availability">
              <AvailabilityText room={room} userId={counterpart} testid="chat-availability" />
            </p>
          )}
          {(asAide || aides.length > 0) && !invited && (
            <p class="chat-aides" data-testid="line-aides">
              {asAide && (
                <span class="you-aide" data-testid="you-aide">
                  You are on this line as aide to <PersonName mx={mx} room={room} userId={asAide} />
                </span>
              )}
              {aides
                .filter((a) => a.userId !== me)
                .map((a, i) => (
                  <Fragment key={a.userId}>
                    {i > 0 || asAide ? <span aria-hidden="true"> · </span> : null}
                    <AideLabel mx={mx} room={room} aide={a.userId} principal={a.principal} invited={a.membership === "invite"} />
                  </Fragment>
                ))}
            </p>
          )}
          {recorders.length > 0 && !invited && (
            <p class="chat-recorder" data-testid="line-recorder">
              <ArchiveIcon size={12} />{" "}
              {recorders.some((r) => r.membership === "join")
                ? `This line is recorded by ${recorders.filter((r) => r.membership === "join").map((r) => r.office).join(" and ")}`
                : `${recorders.map((r) => r.office).join(" and ")} will record this line once its archiver joins`}
            </p>
          )}
        </div>
        {line && !invited && !left && (
          <button
            class="icon-button labelled people-button"
            type="button"
            onClick={() => setPeople(true)}
            aria-label={`People on this line (${line.principals.length + aides.length + recorders.length})`}
            aria-haspopup="dialog"
            title="People on this line"
            data-testid="people-button"
          >
            <PeopleIcon size={18} />
            <span>{line.principals.length + aides.length + recorders.length}</span>
          </button>
        )}
        <button
          class="icon-button call-button"
          type="button"
          onClick={call}
          disabled={invited || left || !!inCallHere || other !== "join" || paused || inLineCall.length > 0}
          aria-label={`Call ${name}` + (isQuiet(theirAvailability) ? ` (${describeAvailability(theirAvailability, now)}: will not ring)` : "")}
          data-availability={theirAvailability?.effective}
          data-testid="call-button"
          title={
            paused
              ? "This line is paused"
              : inLineCall.length > 0
                ? "A call is going on in this line: join it"
                : other === "join"
                  ? isQuiet(theirAvailability)
                    ? `Call ${name}: ${describeAvailability(theirAvailability, now)}. It will not ring; they will see a missed call.`
                    : `Call ${name}`
                  : `${name} has not joined yet`
          }
        >
          <PhoneIcon />
        </button>
      </header>

      {notRinging && (
        <div class="banner not-ringing" role="alert" data-testid="not-ringing">
          <p>
            <strong>{name} is not being rung</strong>: {describeAvailability(theirAvailability, now)}. They will see a missed call.
          </p>
          <div class="row">
            <button type="button" onClick={leaveText} data-testid="leave-text">
              Leave a text
            </button>
            <button type="button" class="primary" onClick={callUrgently} disabled={quota?.remaining === 0} data-testid="call-urgently">
              Call urgently{urgentLeft}
            </button>
          </div>
        </div>
      )}
      {urgentError && (
        <p class="error banner" role="alert" data-testid="urgent-error">
          {urgentError}
        </p>
      )}
      {inLineCall.length > 0 && (
        <div class="banner join-call" role="region" aria-label="Call in progress" data-testid="join-call">
          <PhoneIcon size={16} />
          <span data-testid="join-call-who">
            In the call:{" "}
            {inLineCall.map((u, i) => (
              <Fragment key={u}>
                {i > 0 ? ", " : ""}
                {u === me ? "you (on another device)" : <PersonName mx={mx} room={room} userId={u} />}
              </Fragment>
            ))}
          </span>
          {!mineElsewhere && (
            <button type="button" class="primary small" onClick={join} disabled={paused}>
              Join call
            </button>
          )}
          {joinError && (
            <p class="error" role="alert" data-testid="join-call-error">
              {joinError}
            </p>
          )}
        </div>
      )}

      {line && !invited && !left && <RecordSection mx={mx} room={room} bar />}
      <IdentityBanner
        name={displayName(mx, blocking || counterpart, room)}
        them={them}
        self={asAide ? { kind: "unknown" } : self}
        line={!!line}
      />

      {!props.cryptoOk && encrypted && (
        <div class="banner warn" role="alert">
          <AlertIcon size={16} /> Encryption is unavailable on this device, so messages in this line can't be read or
          sent. See Settings.
        </div>
      )}

      <div class="timeline" ref={scroller} onScroll={onScroll} role="log" aria-label={group ? "Messages on this line" : `Messages with ${name}`} aria-live="polite" data-testid="timeline">
        {loadingOlder && (
          <p class="history-note" role="status">
            Loading earlier messages…
          </p>
        )}
        {atStart && (
          <p class="history-note">{wasAide ? "This is the beginning of the line." : `This is the beginning of your line with ${name}.`}</p>
        )}
        {shown.map((ev, i) => (
          <Fragment key={ev.getTxnId() || ev.getId() || String(i)}>{((): any => {
          const day = dayLabel(tsOf(ev));
          const sep = day !== lastDay ? <div class="day" role="separator">{day}</div> : null;
          lastDay = day;
          const t = ev.getType();
          if (t === EventType.RoomMember || t === AIDE_EVENT) {
            // An aide's arrival and departure as the marking tells them; other
            // membership changes as before.
            const told = aideNotice(mx, room, ev, trail);
            const line = told !== undefined ? told : memberLine(mx, ev, room);
            return line ? (
              <>
                {sep}
                <p class="system" key={ev.getId()} data-testid={told !== undefined ? "aide-notice" : undefined}>
                  {line}
                </p>
              </>
            ) : (
              sep
            );
          }
          if (t === RECORD_EVENT || t === LINE_EVENT) {
            const told = recordTold.get(ev);
            return told ? (
              <>
                {sep}
                <p class="system" key={ev.getId()} data-testid="record-notice">
                  {told}
                </p>
              </>
            ) : (
              sep
            );
          }
          if (t === EventType.RoomEncryption) {
            return (
              <>
                {sep}
                <p class="system" key={ev.getId()}>
                  <LockIcon size={12} /> Messages and calls in this line are end-to-end encrypted.
                </p>
              </>
            );
          }
          if (t === EventType.CallInvite) {
            // Two members of a line call linking up: not a call anyone placed.
            if (meshLinks.has(ev.getId()!)) return sep;
            const id = ev.getContent().call_id;
            const invitee = ev.getContent().invitee;
            const between: [string, string] | undefined =
              ev.getSender() !== me && typeof invitee === "string" && invitee !== me
                ? [nameOf(mx, ev.getSender()!, room).name, nameOf(mx, invitee, room).name]
                : undefined;
            return (
              <>
                {sep}
                <CallEntry ev={ev} rec={calls.get(id)} active={!!inCallHere && props.call?.call?.callId === id} between={between} />
              </>
            );
          }
          const mine = ev.getSender() === me;
          const failed = ev.status === EventStatus.NOT_SENT;
          const sending = ev.status !== null && !failed && ev.status !== EventStatus.SENT;
          const edited = !!ev.replacingEvent() && !ev.isRedacted();
          const key = ev.getTxnId() || ev.getId()!;
          const actionsOpen = focused === key;
          // Sent while the counterpart had no device: nobody could read it yet.
          const unread = mine && unreadIds.has(ev.getId()!);
          return (
            <>
              {sep}
              <div
                key={key}
                class={
                  "msg" +
                  (mine ? " mine" : " theirs") +
                  (failed ? " failed" : "") +
                  (ev.isDecryptionFailure() ? " undecryptable" : "") +
                  (actionsOpen ? " actions-open" : "")
                }
                data-testid="message"
                data-event-id={ev.getId()}
                data-status={
                  failed ? "failed" : sending ? "sending" : unread ? "waiting" : mine && isRead(ev) ? "read" : "sent"
                }
                onClick={() => setFocused(actionsOpen ? null : key)}
              >
                {!mine && group && <SenderLabel mx={mx} room={room} sender={ev.getSender()!} aideFor={trail.senderFor.get(ev)} />}
                <div class="bubble">
                  <Body mx={mx} ev={ev} room={room} />
                  <span class="meta">
                    {edited && <span class="edited">edited · </span>}
                    <time dateTime={iso(tsOf(ev))}>{timeOfDay(tsOf(ev))}</time>
                    {mine && !failed && !unread && (
                      <span class="state" aria-label={sending ? "Sending" : isRead(ev) ? "Read" : "Sent"} title={sending ? "Sending" : isRead(ev) ? "Read" : "Sent"}>
                        {sending ? <ClockIcon /> : isRead(ev) ? <DoubleCheckIcon /> : <CheckIcon />}
                      </span>
                    )}
                  </span>
                </div>
                {unread && (
                  <div class="waiting-row" data-testid="waiting-note">
                    <ClockIcon /> Not readable yet: will be delivered again when {name} signs in
                  </div>
                )}
                {failed && (
                  <div class="failed-row" role="alert">
                    <AlertIcon size={14} /> Not sent
                    <button type="button" class="link" onClick={(e) => {
                        e.stopPropagation();
                        setError(null);
                        mx.resendEvent(ev, room).catch((err) => setError(explainSend(err)));
                      }}>
                      <RetryIcon /> Retry
                    </button>
                    <button type="button" class="link" onClick={() => mx.cancelPendingEvent(ev)}>
                      Discard
                    </button>
                  </div>
                )}
                {mine && ev.status === null && !ev.isRedacted() && (
                  <div class="actions">
                    {canEdit(ev) && (
                      <button type="button" class="icon-button small" onClick={(e) => (e.stopPropagation(), startEdit(ev))} aria-label="Edit message" title="Edit">
                        <EditIcon />
                      </button>
                    )}
                    <button type="button" class="icon-button small" onClick={(e) => (e.stopPropagation(), remove(ev))} aria-label="Delete message" title="Delete">
                      <TrashIcon />
                    </button>
                  </div>
                )}
              </div>
            </>
          );
        })()}</Fragment>))}
        {held.map((h) => (
          <div key={h.id} class="msg mine held" data-testid="message" data-status="held">
            <div class="bubble">
              <span class="text">{String(h.content.body ?? "")}</span>
              <span class="meta">
                <time dateTime={iso(h.ts)}>{timeOfDay(h.ts)}</time>
                <span class="state" aria-label="Held" title="Held">
                  <ClockIcon />
                </span>
              </span>
            </div>
            <div class="waiting-row" data-testid="held-note">
              <ClockIcon /> Held: will be sent when {name} signs in
              <button type="button" class="link" onClick={() => cancelHeld(mx, room.roomId, h.id)}>
                Cancel
              </button>
            </div>
          </div>
        ))}
      </div>

      {away && (
        <button
          type="button"
          class="jump"
          onClick={() => {
            const el = scroller.current;
            if (el) el.scrollTop = el.scrollHeight;
            stick.current = true;
            setAway(false);
          }}
        >
          Jump to latest ↓
        </button>
      )}
      <div class="typing" aria-live="polite" data-testid="typing">
        {typing.length ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…` : ""}
      </div>

      {left ? (
        <div class="invite-bar left-bar" role="status" data-testid="left-bar">
          <p>{leftText()}</p>
        </div>
      ) : invited ? (
        <div class="invite-bar">
          {asAide ? (
            <p data-testid="aide-invite">
              <strong>
                <PersonName mx={mx} room={room} userId={asAide} />
              </strong>{" "}
              brings you onto a line as their aide. Everyone on the line will see you as "Aide: {nameOf(mx, me, room).name} (for{" "}
              {nameOf(mx, asAide, room).name})".
            </p>
          ) : (
            <p>
              <strong>{name}</strong> wants to open a line with you.
            </p>
          )}
          <div class="row">
            <button type="button" onClick={declineInvite}>
              Decline
            </button>
            <button type="button" class="primary" onClick={accept}>
              Accept
            </button>
          </div>
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
        </div>
      ) : (
        <form class="composer" onSubmit={send}>
          {error && (
            <p class="error composer-error" role="alert">
              {error}
            </p>
          )}
          {noDevice && !editing && (
            <div class={"no-device" + (asking ? " asking" : "")} role={asking ? "alert" : "status"} data-testid="no-device">
              <AlertIcon size={16} />
              <p>
                {name} has no signed-in device yet: your message can't be read until they sign in.
              </p>
              {(asking || text.trim()) && (
                <div class="row">
                  <button type="button" ref={holdButton} class={asking ? "primary" : ""} onClick={holdNow} disabled={!text.trim() || paused}>
                    Hold until they sign in
                  </button>
                  <button type="button" onClick={sendAnyway} disabled={!text.trim() || paused}>
                    Send anyway
                  </button>
                </div>
              )}
            </div>
          )}
          {editing && (
            <div class="editing-bar">
              <EditIcon /> Editing message
              <button
                type="button"
                class="link"
                onClick={() => {
                  setEditing(null);
                  setText("");
                }}
              >
                Cancel
              </button>
            </div>
          )}
          <div class="composer-row">
            <button
              type="button"
              class="icon-button"
              onClick={() => fileInput.current?.click()}
              aria-label="Attach a file"
              title="Attach a file"
              disabled={paused}
            >
              <AttachIcon />
            </button>
            <input ref={fileInput} type="file" class="visually-hidden" tabIndex={-1} aria-hidden="true" multiple onChange={onFile} data-testid="file-input" />
            {line && !editing && (
              <button
                type="button"
                class={"urgent-toggle" + (urgentText ? " on" : "")}
                aria-pressed={urgentText}
                onClick={() => setUrgentText(!urgentText)}
                disabled={paused || quota?.remaining === 0}
                title={`Urgent: rings through do not disturb and sleep${urgentLeft}`}
                data-testid="urgent-toggle"
              >
                Urgent{quota ? ` ${quota.remaining}/${quota.limit}` : ""}
              </button>
            )}
            <label for="composer-input" class="visually-hidden">
              {group ? "Message the line" : `Message ${name}`}
            </label>
            <textarea
              id="composer-input"
              ref={input}
              rows={1}
              placeholder={paused ? "This line is paused" : group ? "Message the line" : `Message ${name}`}
              disabled={paused}
              value={text}
              onInput={onInput}
              onKeyDown={onKey}
            />
            <button type="submit" class="icon-button accent" disabled={!text.trim() || paused} aria-label={editing ? "Save edit" : "Send"}>
              <SendIcon />
            </button>
          </div>
        </form>
      )}
      {people && line && <PeopleDialog mx={mx} room={room} onClose={() => setPeople(false)} />}
    </section>
  );
}

/**
 * Why a conversation can't be trusted right now, above its timeline. In a
 * line it is blocking (the composer and call button are off) until the
 * office vouches again; a "Check again" reads the directory at once.
 */
function IdentityBanner(props: { name: string; them: IdentityStatus; self: IdentityStatus; line: boolean }) {
  const { name, them, self, line } = props;
  const [checking, setChecking] = useState(false);
  const shown = them.kind === "key-mismatch" || them.kind === "revoked" || (line && self.kind === "key-mismatch");
  // While a line waits for the office, look more often than the usual minute.
  useEffect(() => {
    if (!shown || !line) return;
    const t = setInterval(() => document.visibilityState === "visible" && refreshIdentity(), 10_000);
    return () => clearInterval(t);
  }, [shown, line]);
  let title: string;
  let text: string;
  if (them.kind === "key-mismatch") {
    title = line ? "This line is paused" : `${name}'s identity changed`;
    text =
      `${name}'s identity key changed since ${them.att.office} vouched for them as ${titleLine(them.att)}. ` +
      "Whoever holds this account now may not be them. " +
      (line
        ? "Messages and calls stay off until their protocol office checks the new key in person and vouches again."
        : "Don't share anything sensitive until their protocol office vouches again.");
  } else if (them.kind === "revoked") {
    title = line ? "This line is closed" : `${name}'s identity was revoked`;
    text =
      `${them.att?.office || "Their protocol office"} revoked its attestation of ${name}'s identity on ${dateTime(them.revokedTs)}. ` +
      (line ? "Messages and calls stay off unless the office vouches for them again." : "Treat this account as unverified.");
  } else if (line && self.kind === "key-mismatch") {
    title = "This line is paused";
    text =
      `Your identity key is not the one ${self.att.office} vouched for. Show your new fingerprint (Settings → Official identity) ` +
      "to your protocol office; the line resumes once they vouch again.";
  } else {
    return null;
  }
  const check = async () => {
    setChecking(true);
    try {
      await refreshIdentity();
    } finally {
      setChecking(false);
    }
  };
  return (
    <div class={"banner id-banner" + (line ? " blocking" : "")} role="alert" data-testid="identity-banner">
      <ShieldAlertIcon size={20} />
      <div>
        <strong>{title}</strong>
        <p>{text}</p>
      </div>
      <button type="button" onClick={check} disabled={checking}>
        {checking ? "Checking…" : "Check again"}
      </button>
    </div>
  );
}

function explainSend(err: unknown): string {
  const msg = (err as Error)?.message || String(err);
  if (/encryption/i.test(msg)) return "This line is encrypted, but encryption isn't available on this device.";
  if ((err as any)?.errcode === "M_LIMIT_EXCEEDED") return "Sending too fast. Wait a moment and retry.";
  if ((err as any)?.name === "ConnectionError" || /fetch/i.test(msg)) return "Not sent: the server could not be reached. Retry when you're back online.";
  return humanError(err, "Not sent.");
}
