// The web UI in real Chromium against a real node: every page loads clean and passes
// axe-core; the first load's size and time to interactive; a mission moves live; an
// escalation approved in the page resumes it; proofs are verified in the page and a
// tampered one is flagged; the live view keeps up with 500 events/s; the chat streams;
// the avatar follows a viseme timeline; the image studio (once the node has the API).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { axe, launch, type Node, openPage, record, screenshot, startNode, until } from "./harness";
import { EXPRESSIONS, minimalVrm } from "./vrm-fixture";

let node: Node;
let browser: Browser;
let agent: string;

beforeAll(async () => {
  const withModel = process.env.AURA_UI_NO_MODEL !== "1";
  [node, browser] = await Promise.all([startNode({ withModel, withImageModel: withModel }), launch()]);
  const a = await node.api("POST", "/v1/agents", { name: "writer", level: "L2", namespace: "default" });
  expect(a.status).toBe(201);
  agent = a.body.id;
});

afterAll(async () => {
  await browser?.close();
  await node?.stop();
});

const PAGES = ["", "agents", "missions", "approvals", "events", "ledger", "models", "cells", "chat", "studio", "avatar"];

async function submitDemoMission(reasoner = "demo", workspace = "project"): Promise<string> {
  const m = await node.api("POST", "/v1/missions", {
    reasoner,
    agent,
    objective: "Summarise the plan and the notes into summary.md and clean up stale files",
    tools: ["fs.list", "fs.read", "fs.write", "fs.delete", "mission.finish"],
    timeout_secs: 600,
    workspace,
  });
  expect(m.status, JSON.stringify(m.body)).toBe(201);
  return m.body.id;
}

describe("the console", () => {
  it("loads its first page under 300 KB of JavaScript and is interactive within a second", async () => {
    const { page, context, errors } = await openPage(browser);
    // A warm load, as an operator's second visit: the first fills the HTTP cache.
    await page.goto(node.url + "/");
    await page.waitForFunction(() => performance.getEntriesByName("aura:interactive").length > 0);
    const cold = await page.evaluate(() => {
      const js = performance
        .getEntriesByType("resource")
        .filter((r) => r.name.endsWith(".js")) as PerformanceResourceTiming[];
      return {
        interactive_ms: performance.getEntriesByName("aura:interactive")[0].startTime,
        js_files: js.map((r) => r.name.replace(location.origin, "")),
        js_bytes_over_the_wire: js.reduce((n, r) => n + r.encodedBodySize, 0),
        js_bytes_decoded: js.reduce((n, r) => n + r.decodedBodySize, 0),
      };
    });
    record("first_load", cold);
    expect(cold.js_bytes_over_the_wire).toBeGreaterThan(0);
    expect(cold.js_bytes_over_the_wire).toBeLessThan(300 * 1024);
    expect(cold.interactive_ms).toBeLessThan(1000);
    expect(cold.js_files.some((f) => f.includes("three"))).toBe(false);
    const headers = (await page.request.get(node.url + "/")).headers();
    expect(headers["content-security-policy"]).toContain("default-src 'self'");
    expect(headers["content-security-policy"]).not.toContain("unsafe-inline");
    expect(headers["content-security-policy"]).not.toContain("unsafe-eval");
    expect(errors).toEqual([]);
    await context.close();
  });

  it("every page loads without console errors and axe-core finds nothing serious", async () => {
    const { page, context, errors } = await openPage(browser);
    for (const theme of ["dark", "light"]) {
      await page.goto(node.url + "/");
      await page.evaluate((t) => localStorage.setItem("aura.theme", t), theme);
      for (const p of PAGES) {
        await page.goto(`${node.url}/#/${p}`);
        await page.reload();
        await page.waitForSelector("main h1");
        await page.waitForTimeout(p === "avatar" || p === "studio" ? 800 : 250);
        const violations = await axe(page);
        expect(violations, `${theme} #/${p}: ${JSON.stringify(violations, null, 1)}`).toEqual([]);
      }
    }
    // Pages a node without some parts answers with a clear error (cells need a key and
    // root; receipts need a model) show it in the page, not in the console.
    // Only failed-resource lines are allowed, never a script error: Chromium logs each API
    // answer of 4xx/5xx, and the cells page on a keyless node is told 403 (cells need a key).
    expect(errors.filter((e) => !/Failed to load resource: the server responded with a status of (403|503)/.test(e))).toEqual([]);
    await context.close();
  });

  it("opens the command palette with Ctrl-K and runs an action from the keyboard", async () => {
    const { page, context, errors } = await openPage(browser);
    await page.goto(node.url + "/");
    await page.waitForFunction(() => performance.getEntriesByName("aura:interactive").length > 0);
    await page.keyboard.press("Control+k");
    await page.getByRole("combobox", { name: "Type a command" }).fill("go ledger");
    await page.keyboard.press("Enter");
    await page.waitForSelector("h1:text('Ledger')");
    expect(page.url()).toContain("#/ledger");
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe("missions", () => {
  it("a mission submitted through the API appears and moves through its states live; approved in the page, it completes", async () => {
    const { page, context, errors } = await openPage(browser);
    await page.goto(`${node.url}/#/missions`);
    await page.waitForSelector("h1:text('Missions')");
    const id = await submitDemoMission();
    await page.waitForSelector(`tr[data-mission="${id}"]`, { timeout: 15000 });
    await page.goto(`${node.url}/#/missions/${id}`);
    // The record streams in: reasoner turns, policy decisions and effects, then the escalation.
    await page.waitForSelector("li.k-turn", { timeout: 15000 });
    await page.waitForSelector("li.k-decided");
    await page.waitForSelector("li.k-effect");
    await until(async () => (await page.textContent("[data-testid=mission-state]")) === "escalated", "the escalation", 30000);
    await page.waitForSelector(".machine .node.current[data-state=escalated]");
    await screenshot(page, "console-mission-escalated");

    // Answer it from the approvals page with a key made in this browser.
    await page.goto(`${node.url}/#/approvals`);
    await page.getByLabel("Your name").fill("alice@example.com");
    await page.getByRole("button", { name: "Make a key in this browser" }).click();
    await page.waitForSelector("[data-testid=approver-key]");
    await page.getByLabel("Level").selectOption("L3");
    await page.getByRole("button", { name: /Enroll this key/ }).click();
    await page.waitForSelector("[data-testid=credential]");
    await page.waitForSelector(`li[data-mission="${id}"]`);
    await screenshot(page, "console-approvals");
    await page.locator(`li[data-mission="${id}"]`).getByRole("button", { name: "Approve (sign)" }).click();
    await until(async () => (await node.api("GET", `/v1/missions/${id}`)).body.state === "completed", "the mission to complete", 30000);
    // The page saw it complete live.
    await page.goto(`${node.url}/#/missions/${id}`);
    await until(async () => (await page.textContent("[data-testid=mission-state]")) === "completed", "the page to show completed");
    // Its record, backfilled from the ledger, holds the signed approval.
    await page.waitForSelector("li.k-approved");
    await page.waitForSelector(".machine .node.current[data-state=completed]");
    await screenshot(page, "console-mission");
    expect(readFileSync(join(node.home, "workspaces/default/project/summary.md"), "utf8")).toContain("governed runtime");
    expect(errors).toEqual([]);
    await context.close();
  });

  it("the live view keeps up with 500 events a second without dropping any", async () => {
    const { page, context, errors } = await openPage(browser);
    await page.goto(`${node.url}/#/events`);
    await until(async () => (await page.textContent("[data-testid=stream-status]")) === "live", "the stream");
    const before = Number(await page.textContent("[data-testid=events-received]"));
    // Messages to agents of their own (so no mission's conversation sees them), spread over
    // ten agents because each agent's record has one writer.
    const chatters: string[] = [];
    for (let i = 0; i < 10; i++) chatters.push((await node.api("POST", "/v1/agents", { name: `chatter-${i}`, level: "L1", namespace: "default" })).body.id);
    const N = 2500;
    const start = Date.now();
    const inflight = new Set<Promise<void>>();
    // One message every 2 ms, sent when due: 500 a second, each one a ledger entry and an
    // event; at most 256 requests in flight.
    for (let i = 0; i < N; i++) {
      const due = start + i * 2;
      while (Date.now() < due) await new Promise((r) => setTimeout(r, Math.max(0, due - Date.now())));
      while (inflight.size >= 256) await Promise.race(inflight);
      const p: Promise<void> = node.api("POST", `/v1/agents/${chatters[i % 10]}/messages`, { body: { n: i } }).then((d) => {
        expect(d.status).toBe(201);
        inflight.delete(p);
      });
      inflight.add(p);
    }
    await Promise.all(inflight);
    const rate = Math.round((N * 1000) / (Date.now() - start));
    const size = (await node.api("GET", "/health")).body.tree_size as number;
    await until(async () => Number(await page.textContent("[data-testid=events-last-seq]")) === size - 1, "the page to reach the ledger's end", 30000);
    const received = Number(await page.textContent("[data-testid=events-received]")) - before;
    const gaps = Number(await page.textContent("[data-testid=events-gaps]"));
    record("live_events", { sent: N, offered_rate_per_s: rate, received_by_page: received, gaps });
    expect(gaps).toBe(0);
    expect(received).toBeGreaterThanOrEqual(N);

    // The node commits as fast as this machine lets it; to load the page past 500 events a
    // second whatever the machine, replay the whole ledger into it: the backfill arrives as
    // fast as the node reads it, through the same pipeline as live events.
    // A fresh page load, not a hash change: within the same page the live view's counters
    // stay on screen until the replay view resets them, and once they equalled the ledger's
    // size, so the wait below ended on the old view's figures.
    await page.goto("about:blank");
    const t0 = Date.now();
    await page.goto(`${node.url}/#/events/0`);
    await until(
      async () => (await page.textContent("[data-testid=events-from]")) === "0" && Number(await page.textContent("[data-testid=events-received]")) === size,
      "the replay to reach the ledger's end",
      60000,
    );
    const seconds = (Date.now() - t0) / 1000;
    const replayed = Number(await page.textContent("[data-testid=events-received]"));
    const replayGaps = Number(await page.textContent("[data-testid=events-gaps]"));
    record("replayed_events", { events: replayed, seconds, rate_per_s: Math.round(replayed / seconds), gaps: replayGaps });
    expect(replayed).toBe(size);
    expect(replayGaps).toBe(0);
    expect(replayed / seconds).toBeGreaterThan(500);
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe("the ledger explorer", () => {
  it("verifies an inclusion proof in the page and flags a tampered one", async () => {
    const { page, context, errors } = await openPage(browser);
    await page.goto(`${node.url}/#/ledger`);
    await page.waitForSelector("[data-testid=checkpoint-verified]");
    const pinned = await page.textContent("[data-testid=pinned-key]");
    const nodeKey = JSON.parse(node.cli(["--json", "key", "show"])).public_key;
    expect(pinned).toBe(nodeKey);
    const row = page.locator("tbody tr").first();
    await row.getByRole("button", { name: /Verify here: entry/ }).click();
    await row.locator("[data-testid=proof-verified]").waitFor();
    await screenshot(page, "console-ledger");

    // A server that lies: flip one bit of the proof's audit path (or its entry) in transit.
    await page.route("**/v1/ledger/proof/inclusion*", async (route) => {
      const resp = await route.fetch();
      const body = await resp.json();
      const bytes = Buffer.from(body.proof_base64, "base64");
      bytes[bytes.length - 129 - 5] ^= 0x01;
      body.proof_base64 = bytes.toString("base64");
      await route.fulfill({ response: resp, json: body });
    });
    const second = page.locator("tbody tr").nth(1);
    await second.getByRole("button", { name: /Verify here: entry/ }).click();
    await second.locator("[data-testid=proof-failed]").waitFor();
    await page.unroute("**/v1/ledger/proof/inclusion*");

    // The agent's whole chain, proven entry by entry here.
    await page.goto(`${node.url}/#/ledger/${agent}`);
    await page.getByRole("button", { name: "Verify this chain here" }).click();
    await until(async () => /verified here|failed|does not chain/.test((await page.textContent("[data-testid=chain-verdict]")) ?? ""), "the chain verdict", 60000);
    expect(await page.textContent("[data-testid=chain-verdict]")).toMatch(/proven and chained, verified here/);
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe("the chat playground", () => {
  it("streams an answer from the local model, with its receipt", async (ctx) => {
    if (process.env.AURA_UI_NO_MODEL === "1") ctx.skip();
    const { page, context, errors } = await openPage(browser);
    await page.goto(`${node.url}/#/chat`);
    await page.waitForFunction(() => [...document.querySelectorAll("option")].some((o) => o.value === "smollm2"));
    await page.getByLabel("Max tokens").fill("48");
    await page.getByLabel("Message").fill("What is a ledger?");
    await page.getByRole("button", { name: "Send" }).click();
    // Streaming: the answer grows in several steps before it ends.
    const lengths = new Set<number>();
    await until(async () => {
      const t = (await page.locator("[data-testid=assistant-text]").last().textContent()) ?? "";
      if (t.length) lengths.add(t.length);
      return (await page.getByRole("button", { name: "Send" }).count()) > 0 && t.length > 0;
    }, "the answer", 90000);
    expect(lengths.size).toBeGreaterThan(1);
    await page.waitForSelector("text=receipt");
    await screenshot(page, "console-chat");
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe("the avatar", () => {
  it("follows a viseme timeline, renders, and looks concerned when a mission escalates", async () => {
    const { page, context, errors } = await openPage(browser);
    // A timeline fixed by the test (the contract's JSON, docs/ui.md, with a real WAV of
    // silence), so the face can be checked cue by cue; the next test uses the node's own.
    const cues = [
      { t_ms: 0, viseme: "sil" },
      { t_ms: 200, viseme: "aa", weight: 1 },
      { t_ms: 600, viseme: "O", weight: 0.8 },
      { t_ms: 1000, viseme: "PP" },
      { t_ms: 1400, viseme: "E", weight: 0.9 },
      { t_ms: 1800, viseme: "U" },
      { t_ms: 2200, viseme: "sil" },
    ];
    const wav = silentWav(2.4);
    await page.route("**/v1/audio/speech", (route) =>
      route.fulfill({ json: { audio_b64: wav.toString("base64"), visemes: cues, duration_ms: 2400 } }),
    );
    await page.goto(`${node.url}/#/avatar`);
    await page.waitForSelector("[data-testid=avatar] canvas");
    await page.getByRole("button", { name: "Speak" }).click();
    // Sampled in the page, every frame, from what the viewport publishes of its mesh.
    const samples: { ms: number; viseme: string; weights: Record<string, number> }[] = await page.evaluate(
      () =>
        new Promise((done) => {
          const el = document.querySelector<HTMLElement>("[data-testid=avatar]")!;
          const out: { ms: number; viseme: string; weights: Record<string, number> }[] = [];
          const t0 = performance.now();
          const frame = () => {
            const ms = el.dataset.speechMs ?? "";
            if (ms !== "" && out[out.length - 1]?.ms !== Number(ms)) out.push({ ms: Number(ms), viseme: el.dataset.viseme ?? "", weights: JSON.parse(el.dataset.weights ?? "{}") });
            // Until the utterance is over (or 10 s, whatever the frame rate).
            const over = out.length > 0 && ms === "";
            if (!over && performance.now() - t0 < 10000) requestAnimationFrame(frame);
            else done(out);
          };
          requestAnimationFrame(frame);
        }),
    );
    // Mid-cue (past the blend, before the next cue), the face shows the cue's viseme at its weight.
    const checked = samples.filter((s) => {
      const i = cues.findLastIndex((c) => c.t_ms <= s.ms);
      const next = cues[i + 1]?.t_ms ?? 2400;
      return i >= 0 && s.ms >= cues[i].t_ms + 90 && s.ms <= next - 40;
    });
    expect(checked.length, JSON.stringify(samples.map((x) => x.ms))).toBeGreaterThanOrEqual(5);
    const seen = new Set<string>();
    for (const s of checked) {
      const cue = cues[cues.findLastIndex((c) => c.t_ms <= s.ms)];
      if (cue.viseme === "sil") {
        expect(Object.keys(s.weights).filter((k) => k.length <= 3 && k !== "sil")).toEqual([]);
        continue;
      }
      seen.add(cue.viseme);
      expect(s.viseme, `at ${s.ms} ms`).toBe(cue.viseme);
      expect(s.weights[cue.viseme]).toBeCloseTo(cue.weight ?? 1, 1);
    }
    expect(seen.size).toBeGreaterThanOrEqual(3);
    record("avatar_samples", { taken: samples.length, checked: checked.length, visemes_seen: [...seen] });

    // The picture is not empty: enough bright hologram pixels.
    const lit = await page.evaluate(() => {
      const src = document.querySelector<HTMLCanvasElement>("[data-testid=avatar] canvas")!;
      const c = document.createElement("canvas");
      c.width = 200;
      c.height = 200;
      const g = c.getContext("2d")!;
      g.drawImage(src, 0, 0, 200, 200);
      const d = g.getImageData(0, 0, 200, 200).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 120 && d[i + 3] > 0) n++;
      return n / (200 * 200);
    });
    expect(lit).toBeGreaterThan(0.01);
    await screenshot(page, "avatar");

    // Its face follows the missions: an escalation makes it concerned.
    await submitDemoMission("demo2", "project2");
    await until(async () => (await page.getAttribute("[data-testid=avatar]", "data-emotion")) === "concerned", "a concerned face", 30000);
    await page.waitForTimeout(600);
    await screenshot(page, "avatar-concerned");
    expect(errors).toEqual([]);
    await context.close();
  });

  it("speaks with the node's own voice: espeak-ng's WAV and viseme timeline drive the face", async () => {
    const { page, context, errors } = await openPage(browser);
    await page.goto(`${node.url}/#/avatar`);
    await page.waitForSelector("[data-testid=avatar] canvas");
    await page.fill("#avatar-text", "Hello from Aura. Approve the mission, please.");
    const answered = page.waitForResponse((r) => r.url().endsWith("/v1/audio/speech"));
    await page.getByRole("button", { name: "Speak" }).click();
    const resp = await answered;
    // The node's real answer (no route is faked here): 200, the contract's JSON.
    expect(resp.status(), "is espeak-ng installed? scripts/setup-speech.sh").toBe(200);
    const body = await resp.json();
    const cues: { t_ms: number; viseme: string }[] = body.visemes;
    expect(body.audio_b64.length).toBeGreaterThan(1000);
    expect(body.duration_ms).toBeGreaterThan(1000);
    const spoken = new Set(cues.map((c) => c.viseme).filter((v) => v !== "sil"));
    expect(spoken.size).toBeGreaterThanOrEqual(5);
    // What the face shows while it speaks, every frame, until the utterance ends.
    const shown: string[] = await page.evaluate(
      () =>
        new Promise((done) => {
          const el = document.querySelector<HTMLElement>("[data-testid=avatar]")!;
          const out: string[] = [];
          const t0 = performance.now();
          const frame = () => {
            const ms = el.dataset.speechMs ?? "";
            if (ms !== "" && el.dataset.viseme) out.push(el.dataset.viseme);
            const over = out.length > 0 && ms === "";
            if (!over && performance.now() - t0 < 15000) requestAnimationFrame(frame);
            else done(out);
          };
          requestAnimationFrame(frame);
        }),
    );
    const moved = new Set(shown.filter((v) => v !== "sil"));
    expect(moved.size, JSON.stringify(shown)).toBeGreaterThanOrEqual(3);
    for (const v of moved) expect(spoken.has(v), `${v} is not in the node's timeline`).toBe(true);
    record("avatar_node_speech", { cues: cues.length, duration_ms: body.duration_ms, visemes_shown: [...moved] });
    expect(errors).toEqual([]);
    await context.close();
  });

  it("drives a user's VRM avatar with the same visemes", async () => {
    const { page, context, errors } = await openPage(browser);
    const cues = [
      { t_ms: 0, viseme: "sil" },
      { t_ms: 200, viseme: "aa", weight: 1 },
      { t_ms: 700, viseme: "O", weight: 0.8 },
      { t_ms: 1200, viseme: "E", weight: 0.9 },
      { t_ms: 1700, viseme: "sil" },
    ];
    // Oculus visemes onto VRM's vowels, as src/avatar/vrm.ts maps them.
    const vowel: Record<string, string> = { aa: "aa", O: "oh", E: "ee" };
    const wav = silentWav(2.0);
    await page.route("**/v1/audio/speech", (route) =>
      route.fulfill({ json: { audio_b64: wav.toString("base64"), visemes: cues, duration_ms: 2000 } }),
    );
    await page.goto(`${node.url}/#/avatar`);
    await page.waitForSelector("[data-testid=avatar] canvas");
    // A VRM 1.0 file the test wrote (tests/e2e/vrm-fixture.ts), chosen as a user would.
    await page.setInputFiles('input[type=file][accept=".vrm"]', { name: "test.vrm", mimeType: "model/gltf-binary", buffer: minimalVrm() });
    await page.getByRole("button", { name: "Back to the hologram (unload test.vrm)" }).waitFor();
    await page.getByRole("button", { name: "Speak" }).click();
    const samples: { ms: number; vrm: { expressions: Record<string, number>; morphs: number[] } }[] = await page.evaluate(
      () =>
        new Promise((done) => {
          const el = document.querySelector<HTMLElement>("[data-testid=avatar]")!;
          const out: { ms: number; vrm: unknown }[] = [];
          const t0 = performance.now();
          const frame = () => {
            const ms = el.dataset.speechMs ?? "";
            if (ms !== "" && el.dataset.vrm && out[out.length - 1]?.ms !== Number(ms)) out.push({ ms: Number(ms), vrm: JSON.parse(el.dataset.vrm) });
            const over = out.length > 0 && ms === "";
            if (!over && performance.now() - t0 < 10000) requestAnimationFrame(frame);
            else done(out);
          };
          requestAnimationFrame(frame);
        }),
    );
    let checked = 0;
    for (const [i, cue] of cues.entries()) {
      const v = vowel[cue.viseme];
      if (!v) continue;
      const mid = samples.filter((s) => s.ms >= cue.t_ms + 120 && s.ms <= cues[i + 1].t_ms - 60);
      expect(mid.length, `samples inside the ${cue.viseme} cue: ${JSON.stringify(samples.map((s) => s.ms))}`).toBeGreaterThan(0);
      for (const s of mid) {
        // The expression is set, and the mesh's morph target bound to it moved as much.
        expect(s.vrm.expressions[v], `${v} at ${s.ms} ms: ${JSON.stringify(s.vrm)}`).toBeCloseTo(cue.weight, 1);
        expect(s.vrm.morphs[EXPRESSIONS.indexOf(v as (typeof EXPRESSIONS)[number])], `morph of ${v} at ${s.ms} ms`).toBeCloseTo(cue.weight, 1);
        for (const other of ["aa", "ee", "oh"].filter((o) => o !== v)) expect(s.vrm.expressions[other] ?? 0).toBeLessThan(0.1);
        checked++;
      }
    }
    record("avatar_vrm", { samples: samples.length, checked });
    // Unloading brings the hologram back and stops publishing the VRM.
    await page.getByRole("button", { name: "Back to the hologram (unload test.vrm)" }).click();
    await until(async () => (await page.getAttribute("[data-testid=avatar]", "data-vrm")) === null, "the VRM unloaded");
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe("the image studio", () => {
  it("makes an image with live previews, cancels, and re-runs a gallery entry's seed to the same image", async (ctx) => {
    const models = await node.api("GET", "/v1/models");
    const imageModels = ((models.body?.data ?? []) as { id: string; kind?: string }[]).filter((m) => m.kind === "image");
    if (process.env.AURA_UI_NO_MODEL === "1") {
      // Asked for: a run without models (the harness installs aura-tiny-emoji otherwise).
      console.log("[skip] the image studio test: AURA_UI_NO_MODEL=1");
      ctx.skip();
    }
    expect(imageModels.map((m) => m.id)).toContain("aura-tiny-emoji");
    const receipts = async () => ((await node.api("GET", "/v1/receipts")).body.receipts as { id: string }[]).map((r) => r.id);
    const before = await receipts();
    const { page, context, errors } = await openPage(browser);
    await page.goto(`${node.url}/#/studio`);
    const status = () => page.textContent("[data-testid=studio-status]");
    const items = page.locator("[data-testid=gallery-item]");

    // Generate: previews arrive while it runs, then the image, kept in the gallery with its
    // parameters and its receipt.
    await page.getByLabel("Steps").fill("12");
    await page.getByRole("button", { name: "Generate" }).click();
    await until(async () => Number(await page.getAttribute("[data-testid=studio-image]", "data-partials")) > 0, "a partial preview", 120000);
    await until(async () => (await status()) === "done", "the final image", 300000);
    await until(async () => (await items.count()) === 1, "the gallery entry");
    const first = (await items.first().textContent()) ?? "";
    expect(first).toContain("aura-tiny-emoji");
    expect(first).toContain("12 steps");
    const receiptOf = async (i: number) => /^receipt (rcpt_\w+)$/.exec(((await items.nth(i).locator("[data-testid=gallery-receipt]").textContent()) ?? "").trim())?.[1];
    const receipt = await receiptOf(0);
    expect(receipt, first).toBeTruthy();
    expect(await receipts()).toContain(receipt);
    await screenshot(page, "studio");

    // Re-run the entry's seed: another receipt, the same pixels.
    await items.first().getByRole("button", { name: "Re-run (same seed)" }).click();
    await until(async () => (await items.count()) === 2, "the re-run's gallery entry", 300000);
    const pixels = await page.evaluate(() =>
      [...document.querySelectorAll<HTMLImageElement>("[data-testid=gallery-item] img")].map((img) => {
        const c = document.createElement("canvas");
        [c.width, c.height] = [img.naturalWidth, img.naturalHeight];
        const g = c.getContext("2d")!;
        g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data).join(",");
      }),
    );
    expect(pixels).toHaveLength(2);
    expect(pixels[0].length).toBeGreaterThan(0);
    expect(pixels[0] === pixels[1], "the same seed gives the same image").toBe(true);
    const rerun = await receiptOf(0);
    expect(rerun).toBeTruthy();
    expect(rerun).not.toBe(receipt);

    // Cancel once the first preview is in: the node stops, records nothing, the gallery
    // keeps what it had.
    await page.getByLabel("Steps").fill("100");
    await page.getByRole("button", { name: "Generate" }).click();
    await until(async () => Number(await page.getAttribute("[data-testid=studio-image]", "data-partials")) > 0 && (await status())?.startsWith("preview"), "a preview of the long run", 120000);
    await page.getByRole("button", { name: "Cancel" }).click();
    await until(async () => (await status()) === "cancelled", "the cancelled status");
    await page.waitForTimeout(1500);
    expect(await items.count()).toBe(2);
    expect((await receipts()).length).toBe(before.length + 2);
    record("studio", { images: 2, cancelled: 1 });
    expect(errors).toEqual([]);
    await context.close();
  });

  it("shows the node's resources from /v1/system", async () => {
    const { page, context, errors } = await openPage(browser);
    await page.goto(`${node.url}/#/studio`);
    await page.waitForSelector("[data-testid=resource-monitor] progress");
    const sys = (await node.api("GET", "/v1/system")).body;
    expect(sys.cpu.cores).toBeGreaterThan(0);
    expect(sys.memory.total_bytes).toBeGreaterThan(0);
    // Its own name: "studio" is the generation test's picture of a finished image.
    await screenshot(page, "studio-resources");
    expect(errors.filter((e) => !/status of 404/.test(e))).toEqual([]);
    await context.close();
  });
});

/** A mono 16-bit PCM WAV of silence. */
function silentWav(seconds: number): Buffer {
  const rate = 16000;
  const n = Math.round(rate * seconds);
  const b = Buffer.alloc(44 + n * 2);
  b.write("RIFF", 0);
  b.writeUInt32LE(36 + n * 2, 4);
  b.write("WAVEfmt ", 8);
  b.writeUInt32LE(16, 16);
  b.writeUInt16LE(1, 20);
  b.writeUInt16LE(1, 22);
  b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate * 2, 28);
  b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34);
  b.write("data", 36);
  b.writeUInt32LE(n * 2, 40);
  return b;
}
