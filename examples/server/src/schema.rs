//! The example's business schema (05-example-server.md §6), which reference clients expect
//! column for column: a client applies a pulled payload only if it has exactly its local
//! table's columns, so adding a column here breaks every Go client that lacks it.

use oversync_server::RegisteredTable;

/// The schema the business tables live in.
pub const BUSINESS_SCHEMA: &str = "business";

/// Registered tables in the reference's configuration order; every sync key is `id` (UUID).
pub const REGISTERED_TABLES: [&str; 8] = [
    "users",
    "posts",
    "categories",
    "teams",
    "team_members",
    "files",
    "file_reviews",
    "typed_rows",
];

/// The client-side schema of the example (05-example-server.md §8): the SQLite tables a device
/// creates before its sync client installs triggers (BLOB ids for `files` and `file_reviews`,
/// deferred foreign keys so pulled rows may arrive child first).
pub const CLIENT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS posts (
    id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, content TEXT NOT NULL, author_id TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    FOREIGN KEY (author_id) REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS categories (
    id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, parent_id TEXT,
    FOREIGN KEY (parent_id) REFERENCES categories(id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS teams (
    id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, captain_member_id TEXT,
    FOREIGN KEY (captain_member_id) REFERENCES team_members(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS team_members (
    id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, team_id TEXT NOT NULL,
    FOREIGN KEY (team_id) REFERENCES teams(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS files (
    id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS file_reviews (
    id BLOB PRIMARY KEY NOT NULL, review TEXT NOT NULL, file_id BLOB NOT NULL,
    FOREIGN KEY (file_id) REFERENCES files(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE IF NOT EXISTS typed_rows (
    id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, note TEXT NULL, count_value INTEGER NULL,
    enabled_flag INTEGER NOT NULL, rating REAL NULL, data BLOB NULL, created_at TEXT NULL);
";

/// The registrations for the service configuration.
pub fn registered_tables() -> Vec<RegisteredTable> {
    REGISTERED_TABLES
        .iter()
        .map(|table| RegisteredTable::new(BUSINESS_SCHEMA, table, "id"))
        .collect()
}

/// Idempotent DDL for the business tables (never drops or alters existing data). The
/// `teams` ↔ `team_members` cycle gets its second FK only if it is not there yet.
pub const BUSINESS_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS business;
CREATE TABLE IF NOT EXISTS business.users (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    created_at TIMESTAMPTZ DEFAULT now(),
    updated_at TIMESTAMPTZ DEFAULT now(),
    PRIMARY KEY (_sync_scope_id, id)
);
CREATE TABLE IF NOT EXISTS business.posts (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    author_id UUID,
    created_at TIMESTAMPTZ DEFAULT now(),
    updated_at TIMESTAMPTZ DEFAULT now(),
    PRIMARY KEY (_sync_scope_id, id),
    CONSTRAINT posts_author_id_fkey FOREIGN KEY (_sync_scope_id, author_id)
        REFERENCES business.users (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE IF NOT EXISTS business.categories (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    name TEXT NOT NULL,
    parent_id UUID,
    PRIMARY KEY (_sync_scope_id, id),
    CONSTRAINT categories_parent_id_fkey FOREIGN KEY (_sync_scope_id, parent_id)
        REFERENCES business.categories (_sync_scope_id, id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE IF NOT EXISTS business.teams (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    name TEXT NOT NULL,
    captain_member_id UUID,
    PRIMARY KEY (_sync_scope_id, id)
);
CREATE TABLE IF NOT EXISTS business.team_members (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    name TEXT NOT NULL,
    team_id UUID NOT NULL,
    PRIMARY KEY (_sync_scope_id, id),
    CONSTRAINT team_members_team_id_fkey FOREIGN KEY (_sync_scope_id, team_id)
        REFERENCES business.teams (_sync_scope_id, id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED
);
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'teams_captain_member_id_fkey'
          AND conrelid = 'business.teams'::regclass
    ) THEN
        ALTER TABLE business.teams ADD CONSTRAINT teams_captain_member_id_fkey
            FOREIGN KEY (_sync_scope_id, captain_member_id)
            REFERENCES business.team_members (_sync_scope_id, id)
            DEFERRABLE INITIALLY DEFERRED;
    END IF;
END
$$;
CREATE TABLE IF NOT EXISTS business.files (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    name TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (_sync_scope_id, id)
);
CREATE TABLE IF NOT EXISTS business.file_reviews (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    review TEXT NOT NULL,
    file_id UUID NOT NULL,
    PRIMARY KEY (_sync_scope_id, id),
    CONSTRAINT file_reviews_file_id_fkey FOREIGN KEY (_sync_scope_id, file_id)
        REFERENCES business.files (_sync_scope_id, id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE IF NOT EXISTS business.typed_rows (
    _sync_scope_id TEXT NOT NULL,
    id UUID NOT NULL,
    name TEXT NOT NULL,
    note TEXT NULL,
    count_value BIGINT NULL,
    enabled_flag BIGINT NOT NULL,
    rating DOUBLE PRECISION NULL,
    data BYTEA NULL,
    created_at TIMESTAMPTZ NULL,
    PRIMARY KEY (_sync_scope_id, id)
);
"#;
