// The console's first page: the node, its ledger, and what needs a person.
import { useEffect } from "preact/hooks";
import { tick } from "../lib/events";
import { useSignal } from "../lib/signal";
import { useApi } from "../lib/useApi";
import type { Mission } from "./Missions";

const STATES = ["submitted", "authorized", "running", "escalated", "compensating", "completed", "failed", "cancelled"];

export function Overview() {
  const health = useApi<{ node_id: string; version: string; tree_size: number }>("/health");
  const missions = useApi<Mission[]>("/v1/missions?limit=1000");
  const agents = useApi<unknown[]>("/v1/agents");
  const t = useSignal(tick);
  useEffect(() => {
    const id = setTimeout(() => {
      health.reload();
      missions.reload();
    }, 500);
    return () => clearTimeout(id);
  }, [Math.floor(t / 30)]);
  const counts = new Map<string, number>();
  for (const m of missions.data ?? []) counts.set(m.state, (counts.get(m.state) ?? 0) + 1);
  return (
    <section>
      <h1>Overview</h1>
      <div class="cards">
        <div class="card">
          <h2>Node</h2>
          <p class="mono">{health.data?.node_id ?? "…"}</p>
          <p>version {health.data?.version}</p>
        </div>
        <div class="card">
          <h2>Ledger</h2>
          <p class="big">{health.data?.tree_size ?? "…"}</p>
          <p>entries, every one under a signed checkpoint</p>
          <a href="#/ledger">Explore and verify</a>
        </div>
        <div class="card">
          <h2>Agents</h2>
          <p class="big">{agents.data?.length ?? (agents.error ? "–" : "…")}</p>
          <a href="#/agents">Agents and credentials</a>
        </div>
        <div class="card">
          <h2>Waiting for a person</h2>
          <p class="big">{counts.get("escalated") ?? 0}</p>
          <a href="#/approvals">Approvals</a>
        </div>
      </div>
      <h2>Missions by state</h2>
      {missions.error && <p class="error">{missions.error}</p>}
      <ul class="states" aria-label="Missions by state">
        {STATES.map((s) => (
          <li class={`state-${s}`}>
            <a href="#/missions">
              <span>{s}</span> <strong>{counts.get(s) ?? 0}</strong>
            </a>
          </li>
        ))}
      </ul>
    </section>
  );
}
