// Approvals: escalations waiting for a person, answered with an approval signed here, in
// the browser, with the approver's own Ed25519 key (WebCrypto). The key is made in this
// browser or imported from a 32-byte seed, kept non-extractable in IndexedDB, and never
// sent anywhere; the node only ever sees the signed approval and the credential it issued
// for the key (`POST /v1/credentials/operators`).
import { useEffect, useState } from "preact/hooks";
import { post } from "../lib/api";
import { generateKey, importSeed, newApprovalId, rfc3339Nanos, signApproval, type Verdict } from "../lib/approval";
import { useCommands } from "../lib/commands";
import { json } from "../lib/format";
import { forgetIdentity, loadIdentity, saveIdentity, type Identity } from "../lib/store";
import { errorText, toast } from "../lib/toast";
import { useApi } from "../lib/useApi";
import { useEventRefresh, type Mission } from "./Missions";

interface Pending {
  mission: string;
  agent: string;
  namespace: string;
  objective: string;
  escalation: NonNullable<Mission["escalation"]>;
}

function IdentityPanel({ identity, onChange }: { identity: Identity | null; onChange: (i: Identity | null) => void }) {
  const [seed, setSeed] = useState("");
  const [name, setName] = useState("");
  const [level, setLevel] = useState("L3");
  const [namespace, setNamespace] = useState("default");
  const [credText, setCredText] = useState("");
  const adopt = async (k: { privateKey: CryptoKey; publicKey: string }) => {
    const i: Identity = { name: name || "me", publicKey: k.publicKey, privateKey: k.privateKey };
    await saveIdentity(i);
    onChange(i);
    setSeed("");
  };
  if (!identity) {
    return (
      <div class="panel">
        <h2>Your approver key</h2>
        <p>
          Approvals are signed here with your own Ed25519 key. Make one in this browser (it can never leave it), or import the 32-byte seed of a key you
          already hold (hex, as in <code>&lt;home&gt;/keys/NAME.json</code> of <code>aura operator enroll</code>).
        </p>
        <div class="grid-form">
          <label>
            Your name
            <input value={name} placeholder="alice@example.com" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
          </label>
          <div>
            <button type="button" class="primary" onClick={() => generateKey().then(adopt, (e) => toast(errorText(e), "error"))}>
              Make a key in this browser
            </button>
          </div>
          <label class="wide">
            Or import a seed (64 hex digits)
            <input type="password" autocomplete="off" value={seed} onInput={(e) => setSeed((e.target as HTMLInputElement).value)} />
          </label>
          <div>
            <button type="button" disabled={!/^[0-9a-fA-F]{64}$/.test(seed.trim())} onClick={() => importSeed(seed).then(adopt, (e) => toast(errorText(e), "error"))}>
              Import key
            </button>
          </div>
        </div>
      </div>
    );
  }
  const cred = identity.credential as any;
  return (
    <div class="panel">
      <h2>Signing as {identity.name}</h2>
      <p>
        key <span class="mono" data-testid="approver-key">{identity.publicKey}</span> (non-extractable, in this browser)
      </p>
      {cred ? (
        <p data-testid="credential">
          credential {cred.statement?.id}: {cred.statement?.level} in {cred.statement?.namespace}, until {cred.statement?.not_after}
        </p>
      ) : (
        <div class="grid-form">
          <p class="wide">This key has no credential yet: an operator enrolls it, so that the node counts its approvals at a level.</p>
          <label>
            Level
            <select value={level} onChange={(e) => setLevel((e.target as HTMLSelectElement).value)}>
              {["L1", "L2", "L3", "L4"].map((l) => (
                <option>{l}</option>
              ))}
            </select>
          </label>
          <label>
            Namespace
            <input value={namespace} onInput={(e) => setNamespace((e.target as HTMLInputElement).value)} />
          </label>
          <div>
            <button
              type="button"
              class="primary"
              onClick={async () => {
                try {
                  const credential = await post("/v1/credentials/operators", { name: identity.name, public_key: identity.publicKey, level, namespace });
                  const i = { ...identity, credential };
                  await saveIdentity(i);
                  onChange(i);
                  toast(`enrolled at ${level} in ${namespace}`);
                } catch (e) {
                  toast(errorText(e), "error");
                }
              }}
            >
              Enroll this key (operator key needed)
            </button>
          </div>
          <label class="wide">
            Or paste the credential an operator issued (JSON)
            <textarea rows={3} value={credText} onInput={(e) => setCredText((e.target as HTMLTextAreaElement).value)} />
          </label>
          <div>
            <button
              type="button"
              disabled={!credText.trim()}
              onClick={async () => {
                try {
                  const credential = JSON.parse(credText);
                  if (credential?.statement?.key !== identity.publicKey) throw new Error("that credential is for another key");
                  const i = { ...identity, credential };
                  await saveIdentity(i);
                  onChange(i);
                } catch (e) {
                  toast(errorText(e), "error");
                }
              }}
            >
              Use credential
            </button>
          </div>
        </div>
      )}
      <button
        type="button"
        class="ghost"
        onClick={async () => {
          await forgetIdentity();
          onChange(null);
        }}
      >
        Forget this key
      </button>
    </div>
  );
}

export function Approvals() {
  const pending = useApi<Pending[]>("/v1/approvals");
  const [identity, setIdentity] = useState<Identity | null>(null);
  const [reasons, setReasons] = useState<Record<string, string>>({});
  useEffect(() => {
    loadIdentity().then((i) => setIdentity(i ?? null), () => {});
  }, []);
  useEventRefresh(pending.reload, (k) => k === "mission.transition" || k === "mission.approved" || k === "mission.rejected");

  const answer = async (p: Pending, verdict: Verdict) => {
    if (!identity?.credential) {
      toast("make or import your key and get it enrolled first", "error");
      return;
    }
    try {
      const nowMs = Date.now();
      const issued = BigInt(nowMs) * 1_000_000n;
      if (!p.escalation.answers) {
        toast("the node did not say which escalation this is; update the node", "error");
        return;
      }
      const statement = {
        id: newApprovalId(nowMs),
        mission: p.mission,
        answers: p.escalation.answers,
        request: p.escalation.request,
        verdict,
        reason: reasons[p.mission] || (verdict === "approve" ? "approved in the web console" : "rejected in the web console"),
        issued_at: rfc3339Nanos(issued),
        expires_at: rfc3339Nanos(issued + 600n * 1_000_000_000n),
        approver: identity.publicKey,
      };
      const approval = await signApproval(statement, identity.privateKey);
      const m = await post<Mission>(`/v1/approvals/${p.mission}`, { approval, credential: identity.credential });
      toast(`${verdict === "approve" ? "approved" : "rejected"}: mission is now ${m.state}`);
      pending.reload();
    } catch (e) {
      toast(errorText(e), "error");
    }
  };
  useCommands(
    (pending.data ?? []).flatMap((p) => [
      { id: `approve.${p.mission}`, title: `Approve ${p.escalation.action} of ${p.mission}`, group: "Approvals", run: () => answer(p, "approve") },
      { id: `reject.${p.mission}`, title: `Reject ${p.escalation.action} of ${p.mission}`, group: "Approvals", run: () => answer(p, "reject") },
    ]),
    [pending.data, identity],
  );
  return (
    <section>
      <h1>Approvals</h1>
      <IdentityPanel identity={identity} onChange={setIdentity} />
      {pending.error && <p class="error">{pending.error}</p>}
      {pending.data && !pending.data.length && <p>Nothing is waiting for a person.</p>}
      <ul class="approvals">
        {(pending.data ?? []).map((p) => (
          <li class="panel warn" data-mission={p.mission}>
            <h2>
              <code>{p.escalation.action}</code> needs {p.escalation.level}
            </h2>
            <p>
              mission <a href={`#/missions/${p.mission}`} class="mono">{p.mission}</a> · agent <span class="mono">{p.agent}</span> · {p.namespace}
            </p>
            <p>{p.objective}</p>
            <pre>{json(p.escalation.arguments)}</pre>
            <p class="small">
              request digest <span class="mono">{p.escalation.request}</span>
            </p>
            <label>
              Reason (recorded in the ledger)
              <input value={reasons[p.mission] ?? ""} onInput={(e) => setReasons({ ...reasons, [p.mission]: (e.target as HTMLInputElement).value })} />
            </label>
            <div class="row">
              <button type="button" class="primary" onClick={() => answer(p, "approve")}>
                Approve (sign)
              </button>
              <button type="button" class="danger" onClick={() => answer(p, "reject")}>
                Reject (sign)
              </button>
            </div>
          </li>
        ))}
      </ul>
    </section>
  );
}
