-- oversync sync layout `server_postgres_sync_v1` (protocol label `v1`): tables and sequences.
-- Identifiers are shared with the reference Go server byte for byte, so both can run against
-- one database. Every statement is idempotent; bootstrap runs this file only on a fresh
-- install, inside one transaction holding pg_advisory_xact_lock(8031718527699873379).

CREATE SCHEMA IF NOT EXISTS sync;

-- One-row layout marker.
CREATE TABLE IF NOT EXISTS sync.meta (
    singleton_key  BOOLEAN PRIMARY KEY CHECK (singleton_key),
    protocol_label TEXT NOT NULL DEFAULT 'v1',
    layout_name    TEXT NOT NULL
);

-- Registered tables; table_id = position in the byte-sorted list of "schema.table" keys.
CREATE TABLE IF NOT EXISTS sync.table_catalog (
    table_id        INTEGER PRIMARY KEY,
    schema_name     TEXT NOT NULL,
    table_name      TEXT NOT NULL,
    sync_key_column TEXT NOT NULL,
    sync_key_kind   SMALLINT NOT NULL,
    CONSTRAINT table_catalog_schema_table_key UNIQUE (schema_name, table_name),
    CONSTRAINT table_catalog_sync_key_kind_chk CHECK (sync_key_kind IN (1, 2))
);

-- One row per user; latest bundle_seq is next_bundle_seq - 1.
CREATE TABLE IF NOT EXISTS sync.user_state (
    user_pk               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id               TEXT NOT NULL UNIQUE,
    next_bundle_seq       BIGINT NOT NULL DEFAULT 1,
    retained_bundle_floor BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT user_state_bundle_seq_chk CHECK (next_bundle_seq >= 1),
    CONSTRAINT user_state_retained_floor_chk
        CHECK (retained_bundle_floor >= 0 AND retained_bundle_floor <= next_bundle_seq - 1)
);

-- First-connect authority: 0 UNINITIALIZED, 1 INITIALIZING (lease), 2 INITIALIZED.
CREATE TABLE IF NOT EXISTS sync.scope_state (
    user_pk                  BIGINT PRIMARY KEY REFERENCES sync.user_state (user_pk) ON DELETE CASCADE,
    state_code               SMALLINT NOT NULL,
    initializer_source_id    TEXT,
    initialization_id        UUID,
    lease_expires_at         TIMESTAMPTZ,
    initialized_at           TIMESTAMPTZ,
    initialized_by_source_id TEXT,
    CONSTRAINT scope_state_fields_chk CHECK (
        (state_code = 0
            AND initializer_source_id IS NULL AND initialization_id IS NULL
            AND lease_expires_at IS NULL
            AND initialized_at IS NULL AND initialized_by_source_id IS NULL)
        OR (state_code = 1
            AND initializer_source_id IS NOT NULL AND initialization_id IS NOT NULL
            AND lease_expires_at IS NOT NULL
            AND initialized_at IS NULL AND initialized_by_source_id IS NULL)
        OR (state_code = 2
            AND initializer_source_id IS NULL AND initialization_id IS NULL
            AND lease_expires_at IS NULL
            AND initialized_at IS NOT NULL AND initialized_by_source_id IS NOT NULL)
    ),
    CONSTRAINT scope_state_code_chk CHECK (state_code IN (0, 1, 2))
);

-- Per-(user, source) sequencing.
CREATE TABLE IF NOT EXISTS sync.source_state (
    user_pk                        BIGINT NOT NULL REFERENCES sync.user_state (user_pk) ON DELETE CASCADE,
    source_id                      TEXT NOT NULL,
    state                          TEXT NOT NULL,
    max_committed_source_bundle_id BIGINT NOT NULL DEFAULT 0,
    replaced_by_source_id          TEXT NOT NULL DEFAULT '',
    retirement_reason              TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_pk, source_id),
    CONSTRAINT source_state_state_chk CHECK (state IN ('active', 'reserved', 'retired')),
    CONSTRAINT source_state_max_committed_chk CHECK (max_committed_source_bundle_id >= 0),
    CONSTRAINT source_state_active_chk CHECK (
        state <> 'active' OR (replaced_by_source_id = '' AND retirement_reason = '')
    ),
    CONSTRAINT source_state_reserved_chk CHECK (
        state <> 'reserved'
        OR (replaced_by_source_id = '' AND retirement_reason = ''
            AND max_committed_source_bundle_id = 0)
    ),
    CONSTRAINT source_state_retired_chk CHECK (
        state <> 'retired' OR (replaced_by_source_id <> '' AND retirement_reason <> '')
    )
);

-- Authoritative row versions (tombstones included).
CREATE TABLE IF NOT EXISTS sync.row_state (
    user_pk    BIGINT NOT NULL REFERENCES sync.user_state (user_pk) ON DELETE CASCADE,
    table_id   INTEGER NOT NULL REFERENCES sync.table_catalog (table_id),
    key_bytes  BYTEA NOT NULL,
    bundle_seq BIGINT NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_pk, table_id, key_bytes)
);

-- Capture buffer of in-flight bundle transactions (empty outside them).
-- Its two foreign keys are DEFERRABLE INITIALLY DEFERRED (the reference declares them
-- immediate; names, columns and actions are the same): finalization deletes every stage row
-- before COMMIT, and PostgreSQL skips a deferred check whose row is gone, whereas an
-- immediate check runs inside the per-row capture trigger, one statement each (~15-20 us per
-- captured row). Layouts created immediate keep working; see
-- docs/compatibility.md for the ALTER that upgrades them.
CREATE TABLE IF NOT EXISTS sync.bundle_capture_stage (
    capture_ordinal BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid            BIGINT NOT NULL,
    user_pk         BIGINT NOT NULL REFERENCES sync.user_state (user_pk) ON DELETE CASCADE
                        DEFERRABLE INITIALLY DEFERRED,
    table_id        INTEGER NOT NULL REFERENCES sync.table_catalog (table_id)
                        DEFERRABLE INITIALLY DEFERRED,
    op_code         SMALLINT NOT NULL,
    key_bytes       BYTEA NOT NULL,
    payload_db      JSONB,
    CONSTRAINT bundle_capture_stage_op_code_chk CHECK (op_code IN (1, 2, 3)),
    CONSTRAINT bundle_capture_stage_payload_by_op_chk CHECK (
        (op_code = 3 AND payload_db IS NULL) OR (op_code IN (1, 2) AND payload_db IS NOT NULL)
    )
);

-- One row per retained committed bundle.
CREATE TABLE IF NOT EXISTS sync.bundle_log (
    user_pk          BIGINT NOT NULL REFERENCES sync.user_state (user_pk) ON DELETE CASCADE,
    bundle_seq       BIGINT NOT NULL,
    source_id        TEXT NOT NULL,
    source_bundle_id BIGINT NOT NULL,
    row_count        BIGINT NOT NULL,
    byte_count       BIGINT NOT NULL,
    bundle_hash      BYTEA NOT NULL,
    committed_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_pk, bundle_seq),
    CONSTRAINT bundle_log_source_tuple_key UNIQUE (user_pk, source_id, source_bundle_id)
);

-- Row effects of retained bundles; row_ordinal is 1-based; payload_wire is JSON (kept verbatim).
CREATE TABLE IF NOT EXISTS sync.bundle_rows (
    user_pk      BIGINT NOT NULL REFERENCES sync.user_state (user_pk) ON DELETE CASCADE,
    bundle_seq   BIGINT NOT NULL,
    row_ordinal  BIGINT NOT NULL,
    table_id     INTEGER NOT NULL REFERENCES sync.table_catalog (table_id),
    key_bytes    BYTEA NOT NULL,
    op_code      SMALLINT NOT NULL,
    payload_wire JSON,
    PRIMARY KEY (user_pk, bundle_seq, row_ordinal),
    CONSTRAINT bundle_rows_bundle_fk FOREIGN KEY (user_pk, bundle_seq)
        REFERENCES sync.bundle_log (user_pk, bundle_seq) ON DELETE CASCADE,
    CONSTRAINT bundle_rows_op_code_chk CHECK (op_code IN (1, 2, 3)),
    CONSTRAINT bundle_rows_payload_by_op_chk CHECK (
        (op_code = 3 AND payload_wire IS NULL) OR (op_code IN (1, 2) AND payload_wire IS NOT NULL)
    )
);

-- Push staging sessions.
CREATE TABLE IF NOT EXISTS sync.push_sessions (
    push_id                   UUID PRIMARY KEY,
    user_pk                   BIGINT NOT NULL REFERENCES sync.user_state (user_pk) ON DELETE CASCADE,
    source_id                 TEXT NOT NULL,
    source_bundle_id          BIGINT NOT NULL,
    planned_row_count         BIGINT NOT NULL,
    next_expected_row_ordinal BIGINT NOT NULL DEFAULT 0,
    initialization_id         UUID,
    expires_at                TIMESTAMPTZ NOT NULL,
    CONSTRAINT push_sessions_source_tuple_key UNIQUE (user_pk, source_id, source_bundle_id),
    CONSTRAINT push_sessions_row_count_chk CHECK (
        planned_row_count > 0
        AND next_expected_row_ordinal >= 0
        AND next_expected_row_ordinal <= planned_row_count
    )
);

-- Staged rows; row_ordinal is 0-based.
CREATE TABLE IF NOT EXISTS sync.push_session_rows (
    push_id         UUID NOT NULL REFERENCES sync.push_sessions (push_id) ON DELETE CASCADE,
    row_ordinal     BIGINT NOT NULL,
    table_id        INTEGER NOT NULL REFERENCES sync.table_catalog (table_id),
    key_bytes       BYTEA NOT NULL,
    op_code         SMALLINT NOT NULL,
    base_bundle_seq BIGINT NOT NULL,
    payload_apply   JSON,
    PRIMARY KEY (push_id, row_ordinal),
    CONSTRAINT push_session_rows_op_code_chk CHECK (op_code IN (1, 2, 3)),
    CONSTRAINT push_session_rows_payload_by_op_chk CHECK (
        (op_code = 3 AND payload_apply IS NULL) OR (op_code IN (1, 2) AND payload_apply IS NOT NULL)
    )
);

-- Frozen snapshots.
CREATE TABLE IF NOT EXISTS sync.snapshot_sessions (
    snapshot_id         UUID PRIMARY KEY,
    user_pk             BIGINT NOT NULL REFERENCES sync.user_state (user_pk) ON DELETE CASCADE,
    snapshot_bundle_seq BIGINT NOT NULL,
    row_count           BIGINT NOT NULL DEFAULT 0,
    byte_count          BIGINT NOT NULL DEFAULT 0,
    expires_at          TIMESTAMPTZ NOT NULL
);

-- Materialized snapshot rows; row_ordinal is 1-based.
CREATE TABLE IF NOT EXISTS sync.snapshot_session_rows (
    snapshot_id  UUID NOT NULL REFERENCES sync.snapshot_sessions (snapshot_id) ON DELETE CASCADE,
    row_ordinal  BIGINT NOT NULL,
    table_id     INTEGER NOT NULL REFERENCES sync.table_catalog (table_id),
    key_bytes    BYTEA NOT NULL,
    bundle_seq   BIGINT NOT NULL,
    payload_wire JSON NOT NULL,
    PRIMARY KEY (snapshot_id, row_ordinal),
    CONSTRAINT snapshot_session_rows_logical_row_key UNIQUE (snapshot_id, table_id, key_bytes)
);

-- Monotonic counters read by status.
CREATE SEQUENCE IF NOT EXISTS sync.accepted_push_replay_seq;
CREATE SEQUENCE IF NOT EXISTS sync.rejected_registered_write_seq;
CREATE SEQUENCE IF NOT EXISTS sync.history_pruned_error_seq;
