//! The store: threads, their audit trail, webhook events and the job queue.
//!
//! Two backends: SQLite (embedded, one replica) and PostgreSQL (several replicas). Every
//! operation is written once, synchronously, against the small driver interface in `db`, and
//! runs whole on one of the store's own threads (`engine`), next to its connection; the async
//! methods below hand it over and wait for its answer. Writes that are acknowledged to someone
//! outside share transactions and disk syncs (group commit). Each backend has its own
//! migrations (`migrations`).

/// In SQL, the lanes (`jobs.thread_key`) of the thread in the row named `$t`: a thread's jobs
/// are found by these (the `jobs_thread` index), as `handover_core::jobs::lanes` names them.
macro_rules! lanes_of {
    ($t:literal) => {
        concat!(
            "(",
            $t,
            ".page_id || '/' || ",
            $t,
            ".psid, ",
            $t,
            ".page_id || '/' || ",
            $t,
            ".psid || '#events', ",
            $t,
            ".page_id || '/' || ",
            $t,
            ".psid || '#notify')"
        )
    };
}

mod admin;
pub mod db;
mod engine;
mod events;
mod gauges;
mod migrations;
mod queue;
mod retention;
mod threads;
mod turns;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use admin::{AdminJob, AdminThread, Retry, ThreadCursor};
pub use engine::WritesPaused;
pub use events::IngestReport;
pub use queue::{
    CLAIM_PLAN_POSTGRES, ClaimedJob, Finish, Finished, JobRow, JobStatus, Mark, Then,
    claim_next_statement, claim_statement,
};
pub use retention::{BATCH as RETENTION_BATCH, Pruned, Retention};
pub use threads::TransitionRow;

use engine::{Engine, WriteKind};

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("migrations: {0}")]
    Migrate(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("DATABASE_URL: {0}")]
    Url(String),
    #[error("the store is closed")]
    Closed,
    #[error("a decision panicked: {0}")]
    Panicked(String),
    #[error("rolled back")]
    RolledBack,
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

    /// The backend a `DATABASE_URL` names.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Url(
                "must start with sqlite:// or postgres://".into(),
            ))
        }
    }
}

/// What the store's threads share with the operations they run.
#[derive(Default)]
struct Shared {
    /// What plain turns would find on the threads this process wrote (`turns`).
    turns: turns::KnownTurns,
    /// Transactions that applied a decision to a thread, for tests that a path writes nothing.
    thread_writes: AtomicU64,
}

#[derive(Clone)]
pub struct Store {
    engine: Arc<Engine>,
    shared: Arc<Shared>,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// `DATABASE_WRITERS`' default (the settings test holds the two together).
pub const DEFAULT_POSTGRES_WRITERS: usize = 4;

impl Store {
    /// Connects with `DATABASE_WRITERS`' default; an SQLite file is created on first start,
    /// in WAL mode.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, DEFAULT_POSTGRES_WRITERS).await
    }

    /// Connects, with `postgres_writers` write connections on PostgreSQL.
    pub async fn connect_with(url: &str, postgres_writers: usize) -> Result<Store, StoreError> {
        let backend = Backend::of_url(url)?;
        // Checked here, so a bad URL is one clear error rather than one per thread.
        match backend {
            Backend::Sqlite => drop(db::sqlite::parse_url(url)?),
            Backend::Postgres => drop(db::postgres::parse_url(url)?),
        }
        let engine = Engine::start(backend, url, postgres_writers.max(1)).await?;
        Ok(Store {
            engine: Arc::new(engine),
            shared: Arc::default(),
            backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the embedded migrations; the number applied. On PostgreSQL an advisory lock
    /// is held meanwhile, so replicas starting at once do not race.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        self.engine
            .write(WriteKind::UNMANAGED, migrations::run)
            .await
    }

    /// Reachable, and every embedded migration applied.
    pub async fn readiness(&self) -> Result<(), String> {
        let (applied, expected) = self
            .engine
            .read(migrations::status)
            .await
            .map_err(|e| format!("store not reachable or not migrated: {e}"))?;
        if applied < expected {
            return Err(format!(
                "{applied} of {expected} migrations applied; run `messenger-handover migrate`"
            ));
        }
        Ok(())
    }

    /// Finishes the work handed over and closes the connections; later calls fail.
    pub async fn close(&self) {
        self.engine.close().await;
    }

    /// Transactions that applied a decision to a thread (`apply`, `finish_and_apply`) in this
    /// process so far.
    pub fn thread_transactions(&self) -> u64 {
        self.shared.thread_writes.load(Ordering::Relaxed)
    }

    /// Transactions of acknowledged writes shared by group commit in this process so far
    /// (SQLite: every synced write transaction; PostgreSQL: those of webhook deliveries).
    pub fn writer_transactions(&self) -> u64 {
        self.engine.shared_transactions()
    }

    /// Writes handed over and not answered yet.
    pub fn writes_in_flight(&self) -> usize {
        self.engine.writes_in_flight()
    }

    /// Holds every write until the guard is dropped: what gathers meanwhile is written in as
    /// few transactions as group commit allows (tests show it with this).
    pub fn pause_writes(&self) -> WritesPaused {
        self.engine.pause_writes()
    }
}

#[cfg(test)]
mod tests {
    use handover_core::jobs::LANE_SUFFIXES;

    /// The SQL that finds a thread's jobs names exactly the lanes the core puts them in.
    #[test]
    fn the_lanes_in_sql_are_the_cores() {
        let sql = lanes_of!("t");
        let listed: Vec<&str> = sql
            .trim_matches(|c| c == '(' || c == ')')
            .split(", ")
            .collect();
        let expected: Vec<String> = LANE_SUFFIXES
            .iter()
            .map(|suffix| match *suffix {
                "" => "t.page_id || '/' || t.psid".to_owned(),
                s => format!("t.page_id || '/' || t.psid || '{s}'"),
            })
            .collect();
        assert_eq!(listed, expected, "{sql}");
        // And the core's key is what the SQL builds: `page/psid`.
        assert_eq!(handover_core::thread::thread_key("p", "u"), "p/u");
    }
}
