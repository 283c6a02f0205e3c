//! Receipts: the node's signed record of one inference request, kept in the ledger.
//!
//! A receipt names the package run (digest and name), the licenses it ran under with
//! their terms (so that settlement needs nothing but receipts), hashes of the input and
//! output, token counts, how many tokens each expert served, the runtime's fingerprint and
//! the time. The node signs it as a statement of kind [`KIND`] (an
//! [`aura_core::signed::Signed`] receipt) and appends it to its own ledger stream
//! (`AgentId::NODE`) as an entry of kind [`LEDGER_KIND`], whose body is the signed
//! receipt's JSON form, `{"receipt": {…fields…}, "signature": "<hex>"}`, written as RFC 8785
//! canonical JSON (receipts recorded before that have their members in declaration order;
//! they read the same). The signature covers the canonical encoding below, never the JSON,
//! so a change to any field in the body is detected.
//!
//! ```text
//! u8   version = 1
//! [16] id, [16] node, [32] package, str package_name, u32 uses
//! u32  charges × (u8 role, [32] subject, [16] license, [32] licensor,
//!                 u64 price_per_1000_tokens, str currency, u32 n, n × u32 expert)
//! [32] input_hash, [32] output_hash
//! u64  prompt_tokens, u64 completion_tokens
//! u32  n, n × u64 expert_tokens            tokens served per expert index
//! str  runtime version, backend, device, dtype, kernel
//! u64  started_at, u64 finished_at
//! ```
//!
//! The first charge is the model's own license (role 0, subject = the package); each
//! further charge (role 1) is an expert pack's license and the experts that pack serves.

use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::hash::{Domain, Hash};
use aura_core::keystore::Signer;
use aura_core::signed::{self, Issuer, Signed, Statement};
use aura_core::{AgentId, NodeId, PublicKey, Timestamp, jcs};
use aura_ledger::entry::{Kind, MAX_BODY_LEN};
use aura_store::{NewEntry, Seq, Store, StoredEntry};
use serde::{Deserialize, Serialize};

use crate::codec::{
    get_count, get_key, get_str, get_time, invalid_at, put_count, put_key, put_str, unknown_version,
};
use crate::license::{LicenseId, Uses};
use crate::manifest::MAX_EXPERTS;
use crate::share::split;

aura_core::typed_id!(
    /// A receipt.
    ReceiptId,
    "rcpt"
);

pub const VERSION: u8 = 1;
/// The statement kind the node signs.
pub const KIND: &str = "inference-receipt/v1";
/// The ledger entry kind receipts are appended as, in the node's stream.
pub const LEDGER_KIND: &str = "inference.receipt";
const MAX_CHARGES: usize = 257;
const MAX_TEXT: usize = 128;

/// The hash a receipt records for a request's input or output bytes.
pub fn io_hash(bytes: &[u8]) -> Hash {
    Hash::tagged(Domain::InferenceIo, bytes)
}

/// What a charge pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The model's package: every token of the request.
    Model,
    /// An expert pack: its experts' share of the tokens, by routing counts.
    Experts,
}

/// One license a request ran under, with the terms it carried then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    pub role: Role,
    /// The package (role `model`) or expert pack (role `experts`) digest.
    pub subject: Hash,
    pub license: LicenseId,
    pub licensor: PublicKey,
    pub price_per_1000_tokens: u64,
    pub currency: String,
    /// For an expert pack, the expert indices it serves; empty for the model.
    pub experts: Vec<u32>,
}

/// The runtime that served the request, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub version: String,
    pub backend: String,
    pub device: String,
    pub dtype: String,
    pub kernel: String,
}

/// One request's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub id: ReceiptId,
    pub node: NodeId,
    pub package: Hash,
    pub package_name: String,
    pub uses: Uses,
    pub charges: Vec<Charge>,
    pub input_hash: Hash,
    pub output_hash: Hash,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub expert_tokens: Vec<u64>,
    pub runtime: Runtime,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// A receipt that breaks a rule of the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid receipt: {0}")]
pub struct Invalid(pub String);

impl Receipt {
    pub fn validate(&self) -> Result<(), Invalid> {
        let fail = |s: &str| Err(Invalid(s.to_owned()));
        if self
            .prompt_tokens
            .checked_add(self.completion_tokens)
            .is_none()
        {
            return fail("token counts overflow");
        }
        if self.package_name.len() > crate::manifest::MAX_NAME {
            return fail("package name too long");
        }
        if self.charges.is_empty() || self.charges.len() > MAX_CHARGES {
            return fail("a receipt has 1 to 257 charges");
        }
        if self.charges[0].role != Role::Model || self.charges[0].subject != self.package {
            return fail("the first charge must be the model's own license");
        }
        if self.expert_tokens.len() > MAX_EXPERTS as usize {
            return fail("too many experts");
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in self.charges.iter().enumerate() {
            if c.currency.is_empty() || c.currency.len() > 32 {
                return fail("a charge's currency is empty or too long");
            }
            match (i, c.role) {
                (0, _) if !c.experts.is_empty() => return fail("the model's charge lists experts"),
                (0, _) => {}
                (_, Role::Model) => return fail("only the first charge is the model's"),
                (_, Role::Experts) => {
                    if c.experts.is_empty() || !c.experts.windows(2).all(|w| w[0] < w[1]) {
                        return fail("an expert charge's experts are empty or unsorted");
                    }
                    for e in &c.experts {
                        if *e >= MAX_EXPERTS || !seen.insert(*e) {
                            return fail("an expert is out of range or charged twice");
                        }
                    }
                }
            }
        }
        for t in [
            &self.runtime.version,
            &self.runtime.backend,
            &self.runtime.device,
            &self.runtime.dtype,
            &self.runtime.kernel,
        ] {
            if t.len() > MAX_TEXT {
                return fail("a runtime field is too long");
            }
        }
        if self.finished_at < self.started_at {
            return fail("it finished before it started");
        }
        Ok(())
    }

    fn encode_into(&self, e: &mut Encoder) {
        e.u8(VERSION)
            .raw(self.id.as_bytes())
            .raw(self.node.as_bytes())
            .hash(&self.package);
        put_str(e, &self.package_name);
        e.u32(self.uses.bits());
        put_count(e, self.charges.len());
        for c in &self.charges {
            e.u8(match c.role {
                Role::Model => 0,
                Role::Experts => 1,
            })
            .hash(&c.subject)
            .raw(c.license.as_bytes());
            put_key(e, &c.licensor);
            e.u64(c.price_per_1000_tokens);
            put_str(e, &c.currency);
            put_count(e, c.experts.len());
            for x in &c.experts {
                e.u32(*x);
            }
        }
        e.hash(&self.input_hash)
            .hash(&self.output_hash)
            .u64(self.prompt_tokens)
            .u64(self.completion_tokens);
        put_count(e, self.expert_tokens.len());
        for t in &self.expert_tokens {
            e.u64(*t);
        }
        for t in [
            &self.runtime.version,
            &self.runtime.backend,
            &self.runtime.device,
            &self.runtime.dtype,
            &self.runtime.kernel,
        ] {
            put_str(e, t);
        }
        e.u64(self.started_at.as_nanos())
            .u64(self.finished_at.as_nanos());
    }

    fn decode_from(d: &mut Decoder<'_>) -> Result<Receipt, DecodeError> {
        let version = d.u8("version")?;
        if version != VERSION {
            return Err(unknown_version("version", version));
        }
        let id = ReceiptId::from_bytes(d.array("id")?);
        let node = NodeId::from_bytes(d.array("node")?);
        let package = d.hash("package")?;
        let package_name = get_str(d, "package_name", crate::manifest::MAX_NAME)?;
        let at = d.position();
        let uses = Uses::from_bits(d.u32("uses")?)
            .ok_or_else(|| invalid_at(at, "uses", "has unknown bits"))?;
        let n = get_count(d, "charges", MAX_CHARGES)?;
        let mut charges = Vec::with_capacity(n);
        for _ in 0..n {
            let at = d.position();
            let role = match d.u8("charge role")? {
                0 => Role::Model,
                1 => Role::Experts,
                _ => return Err(invalid_at(at, "charge role", "is not a known role")),
            };
            let subject = d.hash("charge subject")?;
            let license = LicenseId::from_bytes(d.array("charge license")?);
            let licensor = get_key(d, "charge licensor")?;
            let price_per_1000_tokens = d.u64("charge price")?;
            let currency = get_str(d, "charge currency", 32)?;
            let m = get_count(d, "charge experts", MAX_EXPERTS as usize)?;
            let mut experts = Vec::with_capacity(m);
            for _ in 0..m {
                experts.push(d.u32("charge expert")?);
            }
            charges.push(Charge {
                role,
                subject,
                license,
                licensor,
                price_per_1000_tokens,
                currency,
                experts,
            });
        }
        let input_hash = d.hash("input_hash")?;
        let output_hash = d.hash("output_hash")?;
        let prompt_tokens = d.u64("prompt_tokens")?;
        let completion_tokens = d.u64("completion_tokens")?;
        let n = get_count(d, "expert_tokens", MAX_EXPERTS as usize)?;
        let mut expert_tokens = Vec::with_capacity(n);
        for _ in 0..n {
            expert_tokens.push(d.u64("expert_tokens")?);
        }
        let runtime = Runtime {
            version: get_str(d, "runtime version", MAX_TEXT)?,
            backend: get_str(d, "runtime backend", MAX_TEXT)?,
            device: get_str(d, "runtime device", MAX_TEXT)?,
            dtype: get_str(d, "runtime dtype", MAX_TEXT)?,
            kernel: get_str(d, "runtime kernel", MAX_TEXT)?,
        };
        let started_at = get_time(d, "started_at")?;
        let finished_at = get_time(d, "finished_at")?;
        let r = Receipt {
            id,
            node,
            package,
            package_name,
            uses,
            charges,
            input_hash,
            output_hash,
            prompt_tokens,
            completion_tokens,
            expert_tokens,
            runtime,
            started_at,
            finished_at,
        };
        r.validate()
            .map_err(|_| invalid_at(0, "receipt", "breaks a rule of the format"))?;
        Ok(r)
    }

    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// The tokens each charge counts, in charge order: the model's license counts every
    /// token; the request's tokens are split among all experts in proportion to their
    /// routing counts ([`split`]), and each expert pack's license counts the shares of
    /// the experts it serves. The shares of experts that live in the model's own package
    /// are covered by the model's license and charged to no one else.
    pub fn attributed(&self) -> Vec<u64> {
        let total = self.total_tokens();
        let shares = split(total, &self.expert_tokens);
        self.charges
            .iter()
            .map(|c| match c.role {
                Role::Model => total,
                Role::Experts => c
                    .experts
                    .iter()
                    .filter_map(|e| shares.get(*e as usize))
                    .sum(),
            })
            .collect()
    }

    /// Signs the receipt with the node's key; the receipt must name that node.
    pub fn sign(self, node_key: &Signer) -> Result<SignedReceipt, Invalid> {
        if node_key.public_key().node_id() != self.node {
            return Err(Invalid(format!(
                "the receipt names node {} but key `{}` belongs to {}",
                self.node,
                node_key.name(),
                node_key.public_key().node_id()
            )));
        }
        Signed::sign(self, node_key).map_err(|e| Invalid(e.to_string()))
    }
}

impl Statement for Receipt {
    const KIND: &'static str = KIND;
    const FIELD: &'static str = "receipt";

    fn issuer(&self) -> Issuer<'_> {
        Issuer::Node(self.node)
    }

    fn validate(&self) -> Result<(), signed::Invalid> {
        Receipt::validate(self).map_err(|e| signed::Invalid(e.0))
    }

    fn encode(&self, e: &mut Encoder) {
        self.encode_into(e);
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Receipt::decode_from(d)
    }
}

/// A receipt and the node's signature. Its JSON form is
/// `{"receipt": {…}, "signature": "<hex>"}`.
pub type SignedReceipt = Signed<Receipt>;

/// Why a receipt does not hold up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt at ledger entry #{index} is malformed: {reason}")]
    Malformed { index: u64, reason: String },
    #[error(
        "receipt {id} at ledger entry #{index} names node {named}, not this ledger's node {node}"
    )]
    WrongNode {
        index: u64,
        id: ReceiptId,
        named: NodeId,
        node: NodeId,
    },
    #[error("receipt {id} at ledger entry #{index} has a bad signature (it was altered)")]
    BadSignature { index: u64, id: ReceiptId },
    #[error("ledger entry #{index} is a receipt outside the node's own stream")]
    NotNodeStream { index: u64 },
}

/// Checks a receipt's signature under `node_key`, which must be the key of the node the
/// receipt names; `index` is where the receipt is in the ledger, for the error.
pub fn verify(
    signed: &SignedReceipt,
    node_key: &PublicKey,
    index: u64,
) -> Result<(), ReceiptError> {
    let r = &signed.statement;
    if r.node != node_key.node_id() {
        return Err(ReceiptError::WrongNode {
            index,
            id: r.id,
            named: r.node,
            node: node_key.node_id(),
        });
    }
    signed.verify(node_key).map_err(|e| match e {
        signed::Error::Invalid(reason) => ReceiptError::Malformed {
            index,
            reason: Invalid(reason.0).to_string(),
        },
        _ => ReceiptError::BadSignature { index, id: r.id },
    })
}

/// A receipt as found in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerReceipt {
    pub index: u64,
    pub seq: u64,
    pub entry_hash: Hash,
    pub signed: SignedReceipt,
}

impl LedgerReceipt {
    /// Checks the receipt's signature under `node_key` (see [`verify`]).
    pub fn verify(&self, node_key: &PublicKey) -> Result<(), ReceiptError> {
        verify(&self.signed, node_key, self.index)
    }
}

/// The receipt in a ledger entry: `Ok(None)` for an entry of another kind, an error for a
/// receipt entry that does not decode or sits outside the node's stream. The signature is
/// not checked here (see [`SignedReceipt::verify`]).
pub fn from_entry(stored: &StoredEntry) -> Result<Option<LedgerReceipt>, ReceiptError> {
    let e = &stored.entry;
    if e.kind.as_str() != LEDGER_KIND {
        return Ok(None);
    }
    if e.agent != AgentId::NODE {
        return Err(ReceiptError::NotNodeStream { index: e.index });
    }
    // The store keeps each entry's hash beside its bytes; a receipt whose bytes no
    // longer match was changed in place.
    if aura_ledger::entry::Entry::hash_encoded(&stored.encoded) != stored.hash {
        return Err(ReceiptError::Malformed {
            index: e.index,
            reason: "its ledger entry no longer matches its recorded hash (the ledger was altered)"
                .into(),
        });
    }
    let signed = SignedReceipt::from_json(&e.body).map_err(|err| ReceiptError::Malformed {
        index: e.index,
        reason: err.to_string(),
    })?;
    Ok(Some(LedgerReceipt {
        index: e.index,
        seq: e.seq,
        entry_hash: stored.hash,
        signed,
    }))
}

/// Where a receipt landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub id: ReceiptId,
    pub index: u64,
    pub seq: u64,
    pub entry_hash: Hash,
}

/// Why a receipt could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the receipt is too large for a ledger entry")]
    TooLarge,
    #[error("cannot write the receipt as JSON")]
    Json(#[from] jcs::Error),
    #[error("cannot append the receipt to the ledger")]
    Store(#[from] aura_store::Error),
}

/// Appends a signed receipt to the node's stream; returns once it is durable and covered
/// by a signed checkpoint.
pub async fn append(store: &dyn Store, signed: &SignedReceipt) -> Result<Recorded, RecordError> {
    signed.statement.validate()?;
    let body = signed.to_json()?;
    if body.len() > MAX_BODY_LEN {
        return Err(RecordError::TooLarge);
    }
    let receipt = store
        .append(vec![NewEntry {
            agent: AgentId::NODE,
            seq: Seq::Next,
            kind: Kind::new(LEDGER_KIND).map_err(|e| Invalid(e.to_string()))?,
            recorded_at: signed.statement.finished_at,
            body,
        }])
        .await?;
    let appended = receipt
        .entries
        .first()
        .ok_or_else(|| Invalid("the store appended nothing".into()))?;
    Ok(Recorded {
        id: signed.statement.id,
        index: appended.index,
        seq: appended.seq,
        entry_hash: appended.hash,
    })
}

/// Signs `receipt` with the node's key and appends it: the one call that records a
/// request.
pub async fn record(
    store: &dyn Store,
    node_key: &Signer,
    receipt: Receipt,
) -> Result<(SignedReceipt, Recorded), RecordError> {
    let signed = receipt.sign(node_key)?;
    let recorded = append(store, &signed).await?;
    Ok((signed, recorded))
}

/// Reads every receipt in the node's stream from `from_seq` on, in order, calling `each`.
/// Entries of other kinds are skipped; a receipt entry that does not decode is an error.
pub async fn scan(
    store: &dyn Store,
    from_seq: u64,
    mut each: impl FnMut(LedgerReceipt) -> Result<(), ReceiptError>,
) -> Result<u64, ScanError> {
    const PAGE: usize = 4096;
    let mut next = from_seq.max(1);
    loop {
        let page = store.agent_entries(AgentId::NODE, next, PAGE).await?;
        let n = page.len();
        for stored in &page {
            next = stored.entry.seq + 1;
            if let Some(r) = from_entry(stored)? {
                each(r)?;
            }
        }
        if n < PAGE {
            return Ok(next);
        }
    }
}

/// Why reading receipts from the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    #[error("cannot read the ledger")]
    Store(#[from] aura_store::Error),
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aura_core::door::SeededEntropy;
    use proptest::prelude::*;

    pub(crate) fn node_key() -> Signer {
        Signer::ephemeral("node", &SeededEntropy::new(11)).unwrap()
    }

    pub(crate) fn sample(node: NodeId, licensor: PublicKey) -> Receipt {
        Receipt {
            id: ReceiptId::from_bytes([3; 16]),
            node,
            package: Hash::sha256(b"mix"),
            package_name: "mix".into(),
            uses: Uses::INFERENCE,
            charges: vec![
                Charge {
                    role: Role::Model,
                    subject: Hash::sha256(b"mix"),
                    license: LicenseId::from_bytes([1; 16]),
                    licensor,
                    price_per_1000_tokens: 100,
                    currency: "usd-micro".into(),
                    experts: vec![],
                },
                Charge {
                    role: Role::Experts,
                    subject: Hash::sha256(b"pack"),
                    license: LicenseId::from_bytes([2; 16]),
                    licensor,
                    price_per_1000_tokens: 40,
                    currency: "usd-micro".into(),
                    experts: vec![2, 3],
                },
            ],
            input_hash: io_hash(b"in"),
            output_hash: io_hash(b"out"),
            prompt_tokens: 7,
            completion_tokens: 3,
            expert_tokens: vec![5, 5, 6, 4],
            runtime: Runtime {
                version: "0.1.0".into(),
                backend: "candle".into(),
                device: "cpu".into(),
                dtype: "f32".into(),
                kernel: "generic".into(),
            },
            started_at: Timestamp::from_secs(10),
            finished_at: Timestamp::from_secs(11),
        }
    }

    #[test]
    fn signed_receipts_round_trip_through_the_ledger_body() {
        let k = node_key();
        let signed = sample(k.public_key().node_id(), k.public_key())
            .sign(&k)
            .unwrap();
        let back = SignedReceipt::from_json(&signed.to_json().unwrap()).unwrap();
        assert_eq!(back, signed);
        verify(&back, &k.public_key(), 0).unwrap();
        let bytes = signed.to_bytes().unwrap();
        assert_eq!(SignedReceipt::from_bytes(&bytes).unwrap(), signed);
    }

    #[test]
    fn an_edited_body_fails_verification() {
        let k = node_key();
        let signed = sample(k.public_key().node_id(), k.public_key())
            .sign(&k)
            .unwrap();
        let body = String::from_utf8(signed.to_json().unwrap()).unwrap();
        let edited = body.replace("\"completion_tokens\":3", "\"completion_tokens\":2");
        assert_ne!(body, edited);
        let back = SignedReceipt::from_json(edited.as_bytes()).unwrap();
        assert_eq!(
            verify(&back, &k.public_key(), 5),
            Err(ReceiptError::BadSignature {
                index: 5,
                id: signed.statement.id
            })
        );
        let other = Signer::ephemeral("node", &SeededEntropy::new(12)).unwrap();
        assert!(matches!(
            verify(&signed, &other.public_key(), 5),
            Err(ReceiptError::WrongNode { .. })
        ));
    }

    #[test]
    fn attribution_splits_expert_shares_exactly() {
        let k = node_key();
        let r = sample(k.public_key().node_id(), k.public_key());
        // 10 tokens over routing counts 5,5,6,4 (total 20): exact shares 2.5, 2.5, 3, 2.
        // The half-token remainders go to the lowest expert indices: 3, 2, 3, 2.
        assert_eq!(split(10, &r.expert_tokens), vec![3, 2, 3, 2]);
        assert_eq!(r.attributed(), vec![10, 5]);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedReceipt::from_bytes(&bytes);
            let _ = SignedReceipt::from_json(&bytes);
        }

        #[test]
        fn receipts_round_trip(
            prompt in 0u64..1 << 40,
            completion in 0u64..1 << 40,
            experts in proptest::collection::vec(0u64..1000, 0..16),
            t in 0u64..1 << 62,
        ) {
            let k = node_key();
            let mut r = sample(k.public_key().node_id(), k.public_key());
            r.prompt_tokens = prompt;
            r.completion_tokens = completion;
            r.expert_tokens = experts;
            r.started_at = Timestamp::from_nanos(t);
            r.finished_at = Timestamp::from_nanos(t + 1);
            let signed = r.sign(&k).unwrap();
            prop_assert_eq!(&SignedReceipt::from_bytes(&signed.to_bytes().unwrap()).unwrap(), &signed);
            prop_assert_eq!(&SignedReceipt::from_json(&signed.to_json().unwrap()).unwrap(), &signed);
        }

        #[test]
        fn any_flipped_bit_is_detected(at in any::<proptest::sample::Index>(), bit in 0u8..8) {
            let k = node_key();
            let signed = sample(k.public_key().node_id(), k.public_key()).sign(&k).unwrap();
            let mut bytes = signed.to_bytes().unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(t) = SignedReceipt::from_bytes(&bytes) {
                prop_assert!(verify(&t, &k.public_key(), 0).is_err());
            }
        }
    }
}
