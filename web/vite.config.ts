import { defineConfig, type Plugin } from "vite";
import preact from "@preact/preset-vite";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";

// The web app, served by `hotline serve --web-dir web/dist` at `/`.
// Every asset is bundled: no request leaves the deployment.
export default defineConfig({
  plugins: [preact(), precacheShell()],
  base: "./",
  build: {
    outDir: "dist",
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 2000,
    assetsInlineLimit: 0,
  },
  server: {
    proxy: {
      "/_matrix": "http://127.0.0.1:8008",
      "/_hotline": "http://127.0.0.1:8008",
    },
  },
});

/**
 * Writes the app shell into the built service worker (dist/sw.js, copied
 * from public/sw.js): the list of files it stores on install (the page, the
 * build's hashed scripts and styles, everything else from public/) and a
 * version hashed from their bytes. Vite names the scripts by content hash,
 * so the list can only be known once the build has written them; and a new
 * version makes the browser install the new worker with a new cache.
 * (The crypto WebAssembly, 5.4 MB, is left out: it is stored the first
 * time the app loads it, and only a session needs it, not the shell.)
 */
function precacheShell(): Plugin {
  let outDir = "";
  let publicDir = "";
  let built: string[] = [];
  return {
    name: "hotline-precache-shell",
    apply: "build",
    configResolved(config) {
      outDir = resolve(config.root, config.build.outDir);
      publicDir = config.publicDir;
    },
    writeBundle(_options, bundle) {
      built = Object.keys(bundle).filter((f) => /\.(js|css)$/.test(f));
    },
    // After everything is written, public/ copied included.
    closeBundle() {
      const files = (dir: string): string[] =>
        readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
          e.isDirectory() ? files(join(dir, e.name)) : [relative(publicDir, join(dir, e.name))],
        );
      const fromPublic = files(publicDir);
      const shell = ["index.html", ...built, ...fromPublic.filter((f) => f !== "sw.js")]
        .map((f) => f.split("\\").join("/"))
        .sort();
      if (!built.some((f) => f.endsWith(".js"))) throw new Error("precacheShell: the build wrote no scripts");
      const hash = createHash("sha256");
      for (const f of shell) hash.update(f + "\0").update(readFileSync(join(outDir, f)));
      const sw = join(outDir, "sw.js");
      const source = readFileSync(sw, "utf8");
      const version = `const VERSION = "dev";`;
      const list = `const SHELL = [];`;
      if (!source.includes(version) || !source.includes(list)) throw new Error(`precacheShell: ${sw} has no ${version} / ${list} to fill in`);
      hash.update(source);
      writeFileSync(
        sw,
        source
          .replace(version, `const VERSION = ${JSON.stringify(hash.digest("hex").slice(0, 16))};`)
          .replace(list, `const SHELL = ${JSON.stringify(shell, null, 2)};`),
      );
    },
  };
}
