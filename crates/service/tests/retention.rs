//! Bounded storage: what maintenance deletes and keeps, and a steady load that reaches a
//! plateau instead of growing without end.

mod common;

use common::db::{Db, TestDb, with_conn};
use handover_core::event::IncomingEvent;
use handover_core::{Decision, State, Thread};
use messenger_handover::store::{Finish, Retention, Store};
use messenger_handover::time::DAY_MS;

const PAGE_ID: &str = "958823367603818";
/// A day in the store's time (milliseconds since the epoch), from an arbitrary start.
const START: i64 = 1_800_000_000_000;

fn day(n: i64) -> i64 {
    START + n * DAY_MS
}

fn delivery(psid: &str, mid: &str) -> Vec<IncomingEvent> {
    common::mocks::standby_events(psid, mid, "hello")
}

/// Row counts of the tables that could grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rows {
    threads: i64,
    transitions: i64,
    events: i64,
    jobs: i64,
}

async fn rows(url: &str) -> Rows {
    with_conn(url, |conn| {
        let mut count = |table: &str| {
            conn.scalar(&format!("SELECT COUNT(*) FROM {table}"), &[])
                .map(|n| n.unwrap_or(0))
        };
        Ok(Rows {
            threads: count("threads")?,
            transitions: count("transitions")?,
            events: count("events")?,
            jobs: count("jobs")?,
        })
    })
    .await
    .unwrap()
}

/// SQLite's pages in use (the file's size less its free pages); `None` on PostgreSQL.
async fn sqlite_pages_used(db: Db, url: &str) -> Option<i64> {
    if db != Db::Sqlite {
        return None;
    }
    with_conn(url, |conn| {
        let pages = conn.scalar("PRAGMA page_count", &[])?.unwrap_or(0);
        let free = conn.scalar("PRAGMA freelist_count", &[])?.unwrap_or(0);
        Ok(Some(pages - free))
    })
    .await
    .unwrap()
}

/// Moves the thread to `state` at `now`, with an audit row.
async fn set_state(store: &Store, psid: &str, state: State, now: i64) {
    store
        .apply(PAGE_ID, psid, now, move |t: &Thread| {
            let mut t = t.clone();
            t.state = state;
            t.state_since = now;
            t.last_user_msg_at = Some(now);
            Decision::set(t, "test", vec![])
        })
        .await
        .unwrap();
}

/// Runs every job due by `now` to done.
async fn run_jobs(store: &Store, now: i64) {
    loop {
        let jobs = store.claim("test-worker", 100, 60_000, now).await.unwrap();
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            assert!(store.finish(&job, Finish::Done, now).await.unwrap());
        }
    }
}

const KEEP: Retention = Retention {
    finished_ms: 2 * DAY_MS,
    threads_ms: 5 * DAY_MS,
    audit_ms: 8 * DAY_MS,
};

/// Every day 40 new users each write twice, are handed over and come back; maintenance runs
/// daily. Once the longest retention has passed, each table holds about the same number of
/// rows from one day to the next, and SQLite's file stops growing: its free pages are reused.
async fn a_steady_load_reaches_a_plateau(db: Db) {
    let db_guard = TestDb::new(db).await;
    let url = db_guard.url.clone();
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    const DAYS: i64 = 24;
    const USERS: i64 = 40;
    let mut history = Vec::new();
    for d in 0..DAYS {
        let now = day(d);
        for u in 0..USERS {
            let psid = format!("{}", 7_000_000 + d * USERS + u);
            for m in 0..2 {
                let stored = store
                    .ingest(delivery(&psid, &format!("m_{psid}_{m}")), now)
                    .await
                    .unwrap();
                assert_eq!(stored.stored, 1);
            }
            set_state(&store, &psid, State::Human, now).await;
            set_state(&store, &psid, State::Bot, now + 60_000).await;
        }
        run_jobs(&store, now + 120_000).await;
        store.prune(KEEP, now + 180_000, 100).await.unwrap();
        history.push((rows(&url).await, sqlite_pages_used(db, &url).await));
    }
    let (last, last_pages) = history[DAYS as usize - 1];
    let (earlier, earlier_pages) = history[DAYS as usize - 6];
    // Kept days × rows per day: threads 5 days of users (quiet since their day), transitions 8
    // days of 2 per user, events and jobs 2 days of 2 per user.
    assert_eq!(last.threads, 5 * USERS, "{history:#?}");
    assert_eq!(last.transitions, 8 * 2 * USERS, "{history:#?}");
    assert_eq!(last.events, 2 * 2 * USERS, "{history:#?}");
    assert_eq!(last.jobs, 2 * 2 * USERS, "{history:#?}");
    assert_eq!(last, earlier, "not a plateau: {history:#?}");
    if let (Some(last), Some(earlier)) = (last_pages, earlier_pages) {
        assert!(
            last <= earlier + earlier / 10,
            "the SQLite file keeps growing: {earlier} then {last} pages"
        );
        let bytes = last * 4096;
        let conversations = 5 * USERS;
        eprintln!(
            "plateau: {last} pages of 4 KiB for {conversations} conversations kept, \
             {} bytes each with their share of the audit trail, events and jobs",
            bytes / conversations
        );
    }
    store.close().await;
}

both_backends!(a_steady_load_reaches_a_plateau);

/// What is deleted and what is kept, one case each.
async fn maintenance_keeps_what_is_live(db: Db) {
    let db_guard = TestDb::new(db).await;
    let url = db_guard.url.clone();
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let old = day(0);
    let now = day(30);
    // Quiet for 30 days: with the bot, idle, with a human. All go.
    set_state(&store, "100", State::Bot, old).await;
    set_state(&store, "101", State::Idle, old).await;
    set_state(&store, "102", State::Human, old).await;
    // In transit (the reconciler settles it), recent, or with a job queued: kept.
    set_state(&store, "103", State::Passing, old).await;
    set_state(&store, "104", State::Human, now - 2 * DAY_MS).await;
    set_state(&store, "104", State::Bot, now - DAY_MS).await;
    set_state(&store, "105", State::Bot, old).await;
    store
        .ingest(delivery("105", "m_pending"), old)
        .await
        .unwrap();
    // An agent spoke recently in this old HUMAN stay: kept.
    store
        .apply(PAGE_ID, "106", old, move |t: &Thread| {
            let mut t = t.clone();
            t.state = State::Human;
            t.state_since = old;
            t.last_agent_msg_at = Some(now - DAY_MS);
            Decision::set(t, "test", vec![])
        })
        .await
        .unwrap();
    let keep = Retention {
        finished_ms: 7 * DAY_MS,
        threads_ms: 20 * DAY_MS,
        audit_ms: 25 * DAY_MS,
    };
    let pruned = store.prune(keep, now, 10).await.unwrap();
    assert_eq!(pruned.threads, 3, "{pruned:?}");
    for (psid, kept) in [
        ("100", false),
        ("101", false),
        ("102", false),
        ("103", true),
        ("104", true),
        ("105", true),
        ("106", true),
    ] {
        let thread = store.thread(PAGE_ID, psid).await.unwrap();
        assert_eq!(thread.is_some(), kept, "thread {psid}");
    }
    // Audit rows of day 0 (101, 102, 103, 106 changed state) are older than 25 days; 104's
    // recent two stay.
    assert_eq!(pruned.transitions, 4, "{pruned:?}");
    assert_eq!(store.transitions(PAGE_ID, "104").await.unwrap().len(), 2);
    // The queued event's job is unfinished: its event stays too.
    assert_eq!(pruned.events, 0, "{pruned:?}");
    assert_eq!(store.jobs_for(PAGE_ID, "105").await.unwrap().len(), 1);
    store.close().await;
}

both_backends!(maintenance_keeps_what_is_live);

/// A large backlog goes in batches: each call deletes at most a batch of each kind.
async fn a_backlog_goes_in_batches(db: Db) {
    let db_guard = TestDb::new(db).await;
    let url = db_guard.url.clone();
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let old = day(0);
    let backlog = messenger_handover::store::RETENTION_BATCH + 100;
    with_conn(&url, move |conn| {
        for i in 0..backlog {
            conn.execute(
                "INSERT INTO transitions (page_id, psid, from_state, to_state, cause, at) \
                 VALUES ($1, $2, 'BOT', 'HUMAN', 'test', $3)",
                &[PAGE_ID.into(), format!("{i}").as_str().into(), old.into()],
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let keep = Retention::from_days(30, 30);
    let first = store.prune_batch(keep, day(60)).await.unwrap();
    assert_eq!(
        first.transitions as i64,
        messenger_handover::store::RETENTION_BATCH
    );
    assert!(first.more_waiting());
    let rest = store.prune(keep, day(60), 10).await.unwrap();
    assert_eq!(rest.transitions, 100);
    assert_eq!(rows(&url).await.transitions, 0);
    store.close().await;
}

both_backends!(a_backlog_goes_in_batches);
