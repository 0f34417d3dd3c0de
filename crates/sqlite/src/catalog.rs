//! The validated set of managed tables (client chapter §2.7, §2.4).
//!
//! A [`Catalog`] can only be built by [`Catalog::load`], which checks every rule of §2.7 (plus
//! §12 B8: the primary key must be exactly the sync key column), so the rest of the crate
//! takes a `&Catalog` as proof that table names, key kinds and column lists are usable. Table
//! metadata is read with the `pragma_table_info(?)` / `pragma_foreign_key_list(?)`
//! table-valued functions, so no name is ever formatted into those queries.

use std::collections::{BTreeSet, HashMap};

use oversync_protocol::key::LocalKeyKind;
use rusqlite::Connection;

use crate::config::Config;
use crate::error::{ConfigError, SqliteContext, StoreError};

/// One column of a managed table, in `PRAGMA table_info` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// The declared spelling, used (quoted) in SQL.
    pub(crate) name: String,
    /// The lower-cased spelling, used as the JSON member name.
    pub(crate) member: String,
    /// Whether the declared type contains `blob` (case-insensitively).
    pub(crate) is_blob: bool,
    /// Whether this BLOB column holds a UUID on the wire: the key column or an FK source
    /// column.
    pub(crate) is_uuid_blob: bool,
}

/// A validated managed table.
#[derive(Debug, Clone)]
pub(crate) struct ManagedTable {
    /// Lower-cased table name (the server's and the metadata's spelling).
    pub(crate) name: String,
    /// All columns in declaration order.
    pub(crate) columns: Vec<Column>,
    /// Index of the key column in `columns`.
    pub(crate) key_index: usize,
    /// How the key is stored locally.
    pub(crate) key_kind: LocalKeyKind,
    /// Position in the FK order (parents first).
    pub(crate) rank: usize,
}

impl ManagedTable {
    /// The key column.
    pub(crate) fn key(&self) -> &Column {
        &self.columns[self.key_index]
    }
}

/// The validated managed tables of one client, with the configured schema.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    /// The configured (trimmed) server schema.
    pub(crate) schema: String,
    /// Tables in configuration order.
    pub(crate) tables: Vec<ManagedTable>,
    index: HashMap<String, usize>,
}

#[derive(Debug)]
struct RawColumn {
    name: String,
    declared_type: String,
    pk: i64,
}

#[derive(Debug)]
struct RawForeignKey {
    seq: i64,
    table: String,
    from: String,
    to: String,
}

impl Catalog {
    /// The table named `name` (lower-cased), if managed.
    pub(crate) fn table(&self, name: &str) -> Option<&ManagedTable> {
        self.index.get(name).map(|&i| &self.tables[i])
    }

    /// Validates the configured tables against the database (§2.7).
    pub(crate) fn load(conn: &Connection, config: &Config) -> Result<Catalog, CatalogError> {
        let schema = config.schema.trim().to_owned();
        if schema.is_empty() {
            return Err(ConfigError::EmptySchema.into());
        }
        struct Pending {
            name: String,
            columns: Vec<RawColumn>,
            fks: Vec<RawForeignKey>,
            key_index: usize,
            key_kind: LocalKeyKind,
        }
        let mut pending: Vec<Pending> = Vec::new();
        for configured in &config.tables {
            let name = configured.table_name.trim().to_lowercase();
            if name.is_empty() {
                return Err(ConfigError::EmptyTableName.into());
            }
            if name.contains('.') {
                return Err(ConfigError::SchemaQualifiedTable {
                    table: configured.table_name.clone(),
                }
                .into());
            }
            if pending.iter().any(|p| p.name == name) {
                return Err(ConfigError::DuplicateTable { table: name }.into());
            }
            let keys = configured.normalized_key_columns();
            if keys.len() != 1 {
                return Err(ConfigError::KeyColumnCount {
                    table: name,
                    count: keys.len(),
                }
                .into());
            }
            let key = &keys[0];
            let columns = read_columns(conn, &name)?;
            if columns.is_empty() {
                return Err(ConfigError::MissingTable { table: name }.into());
            }
            let Some(key_index) = columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(key))
            else {
                return Err(ConfigError::KeyColumnNotFound {
                    table: name,
                    column: key.clone(),
                }
                .into());
            };
            let pk_members = columns.iter().filter(|c| c.pk > 0).count();
            if columns[key_index].pk != 1 || pk_members != 1 {
                return Err(ConfigError::KeyNotPrimaryKey {
                    table: name,
                    column: columns[key_index].name.clone(),
                }
                .into());
            }
            let declared = columns[key_index].declared_type.to_lowercase();
            let key_kind = if declared.contains("blob") {
                LocalKeyKind::UuidBlob
            } else if declared.contains("text") {
                LocalKeyKind::Text
            } else {
                return Err(ConfigError::UnsupportedKeyType {
                    table: name,
                    column: columns[key_index].name.clone(),
                    declared_type: columns[key_index].declared_type.clone(),
                }
                .into());
            };
            let fks = read_foreign_keys(conn, &name)?;
            pending.push(Pending {
                name,
                columns,
                fks,
                key_index,
                key_kind,
            });
        }

        // FK closure, one table at a time in configuration order.
        let managed: BTreeSet<&str> = pending.iter().map(|p| p.name.as_str()).collect();
        for table in &pending {
            let mut composite = BTreeSet::new();
            let mut open = BTreeSet::new();
            for fk in &table.fks {
                let target = fk.table.to_lowercase();
                let label = format!("{}.{} -> {}.{}", table.name, fk.from, target, fk.to);
                if fk.seq > 0 {
                    composite.insert(label);
                } else if !target.is_empty() && !managed.contains(target.as_str()) {
                    open.insert(label);
                }
            }
            if !composite.is_empty() {
                return Err(ConfigError::CompositeForeignKey {
                    table: table.name.clone(),
                    offenders: composite.into_iter().collect::<Vec<_>>().join(", "),
                }
                .into());
            }
            if !open.is_empty() {
                return Err(ConfigError::NotForeignKeyClosed {
                    table: table.name.clone(),
                    offenders: open.into_iter().collect::<Vec<_>>().join(", "),
                }
                .into());
            }
        }

        // Kahn's algorithm, ready set ordered by configuration position.
        let n = pending.len();
        let position: HashMap<&str, usize> = pending
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let mut children: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        let mut indegree = vec![0usize; n];
        for (child, table) in pending.iter().enumerate() {
            let parents: BTreeSet<usize> = table
                .fks
                .iter()
                .filter_map(|fk| position.get(fk.table.to_lowercase().as_str()).copied())
                .filter(|&parent| parent != child)
                .collect();
            for parent in parents {
                if children[parent].insert(child) {
                    indegree[child] += 1;
                }
            }
        }
        let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(next) = ready.pop_first() {
            order.push(next);
            for &child in &children[next] {
                indegree[child] -= 1;
                if indegree[child] == 0 {
                    ready.insert(child);
                }
            }
        }
        for i in 0..n {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        let mut rank = vec![0usize; n];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }

        let mut tables = Vec::with_capacity(n);
        let mut index = HashMap::with_capacity(n);
        for (i, table) in pending.into_iter().enumerate() {
            let fk_sources: BTreeSet<String> =
                table.fks.iter().map(|fk| fk.from.to_lowercase()).collect();
            let columns = table
                .columns
                .iter()
                .enumerate()
                .map(|(ci, c)| {
                    let member = c.name.to_lowercase();
                    let is_blob = c.declared_type.to_lowercase().contains("blob");
                    Column {
                        is_uuid_blob: is_blob
                            && (ci == table.key_index || fk_sources.contains(&member)),
                        name: c.name.clone(),
                        member,
                        is_blob,
                    }
                })
                .collect();
            index.insert(table.name.clone(), i);
            tables.push(ManagedTable {
                name: table.name,
                columns,
                key_index: table.key_index,
                key_kind: table.key_kind,
                rank: rank[i],
            });
        }
        Ok(Catalog {
            schema,
            tables,
            index,
        })
    }
}

/// Why [`Catalog::load`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CatalogError {
    /// The configuration or schema is unsupported.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Reading table metadata failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn read_columns(conn: &Connection, table: &str) -> Result<Vec<RawColumn>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")
        .ctx("read table columns")?;
    let rows = stmt
        .query_map([table], |r| {
            Ok(RawColumn {
                name: r.get(0)?,
                declared_type: r.get(1)?,
                pk: r.get(2)?,
            })
        })
        .ctx("read table columns")?;
    rows.collect::<Result<_, _>>().ctx("read table columns")
}

fn read_foreign_keys(conn: &Connection, table: &str) -> Result<Vec<RawForeignKey>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT seq, \"table\", \"from\", coalesce(\"to\", '') FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )
        .ctx("read foreign keys")?;
    let rows = stmt
        .query_map([table], |r| {
            Ok(RawForeignKey {
                seq: r.get(0)?,
                table: r.get(1)?,
                from: r.get(2)?,
                to: r.get(3)?,
            })
        })
        .ctx("read foreign keys")?;
    rows.collect::<Result<_, _>>().ctx("read foreign keys")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncTable;

    fn load(ddl: &str, tables: &[(&str, &str)]) -> Result<Catalog, CatalogError> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(ddl).unwrap();
        let config = Config::new(
            "business",
            tables.iter().map(|(t, k)| SyncTable::new(*t, *k)).collect(),
        );
        Catalog::load(&conn, &config)
    }

    fn config_error(result: Result<Catalog, CatalogError>) -> ConfigError {
        match result {
            Err(CatalogError::Config(e)) => e,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn integer_key_is_rejected_naming_the_table() {
        let e = config_error(load(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
            &[("notes", "id")],
        ));
        assert!(matches!(e, ConfigError::UnsupportedKeyType { .. }));
        assert!(e.to_string().contains("notes"));
    }

    #[test]
    fn composite_primary_key_is_rejected_naming_the_table() {
        let e = config_error(load(
            "CREATE TABLE pairs (a TEXT, b TEXT, PRIMARY KEY (a, b));",
            &[("pairs", "a")],
        ));
        assert!(matches!(e, ConfigError::KeyNotPrimaryKey { .. }));
        assert!(e.to_string().contains("pairs"));
    }

    #[test]
    fn key_column_that_is_not_the_primary_key_is_rejected() {
        let e = config_error(load(
            "CREATE TABLE docs (id TEXT PRIMARY KEY, slug TEXT);",
            &[("docs", "slug")],
        ));
        assert!(matches!(e, ConfigError::KeyNotPrimaryKey { .. }));
        assert!(e.to_string().contains("docs"));
    }

    #[test]
    fn missing_key_column_is_rejected_naming_the_table() {
        let e = config_error(load(
            "CREATE TABLE docs (id TEXT PRIMARY KEY);",
            &[("docs", "uuid")],
        ));
        assert!(matches!(e, ConfigError::KeyColumnNotFound { .. }));
        assert!(e.to_string().contains("docs"));
    }

    #[test]
    fn missing_table_is_rejected_naming_the_table() {
        let e = config_error(load("", &[("ghosts", "id")]));
        assert_eq!(
            e,
            ConfigError::MissingTable {
                table: "ghosts".to_owned()
            }
        );
        assert!(e.to_string().contains("ghosts"));
    }

    #[test]
    fn schema_qualified_table_is_rejected_naming_the_table() {
        let e = config_error(load("", &[("main.docs", "id")]));
        assert!(e.to_string().contains("main.docs"));
    }

    #[test]
    fn duplicate_table_is_rejected_naming_the_table() {
        let e = config_error(load(
            "CREATE TABLE docs (id TEXT PRIMARY KEY);",
            &[("docs", "id"), ("DOCS", "id")],
        ));
        assert!(matches!(e, ConfigError::DuplicateTable { .. }));
        assert!(e.to_string().contains("docs"));
    }

    #[test]
    fn foreign_key_to_unmanaged_table_is_rejected_naming_the_table() {
        let e = config_error(load(
            "CREATE TABLE users (id TEXT PRIMARY KEY);
             CREATE TABLE posts (id TEXT PRIMARY KEY, author TEXT REFERENCES users(id));",
            &[("posts", "id")],
        ));
        assert!(matches!(e, ConfigError::NotForeignKeyClosed { .. }));
        assert!(e.to_string().contains("posts.author -> users.id"));
    }

    #[test]
    fn composite_foreign_key_is_rejected_naming_the_table() {
        let e = config_error(load(
            "CREATE TABLE p (a TEXT, b TEXT, id TEXT PRIMARY KEY, UNIQUE (a, b));
             CREATE TABLE c (id TEXT PRIMARY KEY, x TEXT, y TEXT, FOREIGN KEY (x, y) REFERENCES p(a, b));",
            &[("p", "id"), ("c", "id")],
        ));
        assert!(matches!(e, ConfigError::CompositeForeignKey { .. }));
        assert!(e.to_string().contains("c.y -> p.b"));
    }

    #[test]
    fn two_key_columns_are_rejected_naming_the_table() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT PRIMARY KEY, b TEXT);")
            .unwrap();
        let config = Config::new(
            "s",
            vec![SyncTable {
                table_name: "t".to_owned(),
                sync_key_columns: vec!["a".to_owned(), "b".to_owned()],
            }],
        );
        let e = config_error(Catalog::load(&conn, &config));
        assert!(matches!(e, ConfigError::KeyColumnCount { count: 2, .. }));
        assert!(e.to_string().contains('t'));
    }

    #[test]
    fn fk_order_puts_parents_first_and_keeps_configuration_order_for_ties() {
        let catalog = load(
            "CREATE TABLE users (id TEXT PRIMARY KEY);
             CREATE TABLE posts (id TEXT PRIMARY KEY, author TEXT REFERENCES users(id));
             CREATE TABLE tags (id TEXT PRIMARY KEY);
             CREATE TABLE selfref (id TEXT PRIMARY KEY, parent TEXT REFERENCES selfref(id));",
            &[
                ("posts", "id"),
                ("tags", "id"),
                ("users", "id"),
                ("selfref", "id"),
            ],
        )
        .unwrap();
        let rank = |t: &str| catalog.table(t).unwrap().rank;
        assert_eq!(rank("tags"), 0);
        assert_eq!(rank("users"), 1);
        assert_eq!(rank("posts"), 2);
        assert_eq!(rank("selfref"), 3);
    }

    #[test]
    fn blob_key_and_blob_fk_columns_are_uuid_columns() {
        let catalog = load(
            "CREATE TABLE files (id BLOB PRIMARY KEY, data BLOB);
             CREATE TABLE refs (id BLOB PRIMARY KEY, file_id BLOB REFERENCES files(id), raw BLOB);",
            &[("files", "id"), ("refs", "id")],
        )
        .unwrap();
        let refs = catalog.table("refs").unwrap();
        assert_eq!(refs.key_kind, LocalKeyKind::UuidBlob);
        let uuid_cols: Vec<&str> = refs
            .columns
            .iter()
            .filter(|c| c.is_uuid_blob)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(uuid_cols, vec!["id", "file_id"]);
        assert!(!catalog.table("files").unwrap().columns[1].is_uuid_blob);
    }
}
