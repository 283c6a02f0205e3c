//! What metering takes: the ledger the receipts go to, the node's key that signs them
//! and the allowance meter, rebuilt from the receipts already in the ledger. A leaf
//! module.

use std::sync::Arc;

use aura_core::NodeId;
use aura_core::keystore::Signer;
use aura_model::Meter;
use aura_store::Store;

/// What recording a receipt per request takes: the ledger, the node's key and the
/// allowance meter (opened from the receipts already in the ledger).
#[derive(Clone)]
pub struct Metering {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) signer: Arc<Signer>,
    pub(crate) meter: Arc<Meter>,
}

impl std::fmt::Debug for Metering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metering").finish_non_exhaustive()
    }
}

impl Metering {
    /// Opens the meter over `store`, counting every receipt already in the ledger.
    pub async fn open(store: Arc<dyn Store>, signer: Arc<Signer>) -> Result<Self, String> {
        let meter = Meter::open(&*store)
            .await
            .map_err(|e| format!("cannot read the usage receipts in the ledger: {e}"))?;
        Ok(Metering {
            store,
            signer,
            meter,
        })
    }

    /// The node whose licenses count and whose key signs the receipts.
    pub(crate) fn node(&self) -> NodeId {
        self.signer.public_key().node_id()
    }
}
