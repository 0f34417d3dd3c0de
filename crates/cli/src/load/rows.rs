//! The rows every scenario and baseline writes: a deterministic mix over five tables of the
//! example's `business` schema with realistic payloads (timestamps, a few hundred bytes of
//! text per post, a 1 KiB BLOB per file), and the three ways they are written: through a
//! synced SQLite client's connection (captured by its triggers), into a plain SQLite file
//! (the raw SQLite baseline), and into PostgreSQL with `INSERT … SELECT FROM unnest(…)` and
//! the owner/capture triggers bypassed (the raw PostgreSQL baseline).
//!
//! Per ten rows: two `users`, three `posts` (authored by the latest user), two `files`, one
//! `file_reviews` (of the latest file) and two `typed_rows`, so every foreign key points at
//! a row of the same set and the same bundle.

use rusqlite::Connection;
use uuid::Uuid;

/// A timestamp in the form the server renders `timestamptz`, so a synced value equals the
/// local one.
const T0: &str = "2026-03-24T18:42:11+00:00";

/// Bytes of each `files.data` BLOB.
pub(crate) const FILE_BYTES: usize = 1024;

const POST_BODY: &str = "Sync engines earn their keep on bad networks: a phone in a tunnel, a laptop \
on hotel wifi, a till in a shop whose uplink drops every afternoon. This post is filler of a \
realistic length so that payloads on the wire and rows in the tables cost what real ones do.";

/// One generated set of rows, column by column per table.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub(crate) users: Vec<User>,
    pub(crate) posts: Vec<Post>,
    pub(crate) files: Vec<File>,
    pub(crate) reviews: Vec<Review>,
    pub(crate) typed: Vec<Typed>,
}

/// A `business.users` row.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) email: String,
}

/// A `business.posts` row.
#[derive(Debug)]
pub(crate) struct Post {
    pub(crate) id: Uuid,
    pub(crate) title: String,
    pub(crate) author_id: Uuid,
}

/// A `business.files` row.
#[derive(Debug)]
pub(crate) struct File {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) data: Vec<u8>,
}

/// A `business.file_reviews` row.
#[derive(Debug)]
pub(crate) struct Review {
    pub(crate) id: Uuid,
    pub(crate) review: String,
    pub(crate) file_id: Uuid,
}

/// A `business.typed_rows` row.
#[derive(Debug)]
pub(crate) struct Typed {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) note: String,
    pub(crate) count_value: i64,
    pub(crate) enabled_flag: i64,
    pub(crate) rating: f64,
    pub(crate) data: Vec<u8>,
}

impl Rows {
    /// `n` rows whose ids are unique for a distinct `seed` (ids embed it).
    pub(crate) fn generate(seed: u64, n: usize) -> Rows {
        let mut rows = Rows::default();
        let mut author = Uuid::nil();
        let mut file = Uuid::nil();
        for i in 0..n {
            let id = Uuid::from_u128((u128::from(seed) << 64) | i as u128);
            match i % 10 {
                0 | 1 => {
                    author = id;
                    rows.users.push(User {
                        id,
                        name: format!("User {i}"),
                        email: format!("user{i}.{seed}@example.com"),
                    });
                }
                2..=4 => rows.posts.push(Post {
                    id,
                    title: format!("Post {i}: notes from the field"),
                    author_id: author,
                }),
                5 | 6 => {
                    file = id;
                    rows.files.push(File {
                        id,
                        name: format!("file-{i}.bin"),
                        data: blob(seed ^ i as u64, FILE_BYTES),
                    });
                }
                7 => rows.reviews.push(Review {
                    id,
                    review: format!("Review {i}: checked the attachment, looks right to me"),
                    file_id: file,
                }),
                _ => rows.typed.push(Typed {
                    id,
                    name: format!("typed {i}"),
                    note: format!("note for row {i}"),
                    count_value: i as i64,
                    enabled_flag: (i % 2) as i64,
                    rating: i as f64 * 0.25,
                    data: blob(seed.rotate_left(7) ^ i as u64, 16),
                }),
            }
        }
        rows
    }

    /// How many rows the set holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.users.len()
            + self.posts.len()
            + self.files.len()
            + self.reviews.len()
            + self.typed.len()
    }
}

/// `len` pseudo-random bytes (xorshift), so BLOBs do not compress to nothing.
fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Inserts `rows` through `conn` in one transaction (prepared statements, FK order).
pub(crate) fn insert_sqlite(conn: &mut Connection, rows: &Rows) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut s = tx.prepare_cached(
            "INSERT INTO users (id, name, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        )?;
        for u in &rows.users {
            s.execute((u.id.hyphenated().to_string(), &u.name, &u.email, T0))?;
        }
        let mut s = tx.prepare_cached(
            "INSERT INTO posts (id, title, content, author_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?;
        for p in &rows.posts {
            s.execute((
                p.id.hyphenated().to_string(),
                &p.title,
                POST_BODY,
                p.author_id.hyphenated().to_string(),
                T0,
            ))?;
        }
        let mut s = tx.prepare_cached("INSERT INTO files (id, name, data) VALUES (?1, ?2, ?3)")?;
        for f in &rows.files {
            s.execute((f.id.as_bytes().as_slice(), &f.name, &f.data))?;
        }
        let mut s = tx
            .prepare_cached("INSERT INTO file_reviews (id, review, file_id) VALUES (?1, ?2, ?3)")?;
        for r in &rows.reviews {
            s.execute((
                r.id.as_bytes().as_slice(),
                &r.review,
                r.file_id.as_bytes().as_slice(),
            ))?;
        }
        let mut s = tx.prepare_cached(
            "INSERT INTO typed_rows
                 (id, name, note, count_value, enabled_flag, rating, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for t in &rows.typed {
            s.execute((
                t.id.hyphenated().to_string(),
                &t.name,
                &t.note,
                t.count_value,
                t.enabled_flag,
                t.rating,
                &t.data,
                T0,
            ))?;
        }
    }
    tx.commit()
}

/// Inserts `rows` into the `business` tables under scope `scope` in one transaction, one
/// `INSERT … SELECT FROM unnest(…)` per table, with `session_replication_role = replica` so
/// neither the owner guard nor the capture triggers run: the physical floor of a sync push.
pub(crate) async fn insert_postgres(
    client: &mut tokio_postgres::Client,
    scope: &str,
    rows: &Rows,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await?;
    let ids: Vec<Uuid> = rows.users.iter().map(|u| u.id).collect();
    let names: Vec<&str> = rows.users.iter().map(|u| u.name.as_str()).collect();
    let emails: Vec<&str> = rows.users.iter().map(|u| u.email.as_str()).collect();
    tx.execute(
        "INSERT INTO business.users (_sync_scope_id, id, name, email, created_at, updated_at)
         SELECT $1, r.id, r.name, r.email, $5::text::timestamptz, $5::text::timestamptz
         FROM unnest($2::uuid[], $3::text[], $4::text[]) AS r(id, name, email)",
        &[&scope, &ids, &names, &emails, &T0],
    )
    .await?;
    let ids: Vec<Uuid> = rows.posts.iter().map(|p| p.id).collect();
    let titles: Vec<&str> = rows.posts.iter().map(|p| p.title.as_str()).collect();
    let authors: Vec<Uuid> = rows.posts.iter().map(|p| p.author_id).collect();
    tx.execute(
        "INSERT INTO business.posts
             (_sync_scope_id, id, title, content, author_id, created_at, updated_at)
         SELECT $1, r.id, r.title, $5::text, r.author_id, $6::text::timestamptz, $6::text::timestamptz
         FROM unnest($2::uuid[], $3::text[], $4::uuid[]) AS r(id, title, author_id)",
        &[&scope, &ids, &titles, &authors, &POST_BODY, &T0],
    )
    .await?;
    let ids: Vec<Uuid> = rows.files.iter().map(|f| f.id).collect();
    let names: Vec<&str> = rows.files.iter().map(|f| f.name.as_str()).collect();
    let data: Vec<&[u8]> = rows.files.iter().map(|f| f.data.as_slice()).collect();
    tx.execute(
        "INSERT INTO business.files (_sync_scope_id, id, name, data)
         SELECT $1, r.id, r.name, r.data
         FROM unnest($2::uuid[], $3::text[], $4::bytea[]) AS r(id, name, data)",
        &[&scope, &ids, &names, &data],
    )
    .await?;
    let ids: Vec<Uuid> = rows.reviews.iter().map(|r| r.id).collect();
    let reviews: Vec<&str> = rows.reviews.iter().map(|r| r.review.as_str()).collect();
    let files: Vec<Uuid> = rows.reviews.iter().map(|r| r.file_id).collect();
    tx.execute(
        "INSERT INTO business.file_reviews (_sync_scope_id, id, review, file_id)
         SELECT $1, r.id, r.review, r.file_id
         FROM unnest($2::uuid[], $3::text[], $4::uuid[]) AS r(id, review, file_id)",
        &[&scope, &ids, &reviews, &files],
    )
    .await?;
    let ids: Vec<Uuid> = rows.typed.iter().map(|t| t.id).collect();
    let names: Vec<&str> = rows.typed.iter().map(|t| t.name.as_str()).collect();
    let notes: Vec<&str> = rows.typed.iter().map(|t| t.note.as_str()).collect();
    let counts: Vec<i64> = rows.typed.iter().map(|t| t.count_value).collect();
    let flags: Vec<i64> = rows.typed.iter().map(|t| t.enabled_flag).collect();
    let ratings: Vec<f64> = rows.typed.iter().map(|t| t.rating).collect();
    let data: Vec<&[u8]> = rows.typed.iter().map(|t| t.data.as_slice()).collect();
    tx.execute(
        "INSERT INTO business.typed_rows (_sync_scope_id, id, name, note, count_value,
             enabled_flag, rating, data, created_at)
         SELECT $1, r.id, r.name, r.note, r.count_value, r.enabled_flag, r.rating, r.data,
                $9::text::timestamptz
         FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                     $7::float8[], $8::bytea[])
              AS r(id, name, note, count_value, enabled_flag, rating, data)",
        &[
            &scope, &ids, &names, &notes, &counts, &flags, &ratings, &data, &T0,
        ],
    )
    .await?;
    tx.commit().await
}

/// Deletes everything the raw PostgreSQL baseline wrote under scopes starting with `prefix`
/// (triggers bypassed, as they were when the rows were written).
pub(crate) async fn delete_postgres_scopes(
    client: &mut tokio_postgres::Client,
    prefix: &str,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await?;
    let pattern = format!("{prefix}%");
    for table in ["file_reviews", "files", "typed_rows", "posts", "users"] {
        tx.execute(
            &format!("DELETE FROM business.{table} WHERE _sync_scope_id LIKE $1"),
            &[&pattern],
        )
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use oversync_example::schema::CLIENT_SCHEMA;

    use super::*;

    #[test]
    fn every_foreign_key_points_into_the_same_set() {
        let rows = Rows::generate(7, 95);
        assert_eq!(rows.len(), 95);
        let users: Vec<Uuid> = rows.users.iter().map(|u| u.id).collect();
        let files: Vec<Uuid> = rows.files.iter().map(|f| f.id).collect();
        assert!(rows.posts.iter().all(|p| users.contains(&p.author_id)));
        assert!(rows.reviews.iter().all(|r| files.contains(&r.file_id)));
        assert!(rows.files.iter().all(|f| f.data.len() == FILE_BYTES));
    }

    #[test]
    fn the_same_rows_insert_into_a_plain_sqlite_file() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(CLIENT_SCHEMA).unwrap();
        insert_sqlite(&mut conn, &Rows::generate(1, 30)).unwrap();
        let count: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM posts)
                      + (SELECT count(*) FROM files) + (SELECT count(*) FROM file_reviews)
                      + (SELECT count(*) FROM typed_rows)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count, 30);
    }
}
