// The approval statement's encoding (aura-identity's approval/v1) and signature, made with
// WebCrypto: the layout, times, and that a signature verifies and breaks on any change.
import { describe, expect, it } from "vitest";
import { hex, unhex } from "./bytes";
import { approvalSigningMessage, encodeApproval, importSeed, newApprovalId, parseRfc3339Nanos, rfc3339Nanos, signApproval } from "./approval";

const statement = {
  id: "appr_01j8tpm400c5tq4r9dc5kpavkm",
  mission: "mission_01j8tpm400c5tq4r9dc5kpavkm",
  request: "ab".repeat(32),
  verdict: "approve" as "approve" | "reject",
  reason: "stale log",
  issued_at: "2026-09-21T14:13:20.123456789Z",
  expires_at: "2026-09-21T14:23:20.123456789Z",
  approver: "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c",
};

describe("approvals", () => {
  it("encode as version, id, mission, request, verdict, reason, times and key", () => {
    const b = encodeApproval(statement);
    expect(b.length).toBe(1 + 16 + 16 + 32 + 1 + 2 + 9 + 8 + 8 + 32);
    expect(b[0]).toBe(1);
    expect(hex(b.subarray(1, 17))).toBe("0192356a1000617572612d6167656e74");
    expect(b[65]).toBe(1);
    expect(hex(b.subarray(66, 68))).toBe("0009");
    expect(hex(b.subarray(77, 85))).toBe((1_790_000_000_123_456_789n).toString(16).padStart(16, "0"));
    expect(hex(b.subarray(b.length - 32))).toBe(statement.approver);
    expect(encodeApproval({ ...statement, verdict: "reject" })[65]).toBe(2);
    const msg = approvalSigningMessage(statement);
    expect(new TextDecoder().decode(msg.subarray(0, 30))).toBe("aura/statement/v1\0approval/v1\0");
  });

  it("times round-trip at nanosecond precision", () => {
    expect(parseRfc3339Nanos("2026-09-21T14:13:20.123456789Z")).toBe(1_790_000_000_123_456_789n);
    expect(rfc3339Nanos(1_790_000_000_123_456_789n)).toBe("2026-09-21T14:13:20.123456789Z");
    expect(parseRfc3339Nanos("2026-09-21T14:13:20Z")).toBe(1_790_000_000_000_000_000n);
    expect(() => parseRfc3339Nanos("yesterday")).toThrow();
    expect(newApprovalId(Date.now())).toMatch(/^appr_[0-9a-hjkmnp-tv-z]{26}$/);
  });

  it("an imported seed gives the vectors' public key and signs what verifies", async () => {
    const { privateKey, publicKey } = await importSeed("07".repeat(32));
    expect(publicKey).toBe(statement.approver);
    const signed = await signApproval(statement, privateKey);
    const key = await crypto.subtle.importKey("raw", unhex(publicKey) as BufferSource, { name: "Ed25519" }, false, ["verify"]);
    const ok = (s: typeof statement) => crypto.subtle.verify({ name: "Ed25519" }, key, unhex(signed.signature) as BufferSource, approvalSigningMessage(s) as BufferSource);
    expect(await ok(statement)).toBe(true);
    expect(await ok({ ...statement, verdict: "reject" })).toBe(false);
    expect(await ok({ ...statement, reason: "stale log!" })).toBe(false);
  });
});
