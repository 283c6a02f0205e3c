//! One module per command group.

pub(crate) mod agent;
pub(crate) mod apikey;
pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod ledger;
pub(crate) mod mission;
pub(crate) mod serve;
pub(crate) mod reasoner;
