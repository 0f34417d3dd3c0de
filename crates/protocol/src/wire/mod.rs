//! The request and response bodies of every endpoint (01-wire.md §3–§9), declared once for
//! the server, the HTTP adapter and the client.
//!
//! Field order is Go struct order, because Go peers see the bytes: encode with
//! [`crate::json::to_wire_vec`], which writes fields in declaration order. Omission follows
//! Go's `omitempty` tags field by field (`skip_serializing_if`), so a value that is zero on an
//! *omit-if-zero* field disappears from the wire exactly as it does from the reference's.
//!
//! Request types decode like the reference decodes them (unknown fields ignored, `null`
//! members as absent, integers by Go's rules) when read with [`crate::json::decode_lenient`]
//! or [`crate::json::decode_strict_optional`]. Fixed words that the server must trim and
//! validate itself (op, source-replacement reason) stay `String` on the request side so that
//! the server can answer its own error code; on the response side they are enums, so that a
//! value outside the contract cannot be sent and is refused when received.
//!
//! Response types also deserialize (for our client). A member that the reference omits when
//! zero decodes as zero when absent; other members are required.

mod capabilities;
mod committed;
mod common;
mod connect;
mod pull;
mod push;
mod query;
mod snapshot;
mod status;
mod time;
mod watch;

pub use capabilities::*;
pub use committed::*;
pub use common::*;
pub use connect::*;
pub use pull::*;
pub use push::*;
pub use query::*;
pub use snapshot::*;
pub use status::*;
pub use time::*;
pub use watch::*;
