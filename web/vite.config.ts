import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// The web app, served by `hotline serve --web-dir web/dist` at `/`.
// Every asset is bundled: no request leaves the deployment.
export default defineConfig({
  plugins: [preact()],
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
