// The ledger's formats and proofs, checked in the browser exactly as docs/ledger.md
// specifies them (format version 1): entry encoding and hash, RFC 9162 Merkle inclusion
// and consistency verification, the signed checkpoint (Ed25519 over a domain-tagged
// message, with the node id derived from the key), and the self-contained proof
// documents the node serves. Nothing here trusts the server: the only input taken on
// faith is the node public key the operator pinned.

import { Reader, concat, equal, hex, idString, unbase32 as unbase32Id, unhex, utf8 } from "./bytes";

export const TAGS = {
  entry: utf8("aura/ledger/entry/v1\0"),
  checkpoint: utf8("aura/ledger/checkpoint/v1\0"),
  nodeId: utf8("aura/identity/node-id/v1\0"),
  statement: utf8("aura/statement/v1\0"),
};

export async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  const data = concat(...parts);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data as BufferSource));
}

export interface Entry {
  index: bigint;
  agent: string;
  seq: bigint;
  prev: string;
  kind: string;
  recordedAt: bigint;
  body: Uint8Array;
}

/** Decodes an entry's canonical encoding (version 1), refusing anything else. */
export function decodeEntry(encoding: Uint8Array): Entry {
  const r = new Reader(encoding);
  const version = r.u8("version");
  if (version !== 1) throw new Error(`entry version ${version} is not 1`);
  const index = r.u64("index");
  const agent = idString(r.take(16, "agent"), "agent");
  const seq = r.u64("seq");
  if (seq === 0n) throw new Error("entry seq is 0");
  const prev = hex(r.take(32, "prev"));
  const kindLen = r.u8("kind length");
  const kindBytes = r.take(kindLen, "kind");
  const kind = new TextDecoder().decode(kindBytes);
  if (kindLen < 1 || kindLen > 64 || !/^[a-z0-9._-]+$/.test(kind)) {
    throw new Error("entry kind is invalid");
  }
  const recordedAt = r.u64("recorded_at");
  const bodyLen = r.u32("body length");
  if (bodyLen > 16 * 1024 * 1024) throw new Error("entry body is over 16 MiB");
  const body = r.take(bodyLen, "body");
  r.finish();
  return { index, agent, seq, prev, kind, recordedAt, body };
}

export const entryHash = (encoding: Uint8Array) => sha256(TAGS.entry, encoding);
export const leafHash = (entryHash: Uint8Array) => sha256(Uint8Array.of(0), entryHash);
const nodeHash = (l: Uint8Array, r: Uint8Array) => sha256(Uint8Array.of(1), l, r);

/** RFC 9162 section 2.1.3.2: does `path` prove `leaf` at `index` in the tree `root` of `size`? */
export async function verifyInclusion(
  index: bigint,
  size: bigint,
  leaf: Uint8Array,
  path: Uint8Array[],
  root: Uint8Array,
): Promise<boolean> {
  if (index >= size) return false;
  let fn = index;
  let sn = size - 1n;
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equal(r, root);
}

/** RFC 9162 section 2.1.4.2: is the tree (`size1`, `root1`) a prefix of (`size2`, `root2`)? */
export async function verifyConsistency(
  size1: bigint,
  size2: bigint,
  root1: Uint8Array,
  root2: Uint8Array,
  proof: Uint8Array[],
): Promise<boolean> {
  if (size1 > size2) return false;
  if (size1 === size2) return proof.length === 0 && equal(root1, root2);
  if (size1 === 0n) return proof.length === 0;
  if (proof.length === 0) return false;
  let path = proof;
  if ((size1 & (size1 - 1n)) === 0n) path = [root1, ...proof];
  let fn = size1 - 1n;
  let sn = size2 - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) return false;
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equal(fr, root1) && equal(sr, root2);
}

export interface Checkpoint {
  node: string;
  treeSize: bigint;
  root: Uint8Array;
  time: bigint;
  encoding: Uint8Array;
  signature: Uint8Array;
}

/** A signed checkpoint: the 65-byte encoding and the 64-byte signature. */
export function decodeSignedCheckpoint(bytes: Uint8Array): Checkpoint {
  const r = new Reader(bytes);
  const checkpoint = readSignedCheckpoint(r);
  r.finish();
  return checkpoint;
}

function readSignedCheckpoint(r: Reader): Checkpoint {
  const start = r.position;
  const version = r.u8("checkpoint version");
  if (version !== 1) throw new Error(`checkpoint version ${version} is not 1`);
  const nodeBytes = r.take(16, "checkpoint node");
  const treeSize = r.u64("checkpoint tree_size");
  const root = r.take(32, "checkpoint root");
  const time = r.u64("checkpoint time");
  const encoding = concat(
    Uint8Array.of(1),
    nodeBytes,
    u64be(treeSize),
    root,
    u64be(time),
  );
  if (r.position - start !== 65) throw new Error("checkpoint is not 65 bytes");
  const signature = r.take(64, "checkpoint signature");
  return { node: idString(nodeBytes, "node"), treeSize, root, time, encoding, signature };
}

function u64be(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v);
  return b;
}

/** The node id a public key stands for: the first 16 bytes of H(node-id tag || key). */
export async function nodeIdOf(publicKey: Uint8Array): Promise<string> {
  return idString((await sha256(TAGS.nodeId, publicKey)).subarray(0, 16), "node");
}

export async function importPublicKey(publicKeyHex: string): Promise<CryptoKey> {
  const raw = unhex(publicKeyHex);
  if (raw.length !== 32) throw new Error("an Ed25519 public key is 32 bytes");
  return crypto.subtle.importKey("raw", raw as BufferSource, { name: "Ed25519" }, false, ["verify"]);
}

/** Why a checkpoint is not valid for the key, or null when it is. */
export async function checkCheckpoint(c: Checkpoint, publicKeyHex: string): Promise<string | null> {
  const expectedNode = await nodeIdOf(unhex(publicKeyHex));
  if (c.node !== expectedNode) {
    return `the checkpoint names node ${c.node}, but the pinned key is node ${expectedNode}`;
  }
  const key = await importPublicKey(publicKeyHex);
  const ok = await crypto.subtle.verify(
    { name: "Ed25519" },
    key,
    c.signature as BufferSource,
    concat(TAGS.checkpoint, c.encoding) as BufferSource,
  );
  return ok ? null : "the checkpoint's signature does not verify under the pinned node key";
}

export interface InclusionDoc {
  entryEncoding: Uint8Array;
  path: Uint8Array[];
  checkpoint: Checkpoint;
}

/** Decodes an inclusion proof document (version 1, type 1). */
export function decodeInclusionProof(doc: Uint8Array): InclusionDoc {
  const r = new Reader(doc);
  const version = r.u8("proof version");
  if (version !== 1) throw new Error(`proof version ${version} is not 1`);
  const type = r.u8("proof type");
  if (type !== 1) throw new Error(`proof type ${type} is not an inclusion proof`);
  const len = r.u32("entry length");
  const entryEncoding = r.take(len, "entry");
  const n = r.u8("path length");
  if (n > 64) throw new Error("the audit path is longer than 64");
  const path: Uint8Array[] = [];
  for (let i = 0; i < n; i++) path.push(r.take(32, "path hash"));
  const checkpoint = readSignedCheckpoint(r);
  r.finish();
  return { entryEncoding, path, checkpoint };
}

export interface InclusionResult {
  ok: boolean;
  /** What failed, in words, when `ok` is false. */
  failure?: string;
  entry?: Entry;
  entryHash?: string;
  leafIndex?: bigint;
  treeSize?: bigint;
  root?: string;
  pathLength?: number;
  checkpointTime?: bigint;
}

/** The entry as the node's JSON shows it, to be matched against the proven bytes. */
export interface EntryClaim {
  index: number;
  agent: string;
  seq: number;
  kind: string;
  prev: string;
  hash: string;
  body: unknown;
}

/**
 * Checks an inclusion proof document against the pinned node key, and that the entry it
 * proves is the one the page shows (`claim`): the checkpoint is valid for the key, the
 * entry decodes, and its leaf, index and path give the checkpoint's root (RFC 9162).
 */
export async function verifyInclusionDoc(
  doc: Uint8Array,
  publicKeyHex: string,
  claim?: EntryClaim,
): Promise<InclusionResult> {
  let d: InclusionDoc;
  let entry: Entry;
  try {
    d = decodeInclusionProof(doc);
    entry = decodeEntry(d.entryEncoding);
  } catch (e) {
    return { ok: false, failure: `the proof does not decode: ${(e as Error).message}` };
  }
  const base = {
    entry,
    leafIndex: entry.index,
    treeSize: d.checkpoint.treeSize,
    root: hex(d.checkpoint.root),
    pathLength: d.path.length,
    checkpointTime: d.checkpoint.time,
  };
  const bad = await checkCheckpoint(d.checkpoint, publicKeyHex);
  if (bad) return { ...base, ok: false, failure: bad };
  const eh = await entryHash(d.entryEncoding);
  const leaf = await leafHash(eh);
  const included = await verifyInclusion(entry.index, d.checkpoint.treeSize, leaf, d.path, d.checkpoint.root);
  if (!included) {
    return {
      ...base,
      entryHash: hex(eh),
      ok: false,
      failure: "the audit path does not lead from the entry to the signed root",
    };
  }
  if (claim) {
    const mismatch = compareClaim(entry, hex(eh), claim);
    if (mismatch) return { ...base, entryHash: hex(eh), ok: false, failure: mismatch };
  }
  return { ...base, entryHash: hex(eh), ok: true };
}

function compareClaim(e: Entry, hash: string, c: EntryClaim): string | null {
  if (BigInt(c.index) !== e.index) return `the page shows index ${c.index}, the proof proves ${e.index}`;
  if (c.agent !== e.agent) return `the page shows agent ${c.agent}, the proof proves ${e.agent}`;
  if (BigInt(c.seq) !== e.seq) return `the page shows seq ${c.seq}, the proof proves ${e.seq}`;
  if (c.kind !== e.kind) return `the page shows kind ${c.kind}, the proof proves ${e.kind}`;
  if (c.prev !== e.prev) return "the page shows another previous hash than the proven entry's";
  if (c.hash !== hash) return "the page shows another entry hash than the proven entry's";
  let proven: unknown;
  const text = new TextDecoder().decode(e.body);
  try {
    proven = JSON.parse(text);
  } catch {
    proven = hex(e.body);
  }
  if (!sameJson(proven, c.body)) return "the body the page shows is not the proven entry's body";
  return null;
}

/** Deep equality of two JSON values (object key order ignored). */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((v, i) => sameJson(v, bb[i]));
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const ak = Object.keys(ao);
  return ak.length === Object.keys(bo).length && ak.every((k) => k in bo && sameJson(ao[k], bo[k]));
}

/** A consistency proof document (version 1, type 2). */
export function decodeConsistencyProof(doc: Uint8Array): { old: Checkpoint; new: Checkpoint; path: Uint8Array[] } {
  const r = new Reader(doc);
  if (r.u8("proof version") !== 1) throw new Error("proof version is not 1");
  if (r.u8("proof type") !== 2) throw new Error("not a consistency proof");
  const old = readSignedCheckpoint(r);
  const nw = readSignedCheckpoint(r);
  const n = r.u8("path length");
  if (n > 64) throw new Error("the path is longer than 64");
  const path: Uint8Array[] = [];
  for (let i = 0; i < n; i++) path.push(r.take(32, "path hash"));
  r.finish();
  return { old, new: nw, path };
}

/** Checks a consistency proof document: both checkpoints valid for the key, and the path. */
export async function verifyConsistencyDoc(doc: Uint8Array, publicKeyHex: string): Promise<InclusionResult> {
  let d;
  try {
    d = decodeConsistencyProof(doc);
  } catch (e) {
    return { ok: false, failure: `the proof does not decode: ${(e as Error).message}` };
  }
  for (const c of [d.old, d.new]) {
    const bad = await checkCheckpoint(c, publicKeyHex);
    if (bad) return { ok: false, failure: bad };
  }
  const ok = await verifyConsistency(d.old.treeSize, d.new.treeSize, d.old.root, d.new.root, d.path);
  return ok
    ? { ok: true, treeSize: d.new.treeSize, root: hex(d.new.root) }
    : { ok: false, failure: "the older signed ledger is not a prefix of the newer one" };
}

/** A signed checkpoint as the node's JSON shows it (`{node, tree_size, root, time, signature}`). */
export function checkpointFromJson(c: { node: string; tree_size: number; root: string; time: string; signature: string }, parseTime: (s: string) => bigint): Checkpoint {
  const nodeBytes = idBytesOf(c.node);
  const treeSize = BigInt(c.tree_size);
  const root = unhex(c.root);
  const time = parseTime(c.time);
  const encoding = concat(Uint8Array.of(1), nodeBytes, u64be(treeSize), root, u64be(time));
  return { node: c.node, treeSize, root, time, encoding, signature: unhex(c.signature) };
}

function idBytesOf(id: string): Uint8Array {
  if (!id.startsWith("node_")) throw new Error("not a node id");
  return unbase32Id(id.slice(5));
}
