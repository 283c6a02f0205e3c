// The avatar's speech client against the node's contract (docs/ui.md): what it sends to
// POST /v1/audio/speech, how it reads the answer, and how it tells "this node does not
// speak" (the avatar then mimes) from a real refusal. fetch is replaced inside the test
// with the node's answers; the browser test drives the real page.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

// api.ts reads the key from sessionStorage when it loads; Node has none.
const store = new Map<string, string>();
vi.stubGlobal("sessionStorage", {
  getItem: (k: string) => store.get(k) ?? null,
  setItem: (k: string, v: string) => void store.set(k, v),
  removeItem: (k: string) => void store.delete(k),
});
const { synthesize, NoSpeech } = await import("./speech");
const { ApiError, setApiKey } = await import("../lib/api");

let sent: { url: string; init: RequestInit }[] = [];

function answer(status: number, body: unknown): void {
  vi.stubGlobal("fetch", async (url: string, init: RequestInit) => {
    sent.push({ url, init });
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  });
}

beforeEach(() => {
  sent = [];
});
afterEach(() => setApiKey(null));

describe("synthesize", () => {
  it("asks for the WAV with Aura's viseme timeline, with the key, and reads the answer", async () => {
    setApiKey("aura_test-key");
    const wav = new Uint8Array([82, 73, 70, 70, 1, 2, 3]);
    answer(200, {
      audio_b64: Buffer.from(wav).toString("base64"),
      // Out of order and with a malformed cue: the client sorts and drops.
      visemes: [{ t_ms: 120, viseme: "aa", weight: 0.9 }, { t_ms: 0, viseme: "sil" }, { t_ms: "x", viseme: "O" }],
      duration_ms: 1840,
    });
    const s = await synthesize("Hello there", "nova", 1.25);
    expect(sent).toHaveLength(1);
    expect(sent[0].url).toBe("/v1/audio/speech");
    expect(sent[0].init.method).toBe("POST");
    expect(new Headers(sent[0].init.headers).get("authorization")).toBe("Bearer aura_test-key");
    expect(JSON.parse(String(sent[0].init.body))).toEqual({
      input: "Hello there",
      voice: "nova",
      response_format: "wav",
      speed: 1.25,
      aura_visemes: true,
    });
    expect(s.visemes).toEqual([{ t_ms: 0, viseme: "sil" }, { t_ms: 120, viseme: "aa", weight: 0.9 }]);
    expect(new Uint8Array(s.audio!)).toEqual(wav);
    expect(s.duration_ms).toBe(1840);
  });

  it("takes a node without speech (503 speech_off, or 404 from an older node) as no speech", async () => {
    answer(503, { error: { message: "this node does not speak", type: "server_error", code: "speech_off" } });
    await expect(synthesize("hi")).rejects.toBeInstanceOf(NoSpeech);
    answer(404, { error: { message: "not found" } });
    await expect(synthesize("hi")).rejects.toBeInstanceOf(NoSpeech);
  });

  it("passes a refusal on with the node's message, and refuses an answer without a timeline", async () => {
    answer(400, { error: { message: "`input` is longer than 4096 characters", type: "invalid_request_error", param: "input" } });
    const refused = await synthesize("x".repeat(5000)).catch((e) => e);
    expect(refused).toBeInstanceOf(ApiError);
    expect(refused).not.toBeInstanceOf(NoSpeech);
    expect(refused.status).toBe(400);
    expect(refused.message).toContain("input");
    answer(200, { audio_b64: "" });
    await expect(synthesize("hi")).rejects.toThrow("no viseme timeline");
  });
});
