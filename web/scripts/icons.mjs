#!/usr/bin/env node
// Draws the installed app's icons (web/public/icons/*.png) from the same
// lock as public/favicon.svg, with Debian's chromium through playwright-core
// (both already here for the browser tests): a real SVG renderer, so the
// edges are antialiased the way the favicon is, and no image library to add.
//
//   cd web && node scripts/icons.mjs     (CHROMIUM=/path/to/chromium to use another)
//
// Writes:
//   icon-192.png, icon-512.png   purpose "any": the favicon's rounded navy square on transparency
//   maskable-512.png             purpose "maskable": full-bleed navy, the lock inside the central
//                                circle (radius 40%) that every launcher's mask keeps
//   apple-touch-icon.png         180x180, full-bleed (iOS rounds the corners itself and shows
//                                transparency as black)
// The PNGs are committed; run this again only when the design changes.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const OUT = join(dirname(fileURLToPath(import.meta.url)), "..", "public", "icons");

// public/favicon.svg's colours and lock path, on its 32-unit grid
// (--navy in src/styles.css, and the lock's light blue).
const NAVY = "#0f2341";
const LOCK = `<path d="M10 15h12v9H10zM12.5 15v-3a3.5 3.5 0 0 1 7 0v3" fill="none" stroke="#5fb3ff" stroke-width="2.4" stroke-linejoin="round"/>`;

// The lock spans about 7.2 x 9 units either side of (16, 16.25): at scale
// 0.85 its farthest corner is about 9.8 units from the centre, well inside
// the maskable safe zone's 12.8.
const svg = ({ rounded, lockScale = 1 }) =>
  `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32" width="100%" height="100%">` +
  `<rect width="32" height="32" ${rounded ? 'rx="8"' : ""} fill="${NAVY}"/>` +
  `<g transform="translate(16 16.25) scale(${lockScale}) translate(-16 -16.25)">${LOCK}</g></svg>`;

const ICONS = [
  { file: "icon-192.png", size: 192, rounded: true },
  { file: "icon-512.png", size: 512, rounded: true },
  { file: "maskable-512.png", size: 512, rounded: false, lockScale: 0.85 },
  { file: "apple-touch-icon.png", size: 180, rounded: false, lockScale: 0.85 },
];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  mkdirSync(OUT, { recursive: true });
  for (const icon of ICONS) {
    // deviceScaleFactor 1: one CSS pixel is one image pixel, so the
    // screenshot is exactly size x size.
    const page = await browser.newPage({ viewport: { width: icon.size, height: icon.size }, deviceScaleFactor: 1 });
    await page.setContent(
      `<!doctype html><style>html,body{margin:0;width:100%;height:100%;background:transparent}svg{display:block}</style>${svg(icon)}`,
    );
    const png = await page.screenshot({ omitBackground: true, type: "png" });
    writeFileSync(join(OUT, icon.file), png);
    console.log(`${icon.file}: ${icon.size}x${icon.size}, ${png.length} bytes`);
    await page.close();
  }
} finally {
  await browser.close();
}
