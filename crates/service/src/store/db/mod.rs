//! The two database drivers behind one small synchronous interface.
//!
//! Every store operation is written once, against `Conn`, and runs on one of the store's own
//! threads (`engine`), where its connection lives: a whole transaction costs one hand-off
//! between threads, not one per statement. SQL is written with `$1`-style parameters, which
//! both backends accept; values are plain integers and text (epoch milliseconds, JSON as
//! text), so the same SQL serves both. Where the dialects differ the caller picks the text by
//! `Conn::backend`.

pub mod postgres;
pub mod sqlite;

use super::{Backend, StoreError};

/// A parameter of a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `params![a, b, c]`: the values of a statement's `$1, $2, $3`.
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::Value::from($v)),*][..]
    };
}
pub(crate) use params;

/// A value read from a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// One row of a result, its columns in the order the statement selects them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row(pub Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("a row has no column {i}")))
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            other => Err(StoreError::Corrupt(format!(
                "column {i}: expected an integer, found {other:?}"
            ))),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(v) => Ok(Some(v.clone())),
            other => Err(StoreError::Corrupt(format!(
                "column {i}: expected text, found {other:?}"
            ))),
        }
    }

    pub fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        match self.cell(i)? {
            Cell::Bytes(v) => Ok(v.clone()),
            other => Err(StoreError::Corrupt(format!(
                "column {i}: expected bytes, found {other:?}"
            ))),
        }
    }
}

/// A connection, used by one thread at a time.
pub trait Conn: Send {
    fn backend(&self) -> Backend;

    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError>;

    /// Runs a statement and returns its rows.
    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError>;

    /// Runs an `INSERT` of one row written without `RETURNING`; the new row's `id`, or `None`
    /// when it inserted nothing (`ON CONFLICT DO NOTHING`). SQLite reads the id back from the
    /// connection: `RETURNING` would give the statement a statement journal (a copy of each
    /// page it changes, made and thrown away); PostgreSQL appends `RETURNING id` (one trip).
    fn insert_id(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Option<i64>, StoreError>;

    /// Runs statements without parameters, separated by `;` (transaction control, migrations).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;

    /// Begins a write transaction. `durable`: its commit reaches the disk before `COMMIT`
    /// returns; otherwise it survives a crash of the process but maybe not of the machine.
    fn begin_write(&mut self, durable: bool) -> Result<(), StoreError>;

    /// The connection is unusable (the server closed it) and must be made anew.
    fn is_broken(&self) -> bool {
        false
    }
}

impl dyn Conn + '_ {
    pub fn query_opt(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub fn query_one(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Corrupt(format!("no row for {sql}")))
    }

    /// The first column of the first row, an integer or NULL.
    pub fn scalar(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Option<i64>, StoreError> {
        match self.query_opt(sql, params)? {
            Some(row) => row.opt_int(0),
            None => Ok(None),
        }
    }
}

/// Opens a connection for `backend` to `url` (as `DATABASE_URL` gives it).
pub fn connect(backend: Backend, url: &str) -> Result<Box<dyn Conn>, StoreError> {
    match backend {
        Backend::Sqlite => Ok(Box::new(sqlite::SqliteConn::open(url)?)),
        Backend::Postgres => Ok(Box::new(postgres::PgConn::open(url)?)),
    }
}
