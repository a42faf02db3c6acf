/**
 * The reader's languages, in their order of preference. `[]` would mean the
 * browser's own UI locale, which is often en-US whatever the person chose:
 * a 12-hour clock for someone whose language settings ask for 24 hours.
 */
function locales(): readonly string[] | undefined {
  return typeof navigator !== "undefined" && navigator.languages?.length ? navigator.languages : undefined;
}

export function timeOfDay(ts: number): string {
  return new Date(ts).toLocaleTimeString(locales() as string[] | undefined, { hour: "2-digit", minute: "2-digit" });
}

/** "14:05" today, "Mon" this week, else "12 Mar". */
export function shortWhen(ts: number, now = Date.now()): string {
  if (!ts) return "";
  const d = new Date(ts);
  const n = new Date(now);
  if (d.toDateString() === n.toDateString()) return timeOfDay(ts);
  if (now - ts < 6 * 86400_000) return d.toLocaleDateString(locales() as string[] | undefined, { weekday: "short" });
  return d.toLocaleDateString(locales() as string[] | undefined, { day: "numeric", month: "short" });
}

export function dayLabel(ts: number, now = Date.now()): string {
  const d = new Date(ts);
  const n = new Date(now);
  if (d.toDateString() === n.toDateString()) return "Today";
  const y = new Date(now - 86400_000);
  if (d.toDateString() === y.toDateString()) return "Yesterday";
  return d.toLocaleDateString(locales() as string[] | undefined, { weekday: "long", day: "numeric", month: "long" });
}

export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** ISO time for <time dateTime>, or undefined when the timestamp is unknown. */
export function iso(ts: number | undefined | null): string | undefined {
  if (!ts || !Number.isFinite(ts) || ts <= 0) return undefined;
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/** "25 Nov 2026, 14:05". */
export function dateTime(ts: number): string {
  return new Date(ts).toLocaleString(locales() as string[] | undefined, { day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit" });
}

/** "in 7 days", "in 3 hours", "in 12 minutes" (or "… ago" for the past). */
export function relative(ts: number, now = Date.now()): string {
  const d = ts - now;
  const a = Math.abs(d);
  const [n, unit] =
    a >= 2 * 86400_000
      ? [Math.round(a / 86400_000), "day"]
      : a >= 2 * 3600_000
        ? [Math.round(a / 3600_000), "hour"]
        : [Math.max(1, Math.round(a / 60_000)), "minute"];
  const s = `${n} ${unit}${n === 1 ? "" : "s"}`;
  return d >= 0 ? `in ${s}` : `${s} ago`;
}
