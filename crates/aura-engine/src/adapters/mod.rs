//! Adapters: the engine's ports implemented over Aura's crates for policy, tools and
//! reasoners. Each converts between the crate's types and the kernel's recorded types,
//! and nothing else.

pub mod policy;
pub mod reasoner;
pub mod tools;
