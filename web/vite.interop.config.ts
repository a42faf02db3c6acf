import { defineConfig } from "vite";

// A bare matrix-js-sdk client page (not the Hotline UI), used by the
// end-to-end tests to prove interop: built into test-dist/, never shipped.
const here = new URL(".", import.meta.url).pathname;
export default defineConfig({
  root: here + "interop",
  base: "./",
  logLevel: "warn",
  build: {
    outDir: here + "test-dist",
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 4000,
  },
});
