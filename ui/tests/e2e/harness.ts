// The browser tests' world: a real `aura serve` (the binary cargo built, with the UI
// embedded) on a throwaway data directory with the demo's scripted reasoner, and Debian's
// Chromium driven by playwright-core. Nothing here stands in for the node or the browser.
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type Browser, type BrowserContext, type Page, chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../../..");
export const docsDir = join(repo, "docs/ui");

export function auraBin(): string {
  if (process.env.AURA_BIN) return process.env.AURA_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
  return join(target, "debug/aura");
}

export interface Node {
  url: string;
  home: string;
  child: ChildProcess;
  /** Runs the `aura` CLI against this node's data directory and address. */
  cli(args: string[]): string;
  /** Calls the API from the test (not from the page), with the node's key if it has one. */
  api<T = any>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T; headers: Headers }>;
  key?: string;
  stop(): Promise<void>;
}

export interface NodeOptions {
  /** Create an operator API key (the node then needs keys for everything). */
  withKey?: boolean;
  /** Install SmolLM2 from the model cache before starting (for the chat). */
  withModel?: boolean;
  /** Install Aura's tiny image model before starting (for the image studio). */
  withImageModel?: boolean;
}

/**
 * Installs Aura's tiny image model, `aura-tiny-emoji`: the weights this build ships
 * (`aura model pull aura-tiny-emoji`), or, while it ships none, weights of the first step
 * of the default recipe (`aura image train --limit-steps 1`, from the emoji dataset and
 * MiniLM that scripts/fetch-emoji.sh and fetch-models.sh put in the model cache) installed
 * with `pull --from`. Training is deterministic, so its result is kept in the model cache
 * and trained once per machine. Returns which it installed.
 */
function installImageModel(run: (args: string[]) => string): "shipped" | "trained" {
  try {
    run(["model", "pull", "aura-tiny-emoji"]);
    return "shipped";
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? e);
    if (!stderr.includes("ships no weights")) throw e;
  }
  const cache = process.env.AURA_MODEL_CACHE ?? join(homedir(), ".cache/aura/models");
  const out = join(cache, "ui-tiny-emoji");
  if (!existsSync(join(out, "model.safetensors")) || !existsSync(join(out, "training-record.json"))) {
    run(["image", "train", "--limit-steps", "1", "--out", out]);
  }
  run(["model", "pull", "aura-tiny-emoji", "--from", out]);
  return "trained";
}

export async function startNode(opts: NodeOptions = {}): Promise<Node> {
  const dir = mkdtempSync(join(tmpdir(), "aura-ui-"));
  const home = join(dir, "home");
  const env = { ...process.env, AURA_HOME: home, NO_COLOR: "1" };
  delete env.AURA_PASSPHRASE;
  const run = (args: string[], extra: Record<string, string> = {}) =>
    execFileSync(auraBin(), args, { env: { ...env, ...extra }, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  run(["init"]);
  if (opts.withModel) run(["model", "pull", "smollm2"]);
  if (opts.withImageModel) console.log(`[harness] aura-tiny-emoji: ${installImageModel(run)} weights`);
  let key: string | undefined;
  if (opts.withKey) {
    const out = JSON.parse(run(["--json", "apikey", "create", "ui-test", "--role", "operator"]));
    key = out.secret ?? out.key;
    if (!key) throw new Error(`no key in ${JSON.stringify(out)}`);
  }
  const script = join(repo, "demo/summarise.jsonl");
  writeFileSync(
    join(home, "aura.toml"),
    `[limits]\nrequests_per_second = 100000\nburst = 100000\n\n[missions]\ndefault_reasoner = "demo"\n\n[reasoners.demo]\nprovider = "scripted"\npath = "${script}"\n\n[reasoners.demo2]\nprovider = "scripted"\npath = "${script}"\n`,
  );
  // A scripted reasoner answers its turns in order, once: each demo mission gets its own
  // reasoner and its own copy of the demo's files.
  for (const name of ["project", "project2"]) {
    const ws = join(home, "workspaces/default", name);
    mkdirSync(ws, { recursive: true });
    for (const f of ["plan.md", "notes.md", "build.log"]) cpSync(join(repo, "demo/workspace", f), join(ws, f));
  }

  const child = spawn(auraBin(), ["--json", "serve", "--listen", "127.0.0.1:0"], { env, stdio: ["ignore", "pipe", "inherit"] });
  const line: string = await new Promise((ok, fail) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once("line", (l) => ok(l));
    child.once("exit", (code) => fail(new Error(`aura serve exited with ${code}`)));
  });
  const url = `http://${JSON.parse(line).listening}`;
  const api = async (method: string, path: string, body?: unknown) => {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (key) headers.authorization = `Bearer ${key}`;
    const resp = await fetch(url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await resp.text();
    let parsed: any = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Not JSON: keep the text.
    }
    return { status: resp.status, body: parsed, headers: resp.headers };
  };
  return {
    url,
    home,
    child,
    key,
    cli: (args) => run(args, { AURA_NODE: url }),
    api,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => {
        if (child.exitCode !== null) return r(null);
        const t = setTimeout(() => {
          child.kill("SIGKILL");
          r(null);
        }, 10000);
        child.once("exit", () => {
          clearTimeout(t);
          r(null);
        });
      });
      // A node leaves its workspaces' file systems mounted when it stops (their files
      // stay where operators look); this data directory is thrown away, so they go too.
      unmountBelow(dir);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Lazily unmounts every mount point below `dir`, deepest first. */
function unmountBelow(dir: string): void {
  let text = "";
  try {
    text = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return;
  }
  const points = text
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const p of points) {
    spawnSync("umount", ["-l", p]);
  }
}

export async function launch(): Promise<Browser> {
  // playwright-core gives every launch a fresh profile directory of its own.
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // WebGL through SwiftShader, so three.js renders without a GPU.
      "--use-angle=swiftshader",
      "--enable-unsafe-swiftshader",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
}

export interface Watched {
  page: Page;
  context: BrowserContext;
  /** Console errors, page errors and failed requests, each as one line. */
  errors: string[];
}

/** A fresh context and page that records every console error and uncaught exception. */
export async function openPage(browser: Browser, opts: { viewport?: { width: number; height: number }; colorScheme?: "dark" | "light" } = {}): Promise<Watched> {
  const context = await browser.newContext({ viewport: opts.viewport ?? { width: 1400, height: 900 }, colorScheme: opts.colorScheme ?? "dark" });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  return { page, context, errors };
}

/** Runs axe-core in the page; returns the serious and critical violations. */
export async function axe(page: Page): Promise<{ id: string; impact: string; help: string; nodes: string[] }[]> {
  const source = readFileSync(join(repo, "ui/node_modules/axe-core/axe.min.js"), "utf8");
  // Injected as an init script would need unsafe-eval under the CSP; evaluate bypasses the
  // page's CSP as a DevTools script does, and runs axe against the page as it is.
  await page.evaluate(source);
  const result = await page.evaluate(async () => {
    // @ts-expect-error axe is global once injected
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v: any) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n: any) => n.target.join(" ")) }));
  });
  return result.filter((v: { impact: string }) => v.impact === "serious" || v.impact === "critical");
}

export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(docsDir, { recursive: true });
  const path = join(docsDir, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/** Waits until `f` returns a truthy value, or throws with `what` after `ms`. */
export async function until<T>(f: () => Promise<T> | T, what: string, ms = 30000): Promise<T> {
  const start = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A report line the test run prints and collects into ui/test-results/report.json. */
export const report: Record<string, unknown> = {};
export function record(name: string, value: unknown): void {
  report[name] = value;
  console.log(`[report] ${name}: ${JSON.stringify(value)}`);
  const dir = join(repo, "ui/test-results");
  mkdirSync(dir, { recursive: true });
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(readFileSync(join(dir, "report.json"), "utf8"));
  } catch {
    // First line of the run.
  }
  writeFileSync(join(dir, "report.json"), JSON.stringify({ ...all, [name]: value }, null, 2));
}
