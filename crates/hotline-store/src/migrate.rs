//! Moving a deployment from SQLite to PostgreSQL: every row of the SQLite
//! database copied into an empty PostgreSQL database, as it was.
//!
//! **Snapshot.** The SQLite file is opened read-only and read in one read
//! transaction, so the copy is of one consistent snapshot even while a
//! server keeps writing (WAL readers never block the writer). Writes made
//! after the snapshot are not copied: a cutover stops the server first.
//!
//! **All or nothing.** The copy is one PostgreSQL transaction. It first
//! locks the stream's row (as every PostgreSQL commit does, so a server on
//! the target waits) and refuses a target holding any row: a migration
//! never merges into live data, and a second run into the same database is
//! refused rather than doubling anything.
//!
//! **Every table.** The tables copied are those of the PostgreSQL schema
//! (read from `information_schema`), except the engine's own bookkeeping
//! ([`BOOKKEEPING`]); a table or column the SQLite database has and the
//! PostgreSQL schema lacks, or the other way round, stops the migration.
//! Values are bound by the PostgreSQL column's type; a value that does not
//! fit its column stops it too. Each table's row count is compared at the
//! end, inside the transaction.
//!
//! **Positions.** Rows keep their stream positions. The stream's mark is
//! set to SQLite's high-water mark (positions of rows since replaced count
//! too, so no position is handed out twice), and identity columns (the
//! audit log's `seq`) continue after the highest number SQLite handed out.

use std::fmt;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::postgres::{block_on, connect, io_runtime, schema, Conn};
use crate::{Result, StoreError};

/// PostgreSQL tables that belong to the engine, not to the deployment's
/// data: the stream's row, the log of commits for other processes, and the
/// schema's versions.
const BOOKKEEPING: &[&str] = &["stream_position", "commit_log", "schema_migrations"];

/// SQLite's own tables (AUTOINCREMENT's counters, statistics).
fn sqlite_internal(table: &str) -> bool {
    table.starts_with("sqlite_")
}

/// Parameters per INSERT stay under PostgreSQL's limit of 65,535.
const MAX_PARAMS: usize = 30_000;
/// Rows per INSERT at most.
const MAX_ROWS: usize = 500;

/// What a migration copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Each table copied with its number of rows, by name.
    pub tables: Vec<(String, u64)>,
    /// The stream's high-water mark the target starts from.
    pub stream_position: i64,
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, rows) in &self.tables {
            writeln!(f, "{table}\t{rows}")?;
        }
        let total: u64 = self.tables.iter().map(|(_, n)| n).sum();
        write!(
            f,
            "copied {total} rows in {} tables; stream position {}",
            self.tables.len(),
            self.stream_position
        )
    }
}

fn fail(msg: impl Into<String>) -> StoreError {
    StoreError::Engine(msg.into())
}

/// The type of a PostgreSQL column, as values are bound to it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    BigInt,
}

struct Table {
    name: String,
    columns: Vec<(String, Kind)>,
    /// Columns numbered by the table itself (`GENERATED ... AS IDENTITY`).
    identity: Vec<String>,
}

/// `"name"`, quoted for either engine.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Copies the SQLite database at `sqlite_path` into the PostgreSQL
/// database at `pg_url` (migrating its schema first), which must hold no
/// data (module docs).
pub fn migrate_sqlite_to_postgres(sqlite_path: &Path, pg_url: &str) -> Result<MigrationReport> {
    if !sqlite_path.is_file() {
        return Err(fail(format!(
            "no SQLite database at {}",
            sqlite_path.display()
        )));
    }
    let source = Connection::open_with_flags(
        sqlite_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(format!("opening {}: {e}", sqlite_path.display())))?;
    source
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| fail(e.to_string()))?;
    let runtime = io_runtime()?;
    let out = (|| {
        let mut conn = Conn::new(connect(&runtime, pg_url)?);
        block_on(schema::migrate(&mut conn))?;
        // The snapshot: every read below sees the database as of the first.
        sql(source.execute_batch("BEGIN"))?;
        let out = block_on(copy(&source, &conn.client()));
        let _ = source.execute_batch("COMMIT");
        out
    })();
    // Dropping a runtime blocks, which Tokio forbids inside another one.
    runtime.shutdown_background();
    out
}

fn sql<T>(r: rusqlite::Result<T>) -> Result<T> {
    r.map_err(|e| fail(format!("reading the SQLite database: {e}")))
}

fn pg<T>(r: std::result::Result<T, tokio_postgres::Error>) -> Result<T> {
    r.map_err(|e| {
        // The server's own message (which row, which constraint) is in the
        // error's source, not in its display.
        let detail = e
            .as_db_error()
            .map(|d| {
                format!(
                    "{}{}",
                    d.message(),
                    d.detail().map(|x| format!(" ({x})")).unwrap_or_default()
                )
            })
            .unwrap_or_else(|| e.to_string());
        fail(format!("PostgreSQL: {detail}"))
    })
}

async fn copy(source: &Connection, pg_client: &Client) -> Result<MigrationReport> {
    pg(pg_client
        .batch_execute("SET synchronous_commit = on; BEGIN")
        .await)?;
    let out = copy_in_transaction(source, pg_client).await;
    match out {
        Ok(report) => {
            pg(pg_client.batch_execute("COMMIT").await)?;
            Ok(report)
        }
        Err(e) => {
            let _ = pg_client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn copy_in_transaction(source: &Connection, c: &Client) -> Result<MigrationReport> {
    // Every commit locks this row first (`postgres` module docs): a server
    // on the target, or a second migration, waits for this one.
    pg(
        c.query_one("SELECT pos FROM stream_position FOR UPDATE", &[])
            .await,
    )?;
    let tables = target_tables(c).await?;
    for t in &tables {
        let any = pg(c
            .query_opt(&format!("SELECT 1 FROM {} LIMIT 1", quote(&t.name)), &[])
            .await)?;
        if any.is_some() {
            return Err(StoreError::Conflict(format!(
                "the PostgreSQL database is not empty: table {} has rows; migrate into a new database",
                t.name
            )));
        }
    }
    check_source_tables(source, &tables)?;
    let mut report = Vec::new();
    for t in &tables {
        let copied = copy_table(source, c, t).await?;
        let expected: i64 = sql(source.query_row(
            &format!("SELECT COUNT(*) FROM {}", quote(&t.name)),
            [],
            |r| r.get(0),
        ))?;
        let landed: i64 = pg(c
            .query_one(&format!("SELECT COUNT(*) FROM {}", quote(&t.name)), &[])
            .await)?
        .get(0);
        if copied as i64 != expected || landed != expected {
            return Err(fail(format!(
                "table {}: SQLite has {expected} rows, {copied} were read and PostgreSQL holds {landed}",
                t.name
            )));
        }
        for col in &t.identity {
            let counter: Option<i64> = sql(source
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                    [&t.name],
                    |r| r.get(0),
                )
                .optional()
                .or_else(|e| match e {
                    // No AUTOINCREMENT table anywhere: no counter.
                    rusqlite::Error::SqliteFailure(_, Some(ref m))
                        if m.contains("no such table") =>
                    {
                        Ok(None)
                    }
                    e => Err(e),
                }))?;
            let max: Option<i64> = pg(c
                .query_one(
                    &format!("SELECT MAX({}) FROM {}", quote(col), quote(&t.name)),
                    &[],
                )
                .await)?
            .get(0);
            let last = counter.unwrap_or(0).max(max.unwrap_or(0));
            // The next number handed out is `last + 1`.
            pg(c.execute(
                "SELECT setval(pg_get_serial_sequence($1, $2), $3, false)",
                &[&t.name, col, &(last + 1)],
            )
            .await)?;
        }
        report.push((t.name.clone(), copied));
    }
    let mark: i64 = sql(source.query_row(crate::sqlite::HIGH_WATER_MARK, [], |r| {
        r.get::<_, Option<i64>>(0)
    }))?
    .unwrap_or(0);
    pg(c.execute("UPDATE stream_position SET pos = $1", &[&mark])
        .await)?;
    Ok(MigrationReport {
        tables: report,
        stream_position: mark,
    })
}

/// The PostgreSQL schema's data tables and their columns, by name.
async fn target_tables(c: &Client) -> Result<Vec<Table>> {
    let rows = pg(c
        .query(
            "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT, is_identity::TEXT
             FROM information_schema.columns
             WHERE table_schema = current_schema()
               AND table_name IN (SELECT table_name FROM information_schema.tables
                                  WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .await)?;
    let mut tables: Vec<Table> = Vec::new();
    for r in rows {
        let (table, column, ty, identity): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if BOOKKEEPING.contains(&table.as_str()) {
            continue;
        }
        let kind = match ty.as_str() {
            "text" => Kind::Text,
            "bigint" => Kind::BigInt,
            other => {
                return Err(fail(format!(
                    "column {table}.{column} is of type {other}, which the migration does not copy"
                )))
            }
        };
        if tables.last().map(|t| &t.name) != Some(&table) {
            tables.push(Table {
                name: table.clone(),
                columns: Vec::new(),
                identity: Vec::new(),
            });
        }
        let t = tables.last_mut().expect("pushed above");
        if identity == "YES" {
            t.identity.push(column.clone());
        }
        t.columns.push((column, kind));
    }
    Ok(tables)
}

/// The SQLite database has the same tables and columns as the target:
/// nothing of it would be left behind, and every column copied exists.
fn check_source_tables(source: &Connection, tables: &[Table]) -> Result<()> {
    let names: Vec<String> = {
        let mut s = sql(source.prepare("SELECT name FROM sqlite_master WHERE type = 'table'"))?;
        let names = sql(s.query_map([], |r| r.get(0)))?;
        sql(names.collect())?
    };
    if !names.iter().any(|n| n == "meta") {
        return Err(fail(
            "the SQLite file is not a Hotline database (no meta table)",
        ));
    }
    for name in names.iter().filter(|n| !sqlite_internal(n)) {
        let Some(t) = tables.iter().find(|t| &t.name == name) else {
            return Err(fail(format!(
                "SQLite table {name} has no PostgreSQL counterpart: it would not be copied"
            )));
        };
        let mut s = sql(source.prepare(&format!("PRAGMA table_info({})", quote(name))))?;
        let cols: Vec<String> = sql(sql(s.query_map([], |r| r.get(1)))?.collect())?;
        for col in &cols {
            if !t.columns.iter().any(|(c, _)| c == col) {
                return Err(fail(format!(
                    "SQLite column {name}.{col} has no PostgreSQL counterpart: it would not be copied"
                )));
            }
        }
        for (col, _) in &t.columns {
            if !cols.contains(col) {
                return Err(fail(format!(
                    "PostgreSQL column {name}.{col} is missing from the SQLite database"
                )));
            }
        }
    }
    for t in tables {
        if !names.contains(&t.name) {
            return Err(fail(format!(
                "PostgreSQL table {} is missing from the SQLite database",
                t.name
            )));
        }
    }
    Ok(())
}

type Param = Box<dyn ToSql + Sync + Send>;

/// One SQLite value as the PostgreSQL column's type wants it.
fn convert(table: &str, column: &str, kind: Kind, v: Value) -> Result<Param> {
    let bad = |what: &str| {
        fail(format!(
            "{table}.{column}: a {what} value does not fit a {kind:?} column"
        ))
    };
    Ok(match (kind, v) {
        (Kind::Text, Value::Null) => Box::new(None::<String>),
        (Kind::BigInt, Value::Null) => Box::new(None::<i64>),
        (Kind::Text, Value::Text(s)) => Box::new(Some(s)),
        (Kind::Text, Value::Blob(b)) => Box::new(Some(
            String::from_utf8(b).map_err(|_| bad("non-UTF-8 blob"))?,
        )),
        (Kind::Text, Value::Integer(_)) => return Err(bad("integer")),
        (Kind::Text, Value::Real(_)) => return Err(bad("real")),
        (Kind::BigInt, Value::Integer(i)) => Box::new(Some(i)),
        (Kind::BigInt, Value::Text(s)) => {
            Box::new(Some(s.trim().parse::<i64>().map_err(|_| bad("text"))?))
        }
        (Kind::BigInt, Value::Real(r)) if r.fract() == 0.0 && r.abs() < 9.0e18 => {
            Box::new(Some(r as i64))
        }
        (Kind::BigInt, Value::Real(_)) => return Err(bad("real")),
        (Kind::BigInt, Value::Blob(_)) => return Err(bad("blob")),
    })
}

/// `INSERT INTO t (cols) VALUES ($1, ..), (..)` for `rows` rows.
fn insert_sql(t: &Table, rows: usize) -> String {
    let n = t.columns.len();
    let cols: Vec<String> = t.columns.iter().map(|(c, _)| quote(c)).collect();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let ps: Vec<String> = (1..=n).map(|i| format!("${}", r * n + i)).collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    // OVERRIDING: identity columns keep the numbers SQLite gave them.
    let overriding = if t.identity.is_empty() {
        ""
    } else {
        " OVERRIDING SYSTEM VALUE"
    };
    format!(
        "INSERT INTO {} ({}){overriding} VALUES {}",
        quote(&t.name),
        cols.join(", "),
        values.join(", ")
    )
}

/// Copies one table in multi-row INSERTs; the number of rows read.
async fn copy_table(source: &Connection, c: &Client, t: &Table) -> Result<u64> {
    let n = t.columns.len();
    let per_insert = (MAX_PARAMS / n).clamp(1, MAX_ROWS);
    let full = pg(c.prepare(&insert_sql(t, per_insert)).await)?;
    let cols: Vec<String> = t.columns.iter().map(|(c, _)| quote(c)).collect();
    let mut stmt = sql(source.prepare(&format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        quote(&t.name)
    )))?;
    let mut rows = sql(stmt.query([]))?;
    let mut batch: Vec<Param> = Vec::with_capacity(per_insert * n);
    let mut count = 0u64;
    while let Some(row) = sql(rows.next())? {
        for (i, (col, kind)) in t.columns.iter().enumerate() {
            let v: Value = sql(row.get(i))?;
            batch.push(convert(&t.name, col, *kind, v)?);
        }
        count += 1;
        if batch.len() == per_insert * n {
            insert(c, &full, &batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        let rest = pg(c.prepare(&insert_sql(t, batch.len() / n)).await)?;
        insert(c, &rest, &batch).await?;
    }
    Ok(count)
}

async fn insert(c: &Client, stmt: &tokio_postgres::Statement, values: &[Param]) -> Result<()> {
    let params: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect();
    pg(c.execute(stmt, &params).await)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::tests::fresh_database;
    use crate::postgres::PostgresStore;
    use crate::{Durability, SqliteStore, Store};

    /// A SQLite database with Hotline's schema in a directory of its own.
    fn sqlite_db(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hotline-migrate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hotline.db");
        SqliteStore::open(&path, Durability::Normal)
            .unwrap()
            .close();
        path
    }

    /// One row in every SQLite table, each value telling its table and
    /// column apart (integers numbered, text named).
    fn fill_every_table(path: &Path) -> Vec<String> {
        let c = Connection::open(path).unwrap();
        let tables: Vec<String> = {
            let mut s = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                .unwrap();
            let names = s.query_map([], |r| r.get(0)).unwrap();
            names.collect::<rusqlite::Result<_>>().unwrap()
        };
        let mut n = 0i64;
        for t in &tables {
            let mut s = c
                .prepare(&format!("PRAGMA table_info({})", quote(t)))
                .unwrap();
            let cols: Vec<(String, String)> = s
                .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let names: Vec<String> = cols.iter().map(|(c, _)| quote(c)).collect();
            let values: Vec<Value> = cols
                .iter()
                .map(|(col, ty)| {
                    n += 1;
                    match ty.as_str() {
                        "INTEGER" => Value::Integer(1_000_000_000_000 + n),
                        _ => Value::Text(format!("{t}.{col} ✓ 'q\"")),
                    }
                })
                .collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            c.execute(
                &format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    quote(t),
                    names.join(", "),
                    marks.join(", ")
                ),
                rusqlite::params_from_iter(values),
            )
            .unwrap();
        }
        tables
    }

    /// Every value of a table as text, rows in a fixed order.
    fn sqlite_rows(c: &Connection, t: &Table) -> Vec<Vec<Option<String>>> {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|(c, _)| format!("CAST({} AS TEXT)", quote(c)))
            .collect();
        let mut s = c
            .prepare(&format!(
                "SELECT {} FROM {} ORDER BY 1",
                cols.join(", "),
                quote(&t.name)
            ))
            .unwrap();
        let n = t.columns.len();
        s.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn pg_rows(c: &Conn, t: &Table) -> Vec<Vec<Option<String>>> {
        let cols: Vec<String> = t
            .columns
            .iter()
            .map(|(c, _)| format!("{}::TEXT", quote(c)))
            .collect();
        let rows = block_on(c.client().query(
            &format!(
                "SELECT {} FROM {} ORDER BY 1",
                cols.join(", "),
                quote(&t.name)
            ),
            &[],
        ))
        .unwrap();
        rows.iter()
            .map(|r| (0..t.columns.len()).map(|i| r.get(i)).collect())
            .collect()
    }

    #[test]
    fn every_row_of_every_table_arrives_with_its_values_and_positions_continue() {
        let path = sqlite_db("every");
        let tables = fill_every_table(&path);
        {
            // Positions past the rows' (rows since replaced): the mark wins.
            let c = Connection::open(&path).unwrap();
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('stream_pos', '9000000000000')",
                [],
            )
            .unwrap();
        }
        let url = fresh_database();
        let report = migrate_sqlite_to_postgres(&path, &url).unwrap();
        assert_eq!(report.stream_position, 9_000_000_000_000);
        let copied: Vec<&str> = report.tables.iter().map(|(t, _)| t.as_str()).collect();
        let mut expected: Vec<&str> = tables.iter().map(String::as_str).collect();
        expected.sort();
        assert_eq!(copied, expected, "every SQLite table is copied");
        for (t, rows) in &report.tables {
            // meta: the filled row and the stream's mark.
            assert_eq!(*rows, if t == "meta" { 2 } else { 1 }, "{t}");
        }
        let admin = PostgresStore::open_admin(&url);
        let target = block_on(target_tables(&admin.client())).unwrap();
        let source = Connection::open(&path).unwrap();
        for t in &target {
            assert_eq!(
                pg_rows(&admin, t),
                sqlite_rows(&source, t),
                "table {}",
                t.name
            );
        }
        // The store opens on it where SQLite left off.
        let store = PostgresStore::open(&url).unwrap();
        assert_eq!(store.current_position(), 9_000_000_000_000);
        store.close();
        // The audit log numbers on after the copied entry.
        block_on(admin.batch(
            "INSERT INTO audit_log (ts, actor, action, subject, detail) VALUES (1, 'a', 'b', 'c', 'd')",
        ))
        .unwrap();
        let seqs: Vec<i64> = block_on(
            admin
                .client()
                .query("SELECT seq FROM audit_log ORDER BY seq", &[]),
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[1], seqs[0] + 1);
    }

    #[test]
    fn a_target_holding_any_row_is_refused_naming_the_table_and_left_as_it_was() {
        let path = sqlite_db("refused");
        fill_every_table(&path);
        let url = fresh_database();
        let store = PostgresStore::open(&url).unwrap();
        store.close();
        let admin = PostgresStore::open_admin(&url);
        block_on(admin.batch("INSERT INTO published_rooms (room_id) VALUES ('!already:x')"))
            .unwrap();
        let e = migrate_sqlite_to_postgres(&path, &url).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        assert!(e.to_string().contains("published_rooms"), "{e}");
        let n: i64 = block_on(admin.client().query_one("SELECT COUNT(*) FROM users", &[]))
            .unwrap()
            .get(0);
        assert_eq!(n, 0);
        // A second migration after a first is refused the same way.
        let url = fresh_database();
        migrate_sqlite_to_postgres(&path, &url).unwrap();
        let e = migrate_sqlite_to_postgres(&path, &url).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    }

    #[test]
    fn a_sqlite_table_without_a_postgresql_counterpart_stops_the_migration() {
        let path = sqlite_db("extra");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE later_feature (x TEXT); ALTER TABLE users ADD COLUMN later TEXT",
            )
            .unwrap();
        let url = fresh_database();
        let e = migrate_sqlite_to_postgres(&path, &url).unwrap_err();
        assert!(e.to_string().contains("later"), "{e}");
        let admin = PostgresStore::open_admin(&url);
        let n: i64 = block_on(admin.client().query_one("SELECT COUNT(*) FROM meta", &[]))
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "nothing copied");
    }

    #[test]
    fn a_missing_sqlite_file_is_named() {
        let e = migrate_sqlite_to_postgres(
            Path::new("/nonexistent/hotline.db"),
            "postgres://x@127.0.0.1:1/y",
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/hotline.db"), "{e}");
    }
}
