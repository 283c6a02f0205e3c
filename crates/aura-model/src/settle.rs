//! Settlement: what each licensor is owed for the requests in a time window, as
//! statements the node signs, and the checks that let anyone verify a statement against
//! the receipts it covers.
//!
//! The arithmetic, all in integers:
//!
//! - A receipt counts in a window `[from, to)` when its `finished_at` is in it.
//! - Each receipt's tokens (prompt + completion) are attributed to its charges by
//!   [`crate::receipt::Receipt::attributed`]: all of them to the model's license; to each
//!   expert pack's license the shares of its experts, where the request's tokens are split
//!   among all experts in proportion to their routing counts by [`split`] (largest
//!   remainder, so the shares add up to the tokens exactly).
//! - A statement line sums, per license, the tokens attributed by every receipt in the
//!   window, and prices the sum once: `amount = tokens × price_per_1000_tokens / 1000`,
//!   rounded down to the currency unit. Rounding once per line (not per receipt) keeps the
//!   loss below one unit per license per statement; nothing is carried between statements.
//! - A statement's totals are the sums of its lines' amounts, per currency.
//!
//! One statement is made per payee (the licensor of the licenses charged), listing every
//! (receipt, license) pair it covers with the receipt's ledger index and entry hash and
//! the tokens attributed. It is signed by the node as a statement of kind [`KIND`] (an
//! [`aura_core::signed::Signed`] statement) and appended to the node's ledger stream as an
//! entry of kind [`LEDGER_KIND`], whose body (like a statement file from `aura receipts
//! settle`) is its JSON form `{"statement": {…}, "signature": "<hex>"}` as RFC 8785
//! canonical JSON.
//!
//! ```text
//! u8   version = 1
//! [16] id, [16] node, [32] payee, u64 from, u64 to, u64 issued_at
//! u32  lines   × ([16] license, u8 role, [32] subject, str currency, u64 price_per_1000_tokens,
//!                 u64 receipts, u64 tokens, u64 amount)
//! u32  covered × ([16] receipt, u64 index, [32] entry_hash, [16] license, u64 tokens)
//! u32  totals  × (str currency, u64 amount)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aura_core::encoding::{DecodeError, Decoder, Encoder};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::signed::{self, Issuer, Signed};
use aura_core::{AgentId, NodeId, PublicKey, Timestamp, jcs};
use aura_ledger::entry::{Kind, MAX_BODY_LEN};
use aura_store::{NewEntry, Seq, Store, StoredEntry};
use serde::{Deserialize, Serialize};

use crate::codec::{
    get_count, get_key, get_str, get_time, invalid_at, put_count, put_key, put_str, unknown_version,
};
use crate::license::LicenseId;
use crate::receipt::{LedgerReceipt, ReceiptId, Role};

aura_core::typed_id!(
    /// A settlement statement.
    StatementId,
    "stmt"
);

pub const VERSION: u8 = 1;
/// The statement kind the node signs.
pub const KIND: &str = "settlement-statement/v1";
/// The ledger entry kind statements are appended as, in the node's stream.
pub const LEDGER_KIND: &str = "settlement.statement";
const MAX_LINES: usize = 1_000_000;
const MAX_COVERED: usize = 10_000_000;

pub use crate::share::{price, split};

/// What one license earned in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub license: LicenseId,
    pub role: Role,
    pub subject: Hash,
    pub currency: String,
    pub price_per_1000_tokens: u64,
    pub receipts: u64,
    pub tokens: u64,
    pub amount: u64,
}

/// One (receipt, license) pair a statement covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Covered {
    pub index: u64,
    pub receipt: ReceiptId,
    pub entry_hash: Hash,
    pub license: LicenseId,
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Total {
    pub currency: String,
    pub amount: u64,
}

/// What a payee is owed for a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub id: StatementId,
    pub node: NodeId,
    pub payee: PublicKey,
    pub from: Timestamp,
    pub to: Timestamp,
    pub issued_at: Timestamp,
    /// Sorted by license id.
    pub lines: Vec<Line>,
    /// Sorted by ledger index, then license.
    pub receipts: Vec<Covered>,
    /// Sorted by currency.
    pub totals: Vec<Total>,
}

/// Why settlement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error("the window ends before it starts")]
    EmptyWindow,
    #[error(
        "license {license} appears with different prices or currencies in different receipts (first at ledger entry #{index})"
    )]
    InconsistentTerms { license: LicenseId, index: u64 },
    #[error("the amount for license {0} does not fit in 64 bits")]
    Overflow(LicenseId),
}

/// Builds the lines and totals of one payee's charges. `pairs` are (receipt, charge
/// index, tokens attributed).
fn lines_and_totals(
    pairs: &[(&LedgerReceipt, usize, u64)],
) -> Result<(Vec<Line>, Vec<Total>), SettleError> {
    let mut lines: BTreeMap<LicenseId, Line> = BTreeMap::new();
    for (r, ci, tokens) in pairs {
        let c = &r.signed.statement.charges[*ci];
        let line = lines.entry(c.license).or_insert_with(|| Line {
            license: c.license,
            role: c.role,
            subject: c.subject,
            currency: c.currency.clone(),
            price_per_1000_tokens: c.price_per_1000_tokens,
            receipts: 0,
            tokens: 0,
            amount: 0,
        });
        if line.role != c.role
            || line.subject != c.subject
            || line.currency != c.currency
            || line.price_per_1000_tokens != c.price_per_1000_tokens
        {
            return Err(SettleError::InconsistentTerms {
                license: c.license,
                index: r.index,
            });
        }
        line.receipts += 1;
        line.tokens = line
            .tokens
            .checked_add(*tokens)
            .ok_or(SettleError::Overflow(c.license))?;
    }
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines.values_mut() {
        line.amount = price(line.tokens, line.price_per_1000_tokens)
            .ok_or(SettleError::Overflow(line.license))?;
        let t = totals.entry(line.currency.clone()).or_default();
        *t = t
            .checked_add(line.amount)
            .ok_or(SettleError::Overflow(line.license))?;
    }
    Ok((
        lines.into_values().collect(),
        totals
            .into_iter()
            .map(|(currency, amount)| Total { currency, amount })
            .collect(),
    ))
}

fn in_window(r: &LedgerReceipt, from: Timestamp, to: Timestamp) -> bool {
    let t = r.signed.statement.finished_at;
    from <= t && t < to
}

/// Every (receipt, charge, tokens) in the window, by payee.
fn charges_by_payee(
    receipts: &[LedgerReceipt],
    from: Timestamp,
    to: Timestamp,
) -> BTreeMap<[u8; 32], Vec<(&LedgerReceipt, usize, u64)>> {
    let mut by_payee: BTreeMap<[u8; 32], Vec<(&LedgerReceipt, usize, u64)>> = BTreeMap::new();
    for r in receipts.iter().filter(|r| in_window(r, from, to)) {
        let attributed = r.signed.statement.attributed();
        for (ci, (c, tokens)) in r
            .signed
            .statement
            .charges
            .iter()
            .zip(attributed)
            .enumerate()
        {
            by_payee
                .entry(c.licensor.to_bytes())
                .or_default()
                .push((r, ci, tokens));
        }
    }
    by_payee
}

/// The statements for `[from, to)`: one per payee, in payee key order. `next_id` names
/// each statement.
pub fn settle(
    receipts: &[LedgerReceipt],
    from: Timestamp,
    to: Timestamp,
    node: NodeId,
    issued_at: Timestamp,
    next_id: &mut dyn FnMut() -> StatementId,
) -> Result<Vec<Statement>, SettleError> {
    if to <= from {
        return Err(SettleError::EmptyWindow);
    }
    let mut out = Vec::new();
    for (payee, pairs) in charges_by_payee(receipts, from, to) {
        let (lines, totals) = lines_and_totals(&pairs)?;
        let mut covered: Vec<Covered> = pairs
            .iter()
            .map(|(r, ci, tokens)| Covered {
                index: r.index,
                receipt: r.signed.statement.id,
                entry_hash: r.entry_hash,
                license: r.signed.statement.charges[*ci].license,
                tokens: *tokens,
            })
            .collect();
        covered.sort();
        // A key taken from a receipt's (validated) charge is always a valid key.
        let Ok(payee) = PublicKey::from_bytes(&payee) else {
            continue;
        };
        out.push(Statement {
            id: next_id(),
            node,
            payee,
            from,
            to,
            issued_at,
            lines,
            receipts: covered,
            totals,
        });
    }
    Ok(out)
}

/// A statement breaks a rule of the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid statement: {0}")]
pub struct Invalid(pub String);

impl Statement {
    pub fn validate(&self) -> Result<(), Invalid> {
        let fail = |s: &str| Err(Invalid(s.to_owned()));
        if self.to <= self.from {
            return fail("the window ends before it starts");
        }
        if self.lines.len() > MAX_LINES || self.receipts.len() > MAX_COVERED {
            return fail("too many lines or receipts");
        }
        if !self.lines.windows(2).all(|w| w[0].license < w[1].license) {
            return fail("lines are not sorted by license, or a license repeats");
        }
        if !self.receipts.windows(2).all(|w| w[0] < w[1]) {
            return fail("receipts are not sorted, or one repeats");
        }
        if !self
            .totals
            .windows(2)
            .all(|w| w[0].currency < w[1].currency)
        {
            return fail("totals are not sorted by currency, or a currency repeats");
        }
        for c in self
            .lines
            .iter()
            .map(|l| &l.currency)
            .chain(self.totals.iter().map(|t| &t.currency))
        {
            if c.is_empty() || c.len() > 32 {
                return fail("a currency is empty or too long");
            }
        }
        Ok(())
    }

    fn encode_into(&self, e: &mut Encoder) {
        e.u8(VERSION)
            .raw(self.id.as_bytes())
            .raw(self.node.as_bytes());
        put_key(e, &self.payee);
        e.u64(self.from.as_nanos())
            .u64(self.to.as_nanos())
            .u64(self.issued_at.as_nanos());
        put_count(e, self.lines.len());
        for l in &self.lines {
            e.raw(l.license.as_bytes())
                .u8(match l.role {
                    Role::Model => 0,
                    Role::Experts => 1,
                })
                .hash(&l.subject);
            put_str(e, &l.currency);
            e.u64(l.price_per_1000_tokens)
                .u64(l.receipts)
                .u64(l.tokens)
                .u64(l.amount);
        }
        put_count(e, self.receipts.len());
        for c in &self.receipts {
            e.raw(c.receipt.as_bytes())
                .u64(c.index)
                .hash(&c.entry_hash)
                .raw(c.license.as_bytes())
                .u64(c.tokens);
        }
        put_count(e, self.totals.len());
        for t in &self.totals {
            put_str(e, &t.currency);
            e.u64(t.amount);
        }
    }

    fn decode_from(d: &mut Decoder<'_>) -> Result<Statement, DecodeError> {
        let version = d.u8("version")?;
        if version != VERSION {
            return Err(unknown_version("version", version));
        }
        let id = StatementId::from_bytes(d.array("id")?);
        let node = NodeId::from_bytes(d.array("node")?);
        let payee = get_key(d, "payee")?;
        let from = get_time(d, "from")?;
        let to = get_time(d, "to")?;
        let issued_at = get_time(d, "issued_at")?;
        let n = get_count(d, "lines", MAX_LINES)?;
        if n.saturating_mul(100) > d.remaining() {
            return Err(d.invalid("lines", "count exceeds the input"));
        }
        let mut lines = Vec::with_capacity(n);
        for _ in 0..n {
            let license = LicenseId::from_bytes(d.array("line license")?);
            let at = d.position();
            let role = match d.u8("line role")? {
                0 => Role::Model,
                1 => Role::Experts,
                _ => return Err(invalid_at(at, "line role", "is not a known role")),
            };
            let subject = d.hash("line subject")?;
            let currency = get_str(d, "line currency", 32)?;
            lines.push(Line {
                license,
                role,
                subject,
                currency,
                price_per_1000_tokens: d.u64("line price")?,
                receipts: d.u64("line receipts")?,
                tokens: d.u64("line tokens")?,
                amount: d.u64("line amount")?,
            });
        }
        let n = get_count(d, "receipts", MAX_COVERED)?;
        if n.saturating_mul(80) > d.remaining() {
            return Err(d.invalid("receipts", "count exceeds the input"));
        }
        let mut receipts = Vec::with_capacity(n);
        for _ in 0..n {
            receipts.push(Covered {
                receipt: ReceiptId::from_bytes(d.array("covered receipt")?),
                index: d.u64("covered index")?,
                entry_hash: d.hash("covered entry hash")?,
                license: LicenseId::from_bytes(d.array("covered license")?),
                tokens: d.u64("covered tokens")?,
            });
        }
        let n = get_count(d, "totals", MAX_LINES)?;
        let mut totals = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            totals.push(Total {
                currency: get_str(d, "total currency", 32)?,
                amount: d.u64("total amount")?,
            });
        }
        let s = Statement {
            id,
            node,
            payee,
            from,
            to,
            issued_at,
            lines,
            receipts,
            totals,
        };
        s.validate()
            .map_err(|_| invalid_at(0, "statement", "breaks a rule of the format"))?;
        Ok(s)
    }

    /// Signs the statement with the node's key; the statement must name that node.
    pub fn sign(self, node_key: &Signer) -> Result<SignedStatement, Invalid> {
        if node_key.public_key().node_id() != self.node {
            return Err(Invalid("the statement names another node".into()));
        }
        Signed::sign(self, node_key).map_err(|e| Invalid(e.to_string()))
    }

    pub fn total(&self, currency: &str) -> u64 {
        self.totals
            .iter()
            .find(|t| t.currency == currency)
            .map_or(0, |t| t.amount)
    }
}

impl signed::Statement for Statement {
    const KIND: &'static str = KIND;

    fn issuer(&self) -> Issuer<'_> {
        Issuer::Node(self.node)
    }

    fn validate(&self) -> Result<(), signed::Invalid> {
        Statement::validate(self).map_err(|e| signed::Invalid(e.0))
    }

    fn encode(&self, e: &mut Encoder) {
        self.encode_into(e);
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Statement::decode_from(d)
    }
}

/// A statement and the node's signature. Its file and ledger-body form is JSON:
/// `{"statement": {…}, "signature": "<hex>"}`.
pub type SignedStatement = Signed<Statement>;

/// Why a statement does not hold up, naming the first thing wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error("statement {id} is malformed: {reason}")]
    Malformed { id: StatementId, reason: String },
    #[error("statement {id} names node {named}, not {node}")]
    WrongNode {
        id: StatementId,
        named: NodeId,
        node: NodeId,
    },
    #[error("statement {id} has a bad signature (it was altered)")]
    BadSignature { id: StatementId },
    #[error("statement {id} cites receipt {receipt} at ledger entry #{index}, which is not there")]
    MissingReceipt {
        id: StatementId,
        receipt: ReceiptId,
        index: u64,
    },
    #[error("statement {id} cites receipt {receipt}, but that receipt does not hold up: {reason}")]
    BadReceipt {
        id: StatementId,
        receipt: ReceiptId,
        reason: String,
    },
    #[error("statement {id} cites receipt {receipt} for license {license}, but {reason}")]
    WrongCitation {
        id: StatementId,
        receipt: ReceiptId,
        license: LicenseId,
        reason: String,
    },
    #[error(
        "statement {id}'s line for license {license} does not add up: it says {stated}, the receipts give {computed}"
    )]
    WrongLine {
        id: StatementId,
        license: LicenseId,
        stated: String,
        computed: String,
    },
    #[error("statement {id}'s totals do not add up: it says {stated}, its lines give {computed}")]
    WrongTotals {
        id: StatementId,
        stated: String,
        computed: String,
    },
    #[error(
        "statement {id} omits receipt {receipt} (ledger entry #{index}) charged to its payee in its window"
    )]
    Omits {
        id: StatementId,
        receipt: ReceiptId,
        index: u64,
    },
}

/// Checks a statement's signature under the node's key.
pub fn verify_signature(
    signed: &SignedStatement,
    node_key: &PublicKey,
) -> Result<(), StatementError> {
    let s = &signed.statement;
    if s.node != node_key.node_id() {
        return Err(StatementError::WrongNode {
            id: s.id,
            named: s.node,
            node: node_key.node_id(),
        });
    }
    signed.verify(node_key).map_err(|e| match e {
        signed::Error::Invalid(reason) => StatementError::Malformed {
            id: s.id,
            reason: Invalid(reason.0).to_string(),
        },
        _ => StatementError::BadSignature { id: s.id },
    })
}

/// Checks everything: the signature; that every cited receipt is in the ledger where
/// the statement says, holds up, falls in the window and charges the cited license to
/// this payee with the cited tokens; that lines and totals are exactly what the cited
/// receipts give; and, when `window` holds every receipt of the ledger, that no
/// receipt charged to this payee in the window was left out.
pub fn verify(
    signed: &SignedStatement,
    node_key: &PublicKey,
    receipt_at: &dyn Fn(u64) -> Option<LedgerReceipt>,
    window: Option<&[LedgerReceipt]>,
) -> Result<(), StatementError> {
    verify_signature(signed, node_key)?;
    let s = &signed.statement;
    let id = s.id;
    let mut fetched: HashMap<u64, LedgerReceipt> = HashMap::new();
    let mut pairs_owned: Vec<(u64, usize, u64)> = Vec::new();
    for c in &s.receipts {
        let r = match fetched.get(&c.index) {
            Some(r) => r.clone(),
            None => {
                let r = receipt_at(c.index).ok_or(StatementError::MissingReceipt {
                    id,
                    receipt: c.receipt,
                    index: c.index,
                })?;
                fetched.insert(c.index, r.clone());
                r
            }
        };
        if r.entry_hash != c.entry_hash || r.signed.statement.id != c.receipt {
            return Err(StatementError::MissingReceipt {
                id,
                receipt: c.receipt,
                index: c.index,
            });
        }
        r.verify(node_key).map_err(|e| StatementError::BadReceipt {
            id,
            receipt: c.receipt,
            reason: e.to_string(),
        })?;
        let wrong = |reason: &str| StatementError::WrongCitation {
            id,
            receipt: c.receipt,
            license: c.license,
            reason: reason.to_owned(),
        };
        if !in_window(&r, s.from, s.to) {
            return Err(wrong("the receipt is outside the statement's window"));
        }
        let receipt = &r.signed.statement;
        let ci = receipt
            .charges
            .iter()
            .position(|ch| ch.license == c.license)
            .ok_or_else(|| wrong("the receipt does not charge that license"))?;
        if receipt.charges[ci].licensor != s.payee {
            return Err(wrong("that license's licensor is not the payee"));
        }
        let tokens = receipt.attributed()[ci];
        if tokens != c.tokens {
            return Err(wrong(&format!(
                "the receipt attributes {tokens} tokens to it, not {}",
                c.tokens
            )));
        }
        pairs_owned.push((c.index, ci, tokens));
    }
    let pairs: Vec<(&LedgerReceipt, usize, u64)> = pairs_owned
        .iter()
        .filter_map(|(i, ci, t)| fetched.get(i).map(|r| (r, *ci, *t)))
        .collect();
    let (lines, totals) = lines_and_totals(&pairs).map_err(|e| StatementError::Malformed {
        id,
        reason: e.to_string(),
    })?;
    let show = |l: &Line| {
        format!(
            "{} receipts, {} tokens at {}/1000 = {} {}",
            l.receipts, l.tokens, l.price_per_1000_tokens, l.amount, l.currency
        )
    };
    let stated: BTreeMap<LicenseId, &Line> = s.lines.iter().map(|l| (l.license, l)).collect();
    let computed: BTreeMap<LicenseId, &Line> = lines.iter().map(|l| (l.license, l)).collect();
    for license in stated
        .keys()
        .chain(computed.keys())
        .collect::<BTreeSet<_>>()
    {
        let a = stated.get(license);
        let b = computed.get(license);
        if a != b {
            return Err(StatementError::WrongLine {
                id,
                license: *license,
                stated: a.map_or_else(|| "nothing".into(), |l| show(l)),
                computed: b.map_or_else(|| "nothing".into(), |l| show(l)),
            });
        }
    }
    if s.totals != totals {
        let show = |t: &[Total]| {
            t.iter()
                .map(|t| format!("{} {}", t.amount, t.currency))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(StatementError::WrongTotals {
            id,
            stated: show(&s.totals),
            computed: show(&totals),
        });
    }
    if let Some(all) = window {
        let cited: BTreeSet<(u64, LicenseId)> =
            s.receipts.iter().map(|c| (c.index, c.license)).collect();
        if let Some(pairs) = charges_by_payee(all, s.from, s.to).get(&s.payee.to_bytes()) {
            for (r, ci, _) in pairs {
                let license = r.signed.statement.charges[*ci].license;
                if !cited.contains(&(r.index, license)) {
                    return Err(StatementError::Omits {
                        id,
                        receipt: r.signed.statement.id,
                        index: r.index,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The statement in a ledger entry, or `None` for an entry of another kind.
pub fn from_entry(stored: &StoredEntry) -> Option<Result<SignedStatement, String>> {
    (stored.entry.kind.as_str() == LEDGER_KIND).then(|| {
        if stored.entry.agent != AgentId::NODE {
            return Err("a statement outside the node's own stream".into());
        }
        SignedStatement::from_json(&stored.entry.body).map_err(|e| e.to_string())
    })
}

/// Why a statement could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("statement {0} is too large for a ledger entry; settle a shorter window")]
    TooLarge(StatementId),
    #[error("cannot write the statement as JSON")]
    Json(#[from] jcs::Error),
    #[error("cannot append the statements to the ledger")]
    Store(#[from] aura_store::Error),
}

/// Signs each statement with the node's key and appends them all to the node's stream
/// in one atomic batch.
pub async fn record(
    store: &dyn Store,
    node_key: &Signer,
    statements: Vec<Statement>,
) -> Result<Vec<(SignedStatement, u64)>, RecordError> {
    let mut signed = Vec::with_capacity(statements.len());
    let mut batch = Vec::with_capacity(statements.len());
    for s in statements {
        let at = s.issued_at;
        let id = s.id;
        let st = s.sign(node_key)?;
        let body = st.to_json()?;
        if body.len() > MAX_BODY_LEN {
            return Err(RecordError::TooLarge(id));
        }
        batch.push(NewEntry {
            agent: AgentId::NODE,
            seq: Seq::Next,
            kind: Kind::new(LEDGER_KIND).map_err(|e| Invalid(e.to_string()))?,
            recorded_at: at,
            body,
        });
        signed.push(st);
    }
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let receipt = store.append(batch).await?;
    Ok(signed
        .into_iter()
        .zip(receipt.entries.iter().map(|e| e.index))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedStatement::from_bytes(&bytes);
            let _ = SignedStatement::from_json(&bytes);
        }
    }
}
