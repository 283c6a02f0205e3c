// The image studio, against OpenAI's Images API with Aura's fields:
//   POST /v1/images/generations {model, prompt, n: 1, size, response_format: "b64_json",
//     stream: true, partial_images: N, seed, steps, guidance_scale, negative_prompt,
//     scheduler, lora?}
//   -> SSE `image_generation.partial_image` {b64_json, partial_image_index} ...,
//      then `image_generation.completed` {b64_json, aura: {receipt, seed, parameters}}
//      (a streamed answer's headers go out before any receipt exists).
// Previews show as they arrive; the gallery keeps every finished image with its
// parameters and receipt in this browser (IndexedDB), and re-runs them with the same seed.
import { useEffect, useRef, useState } from "preact/hooks";
import { get, request, sse } from "../lib/api";
import { fromBase64 } from "../lib/bytes";
import { useCommands } from "../lib/commands";
import { bytes } from "../lib/format";
import { deleteGeneration, listGallery, saveGeneration, type Generation } from "../lib/store";
import { errorText, toast } from "../lib/toast";
import { useApi } from "../lib/useApi";

interface Params {
  model: string;
  prompt: string;
  negative_prompt: string;
  seed: number;
  seedLocked: boolean;
  steps: number;
  guidance_scale: number;
  size: string;
  scheduler: string;
  lora: string;
  partial_images: number;
}

// "auto" and "" leave the size and the scheduler to the model: Aura's own tiny model makes
// 64x64 images with its own DDIM only, Stable Diffusion its native size with Euler a.
const SIZES = ["auto", "64x64", "256x256", "512x512", "768x768", "1024x1024"];
const SCHEDULERS = ["", "euler", "euler_a", "ddim", "dpmpp_2m", "lcm"];

function newSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

interface SystemView {
  cpu: { cores: number; utilization_percent: number | null; load_average: number[] | null };
  memory: { total_bytes: number | null; used_bytes: number | null };
  process_rss_bytes: number | null;
  gpus: { index: number; name: string; utilization_percent: number | null; memory_used_bytes: number | null; memory_total_bytes: number | null }[];
}

function Meter({ label, value, text }: { label: string; value: number | null; text: string }) {
  return (
    <div class="meter">
      <span>{label}</span>
      <progress max={100} value={value ?? 0} aria-label={label} />
      <span>{text}</span>
    </div>
  );
}

export function ResourceMonitor() {
  const [sys, setSys] = useState<SystemView | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let stop = false;
    const poll = async () => {
      try {
        setSys(await get<SystemView>("/v1/system"));
        setError(null);
      } catch (e) {
        setError(errorText(e));
      }
      if (!stop) setTimeout(poll, 2000);
    };
    poll();
    return () => {
      stop = true;
    };
  }, []);
  const mem = sys?.memory.total_bytes ? ((sys.memory.used_bytes ?? 0) * 100) / sys.memory.total_bytes : null;
  return (
    <div class="panel monitor" aria-label="Resource monitor" data-testid="resource-monitor">
      <h2>Node resources</h2>
      {error && <p class="error">{error}</p>}
      {sys && (
        <>
          <Meter label={`CPU (${sys.cpu.cores} cores)`} value={sys.cpu.utilization_percent} text={`${(sys.cpu.utilization_percent ?? 0).toFixed(0)}%`} />
          <Meter label="Memory" value={mem} text={`${bytes(sys.memory.used_bytes)} of ${bytes(sys.memory.total_bytes)}`} />
          <p class="small">node process {bytes(sys.process_rss_bytes)} · load {sys.cpu.load_average?.map((l) => l.toFixed(2)).join(" ")}</p>
          {sys.gpus.map((g) => (
            <>
              <Meter label={`GPU ${g.index} ${g.name}`} value={g.utilization_percent} text={`${g.utilization_percent ?? "–"}%`} />
              <Meter
                label={`GPU ${g.index} memory`}
                value={g.memory_total_bytes ? ((g.memory_used_bytes ?? 0) * 100) / g.memory_total_bytes : null}
                text={`${bytes(g.memory_used_bytes)} of ${bytes(g.memory_total_bytes)}`}
              />
            </>
          ))}
          {!sys.gpus.length && <p class="small">no GPU on this node</p>}
        </>
      )}
    </div>
  );
}

export default function Studio() {
  const models = useApi<{ data: { id: string; kind: string }[] }>("/v1/models");
  const imageModels = (models.data?.data ?? []).filter((m) => m.kind === "image");
  const [p, setP] = useState<Params>({
    model: "",
    prompt: "a small red robot watering a bonsai, pixel art",
    negative_prompt: "blurry",
    seed: newSeed(),
    seedLocked: false,
    steps: 20,
    guidance_scale: 7,
    size: "auto",
    scheduler: "",
    lora: "",
    partial_images: 3,
  });
  const [preview, setPreview] = useState<string | null>(null);
  const [partials, setPartials] = useState(0);
  const [busy, setBusy] = useState(false);
  const [status, setStatus] = useState("");
  const [gallery, setGallery] = useState<(Generation & { url: string })[]>([]);
  const abort = useRef<AbortController | null>(null);

  const loadGallery = async () => {
    const list = await listGallery();
    gallery.forEach((g) => URL.revokeObjectURL(g.url));
    setGallery(list.sort((a, b) => b.createdAt - a.createdAt).map((g) => ({ ...g, url: URL.createObjectURL(g.image) })));
  };
  useEffect(() => {
    loadGallery().catch(() => {});
  }, []);

  const generate = async (params: Params = p) => {
    if (busy) return;
    const seed = params.seedLocked ? params.seed : params === p ? newSeed() : params.seed;
    if (params === p && !p.seedLocked) setP({ ...p, seed });
    setBusy(true);
    setPartials(0);
    setStatus("starting…");
    const ctl = new AbortController();
    abort.current = ctl;
    const body: Record<string, unknown> = {
      model: params.model || imageModels[0]?.id,
      prompt: params.prompt,
      negative_prompt: params.negative_prompt || undefined,
      n: 1,
      size: params.size,
      response_format: "b64_json",
      stream: true,
      partial_images: params.partial_images,
      seed,
      steps: params.steps,
      guidance_scale: params.guidance_scale,
      scheduler: params.scheduler || undefined,
    };
    if (params.lora) body.lora = params.lora;
    try {
      const resp = await request("/v1/images/generations", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: ctl.signal,
      });
      const receipt = resp.headers.get("x-aura-receipt") ?? undefined;
      let n = 0;
      for await (const ev of sse(resp, ctl.signal)) {
        if (ev.data === "[DONE]") break;
        const data = JSON.parse(ev.data);
        const type = data.type ?? ev.event;
        if (type === "image_generation.partial_image") {
          n++;
          setPartials(n);
          setPreview(`data:image/png;base64,${data.b64_json}`);
          setStatus(`preview ${n} of ${params.partial_images}`);
        } else if (type === "image_generation.completed") {
          setPreview(`data:image/png;base64,${data.b64_json}`);
          const image = new Blob([fromBase64(data.b64_json) as BlobPart], { type: "image/png" });
          const { seedLocked: _, ...rest } = params;
          await saveGeneration({ id: crypto.randomUUID(), createdAt: Date.now(), params: { ...rest, seed, model: body.model }, image, receipt: receipt ?? data.aura?.receipt ?? data.receipt });
          setStatus("done");
          await loadGallery();
        } else if (type === "error" || data.error) {
          throw new Error(data.error?.message ?? "the generation failed");
        }
      }
    } catch (e) {
      if ((e as Error).name === "AbortError") setStatus("cancelled");
      else {
        setStatus(errorText(e));
        toast(errorText(e), "error");
      }
    } finally {
      setBusy(false);
      abort.current = null;
    }
  };

  useCommands(
    [
      { id: "studio.generate", title: "Generate an image", group: "Studio", run: () => generate() },
      { id: "studio.cancel", title: "Cancel the generation", group: "Studio", run: () => abort.current?.abort() },
      { id: "studio.dice", title: "Roll a new seed", group: "Studio", run: () => setP({ ...p, seed: newSeed() }) },
      { id: "studio.lock", title: "Lock or unlock the seed", group: "Studio", run: () => setP({ ...p, seedLocked: !p.seedLocked }) },
    ],
    [p, busy],
  );
  const set = (k: keyof Params) => (e: Event) => {
    const el = e.target as HTMLInputElement;
    setP({ ...p, [k]: el.type === "number" || el.type === "range" ? Number(el.value) : el.value });
  };
  return (
    <section class="studio">
      <h1>Image studio</h1>
      <div class="studio-layout">
        <form
          class="params"
          aria-label="Generation parameters"
          onSubmit={(e) => {
            e.preventDefault();
            generate();
          }}
        >
          <label>
            Prompt
            <textarea id="studio-prompt" rows={3} value={p.prompt} onInput={set("prompt")} />
          </label>
          <label>
            Negative prompt
            <textarea rows={2} value={p.negative_prompt} onInput={set("negative_prompt")} />
          </label>
          <div class="row">
            <label>
              Seed
              <input type="number" min={0} value={p.seed} onInput={set("seed")} />
            </label>
            <button type="button" aria-pressed={p.seedLocked} onClick={() => setP({ ...p, seedLocked: !p.seedLocked })} title="Keep this seed for the next generations">
              {p.seedLocked ? "Seed locked" : "Lock seed"}
            </button>
            <button type="button" onClick={() => setP({ ...p, seed: newSeed() })}>
              Roll dice
            </button>
          </div>
          <label>
            Steps {p.steps}
            <input type="range" min={1} max={100} value={p.steps} onInput={set("steps")} />
          </label>
          <label>
            Guidance (CFG) {p.guidance_scale}
            <input type="range" min={0} max={20} step={0.5} value={p.guidance_scale} onInput={set("guidance_scale")} />
          </label>
          <label>
            Size
            <select value={p.size} onChange={set("size")}>
              {SIZES.map((s) => (
                <option value={s}>{s === "auto" ? "auto (the model's size)" : s}</option>
              ))}
            </select>
          </label>
          <label>
            Scheduler
            <select value={p.scheduler} onChange={set("scheduler")}>
              {SCHEDULERS.map((s) => (
                <option value={s}>{s || "the model's default"}</option>
              ))}
            </select>
          </label>
          <label>
            Model
            <select value={p.model || imageModels[0]?.id || ""} onChange={set("model")}>
              {imageModels.map((m) => (
                <option value={m.id}>{m.id}</option>
              ))}
              {!imageModels.length && <option value="">(no image model installed)</option>}
            </select>
          </label>
          <label>
            LoRA
            <input value={p.lora} placeholder="none" onInput={set("lora")} />
          </label>
          <label>
            Previews
            <input type="number" min={0} max={3} value={p.partial_images} onInput={set("partial_images")} />
          </label>
          <div class="row">
            <button type="submit" class="primary" disabled={busy}>
              Generate
            </button>
            <button type="button" disabled={!busy} onClick={() => abort.current?.abort()}>
              Cancel
            </button>
          </div>
        </form>
        <div>
          <div class="canvas" aria-live="polite">
            {preview ? <img src={preview} alt={`Generated: ${p.prompt}`} data-testid="studio-image" data-partials={partials} /> : <p>Your image appears here as it forms.</p>}
          </div>
          <p role="status" data-testid="studio-status">
            {status}
          </p>
          <ResourceMonitor />
        </div>
      </div>
      <h2>Gallery</h2>
      <ul class="gallery">
        {gallery.map((g) => (
          <li data-testid="gallery-item">
            <img src={g.url} alt={String(g.params.prompt)} />
            <p class="small">
              {String(g.params.model)} · {String(g.params.size)} · seed {String(g.params.seed)} · {String(g.params.steps)} steps · CFG {String(g.params.guidance_scale)} ·{" "}
              {String(g.params.scheduler || "default scheduler")}
            </p>
            {g.receipt && (
              <p class="small mono" data-testid="gallery-receipt">
                receipt {g.receipt}
              </p>
            )}
            <div class="row">
              <button type="button" class="small-btn" onClick={() => generate({ ...(g.params as any), seedLocked: true })}>
                Re-run (same seed)
              </button>
              <button type="button" class="small-btn" onClick={() => setP({ ...p, ...(g.params as any), seedLocked: true })}>
                Use parameters
              </button>
              <button type="button" class="small-btn ghost" onClick={() => deleteGeneration(g.id).then(loadGallery)}>
                Delete
              </button>
            </div>
          </li>
        ))}
      </ul>
    </section>
  );
}
