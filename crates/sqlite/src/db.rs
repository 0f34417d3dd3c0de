//! The database thread: the one place the `rusqlite::Connection` lives.
//!
//! SQLite connections are blocking and not shareable between threads, so the client owns its
//! connection on a dedicated OS thread and sends it closures over a channel; each closure runs
//! to completion before the next starts, which also serialises every engine step. Replies come
//! back on a oneshot channel, so async callers never block a runtime worker. Dropping the
//! [`Db`] closes the channel; the thread then finishes its queue and drops the connection.

use std::sync::mpsc;

use rusqlite::Connection;

use crate::error::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Prepared statements kept per connection. The engine uses about thirty metadata statements
/// plus five to seven per managed table (upsert, delete, live payload, …); rusqlite's default
/// of 16 made a pull over five tables re-prepare statements on nearly every row.
const STATEMENT_CACHE: usize = 256;

/// A handle to the database thread.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    jobs: mpsc::Sender<Job>,
}

impl Db {
    /// Moves `conn` onto a new thread.
    pub(crate) fn spawn(conn: Connection) -> Result<Db, StoreError> {
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("oversync-sqlite".to_owned())
            .spawn(move || {
                let mut conn = conn;
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|_| StoreError::DatabaseThreadGone)?;
        Ok(Db { jobs })
    }

    /// Runs `f` on the database thread and returns its result.
    pub(crate) async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| StoreError::DatabaseThreadGone)?;
        answer.await.map_err(|_| StoreError::DatabaseThreadGone)
    }
}
