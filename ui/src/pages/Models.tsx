// Models, licenses and receipts: the installed, verified packages, and every request's
// signed usage receipt with the settlement totals each licensor is owed.
import { useApi } from "../lib/useApi";

interface ModelObject {
  id: string;
  owned_by: string;
  digest: string;
  architecture: string;
  kind: string;
  created: number;
}

export interface ReceiptsView {
  receipts: {
    index: number;
    id: string;
    finished_at: string;
    package_name: string;
    prompt_tokens: number;
    completion_tokens: number;
    charges: { license: string; licensor: string; price_per_1000_tokens: number; currency: string; role: string }[];
  }[];
  licenses: { license: string; licensor: string; package: string; price_per_1000_tokens: number; currency: string; tokens: number }[];
  totals: { licensor: string; currency: string; tokens: number; amount: number }[];
}

export function Models() {
  const models = useApi<{ data: ModelObject[] }>("/v1/models");
  const receipts = useApi<ReceiptsView>("/v1/receipts");
  return (
    <section>
      <h1>Models, licenses and receipts</h1>
      {models.error && <p class="error">{models.error}</p>}
      <table>
        <caption>Installed model packages (verified against their signed manifests)</caption>
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col">Kind</th>
            <th scope="col">Architecture</th>
            <th scope="col">Publisher</th>
            <th scope="col">Package digest</th>
          </tr>
        </thead>
        <tbody>
          {(models.data?.data ?? []).map((m) => (
            <tr>
              <td>
                <a href={`#/chat`}>{m.id}</a>
              </td>
              <td>{m.kind}</td>
              <td>{m.architecture}</td>
              <td>{m.owned_by}</td>
              <td class="mono">{m.digest.slice(0, 16)}…</td>
            </tr>
          ))}
        </tbody>
      </table>
      {receipts.error && <p class="error">{receipts.error}</p>}
      {receipts.data && (
        <>
          <h2>Settlement totals</h2>
          <table>
            <caption>What each licensor is owed, from every receipt in the ledger</caption>
            <thead>
              <tr>
                <th scope="col">Licensor</th>
                <th scope="col">Tokens</th>
                <th scope="col">Amount</th>
              </tr>
            </thead>
            <tbody>
              {receipts.data.totals.map((t) => (
                <tr>
                  <td class="mono">{t.licensor.slice(0, 16)}…</td>
                  <td>{t.tokens}</td>
                  <td data-testid="settlement-amount">
                    {t.amount} {t.currency}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Licenses in use</h2>
          <table>
            <caption>Licenses the receipts were charged under</caption>
            <thead>
              <tr>
                <th scope="col">License</th>
                <th scope="col">Package</th>
                <th scope="col">Price / 1000 tokens</th>
                <th scope="col">Tokens used</th>
              </tr>
            </thead>
            <tbody>
              {receipts.data.licenses.map((l) => (
                <tr>
                  <td class="mono">{l.license}</td>
                  <td class="mono">{l.package.slice(0, 16)}…</td>
                  <td>
                    {l.price_per_1000_tokens} {l.currency}
                  </td>
                  <td>{l.tokens}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Receipts</h2>
          <table>
            <caption>Signed usage receipts, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Ledger index</th>
                <th scope="col">Receipt</th>
                <th scope="col">Model</th>
                <th scope="col">Tokens</th>
                <th scope="col">Finished</th>
              </tr>
            </thead>
            <tbody>
              {[...receipts.data.receipts].reverse().map((r) => (
                <tr>
                  <td>
                    <a href="#/ledger">{r.index}</a>
                  </td>
                  <td class="mono">{r.id}</td>
                  <td>{r.package_name}</td>
                  <td>
                    {r.prompt_tokens} + {r.completion_tokens}
                  </td>
                  <td>{r.finished_at}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
