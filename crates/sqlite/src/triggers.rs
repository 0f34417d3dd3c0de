//! The six triggers per managed table (client chapter §2.6).
//!
//! Guard triggers (`trg_T_b{i,u,d}_guard`) abort application writes while a durable operation
//! is pending, unless the client itself is writing (`apply_mode = 1`). Capture triggers
//! (`trg_T_a{i,u,d}`) coalesce every application write into one `_sync_dirty_rows` row per key,
//! with the reference's rules for `op`, `base_row_version` and `dirty_ordinal`; they do
//! nothing while `apply_mode = 1`, which is how authoritative writes stay out of the dirty set
//! (§2.9).
//!
//! The trigger names are the reference's, so either client finds and replaces the other's;
//! unlike the reference, every identifier is quoted and the schema literal escaped (§12 B4),
//! all through [`SqlBuffer`]. The same `json_object` expression renders captured payloads and
//! [`row_payload_expr`] (the live-row serialiser), so both are byte-identical (§12 B5).

use rusqlite::{Connection, OptionalExtension};

use crate::catalog::{Column, ManagedTable};
use crate::error::{SqliteContext, StoreError};
use crate::sql::SqlBuffer;

/// The message guard triggers abort with.
pub const TRANSITION_PENDING: &str = "SYNC_TRANSITION_PENDING";

const SUFFIXES: [&str; 6] = ["bi_guard", "bu_guard", "bd_guard", "ai", "au", "ad"];

/// The reference's name of trigger `suffix` on `table` (lower-cased table name).
pub(crate) fn trigger_name(table: &str, suffix: &str) -> String {
    format!("trg_{table}_{suffix}")
}

/// Appends the value expression of `column` of row `prefix` (`NEW`/`OLD`) as captured:
/// BLOB-declared columns as lower-case hex, NULL kept.
fn value_expr(sql: &mut SqlBuffer, prefix: &str, column: &Column) {
    if column.is_blob {
        sql.push("CASE WHEN ")
            .qualified(prefix, &column.name)
            .push(" IS NULL THEN NULL ELSE lower(hex(")
            .qualified(prefix, &column.name)
            .push(")) END");
    } else {
        sql.qualified(prefix, &column.name);
    }
}

/// Appends `json_object(...)` over every column of row `prefix`: the local payload (§2.5.1).
pub(crate) fn row_payload_expr(sql: &mut SqlBuffer, prefix: &str, table: &ManagedTable) {
    sql.push("json_object(");
    sql.join(&table.columns, ", ", |s, c| {
        s.string_literal(&c.member).push(", ");
        value_expr(s, prefix, c);
    });
    sql.push(")");
}

/// Appends the `key_json` expression of row `prefix`.
pub(crate) fn key_json_expr(sql: &mut SqlBuffer, prefix: &str, table: &ManagedTable) {
    let key = table.key();
    sql.push("json_object(")
        .string_literal(&key.member)
        .push(", ");
    value_expr(sql, prefix, key);
    sql.push(")");
}

struct Ctx<'a> {
    schema: &'a str,
    table: &'a ManagedTable,
}

impl Ctx<'_> {
    fn key_filter(&self, sql: &mut SqlBuffer, key: &str) {
        sql.push("schema_name = ")
            .string_literal(self.schema)
            .push(" AND table_name = ")
            .string_literal(&self.table.name)
            .push(" AND key_json = ")
            .push(key);
    }

    fn base_and_ordinal(&self, sql: &mut SqlBuffer, key: &str) {
        sql.push(",\n    COALESCE((SELECT base_row_version FROM _sync_dirty_rows WHERE ");
        self.key_filter(sql, key);
        sql.push("), (SELECT row_version FROM _sync_row_state WHERE ");
        self.key_filter(sql, key);
        sql.push("), 0)");
        // payload goes between base and ordinal; callers write it.
    }

    fn ordinal(&self, sql: &mut SqlBuffer, key: &str) {
        sql.push(",\n    COALESCE((SELECT dirty_ordinal FROM _sync_dirty_rows WHERE ");
        self.key_filter(sql, key);
        sql.push("), (SELECT COALESCE(MAX(dirty_ordinal), 0) + 1 FROM _sync_dirty_rows)),\n    strftime('%Y-%m-%dT%H:%M:%fZ','now')");
    }

    fn head(&self, sql: &mut SqlBuffer, key: &str) {
        sql.push("  INSERT INTO _sync_dirty_rows (schema_name, table_name, key_json, op, base_row_version, payload, dirty_ordinal, updated_at)\n  SELECT ")
            .string_literal(self.schema)
            .push(", ")
            .string_literal(&self.table.name)
            .push(", ")
            .push(key);
    }

    fn record_upsert(&self, sql: &mut SqlBuffer, key: &str, payload: &str) {
        self.head(sql, key);
        sql.push(",\n    CASE WHEN EXISTS (SELECT 1 FROM _sync_row_state WHERE ");
        self.key_filter(sql, key);
        sql.push(" AND deleted = 0) THEN 'UPDATE' ELSE 'INSERT' END");
        self.base_and_ordinal(sql, key);
        sql.push(",\n    ").push(payload);
        self.ordinal(sql, key);
        sql.push("\n  WHERE true ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET op = excluded.op, payload = excluded.payload, updated_at = excluded.updated_at;\n");
    }

    fn record_delete(&self, sql: &mut SqlBuffer, key: &str, condition: Option<&str>) {
        self.head(sql, key);
        sql.push(", 'DELETE'");
        self.base_and_ordinal(sql, key);
        sql.push(", NULL");
        self.ordinal(sql, key);
        sql.push("\n  WHERE ").push(condition.unwrap_or("true"));
        sql.push(" ON CONFLICT (schema_name, table_name, key_json) DO UPDATE SET op = 'DELETE', payload = NULL, updated_at = excluded.updated_at;\n");
    }
}

const APPLY_OFF: &str =
    "COALESCE((SELECT apply_mode FROM _sync_apply_state WHERE singleton_key = 1), 0) = 0";

/// The six `CREATE TRIGGER` statements for `table`, with their names.
pub(crate) fn render(schema: &str, table: &ManagedTable) -> Vec<(String, String)> {
    let ctx = Ctx { schema, table };
    let mut key_new = SqlBuffer::new();
    key_json_expr(&mut key_new, "NEW", table);
    let key_new = key_new.finish();
    let mut key_old = SqlBuffer::new();
    key_json_expr(&mut key_old, "OLD", table);
    let key_old = key_old.finish();
    let mut payload_new = SqlBuffer::new();
    row_payload_expr(&mut payload_new, "NEW", table);
    let payload_new = payload_new.finish();

    let mut out = Vec::with_capacity(6);
    for suffix in SUFFIXES {
        let name = trigger_name(&table.name, suffix);
        let mut sql = SqlBuffer::new();
        sql.push("CREATE TRIGGER ").identifier(&name).push("\n");
        let (timing, event) = match suffix {
            "bi_guard" => ("BEFORE", "INSERT"),
            "bu_guard" => ("BEFORE", "UPDATE"),
            "bd_guard" => ("BEFORE", "DELETE"),
            "ai" => ("AFTER", "INSERT"),
            "au" => ("AFTER", "UPDATE"),
            _ => ("AFTER", "DELETE"),
        };
        sql.push(timing)
            .push(" ")
            .push(event)
            .push(" ON ")
            .identifier(&table.name)
            .push("\nWHEN ");
        if timing == "BEFORE" {
            sql.push("COALESCE((SELECT kind FROM _sync_operation_state WHERE singleton_key = 1), 'none') != 'none'\n  AND COALESCE((SELECT apply_mode FROM _sync_apply_state WHERE singleton_key = 1), 0) != 1\nBEGIN\n  SELECT RAISE(ABORT, ")
                .string_literal(TRANSITION_PENDING)
                .push(");\nEND");
        } else {
            sql.push(APPLY_OFF).push("\nBEGIN\n");
            match event {
                "INSERT" => ctx.record_upsert(&mut sql, &key_new, &payload_new),
                "UPDATE" => {
                    let changed = format!("{key_old} != {key_new}");
                    ctx.record_delete(&mut sql, &key_old, Some(&changed));
                    ctx.record_upsert(&mut sql, &key_new, &payload_new);
                }
                _ => ctx.record_delete(&mut sql, &key_old, None),
            }
            sql.push("END");
        }
        out.push((name, sql.finish()));
    }
    out
}

/// Normalises trigger SQL for comparison: trimmed, whitespace collapsed, lower-cased,
/// `create trigger if not exists` read as `create trigger`.
fn normalize(sql: &str) -> String {
    let collapsed = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed
        .to_lowercase()
        .replacen("create trigger if not exists", "create trigger", 1)
}

/// Installs or refreshes the six triggers of `table`: an existing trigger whose SQL matches
/// is kept, a different one is dropped and re-created, a missing one is created.
pub(crate) fn install(
    conn: &Connection,
    schema: &str,
    table: &ManagedTable,
) -> Result<(), StoreError> {
    for (name, sql) in render(schema, table) {
        let existing: Option<String> = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()
            .ctx("read existing trigger")?;
        match existing {
            Some(existing) if normalize(&existing) == normalize(&sql) => continue,
            Some(_) => {
                let mut drop = SqlBuffer::new();
                drop.push("DROP TRIGGER IF EXISTS ").identifier(&name);
                conn.execute(drop.as_str(), []).ctx("drop stale trigger")?;
            }
            None => {}
        }
        conn.execute(&sql, []).ctx("create trigger")?;
    }
    Ok(())
}

/// Drops the six triggers of `table` (lower-cased name) if they exist.
pub(crate) fn drop_all(conn: &Connection, table: &str) -> Result<(), StoreError> {
    for suffix in SUFFIXES {
        let mut sql = SqlBuffer::new();
        sql.push("DROP TRIGGER IF EXISTS ")
            .identifier(&trigger_name(&table.to_lowercase(), suffix));
        conn.execute(sql.as_str(), []).ctx("drop trigger")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_ignores_whitespace_case_and_if_not_exists() {
        assert_eq!(
            normalize("CREATE TRIGGER IF NOT EXISTS  x\n AFTER"),
            normalize("create trigger x after")
        );
    }
}
