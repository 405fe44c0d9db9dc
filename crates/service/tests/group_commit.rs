//! Group commit: concurrent writes share a transaction; a unit that fails does so alone.

mod common;

use common::db::{Db, TestDb};
use handover_core::event::IncomingEvent;
use handover_core::jobs::JobPayload;
use handover_core::{Decision, State};
use messenger_handover::store::Store;
use messenger_handover::time::now_ms;

const PAGE_ID: &str = "958823367603818";

fn delivery(psid: &str, mid: &str, text: &str) -> Vec<IncomingEvent> {
    common::mocks::standby_events(psid, mid, text)
}

async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// 100 deliveries and 20 decisions handed over while the writers are held: they share a
/// transaction (on PostgreSQL the deliveries do; decisions take row locks and run in their
/// own), and every unit is answered and stored.
async fn concurrent_writes_share_transactions(db: Db) {
    let db = TestDb::new(db).await;
    let store = store(&db).await;
    let now = now_ms();
    let before = store.writer_transactions();
    let paused = store.pause_writes();
    let deliveries: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let events = delivery(&format!("{}", 2000 + i % 10), &format!("m_{i}"), "hello");
                store.ingest(events, now).await
            })
        })
        .collect();
    // Handed over in this order, so each user's deliveries queue in the order of their mids.
    while store.writes_in_flight() < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let decisions: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .apply(PAGE_ID, &format!("{}", 3000 + i), now, |t| {
                        let mut t = t.clone();
                        t.state = State::Human;
                        Decision::set(t, "test", vec![])
                    })
                    .await
            })
        })
        .collect();
    while store.writes_in_flight() < 120 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    drop(paused);
    let ingested = futures_util::future::join_all(deliveries).await;
    let applied = futures_util::future::join_all(decisions).await;
    let ingested: Vec<_> = ingested.into_iter().map(|r| r.unwrap()).collect();
    let applied: Vec<_> = applied.into_iter().map(|r| r.unwrap()).collect();
    for report in ingested {
        assert_eq!(report.unwrap().stored, 1);
    }
    for decision in applied {
        assert_eq!(decision.unwrap().thread.state, State::Human);
    }
    let used = store.writer_transactions() - before;
    assert_eq!(
        used, 1,
        "one shared transaction for the units queued together"
    );
    for i in 0..20 {
        let t = store
            .thread(PAGE_ID, &format!("{}", 3000 + i))
            .await
            .unwrap();
        assert_eq!(t.unwrap().state, State::Human);
    }
    // Per-user order: each user's jobs, in the queue's order (id), process that user's events
    // in the order they were handed over (m_u, m_u+10, m_u+20, ...).
    for user in 0..10 {
        let jobs = store
            .jobs_for(PAGE_ID, &format!("{}", 2000 + user))
            .await
            .unwrap();
        let mut mids = Vec::new();
        for job in &jobs {
            let Some(JobPayload::ProcessEvent { event_id }) = job.payload else {
                panic!("unexpected job {job:?}");
            };
            let event = store.event(event_id).await.unwrap().unwrap();
            mids.push(event.dedupe_key);
        }
        let expected: Vec<String> = (0..10)
            .map(|k| format!("mid:m_{}", user + 10 * k))
            .collect();
        assert_eq!(mids, expected, "user {user}");
    }
    // A retried delivery in a later batch is a duplicate.
    let again = store
        .ingest(delivery("2000", "m_0", "hello"), now)
        .await
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
}

both_backends!(concurrent_writes_share_transactions, current_thread);

/// A decision that panics (a bug) fails its own request only: the others in its batch are
/// written and the writer keeps going.
async fn a_unit_that_fails_fails_alone(db: Db) {
    let db = TestDb::new(db).await;
    let store = store(&db).await;
    let now = now_ms();
    let units = (0..10).map(|i| {
        let store = store.clone();
        async move {
            store
                .apply(PAGE_ID, &format!("{}", 5000 + i), now, move |t| {
                    assert_ne!(i, 4, "a bug in a decision");
                    let mut t = t.clone();
                    t.state = State::Human;
                    Decision::set(t, "test", vec![])
                })
                .await
        }
    });
    let results = futures_util::future::join_all(units).await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.is_err(), i == 4, "unit {i}: {result:?}");
        let thread = store
            .thread(PAGE_ID, &format!("{}", 5000 + i))
            .await
            .unwrap();
        assert_eq!(thread.map(|t| t.state), (i != 4).then_some(State::Human));
    }
    let later = store.ingest(delivery("5000", "m_later", "hi"), now).await;
    assert_eq!(later.unwrap().stored, 1, "the writer still runs");
}

both_backends!(a_unit_that_fails_fails_alone, current_thread);

/// The same event twice in one batch (a retried delivery racing the first): stored once.
async fn a_duplicate_in_the_same_batch_is_stored_once(db: Db) {
    let db = TestDb::new(db).await;
    let store = store(&db).await;
    let now = now_ms();
    let first = store.ingest(delivery("6000", "m_same", "hi"), now);
    let second = store.ingest(delivery("6000", "m_same", "hi"), now);
    let mut twice = delivery("6000", "m_twice", "hi");
    twice.extend(delivery("6000", "m_twice", "hi"));
    let within = store.ingest(twice, now);
    let (a, b, c) = futures_util::future::join3(first, second, within).await;
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.stored + b.stored, 1, "{a:?} {b:?}");
    assert_eq!(a.duplicates + b.duplicates, 1);
    assert_eq!((c.stored, c.duplicates), (1, 1));
    assert_eq!(store.jobs_for(PAGE_ID, "6000").await.unwrap().len(), 2);
}

both_backends!(a_duplicate_in_the_same_batch_is_stored_once, current_thread);
