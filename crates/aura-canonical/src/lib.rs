//! Holds one test, `tests/same_bytes.rs`: a receipt, a manifest, a license and mission
//! record bodies made by a build with serde_json's `preserve_order` and by one without
//! must be the same bytes, those checked in under `tests/expected/`.
//!
//! It is a crate of its own so that it can be built without `preserve_order`: in the
//! workspace build a dependency (cedar) turns the feature on for everything. Run both:
//! `cargo nextest run -p aura-canonical` and
//! `cargo nextest run -p aura-canonical --features preserve-order` (scripts/test.sh does).

#![forbid(unsafe_code)]
