// Lip-sync from a viseme timeline: what the face shows at each moment.
import { describe, expect, it } from "vitest";
import { BLEND_MS, timelineFromText, visemeAt, visemeWeights } from "./lipsync";

const cues = [
  { t_ms: 0, viseme: "sil" },
  { t_ms: 100, viseme: "aa", weight: 0.8 },
  { t_ms: 300, viseme: "O" },
  { t_ms: 500, viseme: "sil" },
];

describe("viseme weights", () => {
  it("hold each cue's viseme at its weight once blended, and cross-fade between cues", () => {
    expect(visemeWeights(cues, 50).aa).toBe(0);
    expect(visemeWeights(cues, 100 + BLEND_MS).aa).toBeCloseTo(0.8);
    expect(visemeWeights(cues, 250).aa).toBeCloseTo(0.8);
    expect(visemeWeights(cues, 250).O).toBe(0);
    const mid = visemeWeights(cues, 300 + BLEND_MS / 2);
    expect(mid.O).toBeCloseTo(0.5);
    expect(mid.aa).toBeCloseTo(0.4);
    expect(visemeWeights(cues, 400).O).toBeCloseTo(1);
    expect(Object.values(visemeWeights(cues, 600)).every((w) => w === 0)).toBe(true);
    expect(visemeAt(cues, 350)).toBe("O");
    expect(visemeWeights([], 10).aa).toBe(0);
  });

  it("text becomes a plausible timeline", () => {
    const t = timelineFromText("Hello, Aura.");
    expect(t.visemes[0].t_ms).toBe(0);
    expect(t.visemes.map((c) => c.viseme)).toContain("aa");
    expect(t.visemes.map((c) => c.viseme)).toContain("E");
    expect(t.duration_ms).toBeGreaterThan(500);
    for (let i = 1; i < t.visemes.length; i++) expect(t.visemes[i].t_ms).toBeGreaterThanOrEqual(t.visemes[i - 1].t_ms);
  });
});
