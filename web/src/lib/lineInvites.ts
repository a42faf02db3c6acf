// Direct-line invites (docs/DESIGN.md capability 5): a principal's revocable
// "personal number". `/_hotline/v1/line_invites`, documented in
// docs/hotline-api.yaml. Errors are Matrix error bodies whose `error` is
// written for people ("This line invite has been used up"): shown as is.
import type { MatrixClient } from "matrix-js-sdk";
import { api } from "./session";

export interface LineInvite {
  code: string;
  url: string;
  /** The server that issued it. */
  server?: string;
  principal: string;
  created_by: string;
  for_user: string | null;
  max_uses: number | null;
  uses: number;
  expires_ts: number | null;
  revoked: boolean;
  created_ts: number;
  /** Who redeemed it, oldest first. */
  redeemed_by?: { user_id: string; ts: number }[];
}

/** What an invite shows before it is redeemed: who is calling (unverified until checked against the directory). */
export interface InvitePreview {
  principal: string;
  name: string;
  title: string;
  country: string;
  office: string;
  expires_ts: number | null;
}

export type InviteState = "active" | "used" | "expired" | "revoked";

function call(mx: MatrixClient, method: string, path: string, body?: unknown) {
  return api(mx.getHomeserverUrl(), method, path, body, mx.getAccessToken() || undefined);
}

/** The invites of our principal (we are the principal or one of their aides). Throws 403 otherwise. */
export async function listInvites(mx: MatrixClient): Promise<LineInvite[]> {
  const r = await call(mx, "GET", "/_hotline/v1/line_invites");
  return (r.invites || []) as LineInvite[];
}

export async function createInvite(
  mx: MatrixClient,
  opts: { maxUses: number; expiresInMs: number; forUser?: string },
): Promise<LineInvite> {
  const body: Record<string, unknown> = { max_uses: opts.maxUses, expires_in_ms: opts.expiresInMs };
  if (opts.forUser) body.for_user = opts.forUser;
  const r = await call(mx, "POST", "/_hotline/v1/line_invites", body);
  delete r.__status;
  return r as LineInvite;
}

export async function revokeInvite(mx: MatrixClient, code: string): Promise<void> {
  await call(mx, "DELETE", `/_hotline/v1/line_invites/${encodeURIComponent(code)}`);
}

/** `?server=S` for an invite another server issued (this server asks it). */
function issuer(mx: MatrixClient, server: string | undefined): string {
  return server && server !== mx.getDomain() ? `?server=${encodeURIComponent(server)}` : "";
}

/** Who sent an invite (`GET /_hotline/v1/line_invites/{code}`); refusals as a redeem words them. */
export async function previewInvite(mx: MatrixClient, code: string, server?: string): Promise<InvitePreview> {
  const r = await call(mx, "GET", `/_hotline/v1/line_invites/${encodeURIComponent(code)}${issuer(mx, server)}`);
  delete r.__status;
  return r as InvitePreview;
}

/** Redeems an invite: the server opens the line (or returns the existing one). */
export async function redeemInvite(mx: MatrixClient, code: string, server?: string): Promise<string> {
  const r = await call(mx, "POST", `/_hotline/v1/line_invites/${encodeURIComponent(code)}/redeem${issuer(mx, server)}`, {});
  return r.room_id as string;
}

export function inviteState(inv: LineInvite, now = Date.now()): InviteState {
  if (inv.revoked) return "revoked";
  if (inv.max_uses !== null && inv.uses >= inv.max_uses) return "used";
  if (inv.expires_ts !== null && inv.expires_ts <= now) return "expired";
  return "active";
}

/**
 * The link to share. The server builds it from its public base URL; when
 * that is an unspecified listen address (0.0.0.0, [::]) this page's own
 * address is the one that works.
 */
export function shareUrl(inv: LineInvite): string {
  try {
    const u = new URL(inv.url);
    if (u.hostname === "0.0.0.0" || u.hostname === "[::]") throw new Error("unspecified address");
    return inv.url;
  } catch {
    const server = inv.server ? `/${inv.server}` : "";
    return `${window.location.origin}${window.location.pathname}#/line/${inv.code}${server}`;
  }
}

/** Whether a route's argument is a line invite code (room ids start with "!"). */
export function isInviteCode(arg: string | undefined): arg is string {
  return !!arg && !arg.startsWith("!") && /^[A-Za-z0-9_-]{6,128}$/.test(arg);
}
