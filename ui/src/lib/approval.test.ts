// The approval statement's encoding (aura-identity's approval/v2) and signature, made with
// WebCrypto: byte for byte the vectors of crates/aura-identity/tests/identity.rs
// (`approval_encodings_match_their_test_vectors`), times, and that a signature verifies
// and breaks on any change.
import { describe, expect, it } from "vitest";
import { hex, idString, unhex } from "./bytes";
import { type Answers, approvalSigningMessage, encodeApproval, importSeed, newApprovalId, parseRfc3339Nanos, rfc3339Nanos, signApproval } from "./approval";

// RFC 8032's first test key, as the Rust vectors use.
const SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

const statement = (answers: Answers) => ({
  id: idString(new Uint8Array(16).fill(1), "appr"),
  mission: idString(new Uint8Array(16).fill(2), "mission"),
  answers,
  request: "03".repeat(32),
  verdict: "approve" as "approve" | "reject",
  reason: "stale log",
  issued_at: rfc3339Nanos(1_700_000_000n * 1_000_000_000n),
  expires_at: rfc3339Nanos(1_700_000_600n * 1_000_000_000n),
  approver: PUBLIC,
});

const IDS = "0101010101010101010101010101010102020202020202020202020202020202";
const TAIL =
  "03030303030303030303030303030303030303030303030303030303030303030100097374616c65206c6f6717979cfe362a000017979d89e8f37000d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const VECTORS: [Answers, string, string][] = [
  [
    { kind: "call", turn: 3, id: "call_1" },
    `02${IDS}0200000003000663616c6c5f31${TAIL}`,
    "a6eb5ae2e9196559b50584bf1c74cd9f8cbcac1f00e8a3080f71f499af4f32ee2387d1c7ba5ee698d0b5589c6e280c4b89a03213947ce4fdb4775bd745478e01",
  ],
  [
    { kind: "declaration" },
    `02${IDS}01${TAIL}`,
    "280639e374b2f5d6721e5da75d518a1e8bce3d68799f26ab845b5970b602b095a37f4d4fc5d6a20ceb25f7a868b76d71f6817d39dbe5fe185409382f06821a05",
  ],
];

describe("approvals", () => {
  it("encode and sign exactly as aura-identity's version 2 vectors", async () => {
    const { privateKey, publicKey } = await importSeed(SEED);
    expect(publicKey).toBe(PUBLIC);
    for (const [answers, encoding, signature] of VECTORS) {
      const s = statement(answers);
      expect(hex(encodeApproval(s))).toBe(encoding);
      expect(new TextDecoder().decode(approvalSigningMessage(s).subarray(0, 30))).toBe("aura/statement/v1\0approval/v2\0");
      expect((await signApproval(s, privateKey)).signature).toBe(signature);
    }
  });

  it("refuse what the node would refuse", () => {
    const s = statement({ kind: "call", turn: 1, id: "x".repeat(4097) });
    expect(() => encodeApproval(s)).toThrow();
    expect(() => encodeApproval({ ...s, answers: { kind: "call", turn: -1, id: "a" } })).toThrow();
    expect(() => encodeApproval({ ...s, answers: { kind: "declaration" }, reason: "r".repeat(4097) })).toThrow();
  });

  it("times round-trip at nanosecond precision", () => {
    expect(parseRfc3339Nanos("2026-09-21T14:13:20.123456789Z")).toBe(1_790_000_000_123_456_789n);
    expect(rfc3339Nanos(1_790_000_000_123_456_789n)).toBe("2026-09-21T14:13:20.123456789Z");
    expect(parseRfc3339Nanos("2026-09-21T14:13:20Z")).toBe(1_790_000_000_000_000_000n);
    expect(() => parseRfc3339Nanos("yesterday")).toThrow();
    expect(newApprovalId(Date.now())).toMatch(/^appr_[0-9a-hjkmnp-tv-z]{26}$/);
  });

  it("a signature verifies and breaks on any change", async () => {
    const { privateKey, publicKey } = await importSeed("07".repeat(32));
    const s = { ...statement({ kind: "call", turn: 2, id: "c" }), approver: publicKey };
    const signed = await signApproval(s, privateKey);
    const key = await crypto.subtle.importKey("raw", unhex(publicKey) as BufferSource, { name: "Ed25519" }, false, ["verify"]);
    const ok = (x: typeof s) => crypto.subtle.verify({ name: "Ed25519" }, key, unhex(signed.signature) as BufferSource, approvalSigningMessage(x) as BufferSource);
    expect(await ok(s)).toBe(true);
    expect(await ok({ ...s, verdict: "reject" })).toBe(false);
    expect(await ok({ ...s, reason: "stale log!" })).toBe(false);
    expect(await ok({ ...s, answers: { kind: "call", turn: 3, id: "c" } })).toBe(false);
    expect(await ok({ ...s, answers: { kind: "declaration" } })).toBe(false);
  });
});
