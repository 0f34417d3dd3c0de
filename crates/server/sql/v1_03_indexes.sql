-- oversync sync layout v1: secondary indexes, created after the catalog rows are inserted.

CREATE INDEX IF NOT EXISTS bcs_tx_user_ordinal_idx
    ON sync.bundle_capture_stage (txid, user_pk, capture_ordinal);
-- Partial: serves the snapshot path's scan of live row states.
CREATE INDEX IF NOT EXISTS rs_user_live_snapshot_idx
    ON sync.row_state (user_pk, table_id, key_bytes) WHERE deleted = FALSE;
CREATE INDEX IF NOT EXISTS ps_expires_at_idx ON sync.push_sessions (expires_at);
CREATE INDEX IF NOT EXISTS ss_expires_at_idx ON sync.snapshot_sessions (expires_at);
CREATE UNIQUE INDEX IF NOT EXISTS ssr_snapshot_table_key_idx
    ON sync.snapshot_session_rows (snapshot_id, table_id, key_bytes);
