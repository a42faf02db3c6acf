// Errors as a person reads them. matrix-js-sdk's MatrixError message is
// "MatrixError: [403] reason (http://server/_matrix/…)": a status, a URL and
// a class name nobody in a protocol office should have to parse. Every
// dialog words its failure with `humanError`, which keeps the server's own
// reason (it often says exactly what to do) and drops the rest.

/** The server's reason, when the error carries one. */
export function serverReason(err: unknown): string | null {
  const e = err as any;
  const reason = e?.data?.error ?? e?.body?.error;
  if (typeof reason === "string" && reason.trim()) return sentence(reason.trim());
  return null;
}

function errcodeOf(err: unknown): string | undefined {
  const e = err as any;
  return typeof e?.errcode === "string" ? e.errcode : typeof e?.data?.errcode === "string" ? e.data.errcode : undefined;
}

function sentence(s: string): string {
  const t = s.charAt(0).toUpperCase() + s.slice(1);
  return /[.!?]$/.test(t) ? t : t + ".";
}

/** Strips what only a developer wants: class names, status codes, URLs. */
function plain(msg: string): string {
  return msg
    .replace(/^\w*Error:\s*/, "")
    .replace(/^\[\d{3}\]\s*/, "")
    .replace(/\s*\((?:https?:)?\/\/[^)]*\)\s*$/, "")
    .trim();
}

/**
 * One sentence for a failed action: `what` says what failed ("Could not
 * open the line"), the rest says why, in the server's words when it gave any.
 */
export function humanError(err: unknown, what?: string): string {
  const code = errcodeOf(err);
  const reason = serverReason(err);
  const lead = what ? sentence(what) + " " : "";
  const e = err as any;
  if (code === "M_LIMIT_EXCEEDED") return `${lead}Too many attempts: wait a moment and try again.`;
  if (e?.name === "ConnectionError" || code === "M_CONNECTION" || e?.name === "TypeError" && /fetch/i.test(String(e?.message)))
    return `${lead}The server could not be reached. Check the connection and try again.`;
  if (code === "M_UNKNOWN_TOKEN" || e?.httpStatus === 401) return `${lead}Your session has ended: sign in again.`;
  if (reason) {
    if (code === "M_FORBIDDEN") return `${lead}The server refused: ${reason}`;
    if (code === "M_NOT_FOUND") return `${lead}Not found: ${reason}`;
    return `${lead}${reason}`;
  }
  if (code === "M_FORBIDDEN") return `${lead}You are not allowed to do that.`;
  if (code === "M_NOT_FOUND") return `${lead}It no longer exists.`;
  const msg = plain(e instanceof Error ? e.message : String(err ?? ""));
  return msg ? `${lead}${sentence(msg)}` : `${lead}Something went wrong. Try again.`.trim();
}
