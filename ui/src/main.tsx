// The web UI's entry: the shell (navigation, status, theme, API key, command palette),
// the pages of the console, and the lazily loaded parts (the image studio and the avatar,
// which bring three.js) that the first load does not pay for.

import { render } from "preact";
import { lazy, Suspense } from "preact/compat";
import { useEffect, useState } from "preact/hooks";
import "./styles.css";
import { apiKey, get, needKey, setApiKey } from "./lib/api";
import { avatarEmote, avatarOpen, emotionFor } from "./lib/avatarBus";
import { register } from "./lib/commands";
import { onEvents, restartEvents, startEvents, status, stream } from "./lib/events";
import { go, route } from "./lib/router";
import { useSignal } from "./lib/signal";
import { toasts } from "./lib/toast";
import { Palette, paletteOpen } from "./components/Palette";
import { Overview } from "./pages/Overview";
import { Agents } from "./pages/Agents";
import { Missions } from "./pages/Missions";
import { MissionDetail } from "./pages/MissionDetail";
import { Approvals } from "./pages/Approvals";
import { Ledger } from "./pages/Ledger";
import { Models } from "./pages/Models";
import { Cells } from "./pages/Cells";
import { Chat } from "./pages/Chat";
import { Events } from "./pages/Events";

const Studio = lazy(() => import("./studio/Studio"));
const AvatarPage = lazy(() => import("./avatar/AvatarPage"));
const AvatarDock = lazy(() => import("./avatar/AvatarDock"));

const PAGES: { path: string; title: string; key: string }[] = [
  { path: "", title: "Overview", key: "o" },
  { path: "agents", title: "Agents", key: "a" },
  { path: "missions", title: "Missions", key: "m" },
  { path: "approvals", title: "Approvals", key: "p" },
  { path: "events", title: "Live events", key: "e" },
  { path: "ledger", title: "Ledger", key: "l" },
  { path: "models", title: "Models & receipts", key: "r" },
  { path: "cells", title: "Cells", key: "c" },
  { path: "chat", title: "Chat", key: "t" },
  { path: "studio", title: "Image studio", key: "i" },
  { path: "avatar", title: "Avatar", key: "v" },
];

const theme = localStorage.getItem("aura.theme") === "light" ? "light" : "dark";
document.documentElement.dataset.theme = theme;
function toggleTheme(): void {
  const next = document.documentElement.dataset.theme === "light" ? "dark" : "light";
  document.documentElement.dataset.theme = next;
  localStorage.setItem("aura.theme", next);
}

register([
  ...PAGES.map((p) => ({
    id: `go.${p.path || "overview"}`,
    title: `Go to ${p.title}`,
    group: "Navigate",
    run: () => go(p.path),
  })),
  { id: "ui.theme", title: "Toggle light / dark theme", group: "View", run: toggleTheme },
  {
    id: "ui.avatar",
    title: "Show or hide the avatar",
    group: "View",
    keywords: "hologram head speak",
    run: () => avatarOpen.set(!avatarOpen.get()),
  },
  { id: "auth.key", title: "Enter an API key", group: "Access", run: () => needKey.set(true) },
  {
    id: "auth.forget",
    title: "Forget the API key of this tab",
    group: "Access",
    run: () => {
      setApiKey(null);
      restartEvents();
    },
  },
]);

// Ctrl-K (or Cmd-K) anywhere opens the palette; registered before the first render.
addEventListener("keydown", (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") {
    e.preventDefault();
    paletteOpen.set(!paletteOpen.get());
  }
});

function Page({ parts }: { parts: string[] }) {
  const [head, id] = parts;
  switch (head ?? "") {
    case "":
      return <Overview />;
    case "agents":
      return <Agents />;
    case "missions":
      return id ? <MissionDetail id={id} /> : <Missions />;
    case "approvals":
      return <Approvals />;
    case "events":
      return <Events from={id} />;
    case "ledger":
      return <Ledger agent={id} />;
    case "models":
      return <Models />;
    case "cells":
      return <Cells />;
    case "chat":
      return <Chat />;
    case "studio":
      return <Studio />;
    case "avatar":
      return <AvatarPage />;
    default:
      return (
        <section>
          <h1>Not found</h1>
          <p>There is no page {parts.join("/")}.</p>
        </section>
      );
  }
}

function KeyDialog() {
  const [value, setValue] = useState("");
  return (
    <div class="modal-backdrop">
      <div class="modal" role="dialog" aria-modal="true" aria-labelledby="key-title">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setApiKey(value.trim());
          restartEvents();
          route.set([...route.get()]);
        }}
      >
        <h2 id="key-title">This node needs an API key</h2>
        <p>
          Keys are made with <code>aura apikey create NAME --role operator</code>. The key stays in this tab
          (sessionStorage) and is sent only to this node.
        </p>
        <label for="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autocomplete="off"
          placeholder="aura_…"
          value={value}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)}
          autoFocus
        />
        <div class="row">
          <button type="submit" class="primary" disabled={!value.trim()}>
            Use this key
          </button>
          <button type="button" onClick={() => needKey.set(false)}>
            Cancel
          </button>
        </div>
      </form>
      </div>
    </div>
  );
}

function App() {
  const parts = useSignal(route);
  const asking = useSignal(needKey);
  const live = useSignal(status);
  const showAvatar = useSignal(avatarOpen);
  const list = useSignal(toasts);
  const key = useSignal(apiKey);
  const [node, setNode] = useState<{ node_id: string; version: string; tree_size: number } | null>(null);

  useEffect(() => {
    get<{ node_id: string; version: string; tree_size: number }>("/health").then(setNode, () => {});
    startEvents();
    // The avatar's face follows what happens to every mission, as it happens.
    const offEvents = onEvents((batch) => {
      for (const e of batch) {
        if (e.type !== "entry" || e.seq < stream.liveFrom) continue;
        const emotion = emotionFor(e.kind, e.body);
        if (emotion) avatarEmote(emotion, 6000);
      }
    });
    return offEvents;
  }, []);

  useEffect(() => {
    const title = PAGES.find((p) => p.path === (parts[0] ?? ""))?.title ?? "Aura";
    document.title = `${title} · Aura`;
  }, [parts[0]]);

  return (
    <div class={`shell${showAvatar ? " with-avatar" : ""}`}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <a class="brand" href="#/">
          <span aria-hidden="true">◈</span> Aura
        </a>
        <span class="node" title={node?.node_id}>
          {node ? `${node.node_id.slice(0, 12)}… · v${node.version}` : "…"}
        </span>
        <span class={`pill ${live}`} role="status" aria-label={`event stream ${live}`}>
          {live}
        </span>
        <span class="spacer" />
        <button type="button" class="ghost" onClick={() => paletteOpen.set(true)} aria-keyshortcuts="Control+K">
          Commands <kbd>Ctrl K</kbd>
        </button>
        <button type="button" class="ghost" onClick={() => avatarOpen.set(!showAvatar)} aria-pressed={showAvatar}>
          Avatar
        </button>
        <button type="button" class="ghost" onClick={toggleTheme}>
          Theme
        </button>
        <button type="button" class="ghost" onClick={() => needKey.set(true)}>
          {key ? "Key set" : "API key"}
        </button>
      </header>
      <nav class="sidebar" aria-label="Pages">
        <ul>
          {PAGES.map((p) => (
            <li>
              <a href={`#/${p.path}`} aria-current={(parts[0] ?? "") === p.path ? "page" : undefined}>
                {p.title}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<p role="status">Loading…</p>}>
          <Page parts={parts} />
        </Suspense>
      </main>
      {showAvatar && (parts[0] ?? "") !== "avatar" && (
        <aside class="avatar-dock" aria-label="Avatar">
          <Suspense fallback={<p role="status">Loading the avatar…</p>}>
            <AvatarDock />
          </Suspense>
        </aside>
      )}
      <Palette />
      {asking && <KeyDialog />}
      <div class="toasts" role="status" aria-live="polite">
        {list.map((t) => (
          <div class={`toast ${t.kind}`}>{t.text}</div>
        ))}
      </div>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
// Marks the moment the console is interactive, for the performance test.
requestAnimationFrame(() => performance.mark("aura:interactive"));
