// Unit tests of the UI's pure parts (formats, proofs, lip-sync), in Node.
import { defineConfig } from "vitest/config";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
