import type { MatrixClient } from "matrix-js-sdk";
import { useEffect, useState } from "preact/hooks";
import { api } from "../lib/session";
import { CELL_CSS_PX, TILE, lineHash, minuteOf, tileDataUrl } from "../lib/watermark";

// The device's tag, fetched once per session (per client).
const tags = new WeakMap<MatrixClient, Promise<number | null>>();

function deviceTag(mx: MatrixClient): Promise<number | null> {
  let t = tags.get(mx);
  if (!t) {
    t = api(mx.getHomeserverUrl(), "GET", "/_hotline/v1/watermark", undefined, mx.getAccessToken() || undefined)
      .then((r) => (typeof r.tag === "number" ? r.tag >>> 0 : null))
      // A server without leak tracing (or offline for now): no overlay,
      // and the next mount asks again.
      .catch(() => {
        tags.delete(mx);
        return null;
      });
    tags.set(mx, t);
  }
  return t;
}

/** The current minute, updated as it changes. */
function useMinute(): number {
  const [minute, setMinute] = useState(() => minuteOf(Date.now()));
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout>;
    const next = () => {
      setMinute(minuteOf(Date.now()));
      timer = setTimeout(next, 60_000 - (Date.now() % 60_000) + 50);
    };
    timer = setTimeout(next, 60_000 - (Date.now() % 60_000) + 50);
    return () => clearTimeout(timer);
  }, []);
  return minute;
}

/**
 * The leak-tracing watermark over the whole signed-in app (line list, chat,
 * call screen): a faint tile naming this device, the line shown and the
 * minute, redrawn as the minute changes. Fixed to the viewport's corner so
 * the tile's cells sit on whole CSS pixels; `pointer-events: none`, so it
 * is never in the way. `hotline trace IMAGE` reads it back.
 */
export function Watermark({ mx, roomId }: { mx: MatrixClient; roomId: string | null }) {
  const [tag, setTag] = useState<number | null>(null);
  const minute = useMinute();
  useEffect(() => {
    let live = true;
    deviceTag(mx).then((t) => live && setTag(t));
    return () => {
      live = false;
    };
  }, [mx]);
  const [url, setUrl] = useState<string | null>(null);
  const scale = window.devicePixelRatio || 1;
  useEffect(() => {
    if (tag === null) return setUrl(null);
    setUrl(tileDataUrl({ tag, line: roomId ? lineHash(roomId) : 0, minute }, scale));
  }, [tag, roomId, minute, scale]);
  if (!url) return null;
  const side = Math.max(1, Math.round(CELL_CSS_PX * scale)) * TILE / scale;
  return (
    <div
      class="watermark"
      aria-hidden="true"
      data-testid="watermark"
      data-line={roomId ?? ""}
      style={{ backgroundImage: `url(${url})`, backgroundSize: `${side}px ${side}px` }}
    />
  );
}
