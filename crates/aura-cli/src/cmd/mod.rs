//! One module per command group.

pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod ledger;
pub(crate) mod license;
pub(crate) mod model;
pub(crate) mod receipts;
