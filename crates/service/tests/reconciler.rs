//! The reconciler asks `thread_owner` about threads that sat too long in a transitional state,
//! or in HUMAN past Messenger's 24-hour expiry, and corrects them.

mod common;

use common::app::*;
use common::mocks::{owner_is, put_threads};
use handover_core::State;
use messenger_handover::time::DAY_MS;
use serde_json::json;
use wiremock::matchers::{method, path, query_param as has_query};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Puts a thread in `state` since `age_ms` ago, with no job queued.
async fn stuck(url: &str, psid: &str, state: State, age_ms: i64) {
    put_threads(url, &[(psid.to_owned(), state, age_ms)]).await;
}

async fn stuck_threads_are_corrected(db: Db) {
    let Some(db) = TestDb::new(db).await else {
        return;
    };
    let graph = MockServer::start().await;
    let owner_path = format!("/{GRAPH_VERSION}/{PAGE_ID}/thread_owner");
    // A take that never completed, but Meta says the bot owns the thread.
    stuck(&db.url, PSID, State::Returning, 10 * 60_000).await;
    Mock::given(method("GET"))
        .and(path(owner_path.clone()))
        .and(has_query("recipient", PSID))
        .respond_with(owner_is(Some(APP_ID)))
        .mount(&graph)
        .await;
    // A thread with the inbox for more than a day: Meta says it went idle.
    stuck(&db.url, PSID_2, State::Human, DAY_MS + 60_000).await;
    Mock::given(method("GET"))
        .and(path(owner_path.clone()))
        .and(has_query("recipient", PSID_2))
        .respond_with(owner_is(None))
        .mount(&graph)
        .await;
    // A recent HUMAN thread is left alone.
    stuck(&db.url, "3000000000000003", State::Human, 60_000).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"message_id": "m_1"})))
        .mount(&graph)
        .await;

    let mut raw = base_settings(&db.url, &graph.uri());
    raw.set("RECONCILE_INTERVAL_SECS", "1");
    raw.set("STUCK_AFTER_SECS", "120");
    let app = TestApp::start(&raw).await;
    let t = app
        .wait_thread(PSID, "BOT", |t| t.state == State::Bot)
        .await;
    assert_eq!(t.owner_app_id.as_deref(), Some(APP_ID));
    app.wait_thread(PSID_2, "IDLE", |t| t.state == State::Idle)
        .await;
    app.wait_idle(PSID).await;
    // Back with the bot: the welcome it never got is sent.
    assert_eq!(requests_to(&graph, "/messages").await.len(), 1);
    let asked: Vec<String> = requests_to(&graph, "/thread_owner")
        .await
        .iter()
        .filter_map(|r| query_param(r, "recipient"))
        .collect();
    assert!(!asked.contains(&"3000000000000003".to_owned()), "{asked:?}");
    let audit = app.store().transitions(PAGE_ID, PSID_2).await.unwrap();
    assert!(audit.last().unwrap().cause.contains("thread_owner"));
    app.stop().await;
    db.drop_db().await;
}
both_backends!(stuck_threads_are_corrected);
