//! The convergence suite: several SQLite devices of two users against one example server over
//! real HTTP on real PostgreSQL, driven by a seeded random schedule, must end up holding
//! exactly their user's server rows without losing an acknowledged write.
//!
//! Why it exists: the scenario tests pin one behaviour each; this suite mixes them — offline
//! periods, concurrent edits of the same rows under different resolvers, server-originated
//! writes, retention pruning that forces rebuilds, and crashes between durable steps — the way
//! a fleet of devices does, and checks the end state by content (STYLE.md §11).
//!
//! **Schedule.** Each case runs `OVERSYNC_CONVERGENCE_OPS` (default 100) steps chosen by a
//! ChaCha [`TestRng`] seeded from the case seed: local writes on a device (online or not),
//! a sync of one device, a concurrent sync of every online device (pushes in parallel, then
//! pulls in parallel), a device going offline or back online, a restart (the `Client` and its
//! connection are dropped and the file reopened), a sync interrupted by a crash at the n-th
//! request (request never sent, or response lost) or inside a local push transaction, and
//! writes by the server through `exec_write` as writer `server:w`. The server keeps only
//! [`RETAINED_BUNDLES`] bundles per user, so a device that stays offline falls below the
//! retained floor and its next pull rebuilds from a snapshot. Five devices: `alice` has three
//! (server-wins, client-wins, last-writer-wins by `updated_at`), `bob` two (client-wins,
//! last-writer-wins). `OVERSYNC_CONVERGENCE_CASES` (default 3) cases run with fixed seeds;
//! `OVERSYNC_CONVERGENCE_SEED` replays one. Every case prints its seed first, so a failure's
//! output names the seed that replays it (the steps replay exactly; only the interleaving
//! inside a concurrent sync is up to the scheduler).
//!
//! **Valid writes.** Writes are generated from the writer's own view of the data and keep
//! every foreign key valid under any interleaving, so that no push may be refused (a
//! `push_commit_invalid` fails the suite): each row has an owner (the device or server writer
//! that created it, encoded in its id); only the owner inserts children under its rows,
//! deletes rows other rows can reference (users with their posts, categories and teams and
//! files with their cascades, team members that were never captain) or changes a foreign key
//! (a team's captain, the teams ↔ team_members cycle, inserted in either order in one
//! transaction); anyone updates non-key columns of any row and deletes leaf rows (posts, file
//! reviews, typed rows); `typed_rows` uses a small shared id pool so devices insert the same
//! key concurrently. The server writer deletes leaf rows only.
//!
//! **Resolutions against a local foreign key.** Because anyone updates any row, a
//! server-wins or last-writer-wins resolution regularly meets a row whose server state
//! contradicts a local foreign key: the owner deleted a team or category with its cascade
//! while another device updated it or a child, or a device's stale update meets a user its
//! owner deleted with its posts. The client used to wedge there (seeds 1592590338 and
//! 1592590364 with 300 operations); it now drops that row's intent and leaves business rows
//! consistent, and when the server's row references a row it deleted without a cascade it
//! also drops that DELETE and answers `ConflictRequiresRebuild` (see
//! `oversync-sqlite`'s `engine::conflict`).
//!
//! **Refusals the host handles.** A client-wins device whose stale UPDATE meets a row deleted
//! elsewhere gets `InvalidConflictResolution` (keep-local cannot resurrect a row, §5.3); the
//! test host then accepts the deletion by deleting the row locally (with the posts of a user
//! and the team a member captains). `PushConflictRetryExhausted` is retried by the next sync,
//! pulls refused for pending local changes wait for the next push, and a required rebuild or
//! attach is performed (a rebuild refused for pending local changes waits for the next push
//! too: the durable gate makes the next pull ask again). Any other error fails the case.
//!
//! **Acknowledged writes.** An *intent* is the content a device holds for one row (or its
//! absence) when a push starts, for every row in its dirty set or outbox (except an absent
//! row the device never had from the server: an insert deleted again is no write). The intent is
//! *acknowledged* when that push (`push_pending`) returns `Ok`, the row is then neither dirty
//! nor in the outbox, and the device's resolver made no decision for the row other than
//! keep-local during that push. Its *version* is the `bundle_seq` committed under the push's
//! `(source_id, source_bundle_id)` (a test trigger copies every `sync.bundle_log` row, because
//! a push interrupted after its commit is acknowledged by a later call, perhaps after
//! retention pruned the bundle); when the push committed nothing (every intent settled by
//! conflicts or coalesced away) it is the row's `_sync_row_state.row_version` (0 if none). A server write is acknowledged when `exec_write` returns; its intents are
//! the rows it names, read back from PostgreSQL, at the committed `bundle_seq`. At quiescence
//! every acknowledged row must hold, on the server, the content of its acknowledged intent of
//! the highest version: an acknowledged write may only be superseded by a later acknowledged
//! write of the same row (conflict resolutions that accept the server's row are, by this
//! definition, not acknowledgements).
//!
//! **Quiescence.** All devices go online and sync in turns until every device has nothing
//! pending and holds exactly its user's `business.*` rows (content of every table, compared
//! row by row), polled against a deadline. No device may ever hold a row of the other user.
//! On failure every device's checkpoint, dirty rows, outbox, recovery state and last
//! outcomes are printed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oversync_server::ExecWriteError;
use oversync_sqlite::{
    ClientWins, ConflictContext, LastWriterWins, MergeResult, PullError, PushError, RemoteOutcome,
    RequiredAction, Resolver, ServerRow, ServerWins,
};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};

use crate::client_e2e::{Crash, Cut, Device, Dump, PUSH_LOCAL_STEPS, Pages, dump_server};
use crate::support::TestServer;

/// The server's retention window: a device more than this many bundles behind rebuilds.
const RETAINED_BUNDLES: i64 = 6;

/// How long quiescence may take before the case fails.
const QUIESCENCE_DEADLINE: Duration = Duration::from_secs(120);

/// `(table, foreign-key column, BLOB ids)` of the eight tables, as the view reads them.
const VIEW_TABLES: &[(&str, Option<&str>, bool)] = &[
    ("users", None, false),
    ("posts", Some("author_id"), false),
    ("categories", Some("parent_id"), false),
    ("teams", Some("captain_member_id"), false),
    ("team_members", Some("team_id"), false),
    ("files", None, true),
    ("file_reviews", Some("file_id"), true),
    ("typed_rows", None, false),
];

/// Tables whose rows nothing references: anyone may delete them.
const LEAF_TABLES: &[&str] = &["posts", "file_reviews", "typed_rows"];

/// Owner tag of rows created by the server writer.
const SERVER_OWNER: u64 = 0x0f;
/// Owner tag of the shared `typed_rows` ids every writer may insert.
const SHARED_OWNER: u64 = 0xee;
/// Size of the shared `typed_rows` id pool per user.
const SHARED_IDS: u64 = 4;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_converge_to_the_servers_rows_without_losing_acknowledged_writes() {
    let ops = env_number("OVERSYNC_CONVERGENCE_OPS", 100) as usize;
    let seeds: Vec<u64> = match std::env::var("OVERSYNC_CONVERGENCE_SEED") {
        Ok(seed) => vec![seed.trim().parse().expect("OVERSYNC_CONVERGENCE_SEED")],
        Err(_) => (0..env_number("OVERSYNC_CONVERGENCE_CASES", 3))
            .map(|i| 0x5eed_0000 + i)
            .collect(),
    };
    let server = TestServer::start_with(|c| c.retained_bundles_per_user = RETAINED_BUNDLES).await;
    record_every_bundle(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let mut total = Stats::default();
    for seed in &seeds {
        println!(
            "convergence: seed {seed}, {ops} ops (replay with OVERSYNC_CONVERGENCE_SEED={seed})"
        );
        let started = tokio::time::Instant::now();
        let mut sim = Sim::new(&server, dir.path(), *seed).await;
        for step in 0..ops {
            sim.step(step).await;
        }
        sim.quiesce().await;
        sim.check_acknowledged().await;
        println!(
            "convergence: seed {seed} converged in {:?}: {:?}",
            started.elapsed(),
            sim.stats
        );
        total.add(&sim.stats);
        sim.shutdown();
    }
    println!("convergence: {} cases: {total:?}", seeds.len());
    if seeds.len() * ops >= 300 {
        // The default size must exercise what the suite is for; a schedule change that stops
        // reaching one of these shows up here rather than as a silently weaker test.
        assert!(total.conflicts > 0, "no conflict was resolved: {total:?}");
        assert!(total.snapshots > 0, "no pruned pull rebuilt: {total:?}");
        assert!(total.crashes > 0, "no crash was injected: {total:?}");
        assert!(total.server_writes > 0, "no server write: {total:?}");
    }
}

/// Test instrumentation: a copy of every `sync.bundle_log` row as it is inserted, so that the
/// `bundle_seq` of an acknowledged push is known even after retention pruned its bundle (a
/// push interrupted after its commit is acknowledged only by a later call, possibly after
/// pruning).
async fn record_every_bundle(server: &TestServer) {
    server
        .pool
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE TABLE public.convergence_bundles (
                 user_pk BIGINT NOT NULL, bundle_seq BIGINT NOT NULL,
                 source_id TEXT NOT NULL, source_bundle_id BIGINT NOT NULL);
             CREATE FUNCTION public.convergence_record_bundle() RETURNS trigger
                 LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.convergence_bundles
                     VALUES (NEW.user_pk, NEW.bundle_seq, NEW.source_id, NEW.source_bundle_id);
                 RETURN NEW;
             END $$;
             CREATE TRIGGER convergence_record_bundle AFTER INSERT ON sync.bundle_log
                 FOR EACH ROW EXECUTE FUNCTION public.convergence_record_bundle();",
        )
        .await
        .unwrap();
}

// --- the model -----------------------------------------------------------------------------

/// A row's identity across devices and the server: table and the rendered id cell of a dump.
type RowKey = (&'static str, String);

/// One acknowledged intent (see the module doc).
#[derive(Debug, Clone)]
struct Ack {
    version: i64,
    image: Option<String>,
    by: String,
    step: usize,
}

/// What a run reached, for the report and the coverage assertions.
#[derive(Debug, Default, Clone)]
struct Stats {
    writes: u64,
    server_writes: u64,
    syncs: u64,
    acked: u64,
    conflicts: u64,
    kept_local: u64,
    repairs: u64,
    retry_exhausted: u64,
    snapshots: u64,
    crashes: u64,
    restarts: u64,
    recoveries: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.writes += o.writes;
        self.server_writes += o.server_writes;
        self.syncs += o.syncs;
        self.acked += o.acked;
        self.conflicts += o.conflicts;
        self.kept_local += o.kept_local;
        self.repairs += o.repairs;
        self.retry_exhausted += o.retry_exhausted;
        self.snapshots += o.snapshots;
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.recoveries += o.recoveries;
    }
}

/// A resolver that records every decision of the resolver it wraps.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn Resolver>,
    /// `(table, id, kept local)` of each call.
    log: Arc<Mutex<Vec<(String, String, bool)>>>,
}

impl Resolver for Recording {
    fn resolve(&self, conflict: &ConflictContext) -> MergeResult {
        let result = self.inner.resolve(conflict);
        let id = conflict.key.get("id").cloned().unwrap_or_default();
        self.log.lock().unwrap().push((
            conflict.table.clone(),
            id,
            matches!(result, MergeResult::KeepLocal),
        ));
        result
    }
}

/// One simulated device.
struct SimDevice {
    device: Device,
    user: usize,
    owner: u64,
    resolver: &'static str,
    decisions: Arc<Mutex<Vec<(String, String, bool)>>>,
    online: bool,
    last_error: Option<String>,
}

// --- ids and SQL ---------------------------------------------------------------------------

/// The id of row `counter` of `owner` in `user`'s scope (user and owner are visible in the
/// id, so a row of the wrong scope is recognisable).
fn row_id(user: usize, owner: u64, counter: u64) -> u64 {
    ((user as u64 + 1) << 40) | (owner << 32) | counter
}

fn owner_of(n: u64) -> u64 {
    (n >> 32) & 0xff
}

fn user_of(n: u64) -> usize {
    ((n >> 40) as usize).wrapping_sub(1)
}

fn uuid_text(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The id cell of a dump row (dumps render ids as quoted UUID text).
fn id_cell(n: u64) -> String {
    format!("{:?}", uuid_text(n))
}

fn parse_tail(tail: &str) -> u64 {
    u64::from_str_radix(tail, 16).unwrap_or_else(|_| panic!("bad id tail {tail:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Pg,
}

/// SQL literals for one writer.
#[derive(Debug, Clone)]
struct Sql {
    dialect: Dialect,
    scope: String,
}

impl Sql {
    fn blob_table(table: &str) -> bool {
        matches!(table, "files" | "file_reviews")
    }

    fn id(&self, table: &str, n: u64) -> String {
        match self.dialect {
            Dialect::Sqlite if Self::blob_table(table) => {
                format!("X'00000000000040008000{n:012x}'")
            }
            _ => format!("'{}'", uuid_text(n)),
        }
    }

    fn opt_id(&self, table: &str, n: Option<u64>) -> String {
        n.map_or_else(|| "NULL".to_owned(), |n| self.id(table, n))
    }

    fn bytes(&self, b: &[u8]) -> String {
        let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
        match self.dialect {
            Dialect::Sqlite => format!("X'{hex}'"),
            Dialect::Pg => format!("'\\x{hex}'::bytea"),
        }
    }

    /// ` AND _sync_scope_id = …` on the server, nothing locally.
    fn scoped(&self) -> String {
        match self.dialect {
            Dialect::Sqlite => String::new(),
            Dialect::Pg => format!(" AND _sync_scope_id = '{}'", self.scope),
        }
    }

    /// Statements as one transaction (the server writer already runs in one).
    fn tx(&self, statements: &[String]) -> String {
        let body = statements.join(";\n");
        match self.dialect {
            Dialect::Sqlite => format!("BEGIN;\n{body};\nCOMMIT;"),
            Dialect::Pg => format!("{body};"),
        }
    }
}

/// A timestamp in the form the server renders `timestamptz`, `t` seconds after a fixed
/// instant (a logical clock, so that last-writer-wins has a well-defined later writer).
fn timestamp(t: u64) -> String {
    format!(
        "2026-03-{:02}T{:02}:{:02}:{:02}+00:00",
        1 + t / 86_400,
        (t / 3600) % 24,
        (t / 60) % 60,
        t % 60
    )
}

/// A writer's view: per table, `(id, foreign key)` of each row it sees.
type View = BTreeMap<&'static str, Vec<(u64, Option<u64>)>>;

fn view_sql(table: &str, fk: Option<&str>, blob: bool, dialect: Dialect) -> String {
    let tail = |c: &str| match (dialect, blob) {
        (Dialect::Pg, _) => format!("right({c}::text, 12)"),
        (Dialect::Sqlite, false) => format!("substr({c}, 25)"),
        (Dialect::Sqlite, true) => format!("substr(lower(hex({c})), 21)"),
    };
    let fk = fk.map_or_else(|| "NULL".to_owned(), tail);
    match dialect {
        Dialect::Sqlite => format!("SELECT {}, {fk} FROM {table} ORDER BY 1", tail("id")),
        Dialect::Pg => format!(
            "SELECT {}, {fk} FROM business.{table} WHERE _sync_scope_id = $1 ORDER BY 1",
            tail("id")
        ),
    }
}

fn parse_view_row(id: &str, fk: Option<&str>) -> (u64, Option<u64>) {
    (parse_tail(id), fk.map(parse_tail))
}

/// One generated write.
struct Write {
    label: String,
    sql: String,
    /// Rows it names (for the server writer, whose intents are read back by key).
    touched: Vec<(&'static str, u64)>,
}

/// State of the write generator shared by all writers of a case.
struct Gen {
    rng: TestRng,
    counter: u64,
    clock: u64,
    /// Team members that were ever made captain: never deleted on their own.
    captained: HashSet<u64>,
}

const WORDS: &[&str] = &[
    "amber", "birch", "cedar", "dune", "ember", "fjord", "grove", "heath", "iris", "juniper",
];

impl Gen {
    fn word(&mut self) -> String {
        let w = WORDS[self.rng.random_range(0..WORDS.len())];
        format!("{w}{}", self.rng.random_range(0..100u32))
    }

    fn new_id(&mut self, user: usize, owner: u64) -> u64 {
        self.counter += 1;
        row_id(user, owner, self.counter)
    }

    fn tick(&mut self) -> String {
        self.clock += 1;
        timestamp(self.clock)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.rng.random_range(0..items.len())])
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = self.rng.random_range(0..6usize);
        (0..len).map(|_| self.rng.random_range(0..=255u8)).collect()
    }

    fn own(view: &View, table: &str, owner: u64) -> Vec<u64> {
        view[table]
            .iter()
            .filter(|(id, _)| owner_of(*id) == owner)
            .map(|(id, _)| *id)
            .collect()
    }

    fn typed_values(&mut self, sql: &Sql) -> [String; 7] {
        let name = self.word();
        let note = if self.rng.random_bool(0.5) {
            format!("'{}'", self.word())
        } else {
            "NULL".to_owned()
        };
        let count = if self.rng.random_bool(0.7) {
            self.rng.random_range(-1000..1000i64).to_string()
        } else {
            "NULL".to_owned()
        };
        let flag = self.rng.random_range(0..2u8).to_string();
        let rating = if self.rng.random_bool(0.7) {
            format!("{:?}", f64::from(self.rng.random_range(-40..40i32)) * 0.25)
        } else {
            "NULL".to_owned()
        };
        let data = if self.rng.random_bool(0.7) {
            let b = self.bytes();
            sql.bytes(&b)
        } else {
            "NULL".to_owned()
        };
        let created = if self.rng.random_bool(0.7) {
            format!("'{}'", self.tick())
        } else {
            "NULL".to_owned()
        };
        [
            format!("'{name}'"),
            note,
            count,
            flag,
            rating,
            data,
            created,
        ]
    }

    /// A write by `owner` of `user` valid under the rules of the module doc, seen from `view`.
    fn write(&mut self, view: &View, user: usize, owner: u64, sql: &Sql) -> Write {
        let server = sql.dialect == Dialect::Pg;
        let s = sql.scoped();
        loop {
            let kind = self.rng.random_range(0..100u32);
            let w = match kind {
                0..=7 => {
                    let id = self.new_id(user, owner);
                    let (name, ts) = (self.word(), self.tick());
                    Some(Write {
                        label: format!("insert user {id:x}"),
                        sql: format!(
                            "INSERT INTO users (id, name, email, created_at, updated_at) VALUES ({}, '{name}', '{name}@example.com', '{ts}', '{ts}');",
                            sql.id("users", id)
                        ),
                        touched: vec![("users", id)],
                    })
                }
                8..=15 => {
                    let id = self.new_id(user, owner);
                    let users = Self::own(view, "users", owner);
                    let author = if self.rng.random_bool(0.7) {
                        self.pick(&users)
                    } else {
                        None
                    };
                    let (title, ts) = (self.word(), self.tick());
                    Some(Write {
                        label: format!("insert post {id:x} by {author:x?}"),
                        sql: format!(
                            "INSERT INTO posts (id, title, content, author_id, created_at, updated_at) VALUES ({}, '{title}', 'text of {title}', {}, '{ts}', '{ts}');",
                            sql.id("posts", id),
                            sql.opt_id("users", author)
                        ),
                        touched: vec![("posts", id)],
                    })
                }
                16..=23 => {
                    let id = self.new_id(user, owner);
                    let own = Self::own(view, "categories", owner);
                    let parent = if self.rng.random_bool(0.7) {
                        self.pick(&own)
                    } else {
                        None
                    };
                    let name = self.word();
                    Some(Write {
                        label: format!("insert category {id:x} under {parent:x?}"),
                        sql: format!(
                            "INSERT INTO categories (id, name, parent_id) VALUES ({}, '{name}', {});",
                            sql.id("categories", id),
                            sql.opt_id("categories", parent)
                        ),
                        touched: vec![("categories", id)],
                    })
                }
                24..=29 => {
                    // The cycle: a team and its first member in one transaction, the member
                    // possibly first and possibly made captain at once.
                    let team = self.new_id(user, owner);
                    let member = self.new_id(user, owner);
                    let captain = self.rng.random_bool(0.6);
                    if captain {
                        self.captained.insert(member);
                    }
                    let (tn, mn) = (self.word(), self.word());
                    let t = format!(
                        "INSERT INTO teams (id, name, captain_member_id) VALUES ({}, '{tn}', {})",
                        sql.id("teams", team),
                        if captain {
                            sql.id("team_members", member)
                        } else {
                            "NULL".to_owned()
                        }
                    );
                    let m = format!(
                        "INSERT INTO team_members (id, name, team_id) VALUES ({}, '{mn}', {})",
                        sql.id("team_members", member),
                        sql.id("teams", team)
                    );
                    let member_first = self.rng.random_bool(0.5);
                    Some(Write {
                        label: format!(
                            "insert team {team:x} with member {member:x} (captain {captain}, member first {member_first})"
                        ),
                        sql: sql.tx(&if member_first { [m, t] } else { [t, m] }),
                        touched: vec![("teams", team), ("team_members", member)],
                    })
                }
                30..=33 => {
                    let teams = Self::own(view, "teams", owner);
                    self.pick(&teams).map(|team| {
                        let id = self.new_id(user, owner);
                        let name = self.word();
                        Write {
                            label: format!("add member {id:x} to team {team:x}"),
                            sql: format!(
                                "INSERT INTO team_members (id, name, team_id) VALUES ({}, '{name}', {});",
                                sql.id("team_members", id),
                                sql.id("teams", team)
                            ),
                            touched: vec![("team_members", id)],
                        }
                    })
                }
                34..=37 => {
                    let teams = Self::own(view, "teams", owner);
                    self.pick(&teams).and_then(|team| {
                        let members: Vec<u64> = view["team_members"]
                            .iter()
                            .filter(|(_, t)| *t == Some(team))
                            .map(|(id, _)| *id)
                            .collect();
                        let member = self.pick(&members)?;
                        let captain = self.rng.random_bool(0.8).then_some(member);
                        if let Some(m) = captain {
                            self.captained.insert(m);
                        }
                        Some(Write {
                            label: format!("team {team:x} captain {captain:x?}"),
                            sql: format!(
                                "UPDATE teams SET captain_member_id = {} WHERE id = {}{s};",
                                sql.opt_id("team_members", captain),
                                sql.id("teams", team)
                            ),
                            touched: vec![("teams", team)],
                        })
                    })
                }
                38..=43 => {
                    let file = self.new_id(user, owner);
                    let (name, data) = (self.word(), self.bytes());
                    let mut statements = vec![format!(
                        "INSERT INTO files (id, name, data) VALUES ({}, '{name}', {})",
                        sql.id("files", file),
                        sql.bytes(&data)
                    )];
                    let mut touched = vec![("files", file)];
                    for _ in 0..self.rng.random_range(0..3u32) {
                        let review = self.new_id(user, owner);
                        let text = self.word();
                        statements.push(format!(
                            "INSERT INTO file_reviews (id, review, file_id) VALUES ({}, '{text}', {})",
                            sql.id("file_reviews", review),
                            sql.id("files", file)
                        ));
                        touched.push(("file_reviews", review));
                    }
                    Some(Write {
                        label: format!("insert file {file:x} with {} reviews", touched.len() - 1),
                        sql: sql.tx(&statements),
                        touched,
                    })
                }
                44..=47 => {
                    let files = Self::own(view, "files", owner);
                    self.pick(&files).map(|file| {
                        let id = self.new_id(user, owner);
                        let text = self.word();
                        Write {
                            label: format!("add review {id:x} to file {file:x}"),
                            sql: format!(
                                "INSERT INTO file_reviews (id, review, file_id) VALUES ({}, '{text}', {});",
                                sql.id("file_reviews", id),
                                sql.id("files", file)
                            ),
                            touched: vec![("file_reviews", id)],
                        }
                    })
                }
                48..=57 => {
                    // A shared id: concurrent inserts of the same key by several writers.
                    let id = row_id(user, SHARED_OWNER, self.rng.random_range(0..SHARED_IDS));
                    let [name, note, count, flag, rating, data, created] = self.typed_values(sql);
                    let exists = view["typed_rows"].iter().any(|(i, _)| *i == id);
                    let statement = if exists {
                        format!(
                            "UPDATE typed_rows SET name = {name}, note = {note}, count_value = {count}, enabled_flag = {flag}, rating = {rating}, data = {data}, created_at = {created} WHERE id = {}{s};",
                            sql.id("typed_rows", id)
                        )
                    } else {
                        format!(
                            "INSERT INTO typed_rows (id, name, note, count_value, enabled_flag, rating, data, created_at) VALUES ({}, {name}, {note}, {count}, {flag}, {rating}, {data}, {created});",
                            sql.id("typed_rows", id)
                        )
                    };
                    Some(Write {
                        label: format!(
                            "{} typed row {id:x}",
                            if exists { "update" } else { "insert" }
                        ),
                        sql: statement,
                        touched: vec![("typed_rows", id)],
                    })
                }
                58..=79 => self.update_any(view, owner, sql),
                _ => self.delete(view, owner, sql, !server),
            };
            if let Some(w) = w {
                return w;
            }
        }
    }

    /// An update of non-key columns of any visible row, whoever owns it.
    fn update_any(&mut self, view: &View, _owner: u64, sql: &Sql) -> Option<Write> {
        let candidates: Vec<(&'static str, u64)> = view
            .iter()
            .filter(|(t, _)| **t != "typed_rows")
            .flat_map(|(t, rows)| rows.iter().map(|(id, _)| (*t, *id)))
            .collect();
        let (table, id) = self.pick(&candidates)?;
        let w = self.word();
        let set = match table {
            "users" => format!("name = '{w}', updated_at = '{}'", self.tick()),
            "posts" => format!(
                "title = '{w}', content = 'edited {w}', updated_at = '{}'",
                self.tick()
            ),
            "files" => {
                let data = self.bytes();
                format!("name = '{w}', data = {}", sql.bytes(&data))
            }
            "file_reviews" => format!("review = '{w}'"),
            _ => format!("name = '{w}'"),
        };
        Some(Write {
            label: format!("update {table} {id:x}"),
            sql: format!(
                "UPDATE {table} SET {set} WHERE id = {}{};",
                sql.id(table, id),
                sql.scoped()
            ),
            touched: vec![(table, id)],
        })
    }

    /// A delete: any leaf row, or (when `parents`) one of the owner's own referable rows.
    fn delete(&mut self, view: &View, owner: u64, sql: &Sql, parents: bool) -> Option<Write> {
        let s = sql.scoped();
        let mut candidates: Vec<(&'static str, u64)> = Vec::new();
        for table in LEAF_TABLES {
            candidates.extend(view[table].iter().map(|(id, _)| (*table, *id)));
        }
        if parents {
            for table in ["users", "categories", "teams", "files"] {
                candidates.extend(
                    Self::own(view, table, owner)
                        .into_iter()
                        .map(|id| (table, id)),
                );
            }
            candidates.extend(
                Self::own(view, "team_members", owner)
                    .into_iter()
                    .filter(|m| !self.captained.contains(m))
                    .map(|id| ("team_members", id)),
            );
        }
        let (table, id) = self.pick(&candidates)?;
        let statement = if table == "users" {
            // Posts reference users without a cascade: the owner deletes its posts of the
            // user with it (only the owner writes posts by its users).
            sql.tx(&[
                format!(
                    "DELETE FROM posts WHERE author_id = {}{s}",
                    sql.id("users", id)
                ),
                format!("DELETE FROM users WHERE id = {}{s}", sql.id("users", id)),
            ])
        } else {
            format!("DELETE FROM {table} WHERE id = {}{s};", sql.id(table, id))
        };
        Some(Write {
            label: format!("delete {table} {id:x}"),
            sql: statement,
            touched: vec![(table, id)],
        })
    }
}

// --- the simulation ------------------------------------------------------------------------

/// Polls every future to completion concurrently (the devices are borrowed, so they cannot
/// be spawned).
async fn join_all<'a, T>(futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>) -> Vec<T> {
    let mut futures: Vec<Option<Pin<Box<dyn Future<Output = T> + Send + 'a>>>> =
        futures.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in futures.iter_mut().zip(results.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(Option::unwrap).collect()
}

/// Dump rows by key.
fn index(dump: &Dump) -> HashMap<RowKey, String> {
    let mut out = HashMap::new();
    for (table, rows) in dump {
        for row in rows {
            let id = row.split(" | ").next().unwrap().to_owned();
            out.insert((*table, id), row.clone());
        }
    }
    out
}

/// A local `key_json` (`{"id": "<uuid text or 32 hex digits>"}`) as a dump id cell.
fn key_cell(key_json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(key_json).unwrap();
    let id = value["id"].as_str().unwrap_or_else(|| panic!("{key_json}"));
    let text = if id.len() == 32 && !id.contains('-') {
        uuid::Uuid::parse_str(id).unwrap().hyphenated().to_string()
    } else {
        id.to_lowercase()
    };
    format!("{text:?}")
}

fn static_table(name: &str) -> &'static str {
    VIEW_TABLES
        .iter()
        .find(|(t, _, _)| *t == name)
        .unwrap_or_else(|| panic!("unknown table {name}"))
        .0
}

/// What a push left to do.
enum PushEnd {
    /// The push ran (committed or nothing to do); pull next.
    Pushed,
    /// Local changes remain queued (conflicts), a refusal was handled, or a crash happened:
    /// no pull this time.
    Stopped,
}

struct Sim<'s> {
    server: &'s TestServer,
    seed: u64,
    users: [String; 2],
    devices: Vec<SimDevice>,
    schedule: Gen,
    acks: BTreeMap<(usize, RowKey), Vec<Ack>>,
    stats: Stats,
    log: Vec<String>,
    step: usize,
    /// Whether a push or pull changed something (or failed) since it was last reset.
    progressed: bool,
}

impl<'s> Sim<'s> {
    async fn new(server: &'s TestServer, dir: &std::path::Path, seed: u64) -> Sim<'s> {
        let users = [format!("alice-{seed}"), format!("bob-{seed}")];
        let mut schedule = Gen {
            rng: TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed)),
            counter: 0,
            clock: 0,
            captained: HashSet::new(),
        };
        let plan: [(usize, &'static str); 5] = [
            (0, "server-wins"),
            (0, "client-wins"),
            (0, "last-writer-wins"),
            (1, "client-wins"),
            (1, "last-writer-wins"),
        ];
        let mut devices = Vec::new();
        for (i, (user, resolver)) in plan.into_iter().enumerate() {
            let inner: Arc<dyn Resolver> = match resolver {
                "server-wins" => Arc::new(ServerWins),
                "client-wins" => Arc::new(ClientWins),
                _ => Arc::new(LastWriterWins::default()),
            };
            let decisions = Arc::default();
            let small = schedule.rng.random_bool(0.5);
            let pages = Pages {
                upload: if small { 3 } else { 1000 },
                download: if small { 2 } else { 1000 },
                snapshot: if small { 4 } else { 1000 },
            };
            let device = Device::with_resolver(
                server,
                dir,
                &format!("s{seed}-d{i}"),
                &users[user],
                pages,
                Arc::new(Recording {
                    inner,
                    log: Arc::clone(&decisions),
                }),
            )
            .await;
            device.attach().await;
            devices.push(SimDevice {
                device,
                user,
                owner: i as u64 + 1,
                resolver,
                decisions,
                online: true,
                last_error: None,
            });
        }
        Sim {
            server,
            seed,
            users,
            devices,
            schedule,
            acks: BTreeMap::new(),
            stats: Stats::default(),
            log: Vec::new(),
            step: 0,
            progressed: false,
        }
    }

    #[allow(
        clippy::needless_pass_by_value,
        reason = "every caller builds the line with format!"
    )]
    fn note(&mut self, line: String) {
        let at = if self.step == usize::MAX {
            "quiescence".to_owned()
        } else {
            self.step.to_string()
        };
        self.log.push(format!("[{at}] {line}"));
    }

    /// The failure report of the case: the seed, the recent schedule and every device's
    /// state (callers panic with it).
    async fn report(&self, message: &str) -> String {
        let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("convergence-seed-{}.log", self.seed));
        std::fs::write(&log, self.log.join("\n")).unwrap();
        let mut report = format!(
            "convergence seed {} failed at step {}: {message}\nreplay: OVERSYNC_CONVERGENCE_SEED={}\nwhole schedule: {}\nlast steps:\n",
            self.seed,
            self.step,
            self.seed,
            log.display()
        );
        for line in self.log.iter().rev().take(40).rev() {
            report.push_str(&format!("  {line}\n"));
        }
        for i in 0..self.devices.len() {
            report.push_str(&format!("  {}\n", self.diagnostics(i).await));
        }
        report
    }

    async fn diagnostics(&self, i: usize) -> String {
        let d = &self.devices[i];
        let Some(client) = d.device.client_if_running() else {
            return format!("{}: not running", d.device.name);
        };
        let status = client.status().await;
        let (recovery, last_push, last_pull) = match &status {
            Ok(s) => (
                format!("{:?}", s.recovery),
                format!("{:?}", s.last_push.as_ref().map(|o| &o.result)),
                format!("{:?}", s.last_pull.as_ref().map(|o| &o.result)),
            ),
            Err(e) => (format!("status failed: {e}"), String::new(), String::new()),
        };
        format!(
            "{} ({}, {}, {}): {}; recovery={recovery}; last push={last_push}; last pull={last_pull}; last error={:?}",
            d.device.name,
            self.users[d.user],
            d.resolver,
            if d.online { "online" } else { "offline" },
            d.device.diagnostics().await,
            d.last_error
        )
    }

    async fn step(&mut self, step: usize) {
        self.step = step;
        let n = self.devices.len();
        let i = self.schedule.rng.random_range(0..n);
        match self.schedule.rng.random_range(0..100u32) {
            0..=44 => self.local_write(i).await,
            45..=59 => {
                if self.devices[i].online {
                    self.sync(&[i], None).await;
                }
            }
            60..=66 => {
                let online: Vec<usize> = (0..n).filter(|d| self.devices[*d].online).collect();
                self.sync(&online, None).await;
            }
            67..=74 => {
                let online = !self.devices[i].online;
                self.devices[i].online = online;
                let name = self.devices[i].device.name.clone();
                self.note(format!(
                    "{name} goes {}",
                    if online { "online" } else { "offline" }
                ));
            }
            75..=79 => self.restart(i).await,
            80..=87 => {
                if self.devices[i].online {
                    let crash = if self.schedule.rng.random_bool(0.7) {
                        let cut = if self.schedule.rng.random_bool(0.5) {
                            Cut::BeforeSend
                        } else {
                            Cut::ResponseLost
                        };
                        Crash::Request(self.schedule.rng.random_range(1..=8), cut)
                    } else {
                        let (name, on) = PUSH_LOCAL_STEPS
                            [self.schedule.rng.random_range(0..PUSH_LOCAL_STEPS.len())];
                        Crash::Local(name, on)
                    };
                    self.sync(&[i], Some(crash)).await;
                }
            }
            _ => {
                let user = self.schedule.rng.random_range(0..2);
                self.server_write(user).await;
            }
        }
    }

    async fn view(&self, i: usize) -> View {
        let client = self.devices[i].device.client();
        client
            .with_connection(|c| {
                let mut view = View::new();
                for (table, fk, blob) in VIEW_TABLES {
                    let mut stmt = c.prepare(&view_sql(table, *fk, *blob, Dialect::Sqlite))?;
                    let rows = stmt
                        .query_map([], |r| {
                            Ok(parse_view_row(
                                &r.get::<_, String>(0)?,
                                r.get::<_, Option<String>>(1)?.as_deref(),
                            ))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    view.insert(*table, rows);
                }
                Ok::<_, rusqlite::Error>(view)
            })
            .await
            .unwrap()
            .unwrap()
    }

    async fn server_view(&self, user: usize) -> View {
        let pg = self.server.pool.get().await.unwrap();
        let mut view = View::new();
        for (table, fk, blob) in VIEW_TABLES {
            let rows = pg
                .query(
                    &view_sql(table, *fk, *blob, Dialect::Pg),
                    &[&self.users[user]],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| parse_view_row(r.get(0), r.get(1)))
                .collect();
            view.insert(*table, rows);
        }
        view
    }

    async fn local_write(&mut self, i: usize) {
        let view = self.view(i).await;
        let (user, owner) = (self.devices[i].user, self.devices[i].owner);
        let sql = Sql {
            dialect: Dialect::Sqlite,
            scope: String::new(),
        };
        let write = self.schedule.write(&view, user, owner, &sql);
        let name = self.devices[i].device.name.clone();
        self.note(format!("{name}: {}", write.label));
        self.stats.writes += 1;
        let statement = write.sql.clone();
        let result = self.devices[i]
            .device
            .client()
            .with_connection(move |c| {
                let r = c.execute_batch(&statement);
                if r.is_err() && !c.is_autocommit() {
                    c.execute_batch("ROLLBACK").unwrap();
                }
                r
            })
            .await
            .unwrap();
        if let Err(e) = result {
            panic!(
                "{}",
                self.report(&format!("local write {:?} failed: {e}", write.sql))
                    .await
            );
        }
    }

    async fn server_write(&mut self, user: usize) {
        let view = self.server_view(user).await;
        let sql = Sql {
            dialect: Dialect::Pg,
            scope: self.users[user].clone(),
        };
        let write = self.schedule.write(&view, user, SERVER_OWNER, &sql);
        self.note(format!("server:w in {}: {}", self.users[user], write.label));
        // The generator names tables unqualified, as on the devices.
        let statement = format!("SET LOCAL search_path TO business, public; {}", write.sql);
        let outcome = self
            .server
            .service
            .exec_write(&self.users[user], "server:w", move |tx| {
                Box::pin(async move { tx.batch_execute(&statement).await })
            })
            .await;
        let bundle_seq = match outcome {
            Ok(outcome) => outcome.bundle.bundle_seq,
            Err(ExecWriteError::NoCapturedChanges { .. }) => return,
            Err(e) => {
                panic!(
                    "{}",
                    self.report(&format!("exec_write {:?}: {e:?}", write.sql))
                        .await
                );
            }
        };
        self.stats.server_writes += 1;
        let now = index(&dump_server(self.server, &self.users[user]).await);
        for (table, id) in write.touched {
            let key = (table, id_cell(id));
            let image = now.get(&key).cloned();
            self.acks.entry((user, key)).or_default().push(Ack {
                version: bundle_seq,
                image,
                by: "server:w".to_owned(),
                step: self.step,
            });
            self.stats.acked += 1;
        }
    }

    async fn restart(&mut self, i: usize) {
        let name = self.devices[i].device.name.clone();
        self.note(format!("{name}: restart"));
        self.stats.restarts += 1;
        self.devices[i].device.restart().await;
    }

    /// Keys of the dirty set and the outbox of device `i`.
    async fn pending_keys(&self, i: usize) -> BTreeSet<RowKey> {
        let rows: Vec<(String, String)> = self.devices[i]
            .device
            .client()
            .with_connection(|c| {
                let mut stmt = c.prepare(
                    "SELECT table_name, key_json FROM _sync_dirty_rows
                     UNION SELECT table_name, key_json FROM _sync_outbox_rows",
                )?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .unwrap()
            .unwrap();
        rows.into_iter()
            .map(|(t, k)| (static_table(&t), key_cell(&k)))
            .collect()
    }

    /// The `(source_id, source_bundle_id)` the next push of device `i` commits under: the
    /// frozen outbox's, else the current source's next one.
    async fn push_tuple(&self, i: usize) -> (String, i64) {
        self.devices[i]
            .device
            .client()
            .with_connection(|c| {
                c.query_row(
                    "SELECT CASE WHEN o.state <> 'none' THEN o.source_id ELSE a.current_source_id END,
                            CASE WHEN o.state <> 'none' THEN o.source_bundle_id
                                 ELSE (SELECT next_source_bundle_id FROM _sync_source_state
                                       WHERE source_id = a.current_source_id) END
                     FROM _sync_outbox_bundle o, _sync_attachment_state a",
                    [],
                    |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
                )
            })
            .await
            .unwrap()
            .unwrap()
    }

    /// The `bundle_seq` committed for `tuple` in `user`'s scope, if any.
    async fn committed_seq(&self, user: usize, tuple: &(String, i64)) -> Option<i64> {
        self.server
            .pool
            .get()
            .await
            .unwrap()
            .query_opt(
                "SELECT b.bundle_seq FROM public.convergence_bundles b
                 JOIN sync.user_state us ON us.user_pk = b.user_pk
                 WHERE us.user_id = $1 AND b.source_id = $2 AND b.source_bundle_id = $3",
                &[&self.users[user], &tuple.0, &tuple.1],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }

    /// `_sync_row_state.row_version` of every row of device `i`, by key.
    async fn row_versions(&self, i: usize) -> HashMap<RowKey, i64> {
        let rows: Vec<(String, String, i64)> = self.devices[i]
            .device
            .client()
            .with_connection(|c| {
                let mut stmt =
                    c.prepare("SELECT table_name, key_json, row_version FROM _sync_row_state")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .unwrap()
            .unwrap();
        rows.into_iter()
            .map(|(t, k, v)| ((static_table(&t), key_cell(&k)), v))
            .collect()
    }

    /// One sync round of `devices` (pushes concurrently, then pulls concurrently), with
    /// `crash` armed on the single device when given. Refusals are handled as the module doc
    /// says; anything else fails the case.
    async fn sync(&mut self, devices: &[usize], crash: Option<Crash>) {
        if devices.is_empty() {
            return;
        }
        let names: Vec<String> = devices
            .iter()
            .map(|i| self.devices[*i].device.name.clone())
            .collect();
        self.note(format!("sync {names:?} crash {crash:?}"));
        let mut before = Vec::new();
        for &i in devices {
            self.devices[i].decisions.lock().unwrap().clear();
            let keys = self.pending_keys(i).await;
            let images = index(&self.devices[i].device.dump().await);
            let tuple = self.push_tuple(i).await;
            // An insert deleted again before any push is no write at all (dropped at freeze).
            let synced = self.row_versions(i).await;
            let keys = keys
                .into_iter()
                .filter(|k| images.contains_key(k) || synced.contains_key(k))
                .collect::<BTreeSet<_>>();
            before.push((keys, images, tuple));
        }
        if let Some(crash) = crash {
            self.devices[devices[0]].device.arm(crash).await;
        }
        let pushes = join_all(
            devices
                .iter()
                .map(|&i| {
                    let client = self.devices[i].device.client();
                    Box::pin(client.push_pending()) as Pin<Box<dyn Future<Output = _> + Send + '_>>
                })
                .collect(),
        )
        .await;
        let mut pull = Vec::new();
        for ((&i, result), (keys, images, tuple)) in devices.iter().zip(pushes).zip(before) {
            self.stats.syncs += 1;
            match self
                .after_push(i, crash, result, keys, &images, &tuple)
                .await
            {
                PushEnd::Pushed => pull.push(i),
                PushEnd::Stopped => {}
            }
        }
        let pulls = join_all(
            pull.iter()
                .map(|&i| {
                    let client = self.devices[i].device.client();
                    Box::pin(client.pull_to_stable())
                        as Pin<Box<dyn Future<Output = _> + Send + '_>>
                })
                .collect(),
        )
        .await;
        for (&i, result) in pull.iter().zip(pulls) {
            self.after_pull(i, crash, result).await;
        }
        if let Some(crash) = crash {
            // A crash that was not reached would still be armed: the process "dies" anyway.
            let i = devices[0];
            if self.devices[i].device.crashed() || matches!(crash, Crash::Local(..)) {
                self.stats.crashes += 1;
            }
            self.restart(i).await;
        }
    }

    fn crash_reached(&self, i: usize, crash: Option<Crash>, error: &str) -> bool {
        crash.is_some_and(|c| self.devices[i].device.crash_reached(c, Some(error)))
    }

    async fn after_push(
        &mut self,
        i: usize,
        crash: Option<Crash>,
        result: Result<oversync_sqlite::PushReport, PushError>,
        keys: BTreeSet<RowKey>,
        images: &HashMap<RowKey, String>,
        tuple: &(String, i64),
    ) -> PushEnd {
        let decisions: Vec<(String, String, bool)> =
            std::mem::take(&mut *self.devices[i].decisions.lock().unwrap());
        self.stats.conflicts += decisions.len() as u64;
        self.stats.kept_local += decisions.iter().filter(|d| d.2).count() as u64;
        let name = self.devices[i].device.name.clone();
        if !decisions.is_empty() {
            self.note(format!(
                "{name}: resolver decisions (table, id, kept local): {decisions:?}"
            ));
        }
        let error = match result {
            Ok(report) => {
                self.note(format!("{name}: push {:?}", report.outcome));
                self.progressed |= report.outcome != oversync_sqlite::PushOutcome::NoChange;
                self.devices[i].last_error = None;
                let after = self.pending_keys(i).await;
                let versions = self.row_versions(i).await;
                let committed = self.committed_seq(self.devices[i].user, tuple).await;
                let accepted: HashSet<RowKey> = decisions
                    .iter()
                    .filter(|d| !d.2)
                    .map(|d| (static_table(&d.0), format!("{:?}", d.1.to_lowercase())))
                    .collect();
                let user = self.devices[i].user;
                for key in keys {
                    if after.contains(&key) || accepted.contains(&key) {
                        continue;
                    }
                    // The bundle this push committed; without one (every intent settled by
                    // conflicts or coalesced away), the row's state.
                    let version =
                        committed.unwrap_or_else(|| versions.get(&key).copied().unwrap_or(0));
                    let image = images.get(&key).cloned();
                    self.note(format!(
                        "{name}: acknowledged {key:?} at version {version}: {image:?}"
                    ));
                    if committed.is_none() && version == 0 && image.is_some() {
                        panic!(
                            "{}",
                            self.report(&format!(
                                "{name}: pushed row {key:?} has no row state after the push"
                            ))
                            .await
                        );
                    }
                    self.acks.entry((user, key)).or_default().push(Ack {
                        version,
                        image,
                        by: name.clone(),
                        step: self.step,
                    });
                    self.stats.acked += 1;
                }
                return PushEnd::Pushed;
            }
            Err(e) => e,
        };
        let text = error.to_string();
        self.progressed = true;
        self.note(format!("{name}: push failed: {text}"));
        self.devices[i].last_error = Some(text.clone());
        if self.crash_reached(i, crash, &text) {
            return PushEnd::Stopped;
        }
        match &error {
            PushError::InvalidConflictResolution { conflict, .. }
                if self.devices[i].resolver == "client-wins"
                    && conflict.local_op == oversync_protocol::op::Op::Update
                    && conflict.server_row() != ServerRow::Live =>
            {
                self.repair(i, conflict).await;
                return PushEnd::Stopped;
            }
            PushError::PushConflictRetryExhausted { .. } => {
                self.stats.retry_exhausted += 1;
                return PushEnd::Stopped;
            }
            _ => {}
        }
        match error.required_action() {
            Some(RequiredAction::Rebuild) => {
                self.recover(i).await;
                PushEnd::Stopped
            }
            _ => {
                panic!(
                    "{}",
                    self.report(&format!("{name}: push failed: {text} ({error:?})"))
                        .await
                )
            }
        }
    }

    async fn after_pull(
        &mut self,
        i: usize,
        crash: Option<Crash>,
        result: Result<oversync_sqlite::RemoteSyncReport, PullError>,
    ) {
        let name = self.devices[i].device.name.clone();
        let error = match result {
            Ok(report) => {
                self.note(format!("{name}: pull {:?}", report.outcome));
                self.progressed |= report.outcome != RemoteOutcome::AlreadyAtTarget;
                if report.outcome == RemoteOutcome::AppliedSnapshot {
                    self.stats.snapshots += 1;
                }
                return;
            }
            Err(e) => e,
        };
        let text = error.to_string();
        self.progressed = true;
        self.note(format!("{name}: pull failed: {text}"));
        self.devices[i].last_error = Some(text.clone());
        if self.crash_reached(i, crash, &text) {
            return;
        }
        match error.required_action() {
            // Local changes made it impossible to pull now; the next push goes first.
            Some(RequiredAction::Push) => {}
            Some(RequiredAction::Rebuild) => self.recover(i).await,
            _ => {
                panic!(
                    "{}",
                    self.report(&format!("{name}: pull failed: {text} ({error:?})"))
                        .await
                )
            }
        }
    }

    /// The host's answer to a required rebuild.
    async fn recover(&mut self, i: usize) {
        let name = self.devices[i].device.name.clone();
        self.stats.recoveries += 1;
        match self.devices[i].device.client().rebuild().await {
            Ok(report) => self.note(format!("{name}: rebuild {:?}", report.outcome)),
            Err(e) if e.required_action() == Some(RequiredAction::Push) => {
                self.note(format!("{name}: rebuild waits for a push: {e}"));
            }
            Err(e) => panic!(
                "{}",
                self.report(&format!("{name}: rebuild failed: {e}")).await
            ),
        }
    }

    /// The host accepts a deletion its client-wins resolver could not keep local: it deletes
    /// the row locally (with the rows that reference it without a cascade).
    async fn repair(&mut self, i: usize, conflict: &ConflictContext) {
        self.stats.repairs += 1;
        let table = static_table(&conflict.table);
        let id = conflict.key.get("id").cloned().unwrap_or_default();
        let n = parse_tail(&id[id.len() - 12..]);
        let sql = Sql {
            dialect: Dialect::Sqlite,
            scope: String::new(),
        };
        let mut statements = Vec::new();
        match table {
            "users" => statements.push(format!(
                "DELETE FROM posts WHERE author_id = {}",
                sql.id("users", n)
            )),
            "team_members" => statements.push(format!(
                "DELETE FROM teams WHERE captain_member_id = {}",
                sql.id("team_members", n)
            )),
            _ => {}
        }
        statements.push(format!(
            "DELETE FROM {table} WHERE id = {}",
            sql.id(table, n)
        ));
        let name = self.devices[i].device.name.clone();
        self.note(format!(
            "{name}: host accepts the deletion of {table} {n:x} (client-wins cannot keep a stale update)"
        ));
        self.devices[i].device.exec(&sql.tx(&statements)).await;
    }

    /// Brings every device online and syncs them in turns until all agree with the server.
    async fn quiesce(&mut self) {
        self.step = usize::MAX;
        self.note("quiescence".to_owned());
        for d in &mut self.devices {
            d.online = true;
        }
        let deadline = tokio::time::Instant::now() + QUIESCENCE_DEADLINE;
        let mut rounds = 0;
        let mut idle_rounds = 0;
        loop {
            rounds += 1;
            self.progressed = false;
            for i in 0..self.devices.len() {
                self.sync(&[i], None).await;
            }
            idle_rounds = if self.progressed { 0 } else { idle_rounds + 1 };
            match self.converged().await {
                Ok(()) => break,
                // Nothing was pushed, pulled or refused twice in a row: no later round can
                // change anything, so waiting for the deadline would only hide the failure.
                Err(why) if idle_rounds >= 2 => {
                    panic!(
                        "{}",
                        self.report(&format!(
                            "stuck without convergence after {rounds} rounds: {why}"
                        ))
                        .await
                    );
                }
                Err(why) if tokio::time::Instant::now() >= deadline => {
                    panic!(
                        "{}",
                        self.report(&format!(
                            "not converged after {rounds} rounds and {QUIESCENCE_DEADLINE:?}: {why}"
                        ))
                        .await
                    );
                }
                Err(why) => self.note(format!("round {rounds}: {why}")),
            }
        }
    }

    /// `Ok` when every device has nothing pending and holds exactly its user's server rows,
    /// and no device holds a row of the other user; otherwise why not.
    async fn converged(&self) -> Result<(), String> {
        let mut expected = Vec::new();
        for user in &self.users {
            expected.push(dump_server(self.server, user).await);
        }
        for (user, dump) in expected.iter().enumerate() {
            for key in index(dump).keys() {
                if let Some(other) = foreign_row(user, &key.1) {
                    return Err(format!("server scope {user} holds {other}"));
                }
            }
        }
        for d in &self.devices {
            let pending = d
                .device
                .client()
                .pending_sync_status()
                .await
                .map_err(|e| e.to_string())?;
            let local = d.device.dump().await;
            for key in index(&local).keys() {
                if let Some(other) = foreign_row(d.user, &key.1) {
                    panic!(
                        "seed {}: {} holds a row of another scope: {key:?} ({other})",
                        self.seed, d.device.name
                    );
                }
            }
            if pending.has_pending_sync_data {
                return Err(format!(
                    "{} has {} pending rows",
                    d.device.name, pending.pending_row_count
                ));
            }
            let server = &expected[d.user];
            if &local != server {
                let differing: Vec<String> = local
                    .iter()
                    .filter(|(t, rows)| server.get(*t) != Some(*rows))
                    .map(|(t, rows)| {
                        let theirs = &server[t];
                        let only_local: Vec<&String> =
                            rows.iter().filter(|r| !theirs.contains(r)).collect();
                        let only_server: Vec<&String> =
                            theirs.iter().filter(|r| !rows.contains(r)).collect();
                        format!(
                            "{t}: only local {only_local:?}, only on the server {only_server:?}"
                        )
                    })
                    .collect();
                return Err(format!(
                    "{} differs from PostgreSQL: {}",
                    d.device.name,
                    differing.join("; ")
                ));
            }
        }
        Ok(())
    }

    /// Every acknowledged row holds its latest acknowledged intent on the server.
    async fn check_acknowledged(&self) {
        let mut now = Vec::new();
        for user in &self.users {
            now.push(index(&dump_server(self.server, user).await));
        }
        let mut lost = Vec::new();
        for ((user, key), acks) in &self.acks {
            let Some(latest) = acks.iter().max_by_key(|a| (a.version, a.step)) else {
                continue;
            };
            let actual = now[*user].get(key);
            if actual != latest.image.as_ref() {
                lost.push(format!(
                    "{key:?}: server holds {actual:?}, latest acknowledged intent (by {} at step {}, version {}) {:?}; all: {acks:?}",
                    latest.by, latest.step, latest.version, latest.image
                ));
            }
        }
        if !lost.is_empty() {
            panic!(
                "{}",
                self.report(&format!(
                    "{} acknowledged writes lost:\n{}",
                    lost.len(),
                    lost.join("\n")
                ))
                .await
            );
        }
    }

    fn shutdown(mut self) {
        for d in &mut self.devices {
            d.device.kill();
        }
    }
}

/// The description of a row id that belongs to another user than `user`, if it does.
fn foreign_row(user: usize, id_cell: &str) -> Option<String> {
    let text = id_cell.trim_matches('"');
    let n = parse_tail(&text[text.len() - 12..]);
    (user_of(n) != user).then(|| format!("row {text} of user #{}", user_of(n)))
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes
}
