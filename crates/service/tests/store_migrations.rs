//! The migration runner: databases migrated by earlier versions (sqlx's migrator) are
//! recognised, each migration is applied once, and a record this binary cannot vouch for is
//! refused rather than migrated over.

mod common;

use common::db::{Db, TestDb, run_sql};
use messenger_handover::store::Store;

/// Dumps of databases that the previous version (sqlx 0.9's migrator) migrated.
fn migrated_by_sqlx(db: Db) -> &'static str {
    match db {
        Db::Sqlite => include_str!("../fixtures/store/migrated-by-sqlx-sqlite.sql"),
        Db::Postgres => include_str!("../fixtures/store/migrated-by-sqlx-postgres.sql"),
    }
}

/// A blob literal in each dialect.
fn blob(db: Db, hex: &str) -> String {
    match db {
        Db::Sqlite => format!("X'{hex}'"),
        Db::Postgres => format!("'\\x{hex}'::bytea"),
    }
}

async fn a_fresh_database_gets_every_migration_once(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = Store::connect(&test_db.url).await.unwrap();
    assert!(store.readiness().await.is_err(), "not migrated yet");
    assert_eq!(store.migrate().await.unwrap(), 6);
    assert_eq!(store.migrate().await.unwrap(), 0, "nothing twice");
    store.readiness().await.unwrap();
    store.close().await;
}

both_backends!(a_fresh_database_gets_every_migration_once);

async fn a_database_migrated_by_sqlx_is_up_to_date(db: Db) {
    let test_db = TestDb::new(db).await;
    run_sql(&test_db.url, migrated_by_sqlx(db)).await.unwrap();
    let store = Store::connect(&test_db.url).await.unwrap();
    // Its two migrations are recognised; only those added since are applied.
    assert_eq!(
        store.migrate().await.unwrap(),
        4,
        "the records are recognised"
    );
    store.readiness().await.unwrap();
    // And the schema is the one this version works with.
    assert_eq!(store.thread("1", "2").await.unwrap(), None);
    store.close().await;
}

both_backends!(a_database_migrated_by_sqlx_is_up_to_date);

async fn a_migration_applied_with_other_sql_is_refused(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = Store::connect(&test_db.url).await.unwrap();
    store.migrate().await.unwrap();
    let changed = format!(
        "UPDATE _sqlx_migrations SET checksum = {} WHERE version = 2",
        blob(db, "00")
    );
    run_sql(&test_db.url, &changed).await.unwrap();
    let refused = store.migrate().await.unwrap_err().to_string();
    assert!(
        refused.contains("migration 2") && refused.contains("different SQL"),
        "{refused}"
    );
    store.close().await;
}

both_backends!(a_migration_applied_with_other_sql_is_refused);

async fn a_migration_of_a_newer_version_is_refused(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = Store::connect(&test_db.url).await.unwrap();
    store.migrate().await.unwrap();
    let newer = format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from the future', TRUE, {}, 1)",
        blob(db, "00")
    );
    run_sql(&test_db.url, &newer).await.unwrap();
    let refused = store.migrate().await.unwrap_err().to_string();
    assert!(
        refused.contains("migration 99") && refused.contains("newer version"),
        "{refused}"
    );
    store.close().await;
}

both_backends!(a_migration_of_a_newer_version_is_refused);

async fn a_half_applied_migration_is_refused(db: Db) {
    let test_db = TestDb::new(db).await;
    let store = Store::connect(&test_db.url).await.unwrap();
    store.migrate().await.unwrap();
    run_sql(
        &test_db.url,
        "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 2",
    )
    .await
    .unwrap();
    let refused = store.migrate().await.unwrap_err().to_string();
    assert!(refused.contains("half-applied"), "{refused}");
    assert!(store.readiness().await.is_err(), "not ready either");
    store.close().await;
}

both_backends!(a_half_applied_migration_is_refused);

/// A fresh store, never analysed, with 300 webhook events of 20 users queued: their jobs
/// unfinished, most waiting behind their user's first.
async fn a_queue_of_300_events(db: Db) -> (TestDb, messenger_handover::store::Backend, i64) {
    let test_db = TestDb::new(db).await;
    let store = Store::connect(&test_db.url).await.unwrap();
    store.migrate().await.unwrap();
    let now = messenger_handover::time::now_ms();
    for i in 0..300 {
        let events =
            common::mocks::standby_events(&format!("{}", 900 + i % 20), &format!("m_{i}"), "hi");
        store.ingest(events, now).await.unwrap();
    }
    let backend = store.backend();
    store.close().await;
    (test_db, backend, now)
}

/// The query of a claim that finds the jobs: PostgreSQL's is inside the update.
fn finding_query(claim: &'static str) -> &'static str {
    match claim.rfind(") RETURNING") {
        Some(end) => &claim[claim.find("SELECT j.id").unwrap()..end],
        None => claim,
    }
}

/// The lines of a query plan, as `EXPLAIN` (PostgreSQL) or `EXPLAIN QUERY PLAN` (SQLite)
/// gave them.
fn plan_lines(
    backend: messenger_handover::store::Backend,
    rows: &[messenger_handover::store::db::Row],
) -> Result<Vec<String>, messenger_handover::store::StoreError> {
    let column = match backend {
        messenger_handover::store::Backend::Sqlite => 3,
        messenger_handover::store::Backend::Postgres => 0,
    };
    rows.iter().map(|r| r.text(column)).collect()
}

/// The claim walks `jobs_claimable` in order (and so stops at its limit) rather than gathering
/// and sorting every due job, on both backends, with a queue of blocked jobs in it.
async fn the_claim_walks_the_claimable_index(db: Db) {
    use messenger_handover::store::{Backend, CLAIM_PLAN_POSTGRES, claim_statement};
    let (test_db, backend, now) = a_queue_of_300_events(db).await;
    // Explained with the claim's own parameters.
    let select = finding_query(claim_statement(backend));
    let plan = common::db::with_conn(&test_db.url, move |conn| {
        let explain = match backend {
            Backend::Sqlite => format!("EXPLAIN QUERY PLAN {select}"),
            Backend::Postgres => {
                conn.batch("BEGIN")?;
                conn.batch(CLAIM_PLAN_POSTGRES)?;
                format!("EXPLAIN {select}")
            }
        };
        let params = [now.into(), 16i64.into(), (now + 60_000).into(), "w".into()];
        let rows = conn.query(&explain, &params[..2])?;
        plan_lines(backend, &rows)
    })
    .await
    .unwrap()
    .join("\n");
    assert!(plan.contains("jobs_claimable"), "{plan}");
    assert!(
        !plan.contains("Sort") && !plan.contains("TEMP B-TREE FOR ORDER BY"),
        "{plan}"
    );
}

both_backends!(the_claim_walks_the_claimable_index);

/// The successor claim finds a thread's next job by the thread's index, on both backends: on
/// PostgreSQL in the generic plan it is prepared with, on a table never analysed with a queue
/// of unfinished jobs in it (a new deployment's first burst). It used to walk the whole of
/// `jobs_claimable` there: 4 ms and more per finished job.
async fn the_successor_claim_takes_the_threads_index(db: Db) {
    use messenger_handover::store::{Backend, claim_next_statement};
    let (test_db, backend, now) = a_queue_of_300_events(db).await;
    let select = finding_query(claim_next_statement(backend));
    let lane = "958823367603818/905";
    let plan = common::db::with_conn(&test_db.url, move |conn| {
        let rows = match backend {
            Backend::Sqlite => {
                let (events, notify) = (format!("{lane}#events"), format!("{lane}#notify"));
                let params = [
                    now.into(),
                    1i64.into(),
                    (now + 60_000).into(),
                    "w".into(),
                    lane.into(),
                    (&events).into(),
                    (&notify).into(),
                ];
                conn.query(&format!("EXPLAIN QUERY PLAN {select}"), &params)?
            }
            Backend::Postgres => {
                conn.batch("SET plan_cache_mode = force_generic_plan")?;
                conn.batch(&format!(
                    "PREPARE next (bigint, bigint, bigint, text, text, text, text) AS {select}"
                ))?;
                let execute = format!(
                    "EXPLAIN EXECUTE next({now}, 1, 0, 'w', '{lane}', '{lane}#events', \
                     '{lane}#notify')"
                );
                conn.query(&execute, &[])?
            }
        };
        plan_lines(backend, &rows)
    })
    .await
    .unwrap()
    .join("\n");
    assert!(plan.contains("jobs_thread"), "{plan}");
    assert!(!plan.contains("jobs_claimable"), "{plan}");
}

both_backends!(the_successor_claim_takes_the_threads_index);
