//! Node tokens: how one node of a cluster vouches for a request it forwards to another.
//!
//! API keys belong to one node, so a node that forwards a client's request to the node
//! running the agent (or holding the model) cannot pass the client's key on. Instead it
//! authenticates the caller itself and sends, in the `aura-node-token` header, a short-lived
//! statement signed by its own node key: who the caller is (as it authenticated them), the
//! exact request (method, path and query, a digest of the body), the node it is meant for,
//! when it was made and a nonce. The receiving node accepts it only if the signing key is
//! enrolled in the cluster's log (`node.joined`, signed by the cluster key), the request is
//! the one it covers, it is meant for this node, it is fresh, and its nonce was not seen
//! before; anything else is refused (401), failing closed. The receiving node then acts for
//! the caller with the role, namespaces and agent the token names.
//!
//! The format, version 1 (docs/cluster.md has it with a test vector):
//!
//! ```text
//! aura-node-token: base64url(claims) "." base64url(signature)
//! claims     = RFC 8785 canonical JSON of {"v":1,"from","to","method","path",
//!              "body_sha256","caller":{"name","role","key","namespaces","agent"},
//!              "issued_at_ms","nonce"}
//! signature  = Ed25519 by the `from` key over "aura/cluster/node-token/v1\0" || claims
//! ```
//!
//! base64url is without padding. The claims must be canonical as received (a token whose
//! claims are not their own canonical form is refused), so there is one encoding to sign.

use std::collections::HashMap;
use std::sync::Mutex;

use aura_core::door::{Clock as _, Entropy as _};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::sign::Signature;
use aura_core::{AgentId, NodeId, PublicKey};
use aura_identity::Namespace;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Role};

/// The request header that carries a node token.
pub const HEADER: &str = "aura-node-token";

/// The version of the claims this node writes and reads.
pub const VERSION: u8 = 1;

/// What the signature's message starts with.
pub const DOMAIN: &[u8] = b"aura/cluster/node-token/v1\0";

/// How long a token is good for after it was made, and how far the two nodes' clocks may
/// disagree: a token is refused when its time is more than this before or after the
/// receiving node's.
pub const TTL_MS: u64 = 30_000;

/// The most nonces remembered at once: beyond it tokens are refused (fail closed) until
/// old ones expire, so a flood cannot grow the node's memory without bound.
const MAX_NONCES: usize = 1 << 20;

/// The longest claims accepted, before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The caller as the forwarding node authenticated it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardedCaller {
    pub name: String,
    pub role: Role,
    /// The id of the key the caller used on the forwarding node, if it used one.
    pub key: Option<String>,
    /// `None`: every namespace.
    pub namespaces: Option<Vec<Namespace>>,
    pub agent: Option<AgentId>,
}

/// What a node token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// [`VERSION`].
    pub v: u8,
    /// The forwarding node's key, which signs the token.
    pub from: PublicKey,
    /// The node the token is for.
    pub to: NodeId,
    pub method: String,
    /// The path and query, exactly as sent.
    pub path: String,
    /// SHA-256 of the body, hex (of nothing, for a request without one).
    pub body_sha256: String,
    pub caller: ForwardedCaller,
    /// When the token was made, in milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// 16 random bytes, hex: each token is accepted once.
    pub nonce: String,
}

/// Why a node token was refused. Each is answered 401 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the node token is malformed: {0}")]
    Malformed(String),
    #[error("the node token is of version {0}, which this node does not read")]
    Version(u8),
    #[error("the node token is signed by a key not enrolled in this cluster")]
    NotEnrolled,
    #[error("the node token's signature does not verify")]
    BadSignature,
    #[error("the node token is for another node")]
    WrongNode,
    #[error("the node token covers another request (method, path or body differ)")]
    WrongRequest,
    #[error("the node token has expired or is dated in the future")]
    Expired,
    #[error("the node token was used before")]
    Replayed,
    #[error("too many node tokens are in flight; retry shortly")]
    Busy,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The current time in milliseconds since the Unix epoch, through the clock door.
pub fn now_ms() -> u64 {
    aura_core::door::SystemClock.now().as_nanos() / 1_000_000
}

/// SHA-256 of a body, as claims carry it.
pub fn body_digest(body: &[u8]) -> String {
    Hash::sha256(body).to_hex()
}

impl ForwardedCaller {
    pub fn of(caller: &Caller) -> ForwardedCaller {
        ForwardedCaller {
            name: caller.name.clone(),
            role: caller.role,
            key: caller.key.clone(),
            namespaces: caller.namespaces.clone(),
            agent: caller.agent,
        }
    }
}

impl Claims {
    /// Claims for a request `from` this node's `signer` to node `to`, made now with a
    /// fresh nonce.
    pub fn new(
        signer: &Signer,
        to: NodeId,
        method: &str,
        path: &str,
        body: &[u8],
        caller: &Caller,
    ) -> Claims {
        let mut nonce = [0u8; 16];
        aura_core::door::OsEntropy.fill(&mut nonce);
        Claims {
            v: VERSION,
            from: signer.public_key(),
            to,
            method: method.to_owned(),
            path: path.to_owned(),
            body_sha256: body_digest(body),
            caller: ForwardedCaller::of(caller),
            issued_at_ms: now_ms(),
            nonce: hex_of(&nonce),
        }
    }

    /// The header value: the canonical claims and their signature by `signer`, whose key
    /// must be `from`.
    pub fn sign(&self, signer: &Signer) -> Result<String, Refused> {
        if signer.public_key() != self.from {
            return Err(Refused::Malformed(
                "signed by a key other than `from`".into(),
            ));
        }
        let claims = aura_core::jcs::to_vec(self).map_err(|e| Refused::Malformed(e.to_string()))?;
        let signature = signer.sign(&message(&claims));
        Ok(format!(
            "{}.{}",
            b64().encode(&claims),
            b64().encode(signature.0)
        ))
    }

    /// Reads a header value and checks its signature under `from`, which `enrolled` must
    /// accept. Does not check the request, audience, time or nonce: [`Verifier::check`]
    /// does all of it.
    pub fn open(token: &str, enrolled: impl Fn(&PublicKey) -> bool) -> Result<Claims, Refused> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refused::Malformed("too long".into()));
        }
        let (claims_b64, sig_b64) = token
            .split_once('.')
            .ok_or_else(|| Refused::Malformed("no `.` between claims and signature".into()))?;
        let bytes = b64()
            .decode(claims_b64)
            .map_err(|_| Refused::Malformed("the claims are not base64url".into()))?;
        let sig: [u8; 64] = b64()
            .decode(sig_b64)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| {
                Refused::Malformed("the signature is not 64 bytes of base64url".into())
            })?;
        // The version first, so a later version is named as such rather than as malformed.
        let loose: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Refused::Malformed(format!("the claims are not JSON: {e}")))?;
        match loose.get("v").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(VERSION) => {}
            Some(v) => return Err(Refused::Version(u8::try_from(v).unwrap_or(u8::MAX))),
            None => return Err(Refused::Malformed("the claims have no version".into())),
        }
        let claims: Claims = serde_json::from_value(loose)
            .map_err(|e| Refused::Malformed(format!("the claims are not valid: {e}")))?;
        let canonical =
            aura_core::jcs::to_vec(&claims).map_err(|e| Refused::Malformed(e.to_string()))?;
        if canonical != bytes {
            return Err(Refused::Malformed(
                "the claims are not in their canonical form".into(),
            ));
        }
        if !enrolled(&claims.from) {
            return Err(Refused::NotEnrolled);
        }
        claims
            .from
            .verify(&message(&bytes), &Signature(sig))
            .map_err(|_| Refused::BadSignature)?;
        Ok(claims)
    }

    /// The caller the receiving node acts for. Its key id is qualified by the forwarding
    /// node, so it never stands for a key of the receiving node.
    pub fn caller(&self) -> Caller {
        Caller {
            key: self
                .caller
                .key
                .as_ref()
                .map(|k| format!("{}/{k}", self.from.node_id())),
            name: self.caller.name.clone(),
            role: self.caller.role,
            namespaces: self.caller.namespaces.clone(),
            agent: self.caller.agent,
        }
    }
}

fn message(claims: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + claims.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(claims);
    m
}

fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Checks node tokens on the receiving node: remembers the nonces it accepted until their
/// tokens expire.
#[derive(Debug)]
pub struct Verifier {
    me: NodeId,
    /// Nonce -> the time (ms) after which its token is refused anyway, so it can go.
    seen: Mutex<HashMap<String, u64>>,
}

impl Verifier {
    pub fn new(me: NodeId) -> Verifier {
        Verifier {
            me,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `token` for the request (`method`, `path` and query, `body`) at `now_ms`,
    /// with `enrolled` saying which keys the cluster enrolled; the claims once they hold.
    /// A token that passes is spent: the same one is refused next time.
    pub fn check(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: u64,
        enrolled: impl Fn(&PublicKey) -> bool,
    ) -> Result<Claims, Refused> {
        let claims = Claims::open(token, enrolled)?;
        if claims.to != self.me {
            return Err(Refused::WrongNode);
        }
        if claims.method != method || claims.path != path || claims.body_sha256 != body_digest(body)
        {
            return Err(Refused::WrongRequest);
        }
        if claims.issued_at_ms.abs_diff(now_ms) > TTL_MS {
            return Err(Refused::Expired);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, until| *until >= now_ms);
        if seen.contains_key(&claims.nonce) {
            return Err(Refused::Replayed);
        }
        if seen.len() >= MAX_NONCES {
            return Err(Refused::Busy);
        }
        seen.insert(
            claims.nonce.clone(),
            claims.issued_at_ms.saturating_add(TTL_MS),
        );
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn signer(seed: u8) -> Signer {
        Signer::from_seed_bytes("node", &[seed; 32]).unwrap()
    }

    fn operator() -> Caller {
        Caller {
            key: Some("k1".into()),
            name: "ci".into(),
            role: Role::Operator,
            namespaces: Some(vec![Namespace::new("default").unwrap()]),
            agent: None,
        }
    }

    /// The claims of the documented test vector (docs/cluster.md).
    fn vector_claims(from: &Signer, to: &Signer) -> Claims {
        Claims {
            v: VERSION,
            from: from.public_key(),
            to: to.public_key().node_id(),
            method: "POST".into(),
            path: "/v1/missions".into(),
            body_sha256: body_digest(b"{}"),
            caller: ForwardedCaller::of(&operator()),
            issued_at_ms: 1_700_000_000_000,
            nonce: "000102030405060708090a0b0c0d0e0f".into(),
        }
    }

    const VECTOR: &str = concat!(
        "eyJib2R5X3NoYTI1NiI6IjQ0MTM2ZmEzNTViMzY3OGExMTQ2YWQxNmY3ZTg2NDllOTRmYjRmYzIxZmU3",
        "N2U4MzEwYzA2MGY2MWNhYWZmOGEiLCJjYWxsZXIiOnsiYWdlbnQiOm51bGwsImtleSI6ImsxIiwibmFt",
        "ZSI6ImNpIiwibmFtZXNwYWNlcyI6WyJkZWZhdWx0Il0sInJvbGUiOiJvcGVyYXRvciJ9LCJmcm9tIjoi",
        "OGE4OGUzZGQ3NDA5ZjE5NWZkNTJkYjJkM2NiYTVkNzJjYTY3MDliZjFkOTQxMjFiZjM3NDg4MDFiNDBm",
        "NmY1YyIsImlzc3VlZF9hdF9tcyI6MTcwMDAwMDAwMDAwMCwibWV0aG9kIjoiUE9TVCIsIm5vbmNlIjoi",
        "MDAwMTAyMDMwNDA1MDYwNzA4MDkwYTBiMGMwZDBlMGYiLCJwYXRoIjoiL3YxL21pc3Npb25zIiwidG8i",
        "OiJub2RlXzNqNXpnYWExcm44bjR0ajV0YnMycHI3OTh3IiwidiI6MX0.jPvET5AfMIzlgxKisyVO_Ita",
        "8rqySx9t8hBi3Wp6IryKfg1iP0FxF6fd4ibFWFrraMgTEPAtK7gtTZ6G0hgNAg",
    );

    #[test]
    fn the_test_vector_holds() {
        let (a, b) = (signer(1), signer(2));
        let token = vector_claims(&a, &b).sign(&a).unwrap();
        assert_eq!(token, VECTOR, "the node token format changed: version it");
        let v = Verifier::new(b.public_key().node_id());
        let claims = v
            .check(
                &token,
                "POST",
                "/v1/missions",
                b"{}",
                1_700_000_000_000,
                |k| *k == a.public_key(),
            )
            .unwrap();
        assert_eq!(claims, vector_claims(&a, &b));
        let caller = claims.caller();
        assert_eq!(caller.role, Role::Operator);
        assert_eq!(
            caller.key.unwrap(),
            format!("{}/k1", a.public_key().node_id())
        );
    }

    /// One check helper: the token made by `make` for the vector's request is refused
    /// with `expect` by node b at `now`.
    fn check(token: &str, now: u64, expect: &Refused) {
        let (a, b) = (signer(1), signer(2));
        let v = Verifier::new(b.public_key().node_id());
        let got = v.check(token, "POST", "/v1/missions", b"{}", now, |k| {
            *k == a.public_key()
        });
        assert_eq!(&got.unwrap_err(), expect, "{token}");
    }

    #[test]
    fn bad_tokens_are_refused() {
        let (a, b, c) = (signer(1), signer(2), signer(3));
        let now = 1_700_000_000_000;
        let good = vector_claims(&a, &b);
        // Signed by a key nobody enrolled.
        let mut forged = good.clone();
        forged.from = c.public_key();
        check(&forged.sign(&c).unwrap(), now, &Refused::NotEnrolled);
        // Expired, and from the future.
        check(&good.sign(&a).unwrap(), now + TTL_MS + 1, &Refused::Expired);
        check(&good.sign(&a).unwrap(), now - TTL_MS - 1, &Refused::Expired);
        // For another node.
        let mut elsewhere = good.clone();
        elsewhere.to = c.public_key().node_id();
        check(&elsewhere.sign(&a).unwrap(), now, &Refused::WrongNode);
        // Another request.
        let edits: [fn(&mut Claims); 3] = [
            |c: &mut Claims| c.method = "GET".into(),
            |c: &mut Claims| c.path = "/v1/missions?x=1".into(),
            |c: &mut Claims| c.body_sha256 = body_digest(b"{\"a\":1}"),
        ];
        for edit in edits {
            let mut other = good.clone();
            edit(&mut other);
            check(&other.sign(&a).unwrap(), now, &Refused::WrongRequest);
        }
        // A claim changed after signing: an operator role bought with an agent's token.
        let mut agent = good.clone();
        agent.caller.role = Role::Agent;
        let signed = agent.sign(&a).unwrap();
        let (_, sig) = signed.split_once('.').unwrap();
        let claims = aura_core::jcs::to_vec(&good).unwrap();
        let tampered = format!("{}.{sig}", b64().encode(claims));
        check(&tampered, now, &Refused::BadSignature);
        // A later version.
        let mut v2 = serde_json::to_value(&good).unwrap();
        v2["v"] = 2.into();
        let bytes = aura_core::jcs::to_vec(&v2).unwrap();
        let sig = a.sign(&message(&bytes));
        check(
            &format!("{}.{}", b64().encode(&bytes), b64().encode(sig.0)),
            now,
            &Refused::Version(2),
        );
        // Not canonical: the same claims with a space.
        let mut spaced = aura_core::jcs::to_vec(&good).unwrap();
        spaced.insert(1, b' ');
        let sig = a.sign(&message(&spaced));
        let token = format!("{}.{}", b64().encode(&spaced), b64().encode(sig.0));
        assert!(matches!(
            Claims::open(&token, |_| true),
            Err(Refused::Malformed(_))
        ));
        // Garbage.
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for junk in ["", ".", "x.y", "e30.AAAA", long.as_str()] {
            assert!(
                matches!(Claims::open(junk, |_| true), Err(Refused::Malformed(_))),
                "{junk}"
            );
        }
    }

    #[test]
    fn a_token_is_accepted_once() {
        let (a, b) = (signer(1), signer(2));
        let v = Verifier::new(b.public_key().node_id());
        let make = |at: u64| {
            let mut claims = Claims::new(
                &a,
                b.public_key().node_id(),
                "GET",
                "/v1/missions",
                b"",
                &operator(),
            );
            claims.issued_at_ms = at;
            claims.sign(&a).unwrap()
        };
        let now = now_ms();
        let token = make(now);
        let enrolled = |k: &PublicKey| *k == a.public_key();
        v.check(&token, "GET", "/v1/missions", b"", now, enrolled)
            .unwrap();
        assert_eq!(
            v.check(&token, "GET", "/v1/missions", b"", now, enrolled)
                .unwrap_err(),
            Refused::Replayed
        );
        // Later it is refused as expired; its nonce is forgotten once a newer token comes.
        let later = now + TTL_MS + 1;
        assert_eq!(
            v.check(&token, "GET", "/v1/missions", b"", later, enrolled)
                .unwrap_err(),
            Refused::Expired
        );
        v.check(&make(later), "GET", "/v1/missions", b"", later, enrolled)
            .unwrap();
        assert_eq!(v.seen.lock().unwrap().len(), 1);
    }

    proptest::proptest! {
        /// Any header value is refused or opened, never a panic.
        #[test]
        fn any_header_is_refused_or_read(s in ".{0,300}") {
            let _ = Claims::open(&s, |_| true);
        }

        /// Any byte flipped in a good token's claims is refused.
        #[test]
        fn a_flipped_byte_is_refused(at in 0usize..400, bit in 0u8..8) {
            let (a, b) = (signer(1), signer(2));
            let good = vector_claims(&a, &b);
            let mut claims = aura_core::jcs::to_vec(&good).unwrap();
            let at = at % claims.len();
            claims[at] ^= 1 << bit;
            let sig = a.sign(&message(&aura_core::jcs::to_vec(&good).unwrap()));
            let token = format!("{}.{}", b64().encode(&claims), b64().encode(sig.0));
            proptest::prop_assert!(Claims::open(&token, |k| *k == a.public_key()).is_err());
        }
    }
}
