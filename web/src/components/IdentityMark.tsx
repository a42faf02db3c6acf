import { badgeLine, useIdentity, useResemblance } from "../lib/identity";
import { dateTime } from "../lib/format";
import { SealCheckIcon, ShieldAlertIcon } from "./icons";

/**
 * A counterpart's official identity next to their name (line list, chat
 * header, call UI): a seal with "President · Avalon" when their office's
 * attestation verifies and matches their current identity key, a plain
 * "unverified" when nothing is vouched for, and a warning when the
 * attestation was revoked or their identity key changed since.
 */
export function IdentityMark({ userId, compact = false }: { userId: string; compact?: boolean }) {
  const s = useIdentity(userId);
  const resembles = useResemblance(userId);
  const size = compact ? 14 : 16;
  if (resembles && s.kind !== "verified") {
    // Someone of another server whose name passes for an official: a
    // warning, never a badge.
    return (
      <span
        class={"idmark warning" + (compact ? " compact" : "")}
        data-testid="identity-mark"
        data-status="resembles-official"
        title={`Not verified. This name resembles ${resembles.name}, ${resembles.title} of ${resembles.country}, but no government vouches that this is them.`}
      >
        <ShieldAlertIcon size={size} />
        <span class="idmark-text">Unverified: resembles {resembles.name}</span>
      </span>
    );
  }
  switch (s.kind) {
    case "unknown":
      return null;
    case "verified": {
      const a = s.att;
      const aide = a.role === "aide" && a.principal ? `, aide to ${a.principal}` : "";
      return (
        <span
          class={"idmark verified" + (compact ? " compact" : "")}
          data-testid="identity-mark"
          data-status="verified"
          title={`Verified by ${a.office}: ${a.name}, ${a.title} of ${a.country}${aide}`}
        >
          <SealCheckIcon size={size} />
          <span class="visually-hidden">Verified: </span>
          <span class="idmark-text">{badgeLine(a)}</span>
        </span>
      );
    }
    case "unverified":
      return (
        <span
          class={"idmark unverified" + (compact ? " compact" : "")}
          data-testid="identity-mark"
          data-status="unverified"
          title={s.reason ? `Not verified: ${s.reason}` : "No protocol office vouches for this account's identity"}
        >
          unverified
        </span>
      );
    case "revoked":
      return (
        <span
          class={"idmark warning" + (compact ? " compact" : "")}
          data-testid="identity-mark"
          data-status="revoked"
          title={`The protocol office revoked this identity on ${dateTime(s.revokedTs)}`}
        >
          <ShieldAlertIcon size={size} />
          <span class="idmark-text">Identity revoked</span>
        </span>
      );
    case "key-mismatch":
      return (
        <span
          class={"idmark warning" + (compact ? " compact" : "")}
          data-testid="identity-mark"
          data-status="key-mismatch"
          title={`${s.att.name}'s identity key changed since ${s.att.office} vouched for it`}
        >
          <ShieldAlertIcon size={size} />
          <span class="idmark-text">Identity key changed</span>
        </span>
      );
  }
}
