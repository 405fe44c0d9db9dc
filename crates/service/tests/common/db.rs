//! A fresh, empty database per test on either store backend, gone when the test ends, even
//! when it panics; and `both_backends!`, which runs a test once per backend.
#![allow(dead_code)]

use std::path::PathBuf;

use messenger_handover::store::db::{self, Conn};
use messenger_handover::store::{Backend, StoreError};

/// Which store backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh database for one test: a SQLite file in a temporary directory, or a PostgreSQL
/// database of its own (created under TEST_POSTGRES_URL). Dropping it deletes the file or
/// drops the database (`WITH (FORCE)`, so a service still connected does not keep it).
pub struct TestDb {
    pub url: String,
    dir: tempfile::TempDir,
    postgres: Option<PgDatabase>,
}

/// A test's own PostgreSQL database and the server URL it was created from.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    /// Drops it, with any connection a service still holds to it (blocks the thread).
    fn drop_it(&self) -> Result<(), StoreError> {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        run_sql_blocking(&self.admin_url, &sql)
    }
}

impl TestDb {
    /// Panics when PostgreSQL is asked for without TEST_POSTGRES_URL: `both_backends!` builds
    /// those variants ignored then, so only `--ignored` gets here.
    pub async fn new(db: Db) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match db {
            Db::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("handover.db").display()),
                dir,
                postgres: None,
            },
            Db::Postgres => {
                let admin_url = std::env::var("TEST_POSTGRES_URL")
                    .ok()
                    .filter(|url| !url.is_empty())
                    .expect("TEST_POSTGRES_URL is not set: the PostgreSQL variants need a server");
                let name = format!("handover_test_{:016x}", rand::random::<u64>());
                run_sql(&admin_url, &format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap_or_else(|e| panic!("TEST_POSTGRES_URL: CREATE DATABASE {name}: {e}"));
                let (server, _) = admin_url
                    .rsplit_once('/')
                    .expect("TEST_POSTGRES_URL names a database");
                TestDb {
                    url: format!("{server}/{name}"),
                    dir,
                    postgres: Some(PgDatabase { admin_url, name }),
                }
            }
        }
    }

    /// A temporary directory that lives as long as the database.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Drops the database now, without blocking the thread: for a scope that goes on while
    /// other tests' work shares its thread (the chaos seeds). `Drop` does it otherwise.
    pub async fn close(mut self) {
        if let Some(pg) = self.postgres.take() {
            let dropped =
                tokio::task::spawn_blocking(move || pg.drop_it().map_err(|e| (pg.name, e)));
            dropped.await.unwrap().unwrap_or_else(|(name, e)| {
                panic!("the test database {name} could not be dropped: {e}")
            });
        }
    }

    /// The PostgreSQL database's name (`None` on SQLite).
    pub fn postgres_name(&self) -> Option<&str> {
        self.postgres.as_ref().map(|pg| pg.name.as_str())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(pg) = self.postgres.take() else {
            return;
        };
        let name = pg.name.clone();
        // `Drop` may run inside the test's runtime, whose thread must not block on a driver
        // that runs a runtime of its own, or while unwinding: a plain thread does the drop.
        let dropped = std::thread::spawn(move || pg.drop_it()).join();
        match dropped {
            Ok(Ok(())) => {}
            // A second panic while unwinding would abort the whole test binary.
            _ if std::thread::panicking() => {
                eprintln!("the test database {name} could not be dropped: {dropped:?}")
            }
            _ => panic!("the test database {name} could not be dropped: {dropped:?}"),
        }
    }
}

/// Runs statements on a fresh connection to `url` (with the service's own driver).
pub async fn run_sql(url: &str, sql: &str) -> Result<(), StoreError> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || run_sql_blocking(&url, &sql))
        .await
        .expect("the statement's thread")
}

/// `run_sql`, blocking the thread.
pub fn run_sql_blocking(url: &str, sql: &str) -> Result<(), StoreError> {
    with_conn_blocking(url, |conn| conn.batch(sql))
}

/// Runs `f` on a fresh connection to `url` (with the service's own driver).
pub async fn with_conn<T, F>(url: &str, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Conn) -> Result<T, StoreError> + Send + 'static,
{
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || with_conn_blocking(&url, f))
        .await
        .expect("the connection's thread")
}

fn with_conn_blocking<T>(
    url: &str,
    f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut conn = db::connect(Backend::of_url(url)?, url)?;
    f(&mut *conn)
}

/// Runs `$name` (an async fn taking a [`Db`]) once per backend, as `$name::sqlite` and
/// `$name::postgres`. The PostgreSQL variant is built ignored unless TEST_POSTGRES_URL was set
/// at build time (`cfg(postgres_tests)`, from `build.rs`), so the runner's summary counts it as
/// ignored rather than passed; CI sets the URL, so there it always runs.
/// `both_backends!(name, current_thread)` runs each on a single-threaded runtime: spawned tasks
/// (the store's writer) then run only when the test awaits.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, current_thread) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::common::db::Db::Sqlite).await;
            }
            #[tokio::test]
            #[cfg_attr(not(postgres_tests), ignore = "set TEST_POSTGRES_URL to run")]
            async fn postgres() {
                super::$name($crate::common::db::Db::Postgres).await;
            }
        }
    };
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::db::Db::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(postgres_tests), ignore = "set TEST_POSTGRES_URL to run")]
            async fn postgres() {
                super::$name($crate::common::db::Db::Postgres).await;
            }
        }
    };
}
