//! Two replicas on one PostgreSQL database: every pass and every take happens exactly once.

mod common;

use common::app::*;
use handover_core::State;
use handover_core::jobs::JobPayload;
use messenger_handover::store::JobStatus;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const USERS: usize = 12;

fn psid(i: usize) -> String {
    format!("77000000000{i:04}")
}

fn handover_for(i: usize) -> String {
    let mut v = fixture_json("dialogflow/handover.json");
    let id = psid(i);
    v["session"] = json!(format!(
        "projects/handover-demo-4f2a1/agent/sessions/user-{i}"
    ));
    v["originalDetectIntentRequest"]["payload"]["data"]["sender"]["id"] = json!(id);
    v.to_string()
}

fn back_to_bot_for(i: usize) -> String {
    let mut v = fixture_json("messenger/standby_back_to_bot.json");
    let ev = &mut v["entry"][0]["standby"][0];
    ev["sender"]["id"] = json!(psid(i));
    ev["timestamp"] = json!(messenger_handover::time::now_ms());
    ev["message"]["mid"] = json!(format!("m_back_to_bot_{i}"));
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(postgres_tests), ignore = "set TEST_POSTGRES_URL to run")]
async fn two_replicas_pass_and_take_exactly_once() {
    let db = TestDb::new(Db::Postgres).await;
    let graph = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"/(pass|take)_thread_control$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"/messages$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"message_id": "m_1"})))
        .mount(&graph)
        .await;
    let raw = settings(&db, &graph, &[]);
    // Both start at once: the migration lock keeps them from racing.
    let (a, b) = tokio::join!(TestApp::start(&raw), TestApp::start(&raw));
    let replicas = [&a, &b];

    // Handovers arrive at either replica.
    for i in 0..USERS {
        let resp = replicas[i % 2].fulfillment(&handover_for(i)).await;
        assert_eq!(resp.status(), 200);
    }
    for i in 0..USERS {
        a.wait_thread(&psid(i), "HUMAN", |t| t.state == State::Human)
            .await;
    }
    // The same "back to bot" is delivered to both replicas at once, as Meta's retries can.
    for i in 0..USERS {
        let body = back_to_bot_for(i);
        let (ra, rb) = tokio::join!(a.deliver(&body), b.deliver(&body));
        assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
        let stored: Vec<Value> = vec![ra.json().await.unwrap(), rb.json().await.unwrap()];
        let total: i64 = stored.iter().map(|s| s["stored"].as_i64().unwrap()).sum();
        assert_eq!(
            total, 1,
            "the event is stored once across replicas: {stored:?}"
        );
    }
    for i in 0..USERS {
        a.wait_thread(&psid(i), "BOT", |t| t.state == State::Bot)
            .await;
        a.wait_idle(&psid(i)).await;
    }
    let requests = graph.received_requests().await.unwrap();
    for i in 0..USERS {
        let id = psid(i);
        let count = |suffix: &str| {
            requests
                .iter()
                .filter(|r| r.url.path().ends_with(suffix))
                .filter(|r| {
                    let body: Value = serde_json::from_slice(&r.body).unwrap();
                    body["recipient"]["id"] == json!(id)
                })
                .count()
        };
        assert_eq!(count("/pass_thread_control"), 1, "passes for {id}");
        assert_eq!(count("/take_thread_control"), 1, "takes for {id}");
        assert_eq!(count("/messages"), 1, "welcomes for {id}");
    }
    // Both replicas did work: jobs were claimed across them.
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(postgres_tests), ignore = "set TEST_POSTGRES_URL to run")]
async fn the_reconciler_is_queued_once_for_all_replicas() {
    let db = TestDb::new(Db::Postgres).await;
    let graph = MockServer::start().await;
    let raw = settings(&db, &graph, &[]);
    let (a, b) = tokio::join!(TestApp::start(&raw), TestApp::start(&raw));
    // Each worker tries to queue the reconciler at start; the singleton keeps one.
    let now = messenger_handover::time::now_ms();
    let again = a
        .store()
        .enqueue_singleton("reconcile", &JobPayload::Reconcile, now, now)
        .await
        .unwrap();
    assert!(!again, "a reconciler is already queued");
    let counts = a.store().job_counts().await.unwrap();
    let pending: i64 = counts
        .iter()
        .filter(|(kind, status, _)| kind == "reconcile" && status == JobStatus::Pending.as_str())
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(pending, 1, "{counts:?}");
    a.stop().await;
    b.stop().await;
}
