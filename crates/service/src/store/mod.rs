//! The store: threads, their audit trail, webhook events and the job queue.
//!
//! One interface over two backends through sqlx's `Any` driver: SQLite (embedded, one
//! replica) and PostgreSQL (several replicas). Values are plain integers and text (epoch
//! milliseconds, JSON as text), so the same SQL serves both; where the dialects differ
//! (transaction start, row locks, `SKIP LOCKED`) the `Backend` picks the statement. Each
//! backend has its own migrations.

mod events;
mod gauges;
mod queue;
mod threads;
mod turns;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use events::IngestReport;
pub use queue::{ClaimedJob, Finish, JobRow, JobStatus};
pub use threads::TransitionRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("DATABASE_URL: {0}")]
    Url(String),
    #[error("the store's writer has stopped")]
    Writer,
    #[error("a decision panicked: {0}")]
    Panicked(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

mod migrations;

/// SQLite: `sqlite_connections` connections in WAL mode with `synchronous` as given (`NORMAL`
/// survives a process crash; `FULL` also a power loss). PostgreSQL: 16 connections.
fn pool_options(
    backend: Backend,
    sqlite_connections: u32,
    synchronous: &'static str,
) -> AnyPoolOptions {
    let options = match backend {
        // SQLite has one writer; a few connections let reads go on beside it.
        Backend::Sqlite => AnyPoolOptions::new()
            .max_connections(sqlite_connections)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    let sync = format!("PRAGMA synchronous = {synchronous}");
                    conn.execute(sqlx::AssertSqlSafe(sync)).await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            }),
        Backend::Postgres => AnyPoolOptions::new().max_connections(16),
    };
    options.acquire_timeout(Duration::from_secs(10))
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// The group-commit writer's connection (`writer`): on SQLite its own, whose commits are
    /// synced to disk (`synchronous = FULL`); on PostgreSQL the pool.
    durable: AnyPool,
    /// `None` in the writer's own copy.
    writer: Option<tokio::sync::mpsc::Sender<writer::Unit>>,
    backend: Backend,
    /// What plain turns would find on the threads this process wrote (`turns`).
    turns: Arc<turns::KnownTurns>,
    /// Transactions that applied a decision to a thread, for tests that a path writes nothing.
    thread_writes: Arc<AtomicU64>,
    /// Transactions of the group-commit writer.
    shared_writes: Arc<AtomicU64>,
    /// SQLite: taken before a write transaction begins. SQLite has one writer; without this, a
    /// second writer would wait in SQLite's busy handler, which sleeps and polls (1, 2, 5, 10…
    /// ms) instead of waking when the lock is free. `None` on PostgreSQL.
    write_turn: Option<Arc<Mutex<()>>>,
    /// SQLite: background writers (the job worker) queue here before they queue for the write
    /// turn, so the group-commit writer, which callers wait on, is behind one of them at most.
    background_gate: Option<Arc<Mutex<()>>>,
}

/// A write transaction, holding the SQLite write turn (`Store::write_turn`) until it ends.
pub(crate) struct WriteTx {
    tx: Transaction<'static, sqlx::Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// A single write statement, run in a write transaction of its own (so it takes its turn).
pub(super) trait RunWrite {
    async fn run_write(self, store: &Store) -> Result<sqlx::any::AnyQueryResult, StoreError>;
}

impl<'q> RunWrite for sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    async fn run_write(self, store: &Store) -> Result<sqlx::any::AnyQueryResult, StoreError> {
        let mut tx = store.begin().await?;
        let result = self.execute(&mut **tx).await?;
        tx.commit().await?;
        Ok(result)
    }
}

impl std::ops::Deref for WriteTx {
    type Target = Transaction<'static, sqlx::Any>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects; an SQLite file is created on first start, in WAL mode.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(
                "must start with sqlite:// or postgres://".into(),
            ));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let options =
            AnyConnectOptions::from_str(&url).map_err(|e| StoreError::Url(e.to_string()))?;
        let pool = pool_options(backend, 4, "NORMAL")
            .connect_with(options.clone())
            .await?;
        // In WAL mode a synced commit also makes every commit before it durable.
        let durable = match backend {
            Backend::Sqlite => {
                pool_options(backend, 1, "FULL")
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => pool.clone(),
        };
        let mut store = Store {
            pool,
            durable,
            writer: None,
            backend,
            turns: Arc::default(),
            thread_writes: Arc::default(),
            shared_writes: Arc::default(),
            write_turn: (backend == Backend::Sqlite).then(Arc::default),
            background_gate: (backend == Backend::Sqlite).then(Arc::default),
        };
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        store.writer = Some(writer::spawn(store.clone(), writers));
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        migrations::migrator(self.backend)
    }

    /// Applies the embedded migrations. On PostgreSQL sqlx holds an advisory lock while it
    /// migrates, so replicas starting at once do not race.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let before = self.applied_migrations().await.unwrap_or(0);
        self.migrator().run(&self.pool).await?;
        let after = self.applied_migrations().await?;
        Ok(after.saturating_sub(before))
    }

    async fn applied_migrations(&self) -> Result<usize, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await?;
        Ok(n as usize)
    }

    /// Reachable, and every embedded migration applied.
    pub async fn readiness(&self) -> Result<(), String> {
        let applied = self
            .applied_migrations()
            .await
            .map_err(|e| format!("store not reachable or not migrated: {e}"))?;
        let expected = self.migrator().iter().count();
        if applied < expected {
            return Err(format!(
                "{applied} of {expected} migrations applied; run `messenger-handover migrate`"
            ));
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.durable.close().await;
    }

    /// Transactions that applied a decision to a thread (`apply`, `finish_and_apply`) in this
    /// process so far.
    pub fn thread_transactions(&self) -> u64 {
        self.thread_writes.load(Ordering::Relaxed)
    }

    /// Transactions the group-commit writer has begun in this process so far.
    pub fn writer_transactions(&self) -> u64 {
        self.shared_writes.load(Ordering::Relaxed)
    }

    /// A write transaction. SQLite takes the write lock up front, so a transaction that
    /// reads and then writes never fails half-way with SQLITE_BUSY.
    async fn begin(&self) -> Result<WriteTx, StoreError> {
        let turn = match &self.background_gate {
            Some(gate) => {
                let _queued = gate.lock().await;
                self.write_turn().await
            }
            None => None,
        };
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// A write transaction of the group-commit writer (`writer`).
    async fn begin_durable(&self) -> Result<WriteTx, StoreError> {
        self.shared_writes.fetch_add(1, Ordering::Relaxed);
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.durable.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.durable.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.write_turn {
            Some(turn) => Some(Arc::clone(turn).lock_owned().await),
            None => None,
        }
    }
}
