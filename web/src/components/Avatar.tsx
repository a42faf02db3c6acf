import { useEffect, useState } from "preact/hooks";
import type { MatrixClient } from "matrix-js-sdk";
import { mediaObjectUrl } from "../lib/attachments";

const COLOURS = ["#2f6fde", "#0f8a6b", "#b0498f", "#c2552d", "#6b5bd6", "#1b7f9c", "#8a6d0f", "#a23a4c"];

function colourFor(id: string): string {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return COLOURS[h % COLOURS.length];
}

function initials(name: string): string {
  const parts = name.replace(/^@/, "").split(/[\s._-]+/).filter(Boolean);
  const s = (parts[0]?.[0] || "?") + (parts.length > 1 ? parts[parts.length - 1][0] : "");
  return s.toUpperCase();
}

/** A round avatar: the user's picture, or initials on a stable colour. */
export function Avatar(props: { mx: MatrixClient; userId: string; name: string; mxc?: string | null; size?: number }) {
  const { mx, userId, name, mxc, size = 40 } = props;
  const [src, setSrc] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    setSrc(null);
    if (mxc) mediaObjectUrl(mx, { url: mxc }).then((u) => live && setSrc(u), () => undefined);
    return () => {
      live = false;
    };
  }, [mx, mxc]);
  const style = { width: `${size}px`, height: `${size}px`, fontSize: `${Math.round(size * 0.4)}px`, background: colourFor(userId) };
  return (
    <span class="avatar" style={style} aria-hidden="true">
      {src ? <img src={src} alt="" width={size} height={size} /> : initials(name)}
    </span>
  );
}
