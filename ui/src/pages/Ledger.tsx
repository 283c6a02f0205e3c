// The ledger explorer: entries (live, or one agent's chain), checkpoints, and proofs
// checked here, in the browser, against the node key the operator pinned: an entry's
// inclusion under a signed root (RFC 9162), an agent's hash chain from proven entries, and
// that the signed ledger only grew since this browser last looked (consistency proof).
// What is shown as verified was computed on this page, not reported by the server.
import { useEffect, useState } from "preact/hooks";
import { get, post } from "../lib/api";
import { parseRfc3339Nanos } from "../lib/approval";
import { fromBase64, hex } from "../lib/bytes";
import { useCommands } from "../lib/commands";
import { stream, tick } from "../lib/events";
import { time } from "../lib/format";
import {
  checkCheckpoint,
  checkpointFromJson,
  nodeIdOf,
  verifyConsistencyDoc,
  verifyInclusionDoc,
  type EntryClaim,
  type InclusionResult,
} from "../lib/ledger";
import { unhex } from "../lib/bytes";
import { useSignal } from "../lib/signal";
import { errorText, toast } from "../lib/toast";
import { useApi } from "../lib/useApi";
import type { Agent } from "./Agents";

const PIN = "aura.pinnedNodeKey";
const SEEN = "aura.lastCheckpoint";

interface EntryView extends EntryClaim {
  recorded_at: string;
}

export async function proveEntry(index: number, pinned: string, claim?: EntryClaim): Promise<InclusionResult> {
  const p = await get<{ proof_base64: string; entry: EntryView }>(`/v1/ledger/proof/inclusion?index=${index}`);
  return verifyInclusionDoc(fromBase64(p.proof_base64), pinned, claim ?? p.entry);
}

function Verdict({ r }: { r: InclusionResult | "checking" | undefined }) {
  if (!r) return null;
  if (r === "checking") return <span class="badge">checking…</span>;
  return r.ok ? (
    <span class="badge verified" data-testid="proof-verified" title={`leaf ${r.leafIndex} of ${r.treeSize}, root ${r.root}, ${r.pathLength} path hashes`}>
      ✓ verified here
    </span>
  ) : (
    <span class="badge failed" data-testid="proof-failed" role="alert">
      ✗ not verified: {r.failure}
    </span>
  );
}

function PinnedKey({ pinned, setPinned }: { pinned: string | null; setPinned: (k: string | null) => void }) {
  const [edit, setEdit] = useState("");
  const [nodeId, setNodeId] = useState("");
  useEffect(() => {
    if (pinned) nodeIdOf(unhex(pinned)).then(setNodeId, () => setNodeId("(not a key)"));
  }, [pinned]);
  return (
    <div class="panel">
      <h2>Trusted node key</h2>
      {pinned ? (
        <p>
          Proofs are checked against <span class="mono" data-testid="pinned-key">{pinned}</span> (node <span class="mono">{nodeId}</span>), pinned in this
          browser. Compare it with <code>aura key show</code> on the node.
        </p>
      ) : (
        <p>No key pinned yet.</p>
      )}
      <label>
        Pin another key (64 hex digits)
        <input value={edit} onInput={(e) => setEdit((e.target as HTMLInputElement).value)} />
      </label>
      <button
        type="button"
        disabled={!/^[0-9a-f]{64}$/.test(edit.trim())}
        onClick={() => {
          localStorage.setItem(PIN, edit.trim());
          localStorage.removeItem(SEEN);
          setPinned(edit.trim());
          setEdit("");
        }}
      >
        Pin key
      </button>
    </div>
  );
}

export function Ledger({ agent }: { agent?: string }) {
  const [pinned, setPinned] = useState<string | null>(localStorage.getItem(PIN));
  const [checkpoint, setCheckpoint] = useState<any>(null);
  const [cpVerdict, setCpVerdict] = useState<string | null>(null);
  const [consistency, setConsistency] = useState<InclusionResult | "checking" | undefined>();
  const [results, setResults] = useState<Record<number, InclusionResult | "checking">>({});
  const [chosen, setChosen] = useState(agent ?? "");
  const [chain, setChain] = useState<{ entries: EntryView[]; verdict?: string } | null>(null);
  const agents = useApi<Agent[]>("/v1/agents");
  useSignal(tick);

  const loadCheckpoint = async () => {
    try {
      const cp = await get<{ public_key: string; checkpoint: any }>("/v1/ledger/checkpoint");
      let key = pinned;
      if (!key) {
        // Trust on first use: pinned from the node now, and every later proof must hold
        // under it. The page says so, and the operator can pin the key they know instead.
        key = cp.public_key;
        localStorage.setItem(PIN, key);
        setPinned(key);
        toast("pinned the node's key on first use; compare it with `aura key show`");
      }
      setCheckpoint(cp.checkpoint);
      const bad = await checkCheckpoint(checkpointFromJson(cp.checkpoint, parseRfc3339Nanos), key);
      setCpVerdict(bad ?? "ok");
      // Has the signed ledger only grown since this browser last looked?
      const seen = JSON.parse(localStorage.getItem(SEEN) ?? "null") as { size: number } | null;
      if (seen && seen.size > 0 && seen.size <= cp.checkpoint.tree_size) {
        setConsistency("checking");
        const proof = await get<{ proof_base64: string }>(`/v1/ledger/proof/consistency?old=${seen.size}&new=${cp.checkpoint.tree_size}`);
        const r = await verifyConsistencyDoc(fromBase64(proof.proof_base64), key);
        setConsistency(r);
        if (r.ok) localStorage.setItem(SEEN, JSON.stringify({ size: cp.checkpoint.tree_size }));
      } else if (!bad) {
        localStorage.setItem(SEEN, JSON.stringify({ size: cp.checkpoint.tree_size }));
      }
    } catch (e) {
      setCpVerdict(errorText(e));
    }
  };
  useEffect(() => {
    loadCheckpoint();
  }, [pinned]);

  const prove = async (e: EntryClaim) => {
    if (!pinned) return;
    setResults((r) => ({ ...r, [e.index]: "checking" }));
    let r: InclusionResult;
    try {
      const p = await get<{ proof_base64: string; entry: EntryView }>(`/v1/ledger/proof/inclusion?index=${e.index}`);
      r = await verifyInclusionDoc(fromBase64(p.proof_base64), pinned, p.entry);
      // The row on screen must be the entry proven, not only the proof's own copy.
      const x = r.entry;
      if (r.ok && x && (x.index !== BigInt(e.index) || x.agent !== e.agent || x.seq !== BigInt(e.seq) || x.kind !== e.kind)) {
        r = { ...r, ok: false, failure: `the row shows ${e.agent}:${e.seq} (${e.kind}), the proof proves ${x.agent}:${x.seq} (${x.kind})` };
      }
    } catch (err) {
      r = { ok: false, failure: errorText(err) };
    }
    setResults((old) => ({ ...old, [e.index]: r }));
  };

  const loadChain = async (id: string) => {
    setChosen(id);
    setChain(null);
    if (!id) return;
    try {
      const rec = await get<{ entries: EntryView[] }>(`/v1/agents/${id}/record?limit=200`);
      setChain({ entries: rec.entries });
    } catch (e) {
      toast(errorText(e), "error");
    }
  };
  useEffect(() => {
    if (agent) loadChain(agent);
  }, [agent]);

  /** Proves every entry of the chain here and checks each `prev` against the proven hash before it. */
  const verifyChain = async () => {
    if (!chain || !pinned) return;
    const zero = "0".repeat(64);
    let prev: string | null = null;
    for (const e of chain.entries) {
      const r = await proveEntry(e.index, pinned, e);
      setResults((old) => ({ ...old, [e.index]: r }));
      if (!r.ok) return setChain({ ...chain, verdict: `entry ${e.agent}:${e.seq} failed: ${r.failure}` });
      const expected = prev ?? (e.seq === 1 ? zero : null);
      if (expected !== null && r.entry!.prev !== expected) {
        return setChain({ ...chain, verdict: `entry ${e.agent}:${e.seq} does not chain to the one before it` });
      }
      prev = r.entryHash!;
    }
    setChain({ ...chain, verdict: `all ${chain.entries.length} entries proven and chained, verified here` });
  };

  useCommands(
    [
      { id: "ledger.checkpoint", title: "Check the latest checkpoint here", group: "Ledger", run: loadCheckpoint },
      { id: "ledger.chain", title: "Verify the chosen agent's chain here", group: "Ledger", run: verifyChain },
      {
        id: "ledger.server-verify",
        title: "Ask the node to verify the whole ledger",
        group: "Ledger",
        run: async () => {
          const v = await post<{ ok: boolean; entries?: number; failure?: string }>("/v1/ledger/verify");
          toast(v.ok ? `the node verified ${v.entries} entries (the node says so)` : `the node found: ${v.failure}`, v.ok ? "info" : "error");
        },
      },
    ],
    [pinned, chain],
  );

  const recent = stream.entries.slice(-100).reverse();
  const rows: EntryView[] = chain ? chain.entries : (recent as unknown as EntryView[]).map((e: any) => ({ ...e, index: e.seq, seq: e.agent_seq }));
  return (
    <section>
      <h1>Ledger</h1>
      <PinnedKey pinned={pinned} setPinned={setPinned} />
      <div class="panel">
        <h2>Latest signed checkpoint</h2>
        {checkpoint && (
          <dl class="kv">
            <dt>Tree size</dt>
            <dd>{checkpoint.tree_size}</dd>
            <dt>Root</dt>
            <dd class="mono">{checkpoint.root}</dd>
            <dt>Signed by</dt>
            <dd class="mono">{checkpoint.node}</dd>
            <dt>At</dt>
            <dd>{checkpoint.time}</dd>
            <dt>Signature</dt>
            <dd>
              {cpVerdict === "ok" ? (
                <span class="badge verified" data-testid="checkpoint-verified">✓ verified here</span>
              ) : (
                <span class="badge failed">{cpVerdict}</span>
              )}
            </dd>
            <dt>Since last look</dt>
            <dd>
              {consistency === undefined ? (
                "first look from this browser"
              ) : consistency === "checking" ? (
                "checking…"
              ) : consistency.ok ? (
                <span class="badge verified">✓ only grew (consistency proof verified here)</span>
              ) : (
                <span class="badge failed" role="alert">✗ {consistency.failure}</span>
              )}
            </dd>
          </dl>
        )}
        <button type="button" onClick={loadCheckpoint}>
          Check again
        </button>
      </div>
      <label class="inline">
        Show
        <select value={chosen} onChange={(e) => loadChain((e.target as HTMLSelectElement).value)}>
          <option value="">the latest entries (live)</option>
          {(agents.data ?? []).map((a) => (
            <option value={a.id}>the chain of {a.name}</option>
          ))}
        </select>
      </label>
      {chain && (
        <p>
          <button type="button" class="primary" onClick={verifyChain}>
            Verify this chain here
          </button>{" "}
          <span data-testid="chain-verdict">{chain.verdict}</span>
        </p>
      )}
      <table>
        <caption>{chain ? `The chain of ${chosen}` : "The latest entries, live"}</caption>
        <thead>
          <tr>
            <th scope="col">Index</th>
            <th scope="col">Agent:seq</th>
            <th scope="col">Kind</th>
            <th scope="col">Recorded</th>
            <th scope="col">Inclusion proof</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((e) => (
            <tr data-index={e.index}>
              <td>{e.index}</td>
              <td class="mono">
                {e.agent}:{e.seq}
              </td>
              <td>{e.kind}</td>
              <td>{time(e.recorded_at)}</td>
              <td>
                <button type="button" class="small-btn" onClick={() => prove(e)} aria-label={`Verify here: entry ${e.index}`}>
                  Verify here
                </button>{" "}
                <Verdict r={results[e.index]} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="small">Hashes: SHA-256 via WebCrypto; signatures: Ed25519 via WebCrypto; tree: RFC 9162. Pinned key fingerprint {pinned ? hex(unhex(pinned)).slice(0, 16) : "–"}.</p>
    </section>
  );
}
