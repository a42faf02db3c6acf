/**
 * The place for a counterpart's official identity next to their name:
 * "verified: title, country" or an "unverified" mark. Attestations come
 * with issue 5; until then nothing is claimed, so nothing is shown.
 */
export function IdentityMark(_props: { userId: string; compact?: boolean }) {
  return null;
}
