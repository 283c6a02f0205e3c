// The live event stream: every ledger entry the key may see, as it is committed, with the
// counts that show nothing was dropped (received, last ledger index, gaps).
import { useEffect, useState } from "preact/hooks";
import { replayFrom, status, stream, tick } from "../lib/events";
import { go } from "../lib/router";
import { time } from "../lib/format";
import { useSignal } from "../lib/signal";

/** `#/events/N` replays the stream from ledger index N before following it live. */
export function Events({ from }: { from?: string }) {
  useSignal(tick);
  const [replay, setReplay] = useState(from ?? "");
  useEffect(() => {
    if (from !== undefined && /^\d+$/.test(from)) replayFrom(Number(from));
  }, [from]);
  const live = useSignal(status);
  const [kind, setKind] = useState("");
  const shown = (kind ? stream.entries.filter((e) => e.kind.startsWith(kind)) : stream.entries).slice(-200).reverse();
  return (
    <section>
      <h1>Live events</h1>
      <dl class="counters" aria-label="Event stream counters">
        <div>
          <dt>Stream</dt>
          <dd data-testid="stream-status">{live}</dd>
        </div>
        <div>
          <dt>From index</dt>
          <dd data-testid="events-from">{stream.from}</dd>
        </div>
        <div>
          <dt>Received</dt>
          <dd data-testid="events-received">{stream.received}</dd>
        </div>
        <div>
          <dt>Last ledger index</dt>
          <dd data-testid="events-last-seq">{stream.lastSeq}</dd>
        </div>
        <div>
          <dt>Gaps</dt>
          <dd data-testid="events-gaps">{stream.gaps}</dd>
        </div>
      </dl>
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          go("events", replay || "0");
        }}
      >
        <label>
          Replay from ledger index
          <input type="number" min={0} value={replay} onInput={(e) => setReplay((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit">Replay</button>
      </form>
      <label class="inline">
        Kind starts with
        <input value={kind} placeholder="mission." onInput={(e) => setKind((e.target as HTMLInputElement).value)} />
      </label>
      <table>
        <caption>The latest 200 events, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Index</th>
            <th scope="col">Agent</th>
            <th scope="col">Kind</th>
            <th scope="col">Mission</th>
            <th scope="col">Time</th>
          </tr>
        </thead>
        <tbody>
          {shown.map((e) => (
            <tr>
              <td>{e.seq}</td>
              <td class="mono">{e.agent}</td>
              <td>{e.kind}</td>
              <td class="mono">{e.mission ? <a href={`#/missions/${e.mission}`}>{e.mission}</a> : ""}</td>
              <td>{time(e.recorded_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
