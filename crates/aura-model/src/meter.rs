//! Usage accounting against license allowances, from the ledger.
//!
//! The tokens a license has counted are the sum, over every receipt in the node's ledger
//! stream, of the tokens that receipt attributes to it (see `Receipt::attributed`). The
//! [`Meter`] rebuilds those sums by scanning the ledger when it opens, so allowance
//! accounting survives restarts, and catches up with the ledger after each receipt it
//! records. Receipts are decoded but their signatures are not checked on this path: the
//! ledger's hash chains and signed checkpoints already protect them, and
//! `aura receipts verify` checks every signature.
//!
//! Requests in flight hold a **reservation** of their upper bound on tokens against each
//! license they run under, so concurrent requests cannot together overrun an allowance.
//! A reservation is released when its receipt has been counted, or when the
//! [`Authorization`] is dropped without one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aura_core::door::{Clock, Entropy};
use aura_core::hash::Hash;
use aura_core::keystore::Signer;
use aura_core::{NodeId, Timestamp};
use aura_store::Store;
use serde::Serialize;

use crate::license::{Grant, LicenseError, LicenseId, Licenses, Request, Subject, Uses};
use crate::package::Verified;
use crate::receipt::{
    self, Charge, Receipt, ReceiptId, RecordError, Recorded, Role, Runtime, ScanError,
    SignedReceipt,
};

/// Tokens counted per license.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    used: HashMap<LicenseId, u64>,
    next_seq: u64,
    receipts: u64,
}

impl Usage {
    /// Scans the node's ledger stream from the start.
    pub async fn rebuild(store: &dyn Store) -> Result<Usage, ScanError> {
        let mut usage = Usage {
            next_seq: 1,
            ..Usage::default()
        };
        usage.catch_up(store).await?;
        Ok(usage)
    }

    /// Counts the receipts appended since the last scan.
    pub async fn catch_up(&mut self, store: &dyn Store) -> Result<(), ScanError> {
        let mut found = Vec::new();
        let next = receipt::scan(store, self.next_seq, |r| {
            found.push(r.signed.statement);
            Ok(())
        })
        .await?;
        for r in &found {
            self.add(r);
        }
        self.next_seq = next;
        Ok(())
    }

    fn add(&mut self, r: &Receipt) {
        for (c, tokens) in r.charges.iter().zip(r.attributed()) {
            let u = self.used.entry(c.license).or_default();
            *u = u.saturating_add(tokens);
        }
        self.receipts += 1;
    }

    pub fn used(&self, license: LicenseId) -> u64 {
        self.used.get(&license).copied().unwrap_or(0)
    }

    /// Receipts counted.
    pub fn receipts(&self) -> u64 {
        self.receipts
    }
}

#[derive(Debug, Default)]
struct State {
    usage: Usage,
    reserved: HashMap<LicenseId, u64>,
}

/// Allowance accounting for a running node: usage from the ledger plus reservations.
#[derive(Debug)]
pub struct Meter {
    state: Mutex<State>,
}

/// One license a request runs under.
#[derive(Debug, Clone, Serialize)]
pub struct Granted {
    pub role: Role,
    pub grant: Grant,
    /// For an expert pack, the experts it serves.
    pub experts: Vec<u32>,
}

/// Permission to run one request: every license it needs, with tokens reserved. Build
/// the receipt with [`Meter::record`] when the request completes; dropping this without
/// recording releases the reservations.
#[derive(Debug)]
pub struct Authorization {
    meter: Arc<Meter>,
    package: Hash,
    package_name: String,
    node: NodeId,
    uses: Uses,
    started_at: Timestamp,
    reserved: u64,
    granted: Vec<Granted>,
    released: bool,
}

impl Authorization {
    /// The model's license first, then each expert pack's.
    pub fn granted(&self) -> &[Granted] {
        &self.granted
    }

    pub fn package(&self) -> Hash {
        self.package
    }

    fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let mut st = self.meter.lock();
        for g in &self.granted {
            if let Some(r) = st.reserved.get_mut(&g.grant.license) {
                *r = r.saturating_sub(self.reserved);
                if *r == 0 {
                    st.reserved.remove(&g.grant.license);
                }
            }
        }
    }
}

impl Drop for Authorization {
    fn drop(&mut self) {
        self.release();
    }
}

/// What the engine reports about a finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `receipt::io_hash` of the request's input bytes.
    pub input_hash: Hash,
    /// `receipt::io_hash` of the output bytes.
    pub output_hash: Hash,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Tokens served per expert index (empty for a dense model).
    pub expert_tokens: Vec<u64>,
    pub runtime: Runtime,
}

/// Why a request was not authorised.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The model's license (or, with `pack`, an expert pack's) refused the request.
    #[error("{}{source}", pack.as_ref().map(|p| format!("expert pack `{p}`: ")).unwrap_or_default())]
    License {
        pack: Option<String>,
        #[source]
        source: LicenseError,
    },
}

impl AuthorizeError {
    pub fn license_error(&self) -> &LicenseError {
        match self {
            AuthorizeError::License { source, .. } => source,
        }
    }

    /// 403, like every license refusal.
    pub fn http_status(&self) -> u16 {
        self.license_error().http_status()
    }

    pub fn code(&self) -> &'static str {
        self.license_error().code()
    }
}

impl Meter {
    /// Opens the meter, counting every receipt already in the ledger.
    pub async fn open(store: &dyn Store) -> Result<Arc<Meter>, ScanError> {
        let usage = Usage::rebuild(store).await?;
        Ok(Arc::new(Meter {
            state: Mutex::new(State {
                usage,
                reserved: HashMap::new(),
            }),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a set of counters, valid whatever a panicking holder was doing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens a license has counted, plus those reserved by requests in flight.
    pub fn used(&self, license: LicenseId) -> u64 {
        let st = self.lock();
        st.usage
            .used(license)
            .saturating_add(st.reserved.get(&license).copied().unwrap_or(0))
    }

    /// Receipts counted so far.
    pub fn receipts(&self) -> u64 {
        self.lock().usage.receipts()
    }

    /// Checks that this node may run `model` now for `uses` and up to `tokens` tokens
    /// (prompt plus the most it may generate): a valid license for the model from its
    /// publisher, and one for each expert pack from that pack's owner. Reserves the
    /// tokens against each license on success.
    pub fn authorize(
        self: &Arc<Self>,
        model: &Verified,
        licenses: &Licenses,
        node: NodeId,
        now: Timestamp,
        uses: Uses,
        tokens: u64,
    ) -> Result<Authorization, AuthorizeError> {
        let request = Request {
            node,
            now,
            uses,
            tokens,
        };
        // Held across the license checks so that two requests cannot both see the same
        // remaining allowance.
        let mut st = self.lock();
        let used = |id: LicenseId| {
            st.usage
                .used(id)
                .saturating_add(st.reserved.get(&id).copied().unwrap_or(0))
        };
        let m = model.model();
        let subject = Subject {
            digest: m.digest(),
            owner: m.manifest().publisher,
            name: m.name(),
        };
        let mut granted = vec![Granted {
            role: Role::Model,
            grant: licenses
                .find(&subject, &request, &used)
                .map_err(|source| AuthorizeError::License { pack: None, source })?,
            experts: Vec::new(),
        }];
        for pack in model.packs() {
            let subject = Subject {
                digest: pack.digest(),
                owner: pack.manifest().publisher,
                name: pack.name(),
            };
            let grant = licenses.find(&subject, &request, &used).map_err(|source| {
                AuthorizeError::License {
                    pack: Some(pack.name().to_owned()),
                    source,
                }
            })?;
            let experts = pack
                .manifest()
                .experts
                .as_ref()
                .map(|x| x.local().into_iter().collect())
                .unwrap_or_default();
            granted.push(Granted {
                role: Role::Experts,
                grant,
                experts,
            });
        }
        for g in &granted {
            let r = st.reserved.entry(g.grant.license).or_default();
            *r = r.saturating_add(tokens);
        }
        drop(st);
        Ok(Authorization {
            meter: Arc::clone(self),
            package: m.digest(),
            package_name: m.name().to_owned(),
            node,
            uses,
            started_at: now,
            reserved: tokens,
            granted,
            released: false,
        })
    }

    /// Builds the receipt for an authorised request that completed, signs it with the
    /// node's key, appends it to the ledger and counts it. Returns once the receipt is
    /// durable.
    pub async fn record(
        &self,
        store: &dyn Store,
        node_key: &Signer,
        auth: Authorization,
        outcome: Outcome,
        clock: &dyn Clock,
        entropy: &dyn Entropy,
    ) -> Result<(SignedReceipt, Recorded), RecordError> {
        let id = ReceiptId::generate(clock, entropy);
        self.record_as(store, node_key, id, auth, outcome, clock)
            .await
    }

    /// [`Meter::record`] under an id chosen beforehand: a streamed response names its
    /// receipt in its headers, before the request has completed. The id must be fresh
    /// (from [`ReceiptId::generate`]).
    pub async fn record_as(
        &self,
        store: &dyn Store,
        node_key: &Signer,
        id: ReceiptId,
        mut auth: Authorization,
        outcome: Outcome,
        clock: &dyn Clock,
    ) -> Result<(SignedReceipt, Recorded), RecordError> {
        let receipt = Receipt {
            id,
            node: auth.node,
            package: auth.package,
            package_name: auth.package_name.clone(),
            uses: auth.uses,
            charges: auth
                .granted
                .iter()
                .map(|g| Charge {
                    role: g.role,
                    subject: g.grant.subject,
                    license: g.grant.license,
                    licensor: g.grant.licensor,
                    price_per_1000_tokens: g.grant.price_per_1000_tokens,
                    currency: g.grant.currency.clone(),
                    experts: g.experts.clone(),
                })
                .collect(),
            input_hash: outcome.input_hash,
            output_hash: outcome.output_hash,
            prompt_tokens: outcome.prompt_tokens,
            completion_tokens: outcome.completion_tokens,
            expert_tokens: outcome.expert_tokens,
            runtime: outcome.runtime,
            started_at: auth.started_at,
            finished_at: clock.now().max(auth.started_at),
        };
        let (signed, recorded) = receipt::record(store, node_key, receipt).await?;
        // Count it (and anything else appended meanwhile) before releasing the
        // reservation, so that the tokens are never counted by neither.
        self.catch_up(store).await?;
        auth.release();
        Ok((signed, recorded))
    }

    /// Counts receipts appended to the ledger since the last look.
    pub async fn catch_up(&self, store: &dyn Store) -> Result<(), RecordError> {
        loop {
            let from = self.lock().usage.next_seq;
            let mut fresh = Usage {
                next_seq: from,
                ..Usage::default()
            };
            fresh.catch_up(store).await.map_err(|e| match e {
                ScanError::Store(s) => RecordError::Store(s),
                ScanError::Receipt(r) => RecordError::Invalid(receipt::Invalid(r.to_string())),
            })?;
            let mut st = self.lock();
            // Another caller may have counted some of these meanwhile: apply the scan
            // only if the shared state still stands where it started; if it moved, but
            // not as far as this scan went, look again from where it stands.
            if st.usage.next_seq == from {
                for (id, n) in fresh.used {
                    let u = st.usage.used.entry(id).or_default();
                    *u = u.saturating_add(n);
                }
                st.usage.receipts += fresh.receipts;
                st.usage.next_seq = fresh.next_seq;
                return Ok(());
            }
            if st.usage.next_seq >= fresh.next_seq {
                return Ok(());
            }
        }
    }
}
