//! The oversync wire protocol, as spoken by go-oversync at commit `1f1118f`.
//!
//! This crate is the single place where the protocol's bytes are decided: the request and
//! response types of every endpoint, the error-code table, Go-compatible canonical JSON (GCJ),
//! `bundle_hash`, sync keys and payload value codecs. Server, HTTP adapter and client all go
//! through it, so that a Go peer and a Rust peer agree byte for byte.
//!
//! It does no I/O and has no async runtime: everything here is a pure function of its input,
//! which is what lets the test vectors of the protocol chapters pin it completely.

pub mod codec;
pub mod error;
pub mod gcj;
pub mod hash;
pub mod json;
pub mod key;
pub mod op;
pub mod wire;
