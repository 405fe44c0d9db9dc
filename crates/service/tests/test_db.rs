//! The test database guard: a PostgreSQL test's database is dropped when the test ends, even
//! when it panics with the service still connected.

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use common::db::{Db, TestDb};
use futures_util::FutureExt;
use messenger_handover::store::Store;

/// Whether the server at TEST_POSTGRES_URL has a database `name`.
async fn exists(name: &str) -> bool {
    let url = std::env::var("TEST_POSTGRES_URL").expect("TEST_POSTGRES_URL");
    let name = name.to_owned();
    let found = common::db::with_conn(&url, move |conn| {
        conn.scalar(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[name.as_str().into()],
        )
    })
    .await
    .unwrap();
    found == Some(1)
}

/// A connected, migrated store on `db`, as a running service holds one.
async fn connected(db: &TestDb) -> Store {
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "set TEST_POSTGRES_URL to run")]
async fn a_panicking_test_leaves_no_database_behind() {
    let name = Arc::new(Mutex::new(None));
    let test = async {
        let db = TestDb::new(Db::Postgres).await;
        let created = db.postgres_name().unwrap().to_owned();
        assert!(exists(&created).await);
        *name.lock().unwrap() = Some(created);
        let _store = connected(&db).await;
        panic!("a test fails with its database open");
    };
    let outcome = AssertUnwindSafe(test).catch_unwind().await;
    assert!(outcome.is_err(), "the guarded scope panicked");
    let name = name
        .lock()
        .unwrap()
        .clone()
        .expect("the database was created");
    assert!(!exists(&name).await, "{name} was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(postgres_tests), ignore = "set TEST_POSTGRES_URL to run")]
async fn a_finished_test_leaves_no_database_behind() {
    let db = TestDb::new(Db::Postgres).await;
    let name = db.postgres_name().unwrap().to_owned();
    let store = connected(&db).await;
    drop(db);
    assert!(!exists(&name).await, "{name} was left behind");
    store.close().await;

    // The same without blocking the thread.
    let db = TestDb::new(Db::Postgres).await;
    let name = db.postgres_name().unwrap().to_owned();
    db.close().await;
    assert!(!exists(&name).await, "{name} was left behind");
}

#[tokio::test]
async fn a_sqlite_database_is_deleted_with_its_guard() {
    let db = TestDb::new(Db::Sqlite).await;
    let dir = db.dir();
    connected(&db).await.close().await;
    assert!(dir.join("handover.db").exists());
    drop(db);
    assert!(!dir.exists());
}
