//! The reconciler asks `thread_owner` about threads that sat too long in a transitional state,
//! or in HUMAN past Messenger's 24-hour expiry, and corrects them.

mod common;

use common::app::*;
use common::mocks::{RECONCILE_EVERY_SECOND, accept_posts, mount_owner, owner_asked, put_threads};
use handover_core::State;
use messenger_handover::time::DAY_MS;
use wiremock::MockServer;

/// Puts a thread in `state` since `age_ms` ago, with no job queued.
async fn stuck(url: &str, psid: &str, state: State, age_ms: i64) {
    put_threads(url, &[(psid.to_owned(), state, age_ms)]).await;
}

async fn stuck_threads_are_corrected(db: Db) {
    let db = TestDb::new(db).await;
    let graph = MockServer::start().await;
    // A take that never completed, but Meta says the bot owns the thread.
    stuck(&db.url, PSID, State::Returning, 10 * 60_000).await;
    mount_owner(&graph, PSID, Some(APP_ID)).await;
    // A thread with the inbox for more than a day: Meta says it went idle.
    stuck(&db.url, PSID_2, State::Human, DAY_MS + 60_000).await;
    mount_owner(&graph, PSID_2, None).await;
    // A recent HUMAN thread is left alone.
    stuck(&db.url, "3000000000000003", State::Human, 60_000).await;
    accept_posts(&graph).await;

    let app = TestApp::against(&db, &graph, &RECONCILE_EVERY_SECOND).await;
    let t = app.wait_state(PSID, State::Bot).await;
    assert_eq!(t.owner_app_id.as_deref(), Some(APP_ID));
    app.wait_state(PSID_2, State::Idle).await;
    app.wait_idle(PSID).await;
    // Back with the bot: the welcome it never got is sent.
    assert_eq!(requests_to(&graph, "/messages").await.len(), 1);
    let asked = owner_asked(&graph).await;
    assert!(!asked.contains(&"3000000000000003".to_owned()), "{asked:?}");
    let audit = app.store().transitions(PAGE_ID, PSID_2).await.unwrap();
    assert!(audit.last().unwrap().cause.contains("thread_owner"));
    app.stop().await;
}
both_backends!(stuck_threads_are_corrected);
