// Approvals signed in the browser with the approver's own Ed25519 key (WebCrypto), in
// the canonical encoding aura-identity verifies (crates/aura-identity/src/approval.rs),
// version 2, which names the one escalation it answers:
//
//   u8 version = 2, [16] id, [16] mission,
//   u8 answers (1 the declaration, 2 a call) [, u32 turn, u16+ call id (a call only)],
//   [32] request digest, u8 verdict (1 approve, 2 reject), u16+ reason,
//   u64 issued_at, u64 expires_at, [32] approver key
//
// signed as "aura/statement/v1\0" || "approval/v2" || 0x00 || encoding. The node checks
// the signature, the approver's credential, level, namespace, the escalation, request and
// expiry, and that the approval was not used before. (Version 1 named no escalation; the
// node refuses it for new escalations, so the browser never makes one.)

import { Writer, concat, hex, idBytes, idString, unhex, utf8 } from "./bytes";
import { TAGS } from "./ledger";

export type Verdict = "approve" | "reject";

/** The escalation an approval answers, as the node's mission view names it. */
export type Answers = { kind: "declaration" } | { kind: "call"; turn: number; id: string };

export interface ApprovalStatement {
  id: string;
  mission: string;
  answers: Answers;
  request: string;
  verdict: Verdict;
  reason: string;
  issued_at: string;
  expires_at: string;
  approver: string;
}

/** Nanoseconds since the epoch as RFC 3339 with nine fractional digits, as Aura writes times. */
export function rfc3339Nanos(ns: bigint): string {
  const ms = ns / 1_000_000n;
  const iso = new Date(Number(ms)).toISOString(); // 2026-01-02T03:04:05.678Z
  const frac = (ns % 1_000_000_000n).toString().padStart(9, "0");
  return `${iso.slice(0, 19)}.${frac}Z`;
}

export function parseRfc3339Nanos(s: string): bigint {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$/.exec(s);
  if (!m) throw new Error(`not an RFC 3339 UTC time: ${s}`);
  const secs = BigInt(Date.parse(m[1] + "Z") / 1000);
  const frac = BigInt((m[2] ?? "").padEnd(9, "0") || "0");
  return secs * 1_000_000_000n + frac;
}

/** A fresh approval id: 48 bits of millisecond time, then 80 random bits (as Aura makes ids). */
export function newApprovalId(nowMs: number): string {
  const b = new Uint8Array(16);
  let t = BigInt(nowMs);
  for (let i = 5; i >= 0; i--) {
    b[i] = Number(t & 0xffn);
    t >>= 8n;
  }
  crypto.getRandomValues(b.subarray(6));
  return idString(b, "appr");
}

export function encodeApproval(a: ApprovalStatement): Uint8Array {
  const reason = utf8(a.reason);
  if (reason.length > 4096) throw new Error("a reason is at most 4096 bytes");
  const request = unhex(a.request);
  const approver = unhex(a.approver);
  if (request.length !== 32 || approver.length !== 32) throw new Error("malformed digest or key");
  const w = new Writer().u8(2).raw(idBytes(a.id, "appr")).raw(idBytes(a.mission, "mission"));
  if (a.answers.kind === "declaration") {
    w.u8(1);
  } else {
    const id = utf8(a.answers.id);
    if (id.length > 4096) throw new Error("a call id is at most 4096 bytes");
    if (!Number.isInteger(a.answers.turn) || a.answers.turn < 0 || a.answers.turn > 0xffffffff) throw new Error("malformed turn");
    w.u8(2).u32(a.answers.turn).u16(id.length).raw(id);
  }
  return w
    .raw(request)
    .u8(a.verdict === "approve" ? 1 : 2)
    .u16(reason.length)
    .raw(reason)
    .u64(parseRfc3339Nanos(a.issued_at))
    .u64(parseRfc3339Nanos(a.expires_at))
    .raw(approver)
    .finish();
}

export function approvalSigningMessage(a: ApprovalStatement): Uint8Array {
  return concat(TAGS.statement, utf8("approval/v2"), Uint8Array.of(0), encodeApproval(a));
}

/** Signs `statement` with the approver's private key; returns the wire form `{statement, signature}`. */
export async function signApproval(
  statement: ApprovalStatement,
  key: CryptoKey,
): Promise<{ statement: ApprovalStatement; signature: string }> {
  const sig = await crypto.subtle.sign({ name: "Ed25519" }, key, approvalSigningMessage(statement) as BufferSource);
  return { statement, signature: hex(new Uint8Array(sig)) };
}

/** PKCS #8 wrapping of a 32-byte Ed25519 seed (RFC 8410), the form WebCrypto imports. */
export function pkcs8FromSeed(seed: Uint8Array): Uint8Array {
  if (seed.length !== 32) throw new Error("an Ed25519 private key (seed) is 32 bytes");
  return concat(unhex("302e020100300506032b657004220420"), seed);
}

/**
 * Imports a seed as a non-extractable signing key and returns it with its public key.
 * The extractable copy needed to learn the public key is dropped at once.
 */
export async function importSeed(seedHex: string): Promise<{ privateKey: CryptoKey; publicKey: string }> {
  const seed = unhex(seedHex.trim());
  const pkcs8 = pkcs8FromSeed(seed) as BufferSource;
  const temp = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", temp);
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  seed.fill(0);
  const x = (jwk.x ?? "").replace(/-/g, "+").replace(/_/g, "/");
  const pub = Uint8Array.from(atob(x + "=".repeat((4 - (x.length % 4)) % 4)), (c) => c.charCodeAt(0));
  return { privateKey, publicKey: hex(pub) };
}

/** A new key pair made in the browser; the private half can never be exported. */
export async function generateKey(): Promise<{ privateKey: CryptoKey; publicKey: string }> {
  const pair = (await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"])) as CryptoKeyPair;
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey: hex(raw) };
}
