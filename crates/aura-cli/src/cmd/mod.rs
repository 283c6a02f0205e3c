//! One module per command group.

pub(crate) mod agent;
pub(crate) mod apikey;
pub(crate) mod cell;
pub(crate) mod cell_node;
pub(crate) mod chat;
pub(crate) mod image;
pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod ledger;
pub(crate) mod license;
pub(crate) mod mission;
pub(crate) mod model;
pub(crate) mod pki;
pub(crate) mod policy;
pub(crate) mod reasoner;
pub(crate) mod receipts;
pub(crate) mod serve;
pub(crate) mod tui;
pub(crate) mod witness;
