// One mission, live: its state machine, and each step's reasoner turn, policy decision and
// effect as they are recorded, from the mission's own event stream (backfilled from the
// ledger, then followed). Operators can cancel, pause, resume and hurry retries.
import { useEffect, useRef, useState } from "preact/hooks";
import { get, openEvents, post } from "../lib/api";
import { avatarSay } from "../lib/avatarBus";
import { useCommands } from "../lib/commands";
import type { EntryEvent, StreamEvent } from "../lib/events";
import { json, time } from "../lib/format";
import { StateMachine } from "../components/StateMachine";
import { errorText, toast } from "../lib/toast";
import type { Mission } from "./Missions";

function outcomeOf(decision: any): string {
  const o = decision?.outcome;
  if (typeof o === "string") return o;
  if (o && typeof o === "object") {
    const k = Object.keys(o)[0];
    return o[k]?.level ? `${k} (${o[k].level})` : k;
  }
  return "?";
}

export function EventRow({ e }: { e: EntryEvent }) {
  const ev = e.body?.event ?? {};
  const kind = e.kind.replace(/^mission\./, "");
  let what: any = null;
  switch (kind) {
    case "submitted":
      what = <span>declared: {ev.spec?.objective}</span>;
      break;
    case "judged":
      what = (
        <span>
          policy on <code>{ev.decision?.action}</code>: <strong class={`outcome ${outcomeOf(ev.decision).split(" ")[0]}`}>{outcomeOf(ev.decision)}</strong>
          {ev.decision?.deciding?.length ? ` by ${ev.decision.deciding.join(", ")}` : ""}
        </span>
      );
      break;
    case "transition":
      what = (
        <span>
          → <span class={`badge state-${ev.to}`}>{ev.to}</span> {ev.reason}
        </span>
      );
      break;
    case "turn":
      what = (
        <div>
          <p class="turn">{ev.turn?.content}</p>
          {(ev.turn?.tool_calls ?? []).map((c: any) => (
            <p>
              calls <code>{c.name}</code> <code class="args">{JSON.stringify(c.arguments)}</code>
            </p>
          ))}
        </div>
      );
      break;
    case "decided":
      what = (
        <span>
          policy on <code>{ev.decision?.action}</code> {ev.decision?.resource ? <code class="args">{typeof ev.decision.resource === "string" ? ev.decision.resource : JSON.stringify(ev.decision.resource)}</code> : null}:{" "}
          <strong class={`outcome ${outcomeOf(ev.decision).split(" ")[0]}`}>{outcomeOf(ev.decision)}</strong>
          {ev.decision?.deciding?.length ? ` by ${ev.decision.deciding.join(", ")}` : ""}
        </span>
      );
      break;
    case "effect":
      what = (
        <span>
          <code>{ev.effect?.tool}</code> {ev.effect?.ok ? "done" : "failed"}
          {ev.effect?.error ? `: ${typeof ev.effect.error === "string" ? ev.effect.error : JSON.stringify(ev.effect.error)}` : ""}
          {ev.effect?.output != null && <code class="args"> {JSON.stringify(ev.effect.output).slice(0, 200)}</code>}
        </span>
      );
      break;
    case "approved":
    case "rejected":
      what = (
        <span>
          {kind} by {ev.approver} {ev.level ?? ""} {ev.reason ?? ""}
        </span>
      );
      break;
    default:
      what = <code class="args">{JSON.stringify(ev).slice(0, 240)}</code>;
  }
  return (
    <li class={`event k-${kind}`} data-seq={e.seq}>
      <span class="seq">#{e.seq}</span>
      <span class="kind">{kind}</span>
      <span class="when">{time(e.recorded_at)}</span>
      <div class="what">{what}</div>
    </li>
  );
}

export function MissionDetail({ id }: { id: string }) {
  const [mission, setMission] = useState<Mission | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [events, setEvents] = useState<EntryEvent[]>([]);
  const [delta, setDelta] = useState("");
  const [live, setLive] = useState(false);
  const seen = useRef(new Set<number>());
  const reload = async () => {
    try {
      setMission(await get<Mission>(`/v1/missions/${id}`));
      setError(null);
    } catch (e) {
      setError(errorText(e));
    }
  };

  useEffect(() => {
    reload();
    seen.current = new Set();
    setEvents([]);
    let liveFrom = Number.MAX_SAFE_INTEGER;
    get<{ tree_size: number }>("/health").then((h) => (liveFrom = h.tree_size), () => {});
    const ws = openEvents(`?from=0&mission=${encodeURIComponent(id)}`);
    let pending: EntryEvent[] = [];
    let text = "";
    let frame = 0;
    let refresh = 0;
    const flush = () => {
      frame = 0;
      if (pending.length) {
        const batch = pending;
        pending = [];
        setEvents((old) => [...old, ...batch]);
      }
      setDelta(text);
    };
    ws.onopen = () => setLive(true);
    ws.onclose = () => setLive(false);
    ws.onmessage = (m) => {
      const ev = JSON.parse(m.data as string) as StreamEvent;
      if (ev.type === "delta") {
        text += ev.text;
      } else if (ev.type === "entry") {
        if (seen.current.has(ev.seq)) return;
        seen.current.add(ev.seq);
        pending.push(ev);
        if (ev.kind === "mission.turn") text = "";
        if (ev.seq >= liveFrom) {
          if (ev.kind === "mission.turn" && ev.body?.event?.turn?.content) avatarSay(ev.body.event.turn.content);
        }
        if (ev.kind === "mission.transition" || ev.kind.startsWith("mission.approved") || ev.kind === "mission.paused" || ev.kind === "mission.resumed") {
          clearTimeout(refresh);
          refresh = setTimeout(reload, 50) as unknown as number;
        }
      } else {
        return;
      }
      if (!frame) frame = requestAnimationFrame(flush);
    };
    return () => {
      ws.onclose = null;
      ws.close();
      cancelAnimationFrame(frame);
      clearTimeout(refresh);
    };
  }, [id]);

  const act = async (what: "cancel" | "pause" | "resume" | "retry") => {
    try {
      const m = await post<Mission>(`/v1/missions/${id}/${what}`, what === "cancel" || what === "pause" ? { reason: `${what} from the web console` } : undefined);
      setMission(m);
      toast(`${what}: mission is ${m.state}${m.paused ? " (paused)" : ""}`);
    } catch (e) {
      toast(errorText(e), "error");
    }
  };
  useCommands(
    [
      { id: "mission.cancel", title: "Cancel this mission", group: "Mission", run: () => act("cancel") },
      { id: "mission.pause", title: "Pause this mission", group: "Mission", run: () => act("pause") },
      { id: "mission.resume", title: "Resume this mission", group: "Mission", run: () => act("resume") },
      { id: "mission.retry", title: "Retry this mission's waiting steps now", group: "Mission", run: () => act("retry") },
    ],
    [id],
  );

  // The state as the record says it, as soon as a transition arrives.
  const transitions = events.filter((e) => e.kind === "mission.transition");
  const state = transitions.length ? transitions[transitions.length - 1].body?.event?.to : mission?.state ?? "submitted";
  const path: [string, string][] = [];
  let at = "submitted";
  for (const t of transitions) {
    const to = t.body?.event?.to;
    if (to) {
      path.push([at, to]);
      at = to;
    }
  }
  const terminal = ["completed", "failed", "cancelled"].includes(state);
  return (
    <section>
      <h1>
        Mission <span class="mono small">{id}</span>
      </h1>
      {error && <p class="error">{error}</p>}
      <p class="lead">{mission?.objective}</p>
      <p>
        <span class={`badge state-${state}`} data-testid="mission-state">
          {state}
        </span>
        {mission?.paused && <span class="badge">paused</span>} <span class={`pill ${live ? "live" : "down"}`}>{live ? "following" : "not following"}</span>{" "}
        agent <span class="mono">{mission?.agent}</span> · level {mission?.level} · {mission?.steps ?? 0} steps · {mission?.tokens ?? 0} tokens
      </p>
      <StateMachine state={state} path={path} />
      <div class="row" role="toolbar" aria-label="Mission controls">
        <button type="button" disabled={terminal} onClick={() => act("cancel")}>
          Cancel
        </button>
        <button type="button" disabled={terminal || mission?.paused} onClick={() => act("pause")}>
          Pause
        </button>
        <button type="button" disabled={terminal || !mission?.paused} onClick={() => act("resume")}>
          Resume
        </button>
        <button type="button" disabled={terminal} onClick={() => act("retry")}>
          Retry now
        </button>
        {state === "escalated" && <a href="#/approvals">Answer the escalation →</a>}
      </div>
      {mission?.escalation && (
        <div class="panel warn">
          <h2>Waiting for a person at {mission.escalation.level}</h2>
          <p>
            <code>{mission.escalation.action}</code> <code class="args">{json(mission.escalation.arguments)}</code>
          </p>
        </div>
      )}
      {mission?.summary && <p class="panel ok">Summary: {mission.summary}</p>}
      {mission?.reason && <p class="panel">Reason: {mission.reason}</p>}
      {delta && (
        <p class="delta" aria-live="polite">
          <span class="kind">thinking</span> {delta}
        </p>
      )}
      <h2>
        Record <small>({events.length} events)</small>
      </h2>
      <ol class="events" aria-label="Mission record" data-count={events.length}>
        {events.slice(-500).map((e) => (
          <EventRow e={e} />
        ))}
      </ol>
    </section>
  );
}
