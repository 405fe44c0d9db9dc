//! SQLite through rusqlite: WAL mode, prepared statements cached per connection.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{OpenFlags, ToSql};

use super::{Cell, Conn, Row, Value};
use crate::store::{Backend, StoreError};

/// Statements kept prepared per connection: the store's SQL texts are a few dozen.
const STATEMENT_CACHE: usize = 128;

pub struct SqliteConn {
    conn: rusqlite::Connection,
    /// `synchronous = FULL` is set (commits synced to disk).
    durable: bool,
}

/// Where a `sqlite:` URL points and how to open it.
#[derive(Debug, PartialEq, Eq)]
pub struct SqliteUrl {
    pub path: PathBuf,
    pub flags: OpenFlags,
}

/// `sqlite://handover.db`, `sqlite:///abs/path.db`, `sqlite:file.db`, each optionally with
/// `?mode=rwc` (the default: created if missing), `?mode=rw` (must exist) or `?mode=ro`.
pub fn parse_url(url: &str) -> Result<SqliteUrl, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Url("must start with sqlite://".into()))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Url(
            "sqlite needs a file (e.g. sqlite://handover.db); an in-memory database would lose every acknowledged event".into(),
        ));
    }
    let base = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let mut flags = base | OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("mode", "rwc")) => {}
            Some(("mode", "rw")) => flags = base | OpenFlags::SQLITE_OPEN_READ_WRITE,
            Some(("mode", "ro")) => flags = base | OpenFlags::SQLITE_OPEN_READ_ONLY,
            _ => {
                return Err(StoreError::Url(format!(
                    "unknown sqlite option {pair:?} (known: mode=rwc, mode=rw, mode=ro)"
                )));
            }
        }
    }
    Ok(SqliteUrl {
        path: PathBuf::from(path),
        flags,
    })
}

impl SqliteConn {
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let SqliteUrl { path, flags } = parse_url(url)?;
        let conn = rusqlite::Connection::open_with_flags(&path, flags).map_err(db_error)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Query plans fixed when a statement is prepared: otherwise SQLite prepares a cached
        // statement again whenever a bound value could change its plan (the claim's
        // `LIMIT $2`, at every claim).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(db_error)?;
        // A reader may wait for a checkpoint that restarts the log; writers never wait here
        // (the store has one writer thread).
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_error)?;
        let mut this = Self {
            conn,
            durable: true,
        };
        this.batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON",
        )?;
        Ok(this)
    }
}

fn db_error(e: rusqlite::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(match self {
            Value::Null => Borrowed(ValueRef::Null),
            Value::Int(v) => Borrowed(ValueRef::Integer(*v)),
            Value::Text(v) => Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

/// Binds `$N` parameters by their number: SQLite numbers named parameters in the order they
/// first appear, which is not always N.
fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Value<'_>]) -> Result<(), StoreError> {
    for index in 1..=stmt.parameter_count() {
        let n = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(index);
        let value = params.get(n - 1).ok_or_else(|| {
            StoreError::Db(format!("statement needs ${n}, {} given", params.len()))
        })?;
        stmt.raw_bind_parameter(index, value).map_err(db_error)?;
    }
    Ok(())
}

fn cell(value: ValueRef<'_>) -> Cell {
    match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(v) => Cell::Int(v),
        // The store writes no floats; one would be a corrupt row, read as its text.
        ValueRef::Real(v) => Cell::Text(v.to_string()),
        ValueRef::Text(v) => Cell::Text(String::from_utf8_lossy(v).into_owned()),
        ValueRef::Blob(v) => Cell::Bytes(v.to_vec()),
    }
}

impl Conn for SqliteConn {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error)?;
        bind(&mut stmt, params)?;
        // A statement with RETURNING yields rows; stepping through them runs it to the end.
        if stmt.column_count() > 0 {
            let mut rows = stmt.raw_query();
            while rows.next().map_err(db_error)?.is_some() {}
            return Ok(self.conn.changes());
        }
        Ok(stmt.raw_execute().map_err(db_error)? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error)?;
        bind(&mut stmt, params)?;
        let columns = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            let mut cells = Vec::with_capacity(columns);
            for i in 0..columns {
                cells.push(cell(row.get_ref(i).map_err(db_error)?));
            }
            out.push(Row(cells));
        }
        Ok(out)
    }

    fn insert_id(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Option<i64>, StoreError> {
        Ok((self.execute(sql, params)? == 1).then(|| self.conn.last_insert_rowid()))
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(db_error)
    }

    fn begin_write(&mut self, durable: bool) -> Result<(), StoreError> {
        // In WAL mode a synced commit also makes every earlier commit durable.
        if durable != self.durable {
            // Not a cached statement: a pragma takes effect when it is prepared.
            self.batch(if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            })?;
            self.durable = durable;
        }
        // The write lock up front: a transaction that reads, then writes never fails half-way.
        self.execute("BEGIN IMMEDIATE", &[]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::params;

    #[test]
    fn urls_name_a_file_and_a_mode() {
        let rwc = parse_url("sqlite://handover.db").unwrap();
        assert_eq!(rwc.path, PathBuf::from("handover.db"));
        assert!(rwc.flags.contains(OpenFlags::SQLITE_OPEN_CREATE));
        let abs = parse_url("sqlite:///var/lib/h.db?mode=rw").unwrap();
        assert_eq!(abs.path, PathBuf::from("/var/lib/h.db"));
        assert!(!abs.flags.contains(OpenFlags::SQLITE_OPEN_CREATE));
        assert!(
            parse_url("sqlite:x.db?mode=ro")
                .unwrap()
                .flags
                .contains(OpenFlags::SQLITE_OPEN_READ_ONLY)
        );
        assert!(parse_url("sqlite::memory:").is_err());
        assert!(parse_url("sqlite://").is_err());
        let unknown = parse_url("sqlite://x.db?cache=shared").unwrap_err();
        assert!(unknown.to_string().contains("cache=shared"), "{unknown}");
    }

    /// Each write transaction gets the sync level it asks for, however often it changes (a
    /// cached pragma statement would keep the level it was first prepared with).
    #[test]
    fn durable_and_background_writes_alternate() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut conn = SqliteConn::open(&url).unwrap();
        let conn: &mut dyn Conn = &mut conn;
        for durable in [false, true, false, true, false] {
            conn.begin_write(durable).unwrap();
            // 2 = FULL (synced at commit), 1 = NORMAL.
            let level = conn.scalar("PRAGMA synchronous", params![]).unwrap();
            assert_eq!(
                level,
                Some(if durable { 2 } else { 1 }),
                "durable: {durable}"
            );
            conn.execute("COMMIT", params![]).unwrap();
        }
    }

    #[test]
    fn parameters_bind_by_number_whatever_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut conn = SqliteConn::open(&url).unwrap();
        let conn: &mut dyn Conn = &mut conn;
        conn.batch("CREATE TABLE t (a TEXT, b INTEGER, c TEXT)")
            .unwrap();
        // `$3` appears first: SQLite would number it 1.
        let n = conn
            .execute(
                "INSERT INTO t (c, a, b) VALUES ($3, $1, $2)",
                params!["one", 2i64, Some("three")],
            )
            .unwrap();
        assert_eq!(n, 1);
        let row = conn
            .query_one("SELECT a, b, c FROM t WHERE b = $1", params![2i64])
            .unwrap();
        assert_eq!(row.text(0).unwrap(), "one");
        assert_eq!(row.int(1).unwrap(), 2);
        assert_eq!(row.opt_text(2).unwrap().as_deref(), Some("three"));
        let returning = conn
            .execute(
                "UPDATE t SET b = b + 1 WHERE a = $1 RETURNING b",
                params!["one"],
            )
            .unwrap();
        assert_eq!(returning, 1);
        let missing = conn.execute("SELECT $2", params![1i64]).unwrap_err();
        assert!(missing.to_string().contains("$2"), "{missing}");
    }
}
