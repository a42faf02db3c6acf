import { useMemo } from "preact/hooks";
import qrcode from "qrcode-generator";

/**
 * A QR code drawn here as SVG (no image service): one path, one horizontal
 * run of dark modules per subpath, with the standard 4-module quiet zone.
 */
export function QrCode({ text, size = 208, label }: { text: string; size?: number; label: string }) {
  const { n, d } = useMemo(() => {
    const q = qrcode(0, "M");
    q.addData(text, "Byte");
    q.make();
    const n = q.getModuleCount();
    let d = "";
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; ) {
        if (!q.isDark(r, c)) {
          c++;
          continue;
        }
        let run = 1;
        while (c + run < n && q.isDark(r, c + run)) run++;
        d += `M${c + 4} ${r + 4}h${run}v1h-${run}z`;
        c += run;
      }
    }
    return { n, d };
  }, [text]);
  const full = n + 8;
  return (
    <svg
      class="qr"
      viewBox={`0 0 ${full} ${full}`}
      width={size}
      height={size}
      role="img"
      aria-label={label}
      shape-rendering="crispEdges"
      data-testid="invite-qr"
      data-modules={n}
    >
      <rect width={full} height={full} fill="#fff" />
      <path d={d} fill="#000" />
    </svg>
  );
}
