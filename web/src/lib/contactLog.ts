// The contact log (docs/DESIGN.md capability 10): a principal's texts and
// calls on their lines, metadata only (who, when, which way, how long), as
// the server reads it from what it holds in clear text
// (`GET /_hotline/v1/contact_log`, docs/hotline-api.yaml). Served to the
// principal and their aides; it holds no message text (the server has none).
import type { MatrixClient } from "matrix-js-sdk";
import { api, MatrixError } from "./session";

export interface ContactEntry {
  kind: "text" | "call";
  /** `outgoing`: the principal's side (they or their aide) sent it or placed the call. */
  direction: "outgoing" | "incoming";
  /** The other principal of the line. */
  counterpart: string;
  /** Who sent it or placed the call: a principal or an aide. */
  by: string;
  ts: number;
  /** How long both sides were on the call (a call answered and over). */
  duration_ms?: number;
  answered?: boolean;
  ongoing?: boolean;
  urgent: boolean;
  room_id: string;
  event_id: string;
}

export interface ContactLogPage {
  principal: string;
  entries: ContactEntry[];
}

export interface Window {
  from?: number;
  to?: number;
}

function query(w: Window, csv: boolean): string {
  const q = new URLSearchParams();
  if (w.from !== undefined) q.set("from", String(w.from));
  if (w.to !== undefined) q.set("to", String(w.to));
  if (csv) q.set("format", "csv");
  const s = q.toString();
  return "/_hotline/v1/contact_log" + (s ? `?${s}` : "");
}

/** The log of our principal (our own as a principal), newest first. */
export async function contactLog(mx: MatrixClient, w: Window = {}): Promise<ContactLogPage> {
  const r = await api(mx.getHomeserverUrl(), "GET", query(w, false), undefined, mx.getAccessToken() || undefined);
  const entries = (Array.isArray(r.entries) ? (r.entries as ContactEntry[]) : []).slice().sort((a, b) => b.ts - a.ts);
  return { principal: String(r.principal || ""), entries };
}

/**
 * The log as the server's CSV, saved as a file. The access token goes in
 * the Authorization header, never in a URL: the file is fetched here and
 * handed to the browser as a blob.
 */
export async function downloadContactLog(mx: MatrixClient, w: Window = {}): Promise<string> {
  let resp: Response;
  try {
    resp = await fetch(mx.getHomeserverUrl().replace(/\/$/, "") + query(w, true), {
      headers: { Authorization: `Bearer ${mx.getAccessToken()}` },
    });
  } catch {
    throw new MatrixError(0, "M_CONNECTION", "Can't reach the server. Check your connection.");
  }
  if (!resp.ok) {
    const json = await resp.json().catch(() => ({}) as Record<string, any>);
    throw new MatrixError(resp.status, json.errcode || "M_UNKNOWN", json.error || resp.statusText, json);
  }
  const blob = await resp.blob();
  const named = /filename="?([^";]+)"?/.exec(resp.headers.get("Content-Disposition") || "")?.[1];
  const file = named || "contact-log.csv";
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = file;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return file;
}

/** "4 min 12 s", "3 s", "1 h 5 min". */
export function callLength(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h) return m ? `${h} h ${m} min` : `${h} h`;
  if (m) return sec ? `${m} min ${sec} s` : `${m} min`;
  return `${sec} s`;
}
