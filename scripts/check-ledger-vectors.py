#!/usr/bin/env python3
"""An independent check of docs/ledger-vectors.json, written from docs/ledger.md alone.

It shares no code with Aura: Python's hashlib and the `cryptography` package's Ed25519
(OpenSSL) recompute every hash, signature, Merkle root and proof in the vectors file,
and verify the proof documents and bundles of every version by the rules in the doc.
Run: python3 scripts/check-ledger-vectors.py [docs/ledger-vectors.json]
crates/aura-ledger/tests/vectors.rs runs it when python3 and `cryptography` are there.
"""

import base64
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)


def H(b):
    return hashlib.sha256(b).digest()


def leaf(data):
    return H(b"\x00" + data)


def node(left, right):
    return H(b"\x01" + left + right)


def split(n):
    """The largest power of two strictly below n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    if not leaves:
        return H(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(leaf_hash, index, size, path, root):
    """RFC 9162, 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_hash, second_hash, path):
    """RFC 9162, 2.1.4.2, with the two cases docs/ledger.md adds: old = new (empty
    path, equal roots) and old = 0 (empty path, old root = H(""))."""
    if first > second:
        return False
    if first == second:
        return not path and first_hash == second_hash
    if first == 0:
        return not path and first_hash == H(b"")
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_hash] + list(path)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash


ENTRY_TAG = b"aura/ledger/entry/v1\x00"
CHECKPOINT_TAG = b"aura/ledger/checkpoint/v1\x00"
NODE_ID_TAG = b"aura/identity/node-id/v1\x00"


def ed25519_ok(public, message, signature):
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except InvalidSignature:
        return False


class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        if self.i + n > len(self.b):
            raise ValueError("truncated")
        out = self.b[self.i : self.i + n]
        self.i += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def done(self):
        return self.i == len(self.b)


def decode_entry(b, pruned=False):
    """The fields docs/ledger.md lists for an entry (version 1) or a stub (0x81)."""
    r = Reader(b)
    version = r.u8()
    assert version == (0x81 if pruned else 1), "entry version"
    e = {"index": r.u64(), "agent": r.take(16), "seq": r.u64(), "prev": r.take(32)}
    kind = r.take(r.u8())
    assert 1 <= len(kind) <= 64 and all(c in b"abcdefghijklmnopqrstuvwxyz0123456789._-" for c in kind)
    e["kind"] = kind.decode()
    e["recorded_at"] = r.u64()
    if pruned:
        e["body_len"] = r.u32()
    else:
        e["body"] = r.take(r.u32())
    assert e["seq"] >= 1 and r.done()
    return e


def decode_checkpoint(b):
    r = Reader(b)
    assert r.u8() == 1, "checkpoint version"
    cp = {"node": r.take(16), "size": r.u64(), "root": r.take(32), "time": r.u64()}
    cp["encoding"] = b[:65]
    cp["signature"] = r.take(64)
    return cp


def checkpoint_valid(cp, key):
    return cp["node"] == H(NODE_ID_TAG + key)[:16] and ed25519_ok(
        key, CHECKPOINT_TAG + cp["encoding"], cp["signature"]
    )


# --- signed notes (docs/ledger.md, "Checkpoints as signed notes") ---

def key_id(name, sig_type, key):
    return H(name.encode() + b"\n" + sig_type + key)[:4]


def origin_of(key):
    """aura.node/ and the node id in Crockford base32 (26 digits, the first has 3 bits)."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    n = int.from_bytes(H(NODE_ID_TAG + key)[:16], "big")
    digits = "".join(alphabet[(n >> (5 * i)) & 31] for i in reversed(range(26)))
    return "aura.node/node_" + digits


def checkpoint_text(origin, size, root):
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_note(text):
    """Text and signature lines (name, key id, signature bytes), per c2sp.org/signed-note."""
    assert all(c == "\n" or ord(c) >= 0x20 for c in text)
    cut = text.rindex("\n\n")
    body, sigs = text[: cut + 1], text[cut + 2 :]
    assert sigs.endswith("\n")
    out = []
    for line in sigs[:-1].split("\n"):
        assert line.startswith("\u2014 ")
        name, b64 = line[2:].split(" ", 1)
        raw = base64.b64decode(b64, validate=True)
        out.append((name, raw[:4], raw[4:]))
    return body, out


def cosignature_ok(text, witness_name, witness_key, sig_id, sig):
    if sig_id != key_id(witness_name, b"\x04", witness_key) or len(sig) != 72:
        return None
    t = struct.unpack(">Q", sig[:8])[0]
    msg = f"cosignature/v1\ntime {t}\n".encode() + text.encode()
    return t if ed25519_ok(witness_key, msg, sig[8:]) else None


def verify_bundle(b, key, witnesses=()):
    """docs/ledger.md, "Export bundles" and "Verification". Returns a summary."""
    r = Reader(b)
    assert r.take(8) == b"AURALDGR", "magic"
    version = r.u8()
    assert version in (1, 2, 3), "version"
    assert r.take(32) == key, "header key"
    heads, leaves, last, count = {}, [], None, {"e": 0, "c": 0, "s": 0, "pruned": 0}
    cosigned, after_checkpoint = [], False
    while True:
        tag = r.u8()
        was_after, after_checkpoint = after_checkpoint, False
        if tag in (1, 3):
            assert tag == 1 or version >= 2, "pruned frame in a v1 bundle"
            enc = r.take(r.u32())
            stored = r.take(32)
            e = decode_entry(enc, pruned=(tag == 3))
            h = stored if tag == 3 else H(ENTRY_TAG + enc)
            assert h == stored, "entry hash"
            assert e["index"] == len(leaves), "index"
            prev = heads.get(e["agent"])
            if prev is None:
                assert e["seq"] == 1 and e["prev"] == bytes(32), "first entry"
            else:
                assert e["seq"] == prev[0] + 1 and e["prev"] == prev[1], "chain"
            heads[e["agent"]] = (e["seq"], h)
            leaves.append(leaf(h))
            count["e"] += 1
            count["pruned"] += tag == 3
        elif tag == 2:
            cp = decode_checkpoint(r.take(129))
            assert cp["size"] == len(leaves), "checkpoint size"
            assert last is None or cp["size"] > last["size"], "checkpoints grow"
            assert checkpoint_valid(cp, key), "checkpoint signature"
            assert cp["root"] == mth(leaves), "checkpoint root"
            assert last is None or cp["time"] >= last["time"], "checkpoint times never decrease"
            last = cp
            count["c"] += 1
            after_checkpoint = True
        elif tag == 4:
            assert version >= 3 and was_after, "cosignature frame"
            line = r.take(r.u16()).decode()
            name, sig_id, sig = parse_note(f"x\n\n{line}\n")[1][0]
            text = checkpoint_text(origin_of(key), last["size"], last["root"])
            for w_name, w_key in witnesses:
                if name == w_name and sig_id == key_id(w_name, b"\x04", w_key):
                    t = cosignature_ok(text, w_name, w_key, sig_id, sig)
                    assert t is not None, "cosignature"
                    cosigned.append((w_name, last["size"], t))
            count["s"] += 1
            after_checkpoint = True
        elif tag == 0:
            counts = [r.u64(), r.u64()] + ([r.u64()] if version >= 3 else [])
            assert counts == [count["e"], count["c"]] + ([count["s"]] if version >= 3 else []), "trailer"
            assert r.done(), "bytes after the trailer"
            break
        else:
            raise AssertionError(f"frame type {tag}")
    assert last is not None and last["size"] == len(leaves), "uncovered entries"
    return {"entries": count["e"], "checkpoints": count["c"], "pruned": count["pruned"],
            "root": mth(leaves), "cosigned": cosigned}


def main(vectors_path):
    v = json.load(open(vectors_path))
    seed = bytes.fromhex(v["node_seed"])
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    key = sk.public_key().public_bytes_raw()
    assert key.hex() == v["node_public_key"]
    assert H(NODE_ID_TAG + key)[:16].hex() == v["node_id_hex"]
    assert origin_of(key) == "aura.node/" + v["node_id"]

    leaves = []
    for e in v["entries"]:
        enc = bytes.fromhex(e["encoding"])
        d = decode_entry(enc)
        assert (d["index"], d["seq"], d["kind"], d["recorded_at"]) == (
            e["index"], e["seq"], e["kind"], e["recorded_at_ns"])
        assert d["agent"].hex() == e["agent_hex"] and d["body"].hex() == e["body_hex"]
        h = H(ENTRY_TAG + enc)
        assert h.hex() == e["hash"] and leaf(h).hex() == e["leaf_hash"]
        leaves.append(leaf(h))

    c = v["checkpoint"]
    enc = bytes.fromhex(c["encoding"])
    assert (CHECKPOINT_TAG + enc).hex() == c["signing_message"]
    assert sk.sign(CHECKPOINT_TAG + enc).hex() == c["signature"]
    assert mth(leaves).hex() == c["root"]
    for cp_v in v["checkpoints"]:
        cp = decode_checkpoint(bytes.fromhex(cp_v["signed_hex"]))
        assert checkpoint_valid(cp, key)
        assert cp["root"] == mth(leaves[: cp["size"]]) and cp["time"] == cp_v["time_ns"]

    ct = [leaf(bytes.fromhex(x)) for x in v["rfc6962"]["leaves"]]
    roots = [bytes.fromhex(x) for x in v["rfc6962"]["roots"]]
    assert all(mth(ct[:n]) == roots[n] for n in range(len(roots)))
    for section in ("rfc6962", "rfc6962_generated"):
        for p in v[section]["inclusion"]:
            path = [bytes.fromhex(x) for x in p["path"]]
            assert verify_inclusion(ct[p["index"]], p["index"], p["size"], path, roots[p["size"]])
        for p in v[section]["consistency"]:
            path = [bytes.fromhex(x) for x in p["path"]]
            assert verify_consistency(p["old"], p["new"], roots[p["old"]], roots[p["new"]], path)
    for p in v["rfc6962"].get("empty_paths", []):
        ok = verify_consistency(p["old"], p["new"], roots[p["old"]], roots[p["new"]], [])
        assert ok and p["rfc9162"] == "rejected"

    # Proof documents.
    doc = Reader(bytes.fromhex(v["proofs"]["inclusion"]["hex"]))
    assert doc.u8() == 1 and doc.u8() == 1
    entry = doc.take(doc.u32())
    path = [doc.take(32) for _ in range(doc.u8())]
    cp = decode_checkpoint(doc.take(129))
    assert doc.done() and checkpoint_valid(cp, key)
    d = decode_entry(entry)
    assert verify_inclusion(leaf(H(ENTRY_TAG + entry)), d["index"], cp["size"], path, cp["root"])
    doc = Reader(bytes.fromhex(v["proofs"]["consistency"]["hex"]))
    assert doc.u8() == 1 and doc.u8() == 2
    old, new = decode_checkpoint(doc.take(129)), decode_checkpoint(doc.take(129))
    path = [doc.take(32) for _ in range(doc.u8())]
    assert doc.done() and checkpoint_valid(old, key) and checkpoint_valid(new, key)
    assert verify_consistency(old["size"], new["size"], old["root"], new["root"], path)

    # Notes, cosignatures and witnesses (added with bundle version 3).
    witnesses = []
    n = v.get("note")
    if n:
        text = checkpoint_text(origin_of(key), 3, mth(leaves))
        assert n["text"] == text
        assert key_id(origin_of(key), b"\x01", key).hex() == n["key_id_ed25519"]
        body, sigs = parse_note(n["note"])
        assert body == text
        (name1, id1, sig1), (name2, id2, sig2) = sigs
        assert name1 == name2 == origin_of(key)
        assert id1 == key_id(name1, b"\x01", key) and sk.sign(text.encode()) == sig1
        assert id2 == key_id(name2, b"\xffaura/ledger/checkpoint/v1", key)
        cp = decode_checkpoint(bytes.fromhex(v["checkpoint"]["encoding"]) + sig2[8:])
        assert struct.unpack(">Q", sig2[:8])[0] == cp["time"] and checkpoint_valid(cp, key)
        vkey = n["vkey"].split("+")
        assert vkey[0] == name1 and vkey[1] == id1.hex()
        assert base64.b64decode(vkey[2]) == b"\x01" + key
        w_seed = bytes.fromhex(n["witness_seed"])
        w_sk = Ed25519PrivateKey.from_private_bytes(w_seed)
        w_key = w_sk.public_key().public_bytes_raw()
        w_name = n["witness_name"]
        w_vkey = n["witness_vkey"].split("+")
        assert w_vkey[0] == w_name and w_vkey[1] == key_id(w_name, b"\x04", w_key).hex()
        assert base64.b64decode(w_vkey[2]) == b"\x04" + w_key
        body, sigs = parse_note(n["cosigned_note"])
        assert body == text
        cos = [s for s in sigs if s[0] == w_name]
        assert len(cos) == 1
        t = cosignature_ok(text, w_name, w_key, cos[0][1], cos[0][2])
        assert t == n["cosignature_time"]
        msg = f"cosignature/v1\ntime {t}\n".encode() + text.encode()
        assert w_sk.sign(msg) == cos[0][2][8:]
        witnesses.append((w_name, w_key))

    for name, b in v["bundles"].items():
        s = verify_bundle(bytes.fromhex(b["hex"]), key, witnesses)
        assert bytes.fromhex(b["hex"])[8] == b["version"], name
        assert (s["entries"], s["checkpoints"], s["pruned"]) == (3, 2, b["pruned"]), name
        assert s["root"] == mth(leaves), name
        assert len(s["cosigned"]) == b.get("cosigned", 0), name
    print(f"ok: {vectors_path} checks out independently ({len(v['bundles'])} bundles)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/ledger-vectors.json")
