// Cells and their logs: the node's long-lived sandboxes (`/v1/cells`, operators with a key).
import { useState } from "preact/hooks";
import { get } from "../lib/api";
import { json } from "../lib/format";
import { errorText } from "../lib/toast";
import { useApi } from "../lib/useApi";

export function Cells() {
  const cells = useApi<any>("/v1/cells");
  const [logs, setLogs] = useState<{ title: string; text: string } | null>(null);
  const list: any[] = Array.isArray(cells.data) ? cells.data : cells.data?.cells ?? [];
  const showLogs = async (cell: string, exe: string) => {
    try {
      const l = await get<any>(`/v1/cells/${encodeURIComponent(cell)}/executables/${encodeURIComponent(exe)}/logs`);
      const text = Array.isArray(l?.lines) ? l.lines.map((x: any) => (typeof x === "string" ? x : x.line ?? JSON.stringify(x))).join("\n") : typeof l === "string" ? l : json(l);
      setLogs({ title: `${cell} / ${exe}`, text });
    } catch (e) {
      setLogs({ title: `${cell} / ${exe}`, text: errorText(e) });
    }
  };
  return (
    <section>
      <h1>Cells</h1>
      {cells.error && (
        <p class="panel">
          {cells.error}. Cells are served to operators with an API key on a node that runs as root (<code>aura serve</code> as root; see docs/cells.md).
        </p>
      )}
      <table>
        <caption>Cells</caption>
        <thead>
          <tr>
            <th scope="col">Cell</th>
            <th scope="col">Details</th>
            <th scope="col">Executables</th>
          </tr>
        </thead>
        <tbody>
          {list.map((c) => (
            <tr>
              <td class="mono">{c.name ?? c.id}</td>
              <td>
                <code class="args">{JSON.stringify({ ...c, executables: undefined }).slice(0, 200)}</code>
              </td>
              <td>
                {(c.executables ?? []).map((x: any) => (
                  <button type="button" class="small-btn" onClick={() => showLogs(c.name ?? c.id, x.name ?? x)}>
                    Logs of {x.name ?? x}
                  </button>
                ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {logs && (
        <div class="panel">
          <h2>Logs: {logs.title}</h2>
          <pre class="logs">{logs.text}</pre>
        </div>
      )}
    </section>
  );
}
