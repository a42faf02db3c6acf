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
    const roomEvents = [
      RoomEvent.Timeline,
      RoomEvent.Receipt,
      RoomEvent.Name,
      RoomEvent.LocalEchoUpdated,
      RoomEvent.Redaction,
      RoomEvent.MyMembership,
      RoomEvent.TimelineReset,
      RoomEvent.Tags,
    ] as const;
    for (const e of roomEvents) mx.on(e as any, bump);
    mx.on(ClientEvent.Room, bump);
    mx.on(ClientEvent.AccountData, bump);
    mx.on(ClientEvent.Sync, bump);
    mx.on(RoomMemberEvent.Typing, bump);
    mx.on(RoomMemberEvent.Name, bump);
    mx.on(RoomStateEvent.Members, bump);
    mx.on(MatrixEventEvent.Decrypted, bump);
    mx.on(MatrixEventEvent.Replaced, bump);
    return () => {
      for (const e of roomEvents) mx.off(e as any, bump);
      mx.off(ClientEvent.Room, bump);
      mx.off(ClientEvent.AccountData, bump);
      mx.off(ClientEvent.Sync, bump);
      mx.off(RoomMemberEvent.Typing, bump);
      mx.off(RoomMemberEvent.Name, bump);
      mx.off(RoomStateEvent.Members, bump);
      mx.off(MatrixEventEvent.Decrypted, bump);
      mx.off(MatrixEventEvent.Replaced, bump);
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
