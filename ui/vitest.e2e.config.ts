// The browser tests: one file at a time (each starts its own node and browser).
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/e2e/**/*.test.ts"],
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 240_000,
    reporters: ["verbose"],
  },
});
