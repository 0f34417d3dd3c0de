//! Applying staged rows (§5.6) so that capture order provably equals staged order (§13
//! item 4).
//!
//! Consecutive INSERTs into one table with the same column list become one
//! `INSERT … SELECT … FROM jsonb_array_elements(…) WITH ORDINALITY … ORDER BY ordinality`:
//! PostgreSQL inserts (and queues the AFTER ROW capture triggers) in the order the SELECT
//! yields rows, which the ORDER BY fixes. UPDATEs and DELETEs are one prepared statement per
//! row. Every distinct statement is prepared first (pipelined, cached per connection), then
//! all executions are sent in one pipeline: tokio-postgres writes a query's messages when its
//! future is first polled and `try_join_all` polls in order, so the server executes them in
//! staged order, in one round trip.

use std::collections::HashMap;

use oversync_protocol::op::Op;
use tokio_postgres::types::ToSql;

use crate::catalog::{CatalogTable, SCOPE_COLUMN};
use crate::db::Context;
use crate::error::{Failure, InternalError};
use crate::push::validate::key_cast;

/// One staged row as loaded at commit.
#[derive(Debug)]
pub(crate) struct StagedRow<'c> {
    pub(crate) table: &'c CatalogTable,
    pub(crate) key_text: String,
    pub(crate) op: Op,
    pub(crate) payload: Option<String>,
    pub(crate) columns: Vec<String>,
}

struct Step {
    statement: usize,
    first: String,
}

/// The `push_commit_invalid` message for a database error that is the pushed data's fault
/// (SQLSTATE classes 22 and 23), naming the constraint when there is one.
pub(crate) fn rejected_data(error: &tokio_postgres::Error, when: &str) -> Option<String> {
    let db = error.as_db_error()?;
    let class = &db.code().code()[..2];
    if class != "22" && class != "23" {
        return None;
    }
    let mut message = format!(
        "pushed rows were rejected by the database {when}: {}",
        db.message()
    );
    if let Some(constraint) = db.constraint() {
        message.push_str(&format!(" (constraint {constraint}"));
        if let Some(table) = db.table() {
            message.push_str(&format!(" on {}.{table}", db.schema().unwrap_or("")));
        }
        message.push(')');
    }
    Some(message)
}

fn column_list(table: &CatalogTable, columns: &[String]) -> Result<Vec<String>, Failure> {
    columns
        .iter()
        .map(|c| {
            table.column_ident(c).ok_or_else(|| {
                Failure::Invalid(format!(
                    "payload for {} contains unknown column {c:?}",
                    table.key()
                ))
            })
        })
        .collect()
}

/// Applies `rows` in order for the owner `user_id`.
pub(crate) async fn apply_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: &str,
    rows: &[StagedRow<'_>],
) -> Result<(), Failure> {
    let scope = postgres_protocol::escape::escape_identifier(SCOPE_COLUMN);
    let mut statements: Vec<String> = Vec::new();
    let mut statement_index: HashMap<String, usize> = HashMap::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut intern = |sql: String| -> usize {
        *statement_index.entry(sql.clone()).or_insert_with(|| {
            statements.push(sql);
            statements.len() - 1
        })
    };

    let mut i = 0;
    while i < rows.len() {
        let row = &rows[i];
        let table = row.table;
        let qt = table.qualified();
        match row.op {
            Op::Insert => {
                let mut end = i + 1;
                while end < rows.len()
                    && rows[end].op == Op::Insert
                    && rows[end].table.table_id() == table.table_id()
                    && rows[end].columns == row.columns
                {
                    end += 1;
                }
                let cols = column_list(table, &row.columns)?;
                let select: Vec<String> = cols.iter().map(|c| format!("r.{c}")).collect();
                let sql = format!(
                    "INSERT INTO {qt} ({scope}, {}) SELECT $2::text, {}
                     FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS e(doc, ord)
                     CROSS JOIN LATERAL jsonb_populate_record(NULL::{qt}, e.doc) AS r
                     ORDER BY e.ord",
                    cols.join(", "),
                    select.join(", ")
                );
                let mut json = String::from("[");
                for (n, r) in rows[i..end].iter().enumerate() {
                    if n > 0 {
                        json.push(',');
                    }
                    json.push_str(r.payload.as_deref().unwrap_or("{}"));
                }
                json.push(']');
                steps.push(Step {
                    statement: intern(sql),
                    first: json,
                });
                i = end;
            }
            Op::Update => {
                let cols = column_list(table, &row.columns)?;
                let set: Vec<String> = cols.iter().map(|c| format!("{c} = src.{c}")).collect();
                let key = table.key_ident();
                let sql = format!(
                    "UPDATE {qt} AS dst SET {}
                     FROM jsonb_populate_record(NULL::{qt}, $1::text::jsonb) AS src
                     WHERE dst.{key} = src.{key} AND dst.{scope} = $2::text",
                    set.join(", ")
                );
                steps.push(Step {
                    statement: intern(sql),
                    first: row.payload.clone().unwrap_or_default(),
                });
                i += 1;
            }
            Op::Delete => {
                let sql = format!(
                    "DELETE FROM {qt} WHERE {} = $1{} AND {scope} = $2::text",
                    table.key_ident(),
                    key_cast(table.key_kind())
                );
                steps.push(Step {
                    statement: intern(sql),
                    first: row.key_text.clone(),
                });
                i += 1;
            }
        }
    }

    let prepared =
        futures_util::future::try_join_all(statements.iter().map(|sql| tx.prepare_cached(sql)))
            .await
            .map_err(|e| match rejected_data(&e, "while preparing") {
                Some(message) => Failure::Invalid(message),
                None => Failure::Internal(InternalError::with_source(
                    "prepare push apply statements",
                    e,
                )),
            })?;
    let params: Vec<[&(dyn ToSql + Sync); 2]> = steps
        .iter()
        .map(|s| {
            [
                &s.first as &(dyn ToSql + Sync),
                &user_id as &(dyn ToSql + Sync),
            ]
        })
        .collect();
    let executions = steps
        .iter()
        .zip(&params)
        .map(|(step, params)| tx.execute(&prepared[step.statement], &params[..]));
    futures_util::future::try_join_all(executions)
        .await
        .map_err(|e| match rejected_data(&e, "while applying") {
            Some(message) => Failure::Invalid(message),
            None => Failure::Internal(InternalError::with_source("apply pushed rows", e)),
        })?;
    Ok(())
}

/// The current business row for a conflict's `server_row` (§5.5): PostgreSQL's after-image,
/// re-encoded only when §3.5 changed something.
pub(crate) async fn load_server_row(
    tx: &deadpool_postgres::Transaction<'_>,
    user_id: &str,
    table: &CatalogTable,
    key_text: &str,
) -> Result<Option<Box<serde_json::value::RawValue>>, Failure> {
    let sql = format!(
        "SELECT (to_jsonb(src) - '_sync_scope_id')::text FROM {} AS src
         WHERE {} = $1{} AND {} = $2::text",
        table.qualified(),
        table.key_ident(),
        key_cast(table.key_kind()),
        postgres_protocol::escape::escape_identifier(SCOPE_COLUMN),
    );
    let Some(row) = tx
        .query_opt(&sql, &[&key_text, &user_id])
        .await
        .ctx("load conflicting server row")?
    else {
        return Ok(None);
    };
    let text: String = row.get(0);
    let mut doc = oversync_protocol::gcj::Document::parse(text.as_bytes())
        .map_err(|e| InternalError::with_source("parse server row", e))?;
    let bytes = if crate::capture::rewrite_wire_payload(table, &mut doc)? {
        doc.to_vec_exact()
    } else {
        text.into_bytes()
    };
    Ok(Some(crate::capture::raw_json(bytes)?))
}
