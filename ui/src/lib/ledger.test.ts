// The ledger code against docs/ledger-vectors.json (the format's published vectors) and
// RFC 9162's proofs: what verifies, and that any change to a proof is caught.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { concat, hex, unhex } from "./bytes";
import {
  checkCheckpoint,
  decodeEntry,
  decodeInclusionProof,
  decodeSignedCheckpoint,
  entryHash,
  leafHash,
  nodeIdOf,
  sha256,
  verifyConsistency,
  verifyInclusion,
  verifyInclusionDoc,
} from "./ledger";

const vectors = JSON.parse(readFileSync(new URL("../../../docs/ledger-vectors.json", import.meta.url), "utf8"));

/** RFC 9162's MTH, computed the slow way, as the reference. */
async function mth(leaves: Uint8Array[]): Promise<Uint8Array> {
  if (leaves.length === 0) return sha256(new Uint8Array());
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return sha256(Uint8Array.of(1), await mth(leaves.slice(0, k)), await mth(leaves.slice(k)));
}

/** RFC 9162's PATH(m, D[n]). */
async function path(m: number, leaves: Uint8Array[]): Promise<Uint8Array[]> {
  if (leaves.length <= 1) return [];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return m < k
    ? [...(await path(m, leaves.slice(0, k))), await mth(leaves.slice(k))]
    : [...(await path(m - k, leaves.slice(k))), await mth(leaves.slice(0, k))];
}

/** RFC 9162's PROOF(m, D[n]). */
async function proof(m: number, leaves: Uint8Array[], b = true): Promise<Uint8Array[]> {
  const n = leaves.length;
  if (m === n) return b ? [] : [await mth(leaves)];
  let k = 1;
  while (k * 2 < n) k *= 2;
  return m <= k
    ? [...(await proof(m, leaves.slice(0, k), b)), await mth(leaves.slice(k))]
    : [...(await proof(m - k, leaves.slice(k), false)), await mth(leaves.slice(0, k))];
}

describe("the published vectors", () => {
  it("entries decode and hash as the vectors say, and their tree has the signed root", async () => {
    const leaves: Uint8Array[] = [];
    for (const v of vectors.entries) {
      const enc = unhex(v.encoding);
      const e = decodeEntry(enc);
      expect(Number(e.index)).toBe(v.index);
      expect(e.agent).toBe(v.agent);
      expect(e.kind).toBe(v.kind);
      const h = await entryHash(enc);
      expect(hex(h)).toBe(v.hash);
      const leaf = await leafHash(h);
      expect(hex(leaf)).toBe(v.leaf_hash);
      leaves.push(leaf);
    }
    expect(hex(await mth(leaves))).toBe(vectors.checkpoint.root);
    expect(await nodeIdOf(unhex(vectors.node_public_key))).toBe(vectors.node_id);
  });

  it("the vectors' checkpoint verifies under the node key and not under another", async () => {
    const signed = decodeSignedCheckpoint(concat(unhex(vectors.checkpoint.encoding), unhex(vectors.checkpoint.signature)));
    expect(await checkCheckpoint(signed, vectors.node_public_key)).toBeNull();
    const other = "11".repeat(32);
    expect(await checkCheckpoint(signed, other)).toMatch(/names node/);
    signed.signature[0] ^= 1;
    expect(await checkCheckpoint(signed, vectors.node_public_key)).toMatch(/signature/);
  });

  it("a whole inclusion proof document verifies, and every single-bit change to it is caught", async () => {
    const leaves = await Promise.all(vectors.entries.map(async (v: any) => leafHash(await entryHash(unhex(v.encoding)))));
    const i = 1;
    const p = await path(i, leaves);
    const enc = unhex(vectors.entries[i].encoding);
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, enc.length);
    const doc = concat(Uint8Array.of(1, 1), len, enc, Uint8Array.of(p.length), ...p, unhex(vectors.checkpoint.encoding), unhex(vectors.checkpoint.signature));
    expect(decodeInclusionProof(doc).path.length).toBe(p.length);
    const ok = await verifyInclusionDoc(doc, vectors.node_public_key);
    expect(ok.failure).toBeUndefined();
    expect(ok.ok).toBe(true);
    for (let byte = 0; byte < doc.length; byte++) {
      const bad = doc.slice();
      bad[byte] ^= 0x01;
      expect((await verifyInclusionDoc(bad, vectors.node_public_key)).ok, `byte ${byte}`).toBe(false);
    }
    expect((await verifyInclusionDoc(doc.slice(0, -1), vectors.node_public_key)).ok).toBe(false);
    expect((await verifyInclusionDoc(concat(doc, Uint8Array.of(0)), vectors.node_public_key)).ok).toBe(false);
  });
});

describe("RFC 9162 proofs", () => {
  it("inclusion and consistency verify for every leaf and size up to 20, and fail when moved", async () => {
    const all = await Promise.all(Array.from({ length: 20 }, (_, i) => sha256(Uint8Array.of(i))));
    for (let n = 1; n <= 20; n++) {
      const leaves = all.slice(0, n);
      const root = await mth(leaves);
      for (let m = 0; m < n; m++) {
        const p = await path(m, leaves);
        expect(await verifyInclusion(BigInt(m), BigInt(n), leaves[m], p, root), `leaf ${m} of ${n}`).toBe(true);
        if (n > 1) expect(await verifyInclusion(BigInt((m + 1) % n), BigInt(n), leaves[m], p, root)).toBe(false);
      }
      for (let m = 1; m <= n; m++) {
        const old = await mth(leaves.slice(0, m));
        const c = await proof(m, leaves);
        expect(await verifyConsistency(BigInt(m), BigInt(n), old, root, c), `${m} -> ${n}`).toBe(true);
        if (c.length) {
          const bad = c.map((x) => x.slice());
          bad[0][0] ^= 1;
          expect(await verifyConsistency(BigInt(m), BigInt(n), old, root, bad)).toBe(false);
        }
      }
    }
  });
});
