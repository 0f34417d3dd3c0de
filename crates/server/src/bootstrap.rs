//! Bootstrap (§1.4): validate the registered tables against the supported envelope (§1.5),
//! install or verify the `sync` schema (§2), validate foreign keys, install the capture
//! triggers (§2.9), and hand back the [`ValidatedCatalog`] every later statement takes its
//! identifiers from.
//!
//! Fails closed: every unsupported shape is a [`BootstrapError::Unsupported`] naming the table
//! and carrying the substrings the reference's tests pin. Idempotent: a second bootstrap (by
//! this process or another, Go or Rust) finds the layout marker and the matching catalog and
//! runs no DDL except re-creating the triggers.

use std::collections::{BTreeMap, HashMap, HashSet};

use deadpool_postgres::{Object, Pool};
use oversync_protocol::key::SyncKeyKind;
use postgres_protocol::escape::{escape_identifier, escape_literal};

use crate::catalog::{CatalogTable, ColumnInfo, NormalizedTable, SCOPE_COLUMN, ValidatedCatalog};
use crate::config::RegisteredTable;
use crate::db::{self, Context};
use crate::error::InternalError;

/// `pg_advisory_xact_lock` key serializing bootstraps: ASCII "oversync" as a big-endian i64.
pub const BOOTSTRAP_LOCK_KEY: i64 = 0x6f76_6572_7379_6e63;
/// Layout identity stored in `sync.meta`.
pub const PROTOCOL_LABEL: &str = "v1";
/// Layout identity stored in `sync.meta`.
pub const LAYOUT_NAME: &str = "server_postgres_sync_v1";

/// Capture trigger name (AFTER, per row).
pub const CAPTURE_TRIGGER: &str = "oversync_bundle_capture_row";
/// Owner guard trigger name (BEFORE, per row).
pub const OWNER_GUARD_TRIGGER: &str = "oversync_bundle_owner_guard";

const TABLES_SQL: &str = include_str!("../sql/v1_01_tables.sql");
const FUNCTIONS_SQL: &str = include_str!("../sql/v1_02_functions.sql");
const INDEXES_SQL: &str = include_str!("../sql/v1_03_indexes.sql");

const BOOTSTRAP_ATTEMPTS: u32 = 3;
const BOOTSTRAP_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Why bootstrap failed. Bootstrap-only: never reaches clients.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Host fault: a registered table (or the existing `sync` schema) is outside the supported
    /// envelope. The message names the table and says what to change.
    #[error("{message}")]
    Unsupported {
        /// `schema.table` of the offending table, when one table is at fault.
        table: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Host fault: a registered table does not exist (under its lower-case name).
    #[error("registered table {table} could not load column metadata for sync key validation")]
    TableNotFound {
        /// `schema.table`.
        table: String,
    },
    /// Database failure.
    #[error("bootstrap failed: {0}")]
    Internal(#[from] InternalError),
}

impl BootstrapError {
    fn unsupported(table: &str, message: String) -> Self {
        BootstrapError::Unsupported {
            table: Some(table.to_owned()),
            message,
        }
    }

    fn layout(message: String) -> Self {
        BootstrapError::Unsupported {
            table: None,
            message,
        }
    }

    fn is_retryable(&self) -> bool {
        matches!(self, BootstrapError::Internal(e) if e.is_retryable())
    }
}

/// Runs the whole bootstrap against `pool` for `registrations`.
pub(crate) async fn bootstrap(
    pool: &Pool,
    registrations: &[RegisteredTable],
) -> Result<ValidatedCatalog, BootstrapError> {
    let normalized = normalize(registrations)?;
    let mut conn = db::connection(pool).await?;
    let catalog = if normalized.is_empty() {
        ValidatedCatalog::default()
    } else {
        validate_tables(&conn, &normalized).await?
    };

    let mut attempt = 1;
    loop {
        match install_schema(&mut conn, &catalog).await {
            Err(e) if e.is_retryable() && attempt < BOOTSTRAP_ATTEMPTS => {
                db::backoff(BOOTSTRAP_BACKOFF, attempt).await;
                attempt += 1;
            }
            other => break other?,
        }
    }

    if !catalog.tables().is_empty() {
        validate_foreign_keys(&conn, &catalog).await?;
        install_triggers(&mut conn, &catalog).await?;
    }
    Ok(catalog)
}

/// §1.3 normalization plus the duplicate check (§13 item 21).
fn normalize(registrations: &[RegisteredTable]) -> Result<Vec<NormalizedTable>, BootstrapError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(registrations.len());
    for reg in registrations {
        let table = NormalizedTable::from_registration(reg);
        let key = table.key();
        if !seen.insert(key.clone()) {
            return Err(BootstrapError::unsupported(
                &key,
                format!("registered table {key} is registered more than once"),
            ));
        }
        out.push(table);
    }
    Ok(out)
}

struct TableColumns {
    columns: BTreeMap<String, ColumnInfo>,
    not_null: HashSet<String>,
}

struct UniqueIndex {
    name: String,
    partial_or_expression: bool,
    key_columns: Vec<String>,
}

/// §1.5.1 and §1.5.2 (plus NOT NULL owner, INCLUDE columns and generated columns).
async fn validate_tables(
    conn: &Object,
    tables: &[NormalizedTable],
) -> Result<ValidatedCatalog, BootstrapError> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.table.as_str()).collect();

    let column_rows = conn
        .query(
            "SELECT n.nspname, c.relname, a.attname,
                    lower(CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END),
                    a.attnotnull, a.attgenerated <> ''
             FROM unnest($1::text[], $2::text[]) AS r(schema_name, table_name)
             JOIN pg_namespace n ON n.nspname = r.schema_name
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = r.table_name
                            AND c.relkind IN ('r', 'p')
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_type bt ON bt.oid = t.typbasetype",
            &[&schemas, &names],
        )
        .await
        .ctx("load registered table columns")?;
    let mut columns: HashMap<String, TableColumns> = HashMap::new();
    for row in &column_rows {
        let key = format!("{}.{}", row.get::<_, String>(0), row.get::<_, String>(1));
        let entry = columns.entry(key).or_insert_with(|| TableColumns {
            columns: BTreeMap::new(),
            not_null: HashSet::new(),
        });
        let name: String = row.get(2);
        if row.get::<_, bool>(4) {
            entry.not_null.insert(name.clone());
        }
        entry.columns.insert(
            name,
            ColumnInfo {
                udt_name: row.get(3),
                generated: row.get(5),
            },
        );
    }

    let index_rows = conn
        .query(
            "SELECT n.nspname, c.relname, i.relname,
                    x.indpred IS NOT NULL OR x.indexprs IS NOT NULL,
                    x.indnkeyatts::int4,
                    ARRAY(SELECT COALESCE(a.attname::text, '')
                          FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                          LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                          ORDER BY k.ord)
             FROM unnest($1::text[], $2::text[]) AS r(schema_name, table_name)
             JOIN pg_namespace n ON n.nspname = r.schema_name
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = r.table_name
             JOIN pg_index x ON x.indrelid = c.oid AND x.indisunique
             JOIN pg_class i ON i.oid = x.indexrelid
             ORDER BY 1, 2, 3",
            &[&schemas, &names],
        )
        .await
        .ctx("load registered table unique indexes")?;
    let mut indexes: HashMap<String, Vec<UniqueIndex>> = HashMap::new();
    for row in &index_rows {
        let key = format!("{}.{}", row.get::<_, String>(0), row.get::<_, String>(1));
        let all: Vec<String> = row.get(5);
        let key_count = usize::try_from(row.get::<_, i32>(4)).unwrap_or(0);
        indexes.entry(key).or_default().push(UniqueIndex {
            name: row.get(2),
            partial_or_expression: row.get(3),
            // INCLUDE columns follow the key columns in indkey and do not make rows unique.
            key_columns: all.into_iter().take(key_count).collect(),
        });
    }

    let mut sorted: Vec<(
        String,
        &NormalizedTable,
        SyncKeyKind,
        BTreeMap<String, ColumnInfo>,
    )> = Vec::new();
    for table in tables {
        let key = table.key();
        if table.key_columns.len() != 1 {
            return Err(BootstrapError::unsupported(
                &key,
                format!(
                    "registered table {key} must resolve to exactly one sync key column for the current server runtime"
                ),
            ));
        }
        let key_column = &table.key_columns[0];
        if key_column == SCOPE_COLUMN {
            return Err(BootstrapError::unsupported(
                &key,
                format!(
                    "registered table {key} cannot use hidden scope column {SCOPE_COLUMN} as its visible sync key"
                ),
            ));
        }
        let Some(cols) = columns.remove(&key) else {
            return Err(BootstrapError::TableNotFound { table: key });
        };
        let scope_is_text = cols
            .columns
            .get(SCOPE_COLUMN)
            .is_some_and(|c| c.udt_name == "text");
        if !scope_is_text {
            return Err(BootstrapError::unsupported(
                &key,
                format!("registered table {key} must define {SCOPE_COLUMN} TEXT"),
            ));
        }
        if !cols.not_null.contains(SCOPE_COLUMN) {
            return Err(BootstrapError::unsupported(
                &key,
                format!("registered table {key} must define {SCOPE_COLUMN} TEXT NOT NULL"),
            ));
        }
        let key_type = cols
            .columns
            .get(key_column)
            .map(|c| c.udt_name.as_str())
            .unwrap_or("");
        let Some(kind) = SyncKeyKind::from_udt_name(key_type) else {
            return Err(BootstrapError::unsupported(
                &key,
                format!(
                    "registered table {key} uses unsupported sync key column type {key_type} for {key_column}; the current server runtime allows only uuid and text"
                ),
            ));
        };
        let generated: Vec<&str> = cols
            .columns
            .iter()
            .filter(|(_, c)| c.generated)
            .map(|(n, _)| n.as_str())
            .collect();
        if !generated.is_empty() {
            return Err(BootstrapError::unsupported(
                &key,
                format!(
                    "registered table {key} has generated columns ({}); pushed rows carry every column, which PostgreSQL refuses to write into a generated column",
                    generated.join(", ")
                ),
            ));
        }
        let table_indexes = indexes.remove(&key).unwrap_or_default();
        if table_indexes.is_empty() {
            return Err(BootstrapError::unsupported(
                &key,
                format!(
                    "registered table {key} must provide unique indexes or constraints for scope-aware identity"
                ),
            ));
        }
        let mut has_identity = false;
        for index in &table_indexes {
            if index.partial_or_expression {
                return Err(BootstrapError::unsupported(
                    &key,
                    format!(
                        "registered table {key} uses unsupported partial or expression unique index {}",
                        index.name
                    ),
                ));
            }
            let Some(first) = index.key_columns.first() else {
                return Err(BootstrapError::unsupported(
                    &key,
                    format!(
                        "registered table {key} uses unsupported unique index {} without column entries",
                        index.name
                    ),
                ));
            };
            if first != SCOPE_COLUMN {
                return Err(BootstrapError::unsupported(
                    &key,
                    format!(
                        "registered table {key} has unique index {} that does not begin with {SCOPE_COLUMN}",
                        index.name
                    ),
                ));
            }
            if index.key_columns.len() == 2 && &index.key_columns[1] == key_column {
                has_identity = true;
            }
        }
        if !has_identity {
            return Err(BootstrapError::unsupported(
                &key,
                format!(
                    "registered table {key} must provide unique identity ({SCOPE_COLUMN}, {key_column})"
                ),
            ));
        }
        sorted.push((key, table, kind, cols.columns));
    }

    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let tables = sorted
        .into_iter()
        .enumerate()
        .map(|(i, (_, table, kind, columns))| {
            CatalogTable::new(
                table.schema.clone(),
                table.table.clone(),
                i32::try_from(i + 1).unwrap_or(i32::MAX),
                table.key_columns[0].clone(),
                kind,
                columns,
            )
        })
        .collect();
    Ok(ValidatedCatalog::from_sorted(tables))
}

/// Step 3: the schema transaction (layout detection, or a fresh install).
async fn install_schema(
    conn: &mut Object,
    catalog: &ValidatedCatalog,
) -> Result<(), BootstrapError> {
    let tx = db::begin(conn, db::Mode::ReadCommitted).await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK_KEY])
        .await
        .ctx("take the bootstrap lock")?;
    if layout_ready(&tx, catalog).await? {
        tx.commit().await.ctx("commit layout check")?;
        return Ok(());
    }
    tx.batch_execute(TABLES_SQL)
        .await
        .ctx("create sync tables")?;
    tx.batch_execute(FUNCTIONS_SQL)
        .await
        .ctx("create sync trigger functions")?;
    tx.execute(
        "INSERT INTO sync.meta (singleton_key, protocol_label, layout_name) VALUES (TRUE, $1, $2)",
        &[&PROTOCOL_LABEL, &LAYOUT_NAME],
    )
    .await
    .ctx("insert sync.meta")?;
    let ids: Vec<i32> = catalog
        .tables()
        .iter()
        .map(CatalogTable::table_id)
        .collect();
    let schemas: Vec<&str> = catalog.tables().iter().map(CatalogTable::schema).collect();
    let names: Vec<&str> = catalog.tables().iter().map(CatalogTable::table).collect();
    let keys: Vec<&str> = catalog
        .tables()
        .iter()
        .map(CatalogTable::key_column)
        .collect();
    let kinds: Vec<i16> = catalog
        .tables()
        .iter()
        .map(|t| t.key_kind().code())
        .collect();
    tx.execute(
        "INSERT INTO sync.table_catalog (table_id, schema_name, table_name, sync_key_column, sync_key_kind)
         SELECT * FROM unnest($1::int4[], $2::text[], $3::text[], $4::text[], $5::int2[])",
        &[&ids, &schemas, &names, &keys, &kinds],
    )
    .await
    .ctx("insert sync.table_catalog")?;
    tx.batch_execute(INDEXES_SQL)
        .await
        .ctx("create sync indexes")?;
    tx.commit().await.ctx("commit sync schema install")?;
    Ok(())
}

/// §2.1 layout detection. `Ok(true)`: a matching layout exists; `Ok(false)`: fresh install.
async fn layout_ready(
    tx: &deadpool_postgres::Transaction<'_>,
    catalog: &ValidatedCatalog,
) -> Result<bool, BootstrapError> {
    let markers = tx
        .query_one(
            "SELECT to_regclass('sync.meta') IS NOT NULL, to_regclass('sync.table_catalog') IS NOT NULL",
            &[],
        )
        .await
        .ctx("inspect sync marker tables")?;
    let (meta, table_catalog): (bool, bool) = (markers.get(0), markers.get(1));
    if !meta && !table_catalog {
        let occupied: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                WHERE n.nspname = 'sync')
                     OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                                WHERE n.nspname = 'sync')",
                &[],
            )
            .await
            .ctx("inspect sync schema objects")?
            .get(0);
        if occupied {
            return Err(BootstrapError::layout(format!(
                "existing sync schema uses unsupported layout; drop and recreate the sync schema for layout {LAYOUT_NAME:?}"
            )));
        }
        return Ok(false);
    }
    if !meta || !table_catalog {
        return Err(BootstrapError::layout(format!(
            "existing sync schema is missing required marker tables sync.meta and sync.table_catalog for layout {LAYOUT_NAME:?}"
        )));
    }

    let meta_rows = tx
        .query(
            "SELECT singleton_key, protocol_label, layout_name FROM sync.meta ORDER BY singleton_key DESC",
            &[],
        )
        .await
        .map_err(|e| {
            BootstrapError::layout(format!("existing sync.meta layout is unsupported: {e}"))
        })?;
    for row in &meta_rows {
        let singleton: bool = row.try_get(0).unwrap_or(false);
        let label: String = row.try_get(1).unwrap_or_default();
        let layout: String = row.try_get(2).unwrap_or_default();
        if !singleton {
            return Err(BootstrapError::layout(
                "sync.meta must contain singleton_key = true".to_owned(),
            ));
        }
        if label != PROTOCOL_LABEL {
            return Err(BootstrapError::layout(format!(
                "sync.meta protocol_label = {label:?}, expected {PROTOCOL_LABEL:?}"
            )));
        }
        if layout != LAYOUT_NAME {
            return Err(BootstrapError::layout(format!(
                "sync.meta layout_name = {layout:?}, expected {LAYOUT_NAME:?}"
            )));
        }
    }
    if meta_rows.len() != 1 {
        return Err(BootstrapError::layout(format!(
            "sync.meta must contain exactly one row, found {}",
            meta_rows.len()
        )));
    }

    let catalog_rows = tx
        .query(
            "SELECT table_id, schema_name, table_name, sync_key_column, sync_key_kind
             FROM sync.table_catalog ORDER BY table_id",
            &[],
        )
        .await
        .map_err(|e| {
            BootstrapError::layout(format!(
                "existing sync.table_catalog layout is unsupported: {e}"
            ))
        })?;
    let expected = catalog.tables();
    if catalog_rows.len() != expected.len() {
        return Err(BootstrapError::layout(format!(
            "sync.table_catalog row count = {}, expected {}",
            catalog_rows.len(),
            expected.len()
        )));
    }
    for (i, (row, want)) in catalog_rows.iter().zip(expected).enumerate() {
        let got = (
            row.try_get::<_, i32>(0).unwrap_or(0),
            row.try_get::<_, String>(1).unwrap_or_default(),
            row.try_get::<_, String>(2).unwrap_or_default(),
            row.try_get::<_, String>(3).unwrap_or_default(),
            row.try_get::<_, i16>(4).unwrap_or(0),
        );
        let want_tuple = (
            want.table_id(),
            want.schema().to_owned(),
            want.table().to_owned(),
            want.key_column().to_owned(),
            want.key_kind().code(),
        );
        if got != want_tuple {
            return Err(BootstrapError::layout(format!(
                "sync.table_catalog row {i} = {got:?}, expected {want_tuple:?}; registered tables changed since the sync schema was installed"
            )));
        }
    }
    Ok(true)
}

/// §1.5.3 from `pg_constraint` (§13 item 24): closure, MATCH, scope-inclusive shape,
/// deferrability.
async fn validate_foreign_keys(
    conn: &Object,
    catalog: &ValidatedCatalog,
) -> Result<(), BootstrapError> {
    let schemas: Vec<&str> = catalog.tables().iter().map(CatalogTable::schema).collect();
    let names: Vec<&str> = catalog.tables().iter().map(CatalogTable::table).collect();
    let rows = conn
        .query(
            "SELECT cn.nspname, cc.relname, con.conname, pn.nspname, pc.relname,
                    con.confmatchtype::text, con.condeferrable,
                    ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                          ORDER BY k.ord),
                    ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
                          ORDER BY k.ord)
             FROM unnest($1::text[], $2::text[]) AS r(schema_name, table_name)
             JOIN pg_namespace cn ON cn.nspname = r.schema_name
             JOIN pg_class cc ON cc.relnamespace = cn.oid AND cc.relname = r.table_name
             JOIN pg_constraint con ON con.conrelid = cc.oid AND con.contype = 'f'
             JOIN pg_class pc ON pc.oid = con.confrelid
             JOIN pg_namespace pn ON pn.oid = pc.relnamespace
             ORDER BY 1, 2, 3",
            &[&schemas, &names],
        )
        .await
        .ctx("load registered table foreign keys")?;

    let mut not_closed = Vec::new();
    let mut not_scoped = Vec::new();
    let mut not_deferrable = Vec::new();
    let mut first_table: Option<String> = None;
    for row in &rows {
        let child = format!("{}.{}", row.get::<_, String>(0), row.get::<_, String>(1));
        let constraint: String = row.get(2);
        let parent_schema: String = row.get(3);
        let parent_table: String = row.get(4);
        let parent = format!("{parent_schema}.{parent_table}");
        let match_type: String = row.get(5);
        let deferrable: bool = row.get(6);
        let child_columns: Vec<String> = row.get(7);
        let parent_columns: Vec<String> = row.get(8);

        let Some(parent_info) = catalog.by_name(&parent_schema, &parent_table) else {
            first_table.get_or_insert_with(|| child.clone());
            not_closed.push(format!("{child} -> {parent} ({constraint})"));
            continue;
        };
        if match_type == "f" || match_type == "p" {
            let option = if match_type == "f" { "FULL" } else { "PARTIAL" };
            return Err(BootstrapError::unsupported(
                &child,
                format!(
                    "registered schema contains unsupported FK MATCH option {option:?} on {child} ({constraint})"
                ),
            ));
        }
        let scoped = child_columns.len() == 2
            && parent_columns.len() == 2
            && child_columns[0] == SCOPE_COLUMN
            && parent_columns[0] == SCOPE_COLUMN
            && parent_columns[1] == parent_info.key_column();
        if !scoped {
            first_table.get_or_insert_with(|| child.clone());
            not_scoped.push(format!("{child} -> {parent} ({constraint})"));
        }
        if !deferrable {
            first_table.get_or_insert_with(|| child.clone());
            not_deferrable.push(format!("{}.{constraint}", row.get::<_, String>(0)));
        }
    }
    if !not_closed.is_empty() {
        not_closed.sort();
        return Err(BootstrapError::Unsupported {
            table: first_table,
            message: format!(
                "registered tables are not FK-closed: {}",
                not_closed.join("; ")
            ),
        });
    }
    if !not_scoped.is_empty() {
        not_scoped.sort();
        return Err(BootstrapError::Unsupported {
            table: first_table,
            message: format!(
                "registered schema contains unsupported registered FK constraints; registered child FKs must be scope-inclusive and reference (_sync_scope_id, parent_sync_key): {}",
                not_scoped.join("; ")
            ),
        });
    }
    if !not_deferrable.is_empty() {
        not_deferrable.sort();
        not_deferrable.dedup();
        return Err(BootstrapError::Unsupported {
            table: first_table,
            message: format!(
                "registered schema contains non-deferrable FK constraints: {}; make these constraints DEFERRABLE before bootstrap (INITIALLY DEFERRED recommended)",
                not_deferrable.join(", ")
            ),
        });
    }
    Ok(())
}

/// §2.9: drop and re-create both triggers on every registered table, under the bootstrap lock.
async fn install_triggers(
    conn: &mut Object,
    catalog: &ValidatedCatalog,
) -> Result<(), BootstrapError> {
    let mut sql = String::new();
    for table in catalog.tables() {
        let target = table.qualified();
        let guard = escape_identifier(OWNER_GUARD_TRIGGER);
        let capture = escape_identifier(CAPTURE_TRIGGER);
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {capture} ON {target};
             DROP TRIGGER IF EXISTS {guard} ON {target};
             CREATE TRIGGER {guard} BEFORE INSERT OR UPDATE OR DELETE ON {target}
                 FOR EACH ROW EXECUTE FUNCTION sync.enforce_registered_row_owner();
             CREATE TRIGGER {capture} AFTER INSERT OR UPDATE OR DELETE ON {target}
                 FOR EACH ROW EXECUTE FUNCTION sync.capture_registered_row_change({}, {}, {});\n",
            escape_literal(table.key_column()),
            escape_literal(&table.key_kind().code().to_string()),
            escape_literal(&table.table_id().to_string()),
        ));
    }
    let tx = db::begin(conn, db::Mode::ReadCommitted).await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK_KEY])
        .await
        .ctx("take the bootstrap lock for triggers")?;
    tx.batch_execute(&sql)
        .await
        .ctx("install capture triggers")?;
    tx.commit().await.ctx("commit capture triggers")?;
    Ok(())
}
