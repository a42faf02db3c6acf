import { useEffect, useState } from "preact/hooks";
import {
  ClientEvent,
  MatrixClient,
  MatrixEventEvent,
  RoomEvent,
  RoomMemberEvent,
  RoomStateEvent,
} from "matrix-js-sdk";

/**
 * A counter that changes (at most once a frame) whenever the client's rooms,
 * timelines, receipts, typing or account data change; components read the
 * client directly and re-render on it.
 */
export function useClientTick(mx: MatrixClient): number {
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let scheduled = false;
    const bump = () => {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(() => {
        scheduled = false;
        setTick((t) => t + 1);
      });
    };
    // Room events are re-emitted by the client, so all are heard on it.
    const events = [
      RoomEvent.Timeline,
      RoomEvent.Receipt,
      RoomEvent.Name,
      RoomEvent.LocalEchoUpdated,
      RoomEvent.Redaction,
      RoomEvent.MyMembership,
      RoomEvent.TimelineReset,
      RoomEvent.Tags,
      ClientEvent.Room,
      ClientEvent.AccountData,
      ClientEvent.Sync,
      RoomMemberEvent.Typing,
      RoomMemberEvent.Name,
      RoomStateEvent.Members,
      MatrixEventEvent.Decrypted,
      MatrixEventEvent.Replaced,
    ] as const;
    for (const e of events) mx.on(e as any, bump);
    return () => {
      for (const e of events) mx.off(e as any, bump);
    };
  }, [mx]);
  return tick;
}

/** The location hash as a route: "#/line/!room:server" -> ["line", "!room:server"]. */
export function useRoute(): string[] {
  const read = () =>
    window.location.hash
      .replace(/^#\/?/, "")
      .split("/")
      .filter(Boolean)
      .map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

export function navigate(...parts: string[]): void {
  const h = "#/" + parts.map(encodeURIComponent).join("/");
  if (window.location.hash !== h) window.location.hash = h;
}

export function useNow(intervalMs: number, active = true): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    const t = setInterval(() => setNow(Date.now()), intervalMs);
    return () => clearInterval(t);
  }, [intervalMs, active]);
  return now;
}
