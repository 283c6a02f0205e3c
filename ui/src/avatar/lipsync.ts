// Viseme timelines to morph weights: pure functions, so what the avatar shows at any
// moment follows from the timeline and the clock alone (and can be tested as such).

/** The 15 Oculus visemes, in their usual order. */
export const VISEMES = ["sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U"] as const;
export type Viseme = (typeof VISEMES)[number];

export interface VisemeCue {
  t_ms: number;
  viseme: string;
  weight?: number;
}

/** How long one viseme takes to blend into the next, in milliseconds. */
export const BLEND_MS = 60;

/** The weight of every viseme at `tMs` into the timeline; a cue holds until the next one. */
export function visemeWeights(timeline: VisemeCue[], tMs: number, blendMs = BLEND_MS): Record<string, number> {
  const out: Record<string, number> = {};
  for (const v of VISEMES) out[v] = 0;
  if (!timeline.length || tMs < timeline[0].t_ms) return out;
  let i = 0;
  // Cues are sorted by time; find the last that started at or before tMs.
  let lo = 0;
  let hi = timeline.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (timeline[mid].t_ms <= tMs) {
      i = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  const cur = timeline[i];
  const fade = blendMs > 0 ? Math.min(1, Math.max(0, (tMs - cur.t_ms) / blendMs)) : 1;
  const add = (v: string, w: number) => {
    if (v in out && v !== "sil") out[v] = Math.min(1, out[v] + w);
  };
  add(cur.viseme, (cur.weight ?? 1) * fade);
  if (i > 0 && fade < 1) add(timeline[i - 1].viseme, (timeline[i - 1].weight ?? 1) * (1 - fade));
  return out;
}

/** The viseme a timeline holds at `tMs` (what a listener should see once blending is done). */
export function visemeAt(timeline: VisemeCue[], tMs: number): string {
  let v = "sil";
  for (const c of timeline) {
    if (c.t_ms <= tMs) v = c.viseme;
    else break;
  }
  return v;
}

/**
 * A timeline made from text alone, for when the node has no speech: each letter group maps
 * to the viseme that shapes it, at a speaking pace. The avatar mimes; nothing is heard.
 */
export function timelineFromText(text: string, msPerChar = 65): { visemes: VisemeCue[]; duration_ms: number } {
  const rules: [RegExp, string][] = [
    [/^(th)/i, "TH"],
    [/^(ch|sh|j)/i, "CH"],
    [/^[pbm]/i, "PP"],
    [/^[fv]/i, "FF"],
    [/^[td]/i, "DD"],
    [/^[kgcq]/i, "kk"],
    [/^[szx]/i, "SS"],
    [/^[nl]/i, "nn"],
    [/^r/i, "RR"],
    [/^a/i, "aa"],
    [/^e/i, "E"],
    [/^[iy]/i, "I"],
    [/^o/i, "O"],
    [/^[uw]/i, "U"],
  ];
  const out: VisemeCue[] = [];
  let t = 0;
  let rest = text.slice(0, 2000);
  while (rest.length) {
    const rule = rules.find(([re]) => re.test(rest));
    if (rule) {
      const n = rule[0].exec(rest)![0].length;
      if (out[out.length - 1]?.viseme !== rule[1]) out.push({ t_ms: t, viseme: rule[1] });
      t += msPerChar * (n > 1 ? 1.3 : 1);
      rest = rest.slice(n);
    } else {
      if (out[out.length - 1]?.viseme !== "sil") out.push({ t_ms: t, viseme: "sil" });
      t += /[.,;:!?]/.test(rest[0]) ? 220 : msPerChar * 1.5;
      rest = rest.slice(1);
    }
  }
  out.push({ t_ms: t, viseme: "sil" });
  return { visemes: out, duration_ms: t };
}
