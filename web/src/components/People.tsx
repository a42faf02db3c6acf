// Who is on a line: its two principals and the aides a principal brought
// onto it, each with their role and identity. A principal adds their own
// aides here and takes any aide off (lib/aides.ts).
import { useEffect, useRef, useState } from "preact/hooks";
import type { MatrixClient, Room } from "matrix-js-sdk";
import { addAide, myAides, removeAide } from "../lib/aides";
import { humanError } from "../lib/errors";
import { refreshIdentity, titleLine, useIdentityVersion } from "../lib/identity";
import { lineAides, lineRecorders, lineState, nameOf } from "../lib/lines";
import { recordState, setLineRecord } from "../lib/record";
import { Avatar } from "./Avatar";
import { IdentityMark } from "./IdentityMark";
import { LockIcon, PlusIcon, SealCheckIcon } from "./icons";

/**
 * A name as a line label shows it: the vouched-for name, or the display
 * name followed by what the identity mark says of it ("unverified", or a
 * warning) when no attestation verifies.
 */
export function PersonName({ mx, room, userId }: { mx: MatrixClient; room: Room; userId: string }) {
  const n = nameOf(mx, userId, room);
  return (
    <>
      {n.name}
      {!n.verified && (
        <>
          {" "}
          <IdentityMark userId={userId} compact />
        </>
      )}
    </>
  );
}

/** "Aide: Lea Moreau (for Maria Castell)", each name as `PersonName` shows it. */
export function AideLabel(props: { mx: MatrixClient; room: Room; aide: string; principal: string; invited?: boolean }) {
  const { mx, room, aide, principal } = props;
  return (
    <span class="aide-label" data-testid="aide-label" data-user={aide}>
      Aide: <PersonName mx={mx} room={room} userId={aide} /> (for <PersonName mx={mx} room={room} userId={principal} />)
      {props.invited && <span class="muted"> · invited</span>}
    </span>
  );
}

/**
 * Official or personal (lib/record.ts): where the line stands, and for a
 * principal of it what they can do: ask to make it personal (both must
 * agree), agree or keep it official when the other asks, withdraw their own
 * request, make it official again. Aides read the same, with no buttons.
 * `bar`: only the other principal's request, above the timeline.
 */
export function RecordSection({ mx, room, bar = false }: { mx: MatrixClient; room: Room; bar?: boolean }) {
  const me = mx.getUserId()!;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const st = recordState(room);
  if (!st) return null;
  const amPrincipal = st.principals.includes(me) && room.getMyMembership() === "join";
  const other = st.principals.find((p) => p !== me) || "";
  const n = (u: string) => nameOf(mx, u, room).name;
  const asker = st.asking[0] || null;
  const theyAsk = amPrincipal && st.official && !!asker && asker !== me;
  if (bar && !theyAsk) return null;

  const set = async (official: boolean) => {
    if (!official && st.official && !st.asking.length) {
      const ok = confirm(
        `Ask ${n(other)} to make this line personal?\n\nA personal line is not kept in the official record. ` +
          "It becomes personal only when you both agree, and either of you can make it official again at any time.",
      );
      if (!ok) return;
    }
    setBusy(true);
    setError(null);
    try {
      await setLineRecord(mx, room.roomId, official);
    } catch (e) {
      setError(humanError(e, official ? "Could not keep the line official." : "Could not make the line personal."));
    } finally {
      setBusy(false);
    }
  };

  let text: string;
  if (!st.official) text = "This line is personal: it is not kept in the official record.";
  else if (!asker) text = "This line is official: it is kept in the official record.";
  else if (asker === me) text = `You asked to make this line personal; waiting for ${n(other)}.`;
  else if (amPrincipal) text = `${n(asker)} asks to make this line personal.`;
  else {
    const rest = st.principals.find((p) => p !== asker);
    text = `${n(asker)} asks to make this line personal; waiting for ${rest ? n(rest) : "the other principal"}.`;
  }
  const buttons = !amPrincipal ? null : !st.official ? (
    <button type="button" onClick={() => set(true)} disabled={busy}>
      {busy ? "Making it official…" : "Make it official again"}
    </button>
  ) : !asker ? (
    <button type="button" onClick={() => set(false)} disabled={busy}>
      Ask to make it personal
    </button>
  ) : asker === me ? (
    <button type="button" onClick={() => set(true)} disabled={busy}>
      Withdraw request
    </button>
  ) : (
    <>
      <button type="button" class="primary" onClick={() => set(false)} disabled={busy}>
        Agree
      </button>
      <button type="button" onClick={() => set(true)} disabled={busy}>
        Keep it official
      </button>
    </>
  );
  return (
    <section
      class={bar ? "banner record-bar" : "record"}
      aria-labelledby={bar ? undefined : "record-title"}
      aria-label={bar ? "Request to make this line personal" : undefined}
      data-testid={bar ? "record-request" : "record"}
      data-official={st.official ? "true" : "false"}
    >
      {!bar && (
        <h3 id="record-title">
          <LockIcon size={14} /> Official record
        </h3>
      )}
      <p class={bar ? "" : "small"} data-testid="record-state" role="status">
        {text}
      </p>
      {buttons && <div class="row">{buttons}</div>}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

/**
 * "People on this line": both principals and every aide on it, with role
 * and identity badge; for a principal of the line, "Remove from line" next
 * to each aide and "Add aide" with their own aides from the directory.
 */
export function PeopleDialog({ mx, room, onClose }: { mx: MatrixClient; room: Room; onClose: () => void }) {
  useIdentityVersion();
  const me = mx.getUserId()!;
  const ref = useRef<HTMLDialogElement>(null);
  const [adding, setAdding] = useState(false);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [reading, setReading] = useState(false);
  useEffect(() => {
    ref.current?.showModal();
  }, []);

  const line = lineState(room);
  const principals = line?.principals || [];
  const aides = lineAides(room);
  const amPrincipal = principals.includes(me) && room.getMyMembership() === "join";
  const candidates = amPrincipal ? myAides(me).filter((a) => !aides.some((x) => x.userId === a.user_id)) : [];
  const n = (u: string) => nameOf(mx, u, room).name;

  const add = async (userId: string) => {
    setBusy(userId);
    setError(null);
    setDone(null);
    try {
      await addAide(mx, room.roomId, userId);
      setAdding(false);
      setDone(`${n(userId)} is invited onto the line as your aide.`);
    } catch (e) {
      setError(humanError(e, `Could not add ${n(userId)} to the line.`));
    } finally {
      setBusy(null);
    }
  };

  // The aides listed are the directory's, read again now: one vouched for
  // a moment ago is offered.
  const openAdd = () => {
    setAdding(true);
    setDone(null);
    setError(null);
    setReading(true);
    refreshIdentity().finally(() => setReading(false));
  };

  const remove = async (userId: string) => {
    if (!confirm(`Remove ${n(userId)} from this line? They will no longer see or send messages in it.`)) return;
    setBusy(userId);
    setError(null);
    setDone(null);
    try {
      await removeAide(mx, room.roomId, userId);
      setDone(`${n(userId)} is no longer on the line.`);
    } catch (e) {
      setError(humanError(e, `Could not remove ${n(userId)} from the line.`));
    } finally {
      setBusy(null);
    }
  };

  const recorders = lineRecorders(room);
  const person = (userId: string, role: string, aide: boolean, kind = aide ? "aide" : "principal", shownAs?: string) => {
    const member = room.getMember(userId);
    const name = shownAs || n(userId);
    return (
      <li key={userId} data-testid="person" data-user={userId} data-role={kind}>
        <Avatar mx={mx} userId={userId} name={name} mxc={member?.getMxcAvatarUrl()} size={36} />
        <span class="person-main">
          <span class="person-name">
            <span>
              {name}
              {userId === me && <span class="muted"> (you)</span>}
            </span>
            <IdentityMark userId={userId} compact />
          </span>
          <span class="person-role" data-testid="person-role">
            {role}
          </span>
        </span>
        {aide && amPrincipal && (
          <button
            type="button"
            class="danger-outline small"
            onClick={() => remove(userId)}
            disabled={busy !== null}
            aria-label={`Remove ${name} from the line`}
          >
            {busy === userId ? "Removing…" : "Remove from line"}
          </button>
        )}
      </li>
    );
  };

  const membershipNote = (userId: string) => {
    const m = room.getMember(userId)?.membership;
    return m === "invite" ? " · invited" : m === "leave" || !m ? " · not on the line" : "";
  };

  return (
    <dialog ref={ref} class="dialog people-dialog" aria-labelledby="people-title" onClose={onClose} onCancel={onClose} data-testid="people-dialog">
      <h2 id="people-title">People on this line</h2>
      <p class="muted small">
        Everyone here reads the line's messages. Aides act for the principal named beside them
        {recorders.length ? "; a records office's archiver keeps the official record with its own keys (the server cannot read it)." : "."}
      </p>
      <ul class="people" data-testid="people">
        {principals.map((p) => person(p, `Principal${membershipNote(p)}`, false))}
        {aides.map((a) => person(a.userId, `Aide to ${n(a.principal)}${a.membership === "invite" ? " · invited" : ""}`, true))}
        {recorders.map((r) =>
          person(r.userId, `Archiver: keeps the official record${r.membership === "invite" ? " · invited" : ""}`, false, "recorder", r.office),
        )}
      </ul>
      {done && (
        <p class="notice small" role="status">
          {done}
        </p>
      )}
      <RecordSection mx={mx} room={room} />
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {amPrincipal &&
        (adding ? (
          <section class="add-aide" aria-labelledby="add-aide-title">
            <h3 id="add-aide-title">Add one of your aides</h3>
            {candidates.length === 0 && reading ? (
              <p class="muted small" role="status">
                Reading the directory…
              </p>
            ) : candidates.length === 0 ? (
              <p class="muted small" data-testid="no-aides">
                {myAides(me).length
                  ? "All your aides are on this line already."
                  : "Your protocol office has not vouched for any aide of yours yet."}
              </p>
            ) : (
              <ul class="people" data-testid="aide-candidates">
                {candidates.map((a) => (
                  <li key={a.user_id} data-user={a.user_id}>
                    <Avatar mx={mx} userId={a.user_id} name={a.name} size={32} />
                    <span class="person-main">
                      <span class="person-name">
                        <SealCheckIcon size={14} /> {a.name}
                      </span>
                      <span class="person-role">{titleLine(a)}</span>
                    </span>
                    <button
                      type="button"
                      class="primary small"
                      onClick={() => add(a.user_id)}
                      disabled={busy !== null}
                      aria-label={`Add ${a.name} to the line`}
                    >
                      {busy === a.user_id ? "Adding…" : "Add"}
                    </button>
                  </li>
                ))}
              </ul>
            )}
            <p class="muted small">They join once they accept, marked as your aide for everyone on the line.</p>
          </section>
        ) : (
          <button type="button" class="add-aide-button" onClick={openAdd}>
            <PlusIcon /> Add aide
          </button>
        ))}
      <div class="row end">
        <button type="button" onClick={onClose}>
          Close
        </button>
      </div>
    </dialog>
  );
}
