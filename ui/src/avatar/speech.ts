// The client side of speech, against the contract in docs/ui.md:
//   POST /v1/audio/speech {input, voice, response_format: "wav", speed, aura_visemes: true}
//   -> 200 application/json {audio_b64, visemes: [{t_ms, viseme, weight?}], duration_ms}
// (without `aura_visemes` the node answers audio/wav alone, as OpenAI's API does).
import { request } from "../lib/api";
import { fromBase64 } from "../lib/bytes";
import type { VisemeCue } from "./lipsync";

export interface Speech {
  audio?: ArrayBuffer;
  visemes: VisemeCue[];
  duration_ms: number;
}

export class NoSpeech extends Error {}

export async function synthesize(input: string, voice = "aura", speed = 1): Promise<Speech> {
  let resp: Response;
  try {
    resp = await request("/v1/audio/speech", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ input, voice, response_format: "wav", speed, aura_visemes: true }),
    });
  } catch (e) {
    const status = (e as { status?: number }).status;
    if (status === 404 || status === 501 || status === 503) throw new NoSpeech("this node has no speech yet");
    throw e;
  }
  const body = (await resp.json()) as { audio_b64?: string; visemes?: VisemeCue[]; duration_ms?: number };
  if (!Array.isArray(body.visemes)) throw new Error("the speech answer has no viseme timeline");
  const visemes = body.visemes
    .filter((c) => typeof c.t_ms === "number" && typeof c.viseme === "string")
    .sort((a, b) => a.t_ms - b.t_ms);
  const audio = body.audio_b64 ? fromBase64(body.audio_b64).buffer as ArrayBuffer : undefined;
  return { audio, visemes, duration_ms: body.duration_ms ?? (visemes.at(-1)?.t_ms ?? 0) };
}
