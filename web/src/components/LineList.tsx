import { useEffect, useState } from "preact/hooks";
import type { MatrixClient } from "matrix-js-sdk";
import { LineSummary, nameOf } from "../lib/lines";
import { iso, shortWhen } from "../lib/format";
import { Avatar } from "./Avatar";
import { AvailabilityText } from "./Availability";
import { IdentityMark } from "./IdentityMark";
import { LogIcon, PlusIcon, TicketIcon } from "./icons";
import { navigate } from "../lib/hooks";
import { identityOf, useIdentityVersion } from "../lib/identity";

export function LineList(props: {
  mx: MatrixClient;
  lines: LineSummary[];
  selected: string | null;
  onNewLine: () => void;
  loading: boolean;
  /** Show the line invites entry (principals and their aides). */
  canInvite?: boolean;
  invitesOpen?: boolean;
  logOpen?: boolean;
}) {
  const { mx, lines, selected } = props;
  useIdentityVersion();
  const me = mx.getUserId()!;
  // Our display name comes with our room memberships; without any rooms yet
  // (a freshly enrolled official), ask for the profile.
  const [profileName, setProfileName] = useState<string | null>(null);
  useEffect(() => {
    if (mx.getUser(me)?.displayName && mx.getUser(me)?.displayName !== me) return;
    mx.getProfileInfo(me).then(
      (p) => setProfileName(p.displayname || null),
      () => undefined,
    );
  }, [mx]);
  // matrix-js-sdk's User starts with the user id as its display name.
  const fromRooms = mx.getUser(me)?.displayName;
  const dn = (fromRooms && fromRooms !== me ? fromRooms : null) || profileName;
  const myName = dn || me.replace(/^@/, "").replace(/:.*/, "");
  return (
    <nav class="sidebar" aria-label="Lines">
      <header class="sidebar-head">
        {/* Your own avatar and name open Settings, as in Signal or WhatsApp
            (no gear beside it: the name gets the room, and "Invites" its label). */}
        <button class="me" type="button" onClick={() => navigate("settings")} aria-label="Settings and account" title="Settings and account">
          <Avatar mx={mx} userId={me} name={myName} mxc={mx.getUser(me)?.avatarUrl} size={32} />
          <span class="me-name">{myName}</span>
        </button>
        <span class="head-actions">
          {props.canInvite && (
            <a
              class={"icon-button accent labelled" + (props.invitesOpen ? " current" : "")}
              href="#/invites"
              aria-label="Line invites"
              title="Line invites: your direct numbers to share"
              aria-current={props.invitesOpen ? "page" : undefined}
              data-testid="invites-link"
            >
              <TicketIcon />
              <span>Invites</span>
            </a>
          )}
          {props.canInvite && (
            <a
              class={"icon-button accent" + (props.logOpen ? " current" : "")}
              href="#/contact-log"
              aria-label="Contact log"
              title="Contact log: your texts and calls on record"
              aria-current={props.logOpen ? "page" : undefined}
              data-testid="contact-log-link"
            >
              <LogIcon />
            </a>
          )}
          <button class="icon-button accent" type="button" onClick={props.onNewLine} aria-label="New line" title="New line">
            <PlusIcon />
          </button>
        </span>
      </header>
      <h2 class="visually-hidden" id="lines-heading">
        Lines
      </h2>
      {props.loading ? (
        <p class="empty" role="status">
          Loading your lines…
        </p>
      ) : lines.length === 0 ? (
        <div class="empty">
          <p>No lines yet.</p>
          <button class="primary" type="button" onClick={props.onNewLine}>
            Open a line
          </button>
        </div>
      ) : (
        <ul class="lines" aria-labelledby="lines-heading" data-testid="lines">
          {lines.map((l) => {
            // An official's title and country get a line of their own (as
            // do warnings); "unverified" fits beside the name.
            const id = identityOf(l.counterpart).kind;
            // A line we are on as an aide is named after both principals
            // ("Maria Castell – Jon Varga"); the row says whose aide we are.
            const ownLine = !l.aideOf && (id === "verified" || id === "revoked" || id === "key-mismatch");
            return (
              <li key={l.roomId}>
                <a
                  href={`#/line/${encodeURIComponent(l.roomId)}`}
                  class={"line" + (l.roomId === selected ? " selected" : "") + (l.unread ? " unread" : "")}
                  aria-current={l.roomId === selected ? "page" : undefined}
                  data-counterpart={l.counterpart}
                  data-official={l.official ? "true" : undefined}
                  data-personal={l.line && !l.official ? "true" : undefined}
                  data-aide={l.aideOf ? "true" : undefined}
                >
                  <Avatar mx={mx} userId={l.counterpart} name={l.aideOf ? nameOf(mx, l.counterpart, l.room).name : l.name} mxc={l.avatarMxc} size={44} />
                  <span class="line-main">
                    <span class="line-top">
                      <span class="line-name">
                        <span class="line-name-text">{l.name}</span>
                        {!ownLine && !l.aideOf && <IdentityMark userId={l.counterpart} compact />}
                      </span>
                      <time class="line-time" dateTime={iso(l.previewTs)}>
                        {shortWhen(l.previewTs)}
                      </time>
                    </span>
                    {ownLine && (
                      <span class="line-id">
                        <IdentityMark userId={l.counterpart} compact />
                      </span>
                    )}
                    {l.line && !l.invite && <AvailabilityText room={l.room} userId={l.counterpart} class="line-availability" testid="line-availability" />}
                    {l.aideOf && (
                      <span class="line-id line-role" data-testid="line-role">
                        As aide to {nameOf(mx, l.aideOf, l.room).name}
                      </span>
                    )}
                    <span class="line-bottom">
                      <span class="line-preview">{l.preview || "\u00a0"}</span>
                      {l.unread > 0 && (
                        <span class="badge" aria-label={l.invite ? "New invitation" : `${l.unread} unread`}>
                          {l.invite ? "new" : l.unread}
                        </span>
                      )}
                    </span>
                  </span>
                </a>
              </li>
            );
          })}
        </ul>
      )}
    </nav>
  );
}
