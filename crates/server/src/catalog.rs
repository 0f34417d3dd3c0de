//! Registered tables: normalization (§1.3) and the [`ValidatedCatalog`] that bootstrap builds.
//!
//! **Invariant:** every SQL identifier this crate interpolates into a statement comes from a
//! [`CatalogTable`], and a `ValidatedCatalog` can only be constructed by bootstrap after the
//! table passed the envelope checks of §1.5. Identifiers are escaped once, here, with
//! `postgres_protocol::escape::escape_identifier`; values always travel as bind parameters.

use std::collections::{BTreeMap, HashMap};

use oversync_protocol::key::SyncKeyKind;
use postgres_protocol::escape::escape_identifier;

use crate::config::RegisteredTable;

/// The hidden owner column every registered table carries.
pub const SCOPE_COLUMN: &str = "_sync_scope_id";

/// A registration after §1.3 normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalizedTable {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) key_columns: Vec<String>,
}

impl NormalizedTable {
    pub(crate) fn from_registration(reg: &RegisteredTable) -> Self {
        let schema = reg.schema.trim().to_lowercase();
        let schema = if schema.is_empty() {
            "public".to_owned()
        } else {
            schema
        };
        let mut key_columns: Vec<String> = Vec::new();
        for column in &reg.sync_key_columns {
            let column = column.trim().to_lowercase();
            if !column.is_empty() && !key_columns.contains(&column) {
                key_columns.push(column);
            }
        }
        NormalizedTable {
            schema,
            table: reg.table.trim().to_lowercase(),
            key_columns,
        }
    }

    /// `schema.table`.
    pub(crate) fn key(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// A column of a registered table, as bootstrap found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Lower-cased PostgreSQL `udt_name` (`bytea`, `uuid`, `int8`, …).
    pub udt_name: String,
    /// Whether the column is generated (stored); such columns cannot be written by pushes.
    pub generated: bool,
}

/// One registered table that passed bootstrap validation.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    schema: String,
    table: String,
    table_id: i32,
    key_column: String,
    key_kind: SyncKeyKind,
    columns: BTreeMap<String, ColumnInfo>,
    qualified: String,
    key_ident: String,
}

impl CatalogTable {
    pub(crate) fn new(
        schema: String,
        table: String,
        table_id: i32,
        key_column: String,
        key_kind: SyncKeyKind,
        columns: BTreeMap<String, ColumnInfo>,
    ) -> Self {
        let qualified = format!(
            "{}.{}",
            escape_identifier(&schema),
            escape_identifier(&table)
        );
        let key_ident = escape_identifier(&key_column);
        CatalogTable {
            schema,
            table,
            table_id,
            key_column,
            key_kind,
            columns,
            qualified,
            key_ident,
        }
    }

    /// Lower-case schema name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Lower-case table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// `sync.table_catalog.table_id`: 1-based position in the sorted table keys.
    pub fn table_id(&self) -> i32 {
        self.table_id
    }

    /// The visible sync key column.
    pub fn key_column(&self) -> &str {
        &self.key_column
    }

    /// The sync key type.
    pub fn key_kind(&self) -> SyncKeyKind {
        self.key_kind
    }

    /// Every column (lower-cased name → info).
    pub fn columns(&self) -> &BTreeMap<String, ColumnInfo> {
        &self.columns
    }

    /// Whether the lower-cased column `name` is `bytea`.
    pub fn is_bytea(&self, name: &str) -> bool {
        self.columns
            .get(name)
            .is_some_and(|c| c.udt_name == "bytea")
    }

    /// The escaped, schema-qualified table name for SQL text.
    pub(crate) fn qualified(&self) -> &str {
        &self.qualified
    }

    /// The escaped sync key column for SQL text.
    pub(crate) fn key_ident(&self) -> &str {
        &self.key_ident
    }

    /// An escaped column name for SQL text; only for names present in [`Self::columns`].
    pub(crate) fn column_ident(&self, name: &str) -> Option<String> {
        self.columns
            .contains_key(name)
            .then(|| escape_identifier(name))
    }

    /// `schema.table`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// The registered tables after bootstrap, indexed by `table_id` and by `schema.table`.
/// Only bootstrap constructs it.
#[derive(Debug, Clone, Default)]
pub struct ValidatedCatalog {
    tables: Vec<CatalogTable>,
    by_key: HashMap<String, usize>,
}

impl ValidatedCatalog {
    /// Builds the catalog from tables already sorted by key with ids 1..N.
    pub(crate) fn from_sorted(tables: Vec<CatalogTable>) -> Self {
        let by_key = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.key(), i))
            .collect();
        ValidatedCatalog { tables, by_key }
    }

    /// Every table in `table_id` order.
    pub fn tables(&self) -> &[CatalogTable] {
        &self.tables
    }

    /// The table with `table_id`.
    pub fn by_id(&self, table_id: i32) -> Option<&CatalogTable> {
        let index = usize::try_from(table_id).ok()?.checked_sub(1)?;
        self.tables.get(index)
    }

    /// The table `schema.table` (normalized names).
    pub fn by_name(&self, schema: &str, table: &str) -> Option<&CatalogTable> {
        self.by_key
            .get(&format!("{schema}.{table}"))
            .and_then(|&i| self.tables.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_trimmed_lowercased_and_deduplicated() {
        let reg = RegisteredTable {
            schema: "  ".to_owned(),
            table: " Users ".to_owned(),
            sync_key_columns: vec![" ID ".into(), "".into(), "id".into(), "Other".into()],
        };
        let n = NormalizedTable::from_registration(&reg);
        assert_eq!(n.schema, "public");
        assert_eq!(n.table, "users");
        assert_eq!(n.key_columns, vec!["id".to_owned(), "other".to_owned()]);
        assert_eq!(n.key(), "public.users");
    }

    #[test]
    fn identifiers_are_escaped_once_with_embedded_quotes() {
        let t = CatalogTable::new(
            "we\"ird".to_owned(),
            "t".to_owned(),
            1,
            "id".to_owned(),
            SyncKeyKind::Text,
            BTreeMap::new(),
        );
        assert_eq!(t.qualified(), "\"we\"\"ird\".\"t\"");
        assert_eq!(t.column_ident("nope"), None);
    }
}
