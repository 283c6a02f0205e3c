// The node's event stream, shared by every page: one WebSocket, resumed from the last
// ledger index seen after any disconnect, so nothing is missed or seen twice. Events are
// collected as they arrive and handed to the pages in batches once per animation frame,
// which keeps the page current at thousands of events a second without rendering each.

import { ApiError, apiKey, get, needKey, openEvents } from "./api";
import { signal } from "./signal";

export interface EntryEvent {
  type: "entry";
  seq: number;
  agent: string;
  agent_seq: number;
  kind: string;
  mission?: string;
  recorded_at: string;
  body: any;
}
export interface DeltaEvent {
  type: "delta";
  mission: string;
  text: string;
}
export type StreamEvent = EntryEvent | DeltaEvent | { type: "lagged"; next_seq: number };

/** How many recent entries the page keeps for the live views. */
const KEEP = 20000;

export const stream = {
  entries: [] as EntryEvent[],
  byMission: new Map<string, EntryEvent[]>(),
  /** Reasoner text streaming in, per mission, until its turn is recorded. */
  deltas: new Map<string, string>(),
  received: 0,
  lastSeq: -1,
  /** Ledger indices skipped between consecutive entries (expected 0 for an all-seeing key). */
  gaps: 0,
  /** The ledger size when the page opened: entries from here on happened while it watched. */
  liveFrom: Number.MAX_SAFE_INTEGER,
  /** The ledger index the stream was last (re)started from. */
  from: 0,
};
export const status = signal<"connecting" | "live" | "down">("connecting");
/** Bumped once per animation frame that brought events; pages re-render on it. */
export const tick = signal(0);

type Listener = (batch: StreamEvent[]) => void;
const listeners = new Set<Listener>();
export function onEvents(f: Listener): () => void {
  listeners.add(f);
  return () => listeners.delete(f);
}

let pending: StreamEvent[] = [];
let scheduled = false;
let socket: WebSocket | null = null;
let retry = 0;
let started = false;

function flush(): void {
  scheduled = false;
  const batch = pending;
  pending = [];
  for (const f of [...listeners]) f(batch);
  tick.set(tick.get() + 1);
}

function schedule(): void {
  if (scheduled) return;
  scheduled = true;
  // A hidden tab gets no animation frames; a timer keeps the counts current there too.
  if (document.hidden) setTimeout(flush, 100);
  else requestAnimationFrame(flush);
}

function accept(ev: StreamEvent): void {
  if (ev.type === "entry") {
    if (ev.seq <= stream.lastSeq) return;
    if (stream.lastSeq >= 0 && ev.seq > stream.lastSeq + 1) stream.gaps += ev.seq - stream.lastSeq - 1;
    stream.lastSeq = ev.seq;
    stream.received++;
    stream.entries.push(ev);
    if (stream.entries.length > KEEP * 1.5) stream.entries = stream.entries.slice(-KEEP);
    if (ev.mission) {
      let list = stream.byMission.get(ev.mission);
      if (!list) stream.byMission.set(ev.mission, (list = []));
      list.push(ev);
      if (ev.kind === "mission.turn") stream.deltas.delete(ev.mission);
    }
  } else if (ev.type === "delta") {
    stream.deltas.set(ev.mission, (stream.deltas.get(ev.mission) ?? "") + ev.text);
  }
  pending.push(ev);
  schedule();
}

function connect(from: number): void {
  // One stream at a time: a new connection replaces the old.
  const old = socket;
  socket = null;
  old?.close();
  status.set("connecting");
  const ws = openEvents(`?from=${from}`);
  socket = ws;
  ws.onopen = () => {
    retry = 0;
    status.set("live");
  };
  ws.onmessage = (m) => {
    let ev: StreamEvent;
    try {
      ev = JSON.parse(m.data as string);
    } catch {
      return;
    }
    if (ev.type === "lagged") {
      ws.close();
      return;
    }
    accept(ev);
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    status.set("down");
    if (needKey.get()) {
      // Refused for want of a key: wait for one rather than knock again.
      const off = apiKey.subscribe(() => {
        off();
        connect(stream.lastSeq + 1);
      });
      return;
    }
    retry = Math.min(retry + 1, 6);
    setTimeout(() => connect(stream.lastSeq + 1), 250 * 2 ** retry);
  };
}

/** Starts the stream with the last `history` entries of the ledger, then live. */
export async function startEvents(history = 300): Promise<void> {
  if (started) return;
  started = true;
  let size = 0;
  try {
    size = (await get<{ tree_size: number }>("/health")).tree_size;
  } catch {
    // The stream still starts; it just brings no history.
  }
  stream.liveFrom = size;
  const from = Math.max(0, size - history);
  stream.from = from;
  // Browsers log a refused WebSocket as an error; ask over HTTP first whether this tab has
  // the key it needs, and if not, connect once it has one.
  try {
    await get("/v1/agents?namespace=default");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      const off = apiKey.subscribe(() => {
        off();
        connect(from);
      });
      return;
    }
  }
  connect(from);
}

/** Reconnects (after the API key changed). */
export function restartEvents(): void {
  if (started) connect(stream.lastSeq + 1);
}

/** Reads the stream again from ledger index `from` (the events page's replay): the backfill
 *  arrives as fast as the node reads it, then the stream goes on live. */
export function replayFrom(from: number): void {
  started = true;
  stream.entries = [];
  stream.byMission.clear();
  stream.deltas.clear();
  stream.received = 0;
  stream.gaps = 0;
  stream.lastSeq = from - 1;
  stream.from = from;
  connect(from);
}
