// Agents and their credentials: who may act, at which authority level, in which
// namespace, signed by which issuer and valid when.
import { useState } from "preact/hooks";
import { post } from "../lib/api";
import { useCommands } from "../lib/commands";
import { short, time } from "../lib/format";
import { errorText, toast } from "../lib/toast";
import { useApi } from "../lib/useApi";

export interface Agent {
  id: string;
  name: string;
  namespace: string;
  level: string;
  public_key: string;
  created_at: string;
  credential: { statement: any; signature: string };
}

export function Agents() {
  const agents = useApi<Agent[]>("/v1/agents");
  const [open, setOpen] = useState<string | null>(null);
  const [form, setForm] = useState({ name: "", level: "L2", namespace: "default" });
  useCommands(
    [
      {
        id: "agents.create",
        title: "Create an agent",
        group: "Agents",
        run: () => document.getElementById("agent-name")?.focus(),
      },
    ],
    [],
  );
  const create = async (e: Event) => {
    e.preventDefault();
    try {
      const a = await post<Agent>("/v1/agents", form);
      toast(`created ${a.name} (${a.id})`);
      setForm({ ...form, name: "" });
      agents.reload();
    } catch (err) {
      toast(errorText(err), "error");
    }
  };
  return (
    <section>
      <h1>Agents</h1>
      <form class="inline-form" onSubmit={create} aria-label="Create an agent">
        <label>
          Name
          <input id="agent-name" required value={form.name} onInput={(e) => setForm({ ...form, name: (e.target as HTMLInputElement).value })} />
        </label>
        <label>
          Level
          <select value={form.level} onChange={(e) => setForm({ ...form, level: (e.target as HTMLSelectElement).value })}>
            {["L1", "L2", "L3", "L4"].map((l) => (
              <option>{l}</option>
            ))}
          </select>
        </label>
        <label>
          Namespace
          <input value={form.namespace} onInput={(e) => setForm({ ...form, namespace: (e.target as HTMLInputElement).value })} />
        </label>
        <button class="primary" type="submit">
          Create agent
        </button>
      </form>
      {agents.error && <p class="error">{agents.error}</p>}
      <table>
        <caption>Agents and their node-signed credentials</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Id</th>
            <th scope="col">Level</th>
            <th scope="col">Namespace</th>
            <th scope="col">Credential</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {(agents.data ?? []).map((a) => (
            <>
              <tr>
                <td>{a.name}</td>
                <td class="mono" title={a.id}>
                  {a.id}
                </td>
                <td>{a.level}</td>
                <td>{a.namespace}</td>
                <td>
                  <button type="button" class="link" aria-expanded={open === a.id} onClick={() => setOpen(open === a.id ? null : a.id)}>
                    {open === a.id ? "Hide" : "Show"} credential
                  </button>
                </td>
                <td>{time(a.created_at)}</td>
              </tr>
              {open === a.id && (
                <tr>
                  <td colSpan={6}>
                    <dl class="kv">
                      <dt>Credential id</dt>
                      <dd class="mono">{a.credential.statement.id}</dd>
                      <dt>Agent key</dt>
                      <dd class="mono">{a.public_key}</dd>
                      <dt>Issuer</dt>
                      <dd class="mono">{a.credential.statement.issuer}</dd>
                      <dt>Valid</dt>
                      <dd>
                        {a.credential.statement.not_before} → {a.credential.statement.not_after}
                      </dd>
                      <dt>Signature</dt>
                      <dd class="mono">{short(a.credential.signature, 24)}…</dd>
                      <dt>Record</dt>
                      <dd>
                        <a href={`#/ledger/${a.id}`}>
                          Its ledger chain
                        </a>
                      </dd>
                    </dl>
                  </td>
                </tr>
              )}
            </>
          ))}
        </tbody>
      </table>
    </section>
  );
}
