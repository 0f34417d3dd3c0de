//! The one way SQL text with names in it is built.
//!
//! Table and column names come from the application's schema and the configured server schema
//! name is a free-form string, so none of them may be pasted into SQL as they are (the
//! reference does, §12 B4 of the client chapter). Every statement that needs a name is written
//! through [`SqlBuffer`]: trusted SQL fragments with [`SqlBuffer::push`], names with
//! [`SqlBuffer::identifier`] (double-quoted, embedded `"` doubled) and constant strings with
//! [`SqlBuffer::string_literal`] (single-quoted, embedded `'` doubled). Values that vary per
//! call are never written into SQL at all: they are bind parameters.

/// A growing SQL statement whose only ways to receive a name or a string are the escaping
/// writers.
#[derive(Debug, Default, Clone)]
pub(crate) struct SqlBuffer {
    sql: String,
}

impl SqlBuffer {
    /// An empty statement.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends trusted SQL text (keywords, punctuation, names of our own `_sync_*` tables).
    /// Never call this with anything that came from configuration or the database.
    pub(crate) fn push(&mut self, trusted: &str) -> &mut Self {
        self.sql.push_str(trusted);
        self
    }

    /// Appends `name` as a quoted identifier: `"name"` with every `"` doubled.
    pub(crate) fn identifier(&mut self, name: &str) -> &mut Self {
        self.sql.push('"');
        for c in name.chars() {
            if c == '"' {
                self.sql.push('"');
            }
            self.sql.push(c);
        }
        self.sql.push('"');
        self
    }

    /// Appends `prefix.name` with `name` quoted, e.g. `NEW."title"`. `prefix` is trusted.
    pub(crate) fn qualified(&mut self, prefix: &str, name: &str) -> &mut Self {
        self.push(prefix).push(".").identifier(name)
    }

    /// Appends `value` as a string literal: `'value'` with every `'` doubled.
    pub(crate) fn string_literal(&mut self, value: &str) -> &mut Self {
        self.sql.push('\'');
        for c in value.chars() {
            if c == '\'' {
                self.sql.push('\'');
            }
            self.sql.push(c);
        }
        self.sql.push('\'');
        self
    }

    /// Appends the items, separated by `separator`, each written by `write`.
    pub(crate) fn join<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        separator: &str,
        mut write: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(separator);
            }
            write(self, item);
        }
        self
    }

    /// The statement text so far.
    pub(crate) fn as_str(&self) -> &str {
        &self.sql
    }

    /// The finished statement.
    pub(crate) fn finish(self) -> String {
        self.sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_doubles_embedded_double_quotes() {
        let mut sql = SqlBuffer::new();
        sql.identifier(r#"we"ird"#);
        assert_eq!(sql.as_str(), r#""we""ird""#);
    }

    #[test]
    fn identifier_keeps_single_quotes_and_spaces_verbatim() {
        let mut sql = SqlBuffer::new();
        sql.identifier("it's a name");
        assert_eq!(sql.as_str(), r#""it's a name""#);
    }

    #[test]
    fn string_literal_doubles_embedded_single_quotes() {
        let mut sql = SqlBuffer::new();
        sql.string_literal("o'brien's \"schema\"");
        assert_eq!(sql.as_str(), r#"'o''brien''s "schema"'"#);
    }

    #[test]
    fn escaped_names_round_trip_through_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let table = r#"od"d 'table'"#;
        let column = r#"col"umn"#;
        let mut ddl = SqlBuffer::new();
        ddl.push("CREATE TABLE ")
            .identifier(table)
            .push(" (")
            .identifier(column)
            .push(" TEXT)");
        conn.execute(ddl.as_str(), []).unwrap();
        let mut insert = SqlBuffer::new();
        insert
            .push("INSERT INTO ")
            .identifier(table)
            .push(" VALUES (")
            .string_literal("it's")
            .push(")");
        conn.execute(insert.as_str(), []).unwrap();
        let names: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .unwrap()
            .query_map([table], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, vec![column.to_owned()]);
        let mut select = SqlBuffer::new();
        select
            .push("SELECT ")
            .identifier(column)
            .push(" FROM ")
            .identifier(table);
        let value: String = conn.query_row(select.as_str(), [], |r| r.get(0)).unwrap();
        assert_eq!(value, "it's");
    }

    #[test]
    fn join_separates_items() {
        let mut sql = SqlBuffer::new();
        sql.join(["a", "b\"c"], ", ", |s, n| {
            s.identifier(n);
        });
        assert_eq!(sql.as_str(), r#""a", "b""c""#);
    }
}
