// Vite builds the UI into dist/, which aura-node embeds at compile time. Nothing is inlined
// (no data: scripts or styles), so the page runs under a strict Content-Security-Policy.
import { defineConfig } from "vite";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    target: "es2022",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    cssCodeSplit: true,
    sourcemap: false,
    reportCompressedSize: true,
    chunkSizeWarningLimit: 800,
    rollupOptions: {
      output: {
        // three.js in a chunk of its own, shared by the studio page and the avatar.
        manualChunks: (id) => (id.includes("node_modules/three/") ? "three" : id.includes("@pixiv/three-vrm") ? "vrm" : undefined),
      },
    },
  },
  server: {
    // `npm run dev` proxies the API to a local node.
    proxy: {
      "/v1": { target: "http://127.0.0.1:8080", ws: true },
      "/health": "http://127.0.0.1:8080",
    },
  },
});
