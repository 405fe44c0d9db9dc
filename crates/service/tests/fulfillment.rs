//! `/fulfillment` and the job queue behind it, against a mock Graph API.

mod common;

use std::time::{Duration, Instant};

use common::app::*;
use handover_core::State;
use handover_core::jobs::JobPayload;
use messenger_handover::messenger::signature::appsecret_proof;
use messenger_handover::store::JobStatus;
use serde_json::{Value, json};
use wiremock::MockServer;

use common::mocks::{edge, graph_error, graph_ok, graph_path, ok, success};

async fn wrong_and_missing_credentials(db: Db) {
    let db = TestDb::new(db).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let body = fixture("dialogflow/handover.json");
    let url = format!("{}/fulfillment", app.base);

    let missing = app
        .client
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let err: Value = missing.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("credentials"));

    let wrong = app
        .client
        .post(&url)
        .bearer_auth("fulfillment-token-0123456789abcdeX")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // Basic credentials are not accepted when a bearer token is configured.
    let basic = app
        .client
        .post(&url)
        .basic_auth("dialogflow", Some(FULFILLMENT_TOKEN))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    assert!(
        app.thread(PSID).await.is_none(),
        "nothing stored for a refused call"
    );
    app.stop().await;
}
both_backends!(wrong_and_missing_credentials);

#[tokio::test]
async fn basic_auth_accepts_the_right_pair_only() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let app = TestApp::against(
        &db,
        &graph,
        &[
            ("FULFILLMENT_TOKEN", ""),
            ("FULFILLMENT_USERNAME", "dialogflow"),
            ("FULFILLMENT_PASSWORD", "s3cret-pass"),
        ],
    )
    .await;
    let url = format!("{}/fulfillment", app.base);
    let body = fixture("dialogflow/plain_intent.json");
    for (user, pass, status) in [
        ("dialogflow", "s3cret-pass", 200),
        ("dialogflow", "s3cret-pasS", 401),
        ("dialogflo", "s3cret-pass", 401),
        ("", "", 401),
    ] {
        let resp = app
            .client
            .post(&url)
            .basic_auth(user, Some(pass))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{user}:{pass}");
        if status == 401 {
            assert!(resp.headers().contains_key("www-authenticate"));
        }
    }
    app.stop().await;
}

async fn malformed_bodies_get_a_400_that_says_why(db: Db) {
    let db = TestDb::new(db).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    for (body, expect) in [
        ("{\"session\": ", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (
            fixture("dialogflow/not_a_webhook_request.json").as_str(),
            "WebhookRequest",
        ),
        ("{\"session\": \"\", \"queryResult\": {}}", "session"),
    ] {
        let resp = app.fulfillment(body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        let msg = err["error"].as_str().unwrap();
        assert!(msg.contains(expect), "{msg:?} should mention {expect:?}");
    }
    app.stop().await;
}
both_backends!(malformed_bodies_get_a_400_that_says_why);

async fn handover_answers_at_once_and_passes_after_the_delay(db: Db) {
    let db = TestDb::new(db).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[("HANDOVER_PASS_DELAY_MS", "600")]).await;

    let resp = app.fulfill("handover.json").await;
    let answered = Instant::now();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let request = fixture_json("dialogflow/handover.json");
    let session = request["session"].as_str().unwrap();
    // The intent's own text, unchanged, and the human_handover context.
    assert_eq!(
        body["fulfillmentText"],
        request["queryResult"]["fulfillmentText"]
    );
    assert_eq!(
        body["fulfillmentMessages"],
        request["queryResult"]["fulfillmentMessages"]
    );
    assert_eq!(
        body["outputContexts"],
        json!([{ "name": format!("{session}/contexts/human_handover"), "lifespanCount": 50 }])
    );
    // Stored in the same transaction: PASSING, the session, the snapshot, a delayed pass job.
    let thread = app.thread(PSID).await.unwrap();
    assert_eq!(thread.state, State::Passing);
    assert_eq!(thread.session.as_deref(), Some(session));
    let snapshot = thread.snapshot.unwrap().value().unwrap();
    let names: Vec<&str> = snapshot
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("/contexts/order-followup"))
    );
    assert!(requests_to(&graph, "/pass_thread_control").await.is_empty());

    let thread = app.wait_state(PSID, State::Human).await;
    let waited = answered.elapsed();
    assert!(
        waited >= Duration::from_millis(550),
        "the pass ran {waited:?} after the answer, before HANDOVER_PASS_DELAY_MS"
    );
    assert_eq!(thread.owner_app_id.as_deref(), Some(INBOX));
    let passes = requests_to(&graph, "/pass_thread_control").await;
    assert_eq!(passes.len(), 1);
    let pass = &passes[0];
    assert_eq!(pass.url.path(), graph_path("pass_thread_control"));
    assert_eq!(
        query_param(pass, "access_token").as_deref(),
        Some(PAGE_TOKEN)
    );
    assert_eq!(
        query_param(pass, "appsecret_proof"),
        Some(appsecret_proof(APP_SECRET, PAGE_TOKEN))
    );
    let sent: Value = serde_json::from_slice(&pass.body).unwrap();
    assert_eq!(
        sent,
        json!({
            "recipient": { "id": PSID },
            "target_app_id": 263902037430900u64,
            "metadata": "messenger-handover: the user asked for a person [handover 1]"
        })
    );
    let audit = app.store().transitions(PAGE_ID, PSID).await.unwrap();
    let steps: Vec<(&str, &str)> = audit
        .iter()
        .map(|t| (t.from_state.as_str(), t.to_state.as_str()))
        .collect();
    assert_eq!(steps, vec![("BOT", "PASSING"), ("PASSING", "HUMAN")]);
    assert!(audit.iter().all(|t| !t.cause.is_empty()));
    app.stop().await;
}
both_backends!(handover_answers_at_once_and_passes_after_the_delay);

async fn a_plain_intent_is_untouched_and_calls_nothing(db: Db) {
    let db = TestDb::new(db).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let request = fixture_json("dialogflow/plain_intent.json");
    let resp = app.fulfillment(&request.to_string()).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let mut expected = json!({});
    if let Some(text) = request["queryResult"].get("fulfillmentText") {
        expected["fulfillmentText"] = text.clone();
    }
    expected["fulfillmentMessages"] = request["queryResult"]["fulfillmentMessages"].clone();
    assert_eq!(body, expected);
    // The session is remembered for a later context sync.
    let thread = app.thread(PSID).await.unwrap();
    assert_eq!(thread.state, State::Bot);
    assert_eq!(thread.session.as_deref(), request["session"].as_str());
    app.wait_idle(PSID).await;
    assert!(app.jobs(PSID).await.is_empty());
    assert!(graph.received_requests().await.unwrap().is_empty());
    app.stop().await;
}
both_backends!(a_plain_intent_is_untouched_and_calls_nothing);

async fn a_repeated_plain_turn_costs_no_store_transaction(db: Db) {
    let db = TestDb::new(db).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let store = app.store();
    let request = fixture_json("dialogflow/plain_intent.json").to_string();
    let before = store.thread_transactions();
    assert_eq!(app.fulfillment(&request).await.status(), 200);
    // A user not seen before: the session and the time are written.
    assert_eq!(store.thread_transactions(), before + 1);
    let written = app.thread(PSID).await.unwrap();
    for _ in 0..5 {
        assert_eq!(app.fulfillment(&request).await.status(), 200);
    }
    assert_eq!(store.thread_transactions(), before + 1, "plain turns wrote");
    assert_eq!(app.thread(PSID).await.unwrap(), written);
    // Another session for the same user is news: written.
    let mut other = fixture_json("dialogflow/plain_intent.json");
    other["session"] = json!("projects/bot-project/agent/sessions/another-session");
    assert_eq!(app.fulfillment(&other.to_string()).await.status(), 200);
    assert_eq!(store.thread_transactions(), before + 2);
    let thread = app.thread(PSID).await.unwrap();
    assert_eq!(thread.session.as_deref(), other["session"].as_str());
    app.stop().await;
}
both_backends!(a_repeated_plain_turn_costs_no_store_transaction);

#[tokio::test]
async fn the_console_simulator_gets_the_intent_text_and_nothing_else() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let request = fixture_json("dialogflow/console_simulator.json");
    let resp = app.fulfillment(&request.to_string()).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body.get("outputContexts"), None);
    assert_eq!(
        body.get("fulfillmentMessages"),
        request["queryResult"].get("fulfillmentMessages")
    );
    assert_eq!(app.store().thread_counts().await.unwrap(), vec![]);
    app.stop().await;
}

async fn graph_500_twice_then_success_passes_once(db: Db) {
    let db = TestDb::new(db).await;
    let graph = MockServer::start().await;
    edge("POST", "pass_thread_control")
        .respond_with(graph_error(500, 1, None, "An unknown error occurred"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&graph)
        .await;
    edge("POST", "pass_thread_control")
        .respond_with(success())
        .with_priority(2)
        .mount(&graph)
        .await;
    let app = TestApp::against(&db, &graph, &[]).await;
    app.fulfill("handover.json").await;
    app.wait_state(PSID, State::Human).await;
    assert_eq!(requests_to(&graph, "/pass_thread_control").await.len(), 3);
    let pass = &app.jobs_of(PSID, "pass").await[0];
    assert_eq!(pass.status, JobStatus::Done);
    assert_eq!(pass.attempts, 3);
    assert!(pass.last_error.as_deref().unwrap().contains("#1"));
    app.stop().await;
}
both_backends!(graph_500_twice_then_success_passes_once);

async fn a_permanent_graph_error_is_not_retried(db: Db) {
    let db = TestDb::new(db).await;
    let graph = MockServer::start().await;
    edge("POST", "pass_thread_control")
        .respond_with(graph_error(400, 200, None, "(#200) Permissions error"))
        .mount(&graph)
        .await;
    edge("POST", "messages")
        .respond_with(ok(json!({"message_id": "m_1"})))
        .mount(&graph)
        .await;
    let app = TestApp::against(&db, &graph, &[]).await;
    app.fulfill("handover.json").await;
    let thread = app
        .wait_thread(PSID, "the pass to fail", |t| t.last_error.is_some())
        .await;
    app.wait_idle(PSID).await;
    assert_eq!(thread.state, State::Bot, "the bot still owns the thread");
    // The user is told that no person is coming.
    let told = requests_to(&graph, "/messages").await;
    assert_eq!(told.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&told[0].body).unwrap();
    assert_eq!(
        body["message"]["text"].as_str(),
        Some(messenger_handover::config::DEFAULT_HANDOVER_FAILED_MESSAGE)
    );
    assert!(thread.last_error.unwrap().contains("#200"));
    assert_eq!(requests_to(&graph, "/pass_thread_control").await.len(), 1);
    let pass = &app.jobs_of(PSID, "pass").await[0];
    assert_eq!(pass.status, JobStatus::Failed);
    assert_eq!(pass.attempts, 1);
    assert!(
        pass.last_error
            .as_deref()
            .unwrap()
            .contains("Permissions error")
    );
    assert_eq!(app.store().failed_jobs(10).await.unwrap().len(), 1);
    let audit = app.store().transitions(PAGE_ID, PSID).await.unwrap();
    assert!(
        audit
            .last()
            .unwrap()
            .cause
            .contains("pass_thread_control failed")
    );
    app.stop().await;
}
both_backends!(a_permanent_graph_error_is_not_retried);

async fn another_app_controlling_the_thread_is_recorded(db: Db) {
    let db = TestDb::new(db).await;
    let graph = MockServer::start().await;
    edge("POST", "pass_thread_control")
        .respond_with(graph_error(
            400,
            10,
            Some(2018300),
            "(#10) Message failed to send because another app is controlling this thread now.",
        ))
        .mount(&graph)
        .await;
    let app = TestApp::against(&db, &graph, &[]).await;
    app.fulfill("handover.json").await;
    let thread = app.wait_state(PSID, State::Human).await;
    assert_eq!(thread.owner_app_id, None);
    assert_eq!(requests_to(&graph, "/pass_thread_control").await.len(), 1);
    app.stop().await;
}
both_backends!(another_app_controlling_the_thread_is_recorded);

async fn return_before_the_pass_ran_cancels_it(db: Db) {
    let db = TestDb::new(db).await;
    let graph = graph_ok().await;
    let app = TestApp::against(
        &db,
        &graph,
        &[
            ("HANDOVER_PASS_DELAY_MS", "700"),
            ("CONTEXT_ON_RETURN", "restore"),
        ],
    )
    .await;
    app.fulfill("handover.json").await;
    let resp = app.fulfill("return_to_bot.json").await;
    let body: Value = resp.json().await.unwrap();
    let request = fixture_json("dialogflow/return_to_bot.json");
    let session = request["session"].as_str().unwrap();
    assert_eq!(
        body["fulfillmentText"],
        request["queryResult"]["fulfillmentText"]
    );
    let contexts = body["outputContexts"].as_array().unwrap();
    assert!(contexts.contains(&json!({
        "name": format!("{session}/contexts/human_handover"), "lifespanCount": 0
    })));
    // restore: the contexts captured at handover come back in the same answer.
    assert!(contexts.contains(&json!({
        "name": format!("{session}/contexts/order-followup"), "lifespanCount": 3,
        "parameters": {"order_id": "A-1042", "order_id.original": "A-1042"}
    })));
    let thread = app.thread(PSID).await.unwrap();
    assert_eq!(thread.state, State::Bot);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    app.wait_idle(PSID).await;
    assert!(graph.received_requests().await.unwrap().is_empty());
    let pass = &app.jobs_of(PSID, "pass").await[0];
    assert_eq!(pass.status, JobStatus::Cancelled);
    assert_eq!(pass.attempts, 0);
    app.stop().await;
}
both_backends!(return_before_the_pass_ran_cancels_it);

async fn return_after_the_pass_takes_the_thread_back(db: Db) {
    let db = TestDb::new(db).await;
    let graph = graph_ok().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    app.fulfill("handover.json").await;
    app.wait_state(PSID, State::Human).await;
    let resp = app.fulfill("return_to_bot.json").await;
    let body: Value = resp.json().await.unwrap();
    // reset (the default): the captured contexts are cleared in the same answer.
    let contexts = body["outputContexts"].as_array().unwrap();
    assert!(contexts.iter().any(
        |c| c["name"].as_str().unwrap().ends_with("/order-followup") && c["lifespanCount"] == 0
    ));
    assert!(
        !contexts
            .iter()
            .any(|c| c["name"].as_str().unwrap().ends_with("/generic"))
    );
    app.settled_in(PSID, State::Bot).await;
    let takes = requests_to(&graph, "/take_thread_control").await;
    assert_eq!(takes.len(), 1);
    let sent: Value = serde_json::from_slice(&takes[0].body).unwrap();
    assert!(sent.get("target_app_id").is_none());
    // The integration cannot deliver the fulfillment's answer while the inbox owns the
    // thread, so the service welcomes the user itself once the take succeeded.
    assert_eq!(requests_to(&graph, "/messages").await.len(), 1);
    app.stop().await;
}
both_backends!(return_after_the_pass_takes_the_thread_back);

async fn a_queued_job_survives_a_restart(db: Db) {
    let db = TestDb::new(db).await;
    let graph = graph_ok().await;
    let raw = settings(&db, &graph, &[("HANDOVER_PASS_DELAY_MS", "800")]);
    let app = TestApp::start(&raw).await;
    app.fulfill("handover.json").await;
    app.stop().await;
    assert!(graph.received_requests().await.unwrap().is_empty());

    let app = TestApp::start(&raw).await;
    app.wait_state(PSID, State::Human).await;
    assert_eq!(requests_to(&graph, "/pass_thread_control").await.len(), 1);
    app.stop().await;
}
both_backends!(a_queued_job_survives_a_restart);

#[tokio::test]
async fn a_job_running_when_the_process_died_runs_again() {
    let db = TestDb::new(Db::Sqlite).await;
    let graph = graph_ok().await;
    let raw = settings(&db, &graph, &[]);
    let app = TestApp::start(&raw).await;
    app.stop().await;
    // A worker claims the pass and dies holding a 2-minute lease.
    let store = messenger_handover::store::Store::connect(&db.url)
        .await
        .unwrap();
    let now = messenger_handover::time::now_ms();
    store
        .apply(PAGE_ID, PSID, now, move |t| {
            let mut t = t.clone();
            t.state = State::Passing;
            handover_core::Decision::set(
                t,
                "test",
                vec![handover_core::jobs::NewJob::now(JobPayload::Pass {
                    target_app_id: INBOX.into(),
                    metadata: "m".into(),
                    epoch: 0,
                })],
            )
        })
        .await
        .unwrap();
    let claimed = store.claim("dead-worker", 10, 120_000, now).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store.close().await;

    let app = TestApp::start(&raw).await;
    app.wait_state(PSID, State::Human).await;
    let pass = &app.jobs_of(PSID, "pass").await[0];
    assert_eq!(pass.status, JobStatus::Done);
    assert_eq!(pass.attempts, 2);
    app.stop().await;
}
