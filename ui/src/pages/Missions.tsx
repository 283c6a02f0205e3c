// Missions: the list (kept current by the event stream) and the form to submit one.
import type { Answers } from "../lib/approval";
import { useEffect, useRef, useState } from "preact/hooks";
import { post } from "../lib/api";
import { useCommands } from "../lib/commands";
import { onEvents } from "../lib/events";
import { time } from "../lib/format";
import { go } from "../lib/router";
import { errorText, toast } from "../lib/toast";
import { useApi } from "../lib/useApi";
import type { Agent } from "./Agents";

export interface Mission {
  id: string;
  agent: string;
  namespace: string;
  state: string;
  objective: string;
  tools: string[];
  level: string;
  reasoner: string;
  workspace?: string | null;
  submitted_at: string;
  deadline: string;
  steps: number;
  tokens: number;
  summary?: string | null;
  reason?: string | null;
  paused: boolean;
  pruned: boolean;
  escalation?: { action: string; level: string; request: string; call_id?: string; answers?: Answers | null; arguments?: unknown } | null;
  history: { from: string; to: string; reason?: string; at: string }[];
  calls: any[];
  state_hash: string;
}

/** Calls `f` (at most every `ms`) while events of the given kinds arrive. */
export function useEventRefresh(f: () => void, match: (kind: string) => boolean, ms = 300): void {
  const last = useRef(0);
  const timer = useRef<number | undefined>(undefined);
  useEffect(
    () =>
      onEvents((batch) => {
        if (!batch.some((e) => e.type === "entry" && match(e.kind))) return;
        const wait = Math.max(0, last.current + ms - Date.now());
        clearTimeout(timer.current);
        timer.current = setTimeout(() => {
          last.current = Date.now();
          f();
        }, wait) as unknown as number;
      }),
    [f],
  );
}

const TOOLS = ["fs.list", "fs.read", "fs.write", "fs.delete", "cmd.run", "http.fetch", "agent.send", "mission.finish"];

export function Missions() {
  const [filter, setFilter] = useState("");
  const missions = useApi<Mission[]>(`/v1/missions?limit=200${filter ? `&state=${filter}` : ""}`, [filter]);
  const agents = useApi<Agent[]>("/v1/agents");
  useEventRefresh(missions.reload, (k) => k.startsWith("mission."));
  const [form, setForm] = useState({
    agent: "",
    objective: "",
    tools: ["fs.list", "fs.read", "fs.write", "mission.finish"] as string[],
    timeout_secs: 600,
    workspace: "",
    reasoner: "",
  });
  useCommands(
    [{ id: "missions.submit", title: "Submit a mission", group: "Missions", run: () => document.getElementById("m-objective")?.focus() }],
    [],
  );
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      const body: Record<string, unknown> = {
        agent: form.agent || agents.data?.[0]?.id,
        objective: form.objective,
        tools: form.tools,
        timeout_secs: Number(form.timeout_secs),
      };
      if (form.workspace) body.workspace = form.workspace;
      if (form.reasoner) body.reasoner = form.reasoner;
      const m = await post<Mission>("/v1/missions", body);
      toast(`submitted ${m.id}: ${m.state}`);
      go("missions", m.id);
    } catch (err) {
      toast(errorText(err), "error");
    }
  };
  return (
    <section>
      <h1>Missions</h1>
      <details class="panel" open={!missions.data?.length}>
        <summary>Submit a mission</summary>
        <form class="grid-form" onSubmit={submit} aria-label="Submit a mission">
          <label>
            Agent
            <select value={form.agent} onChange={(e) => setForm({ ...form, agent: (e.target as HTMLSelectElement).value })}>
              {(agents.data ?? []).map((a) => (
                <option value={a.id}>
                  {a.name} ({a.level}, {a.namespace})
                </option>
              ))}
            </select>
          </label>
          <label class="wide">
            Objective
            <textarea id="m-objective" required rows={2} value={form.objective} onInput={(e) => setForm({ ...form, objective: (e.target as HTMLTextAreaElement).value })} />
          </label>
          <fieldset class="wide">
            <legend>Tools</legend>
            {TOOLS.map((t) => (
              <label class="check">
                <input
                  type="checkbox"
                  checked={form.tools.includes(t)}
                  onChange={(e) =>
                    setForm({
                      ...form,
                      tools: (e.target as HTMLInputElement).checked ? [...form.tools, t] : form.tools.filter((x) => x !== t),
                    })
                  }
                />
                {t}
              </label>
            ))}
          </fieldset>
          <label>
            Timeout (s)
            <input type="number" min={1} value={form.timeout_secs} onInput={(e) => setForm({ ...form, timeout_secs: Number((e.target as HTMLInputElement).value) })} />
          </label>
          <label>
            Workspace
            <input value={form.workspace} placeholder="a fresh one" onInput={(e) => setForm({ ...form, workspace: (e.target as HTMLInputElement).value })} />
          </label>
          <label>
            Reasoner
            <input value={form.reasoner} placeholder="the node's default" onInput={(e) => setForm({ ...form, reasoner: (e.target as HTMLInputElement).value })} />
          </label>
          <div>
            <button class="primary" type="submit">
              Submit
            </button>
          </div>
        </form>
      </details>
      <label class="inline">
        State
        <select value={filter} onChange={(e) => setFilter((e.target as HTMLSelectElement).value)}>
          <option value="">all</option>
          {["submitted", "authorized", "running", "escalated", "compensating", "completed", "failed", "cancelled"].map((s) => (
            <option>{s}</option>
          ))}
        </select>
      </label>
      {missions.error && <p class="error">{missions.error}</p>}
      <table>
        <caption>Missions, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Mission</th>
            <th scope="col">State</th>
            <th scope="col">Objective</th>
            <th scope="col">Steps</th>
            <th scope="col">Submitted</th>
          </tr>
        </thead>
        <tbody>
          {(missions.data ?? []).map((m) => (
            <tr data-mission={m.id}>
              <td class="mono">
                <a href={`#/missions/${m.id}`}>{m.id}</a>
              </td>
              <td>
                <span class={`badge state-${m.state}`}>{m.state}</span>
                {m.paused && <span class="badge">paused</span>}
              </td>
              <td>{m.objective}</td>
              <td>{m.steps}</td>
              <td>{time(m.submitted_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
