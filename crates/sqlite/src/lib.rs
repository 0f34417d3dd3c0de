//! The oversync SQLite client (counterpart of the reference `oversqlite`).
//!
//! A host application keeps using its SQLite tables as usual; triggers installed by this crate
//! capture every write into a coalesced dirty set. [`Client::push_pending`] freezes that set
//! into an outbox, uploads it as one push session and replays the bundle the server actually
//! committed; [`Client::pull_to_stable`] applies complete bundles committed by other devices;
//! [`Client::rebuild`] replaces local state with a server snapshot. The local metadata
//! (`_sync_*` tables) is the reference client's, so databases stay interchangeable.
//!
//! Shape: one `rusqlite::Connection` owned by a dedicated database thread (`db`); a
//! sans-I/O engine whose steps each run in one `BEGIN IMMEDIATE` transaction (`engine`); a
//! [`transport::Transport`] trait with a reqwest implementation
//! ([`transport::http::HttpTransport`]); and the async [`Client`] that sequences them.
//!
//! Around the operations: [`Client::start`] runs background upload and download loops
//! ([`BackgroundSync`]; the download loop polls or follows the `/sync/watch` stream parsed by
//! [`watch`]), [`Client::subscribe_changes`] announces which tables a pull, rebuild or replay
//! changed, and [`Client::status`] reports pending counts, the checkpoint, the recovery
//! state and the last outcomes without waiting for a running operation.
//!
//! **Architecture Invariant:** the SQLite engine doesn't know HTTP: only `transport::http`
//! imports reqwest.
//!
//! # Quick start
//!
//! ```no_run
//! use std::sync::Arc;
//! use oversync_sqlite::{Client, Config, HttpOptions, HttpTransport, StaticToken, SyncTable};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // The app's own database and tables; every synced table has a TEXT (or UUID BLOB) key.
//! let conn = rusqlite::Connection::open("app.sqlite")?;
//! conn.execute_batch(
//!     "CREATE TABLE IF NOT EXISTS users (
//!          id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
//!          created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
//! )?;
//! let token = Arc::new(StaticToken("<bearer token from your auth>".to_owned()));
//! let transport = HttpTransport::new("http://127.0.0.1:8080", token, &HttpOptions::default())?;
//! let config = Config::new("business", vec![SyncTable::new("users", "id")]);
//! let client = Client::new(conn, transport, config).await?;
//! client.open().await?;
//! client.attach("alice").await?;
//! // Write with plain SQL through the client's connection; triggers capture the change.
//! client
//!     .with_connection(|c| {
//!         c.execute(
//!             "INSERT INTO users VALUES (?1, 'Ada', 'ada@example.com', ?2, ?2)",
//!             ["550e8400-e29b-41d4-a716-446655440000", "2026-03-24T18:42:11Z"],
//!         )
//!     })
//!     .await??;
//! client.sync().await?; // push what is pending, then pull what others wrote
//! # Ok(())
//! # }
//! ```

mod background;
mod catalog;
mod client;
pub mod config;
pub mod conflict;
mod db;
mod engine;
pub mod error;
pub mod payload;
mod retry;
pub mod schema;
mod sql;
pub mod transport;
mod triggers;
mod types;
pub mod watch;

pub use background::BackgroundSync;
pub use client::Client;
pub use config::{Config, ProgressCallback, RetryPolicy, SyncTable, WatchMode};
pub use conflict::{
    ClientWins, ConflictContext, DefaultResolver, LastWriterWins, MergeResult, Resolver, ServerRow,
    ServerWins,
};
pub use error::{
    AttachError, ConfigError, GateError, LocalError, NewError, ProtocolViolation, PullError,
    PushError, RequiredAction, SnapshotError, StartError, StatusError, StoreError, SyncError,
};
pub use transport::http::{HttpOptions, HttpTransport, StaticToken, TokenProvider};
pub use transport::{NetworkErrorKind, StatusBody, Transport, TransportError, WatchBody};
pub use triggers::TRANSITION_PENDING;
pub use types::*;
