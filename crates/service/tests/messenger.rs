//! `/messenger`: verification, signed deliveries, the state machine and the context sync,
//! against a mock Graph API and a mock Dialogflow API with its OAuth token endpoint.

mod common;

use std::time::Duration;

use common::app::*;
use handover_core::State;
use messenger_handover::config::{DEFAULT_AGENT_TIMEOUT_MESSAGE, DEFAULT_WELCOME_BACK_MESSAGE};
use messenger_handover::messenger::signature;
use messenger_handover::store::JobStatus;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::mocks::*;

#[tokio::test]
async fn verification_echoes_the_challenge_only_for_the_right_token() {
    let db = TestDb::new(Db::Sqlite).await;
    let (graph, _) = graph_mock().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let get = |q: String| {
        let client = app.client.clone();
        let url = format!("{}/messenger?{q}", app.base);
        async move { client.get(url).send().await.unwrap() }
    };
    let ok = get(format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for q in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1".to_owned(),
        format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"),
        format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}"),
        String::new(),
    ] {
        let resp = get(q.clone()).await;
        assert_eq!(resp.status(), 403, "{q}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    // A malformed query is a failed verification, not a crash.
    assert_eq!(
        get("hub.mode=%ZZ&hub.verify_token".into()).await.status(),
        403
    );
    // Unknown routes and methods answer JSON too.
    let resp = app
        .client
        .delete(format!("{}/messenger", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"],
        "method DELETE is not allowed on /messenger; use GET, POST"
    );
    let resp = app
        .client
        .get(format!("{}/no/such/route", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "no such route");
    app.stop().await;
}

async fn bad_signatures_and_bodies_store_nothing(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    let body = delivery("standby_back_to_bot.json");
    let url = format!("{}/messenger", app.base);
    let post = |sig: Option<String>, body: String| {
        let client = app.client.clone();
        let url = url.clone();
        async move {
            let mut req = client.post(url).body(body);
            if let Some(sig) = sig {
                req = req.header("x-hub-signature-256", sig);
            }
            req.send().await.unwrap()
        }
    };
    assert_eq!(post(None, body.clone()).await.status(), 401);
    let wrong = signature::sign("not-the-app-secret", body.as_bytes());
    assert_eq!(post(Some(wrong), body.clone()).await.status(), 403);
    assert_eq!(
        post(Some("sha256=zz".into()), body.clone()).await.status(),
        403
    );
    // Signed, then altered by one byte.
    let sig = signature::sign(APP_SECRET, body.as_bytes());
    let altered = body.replace("Back to bot!", "Back to bot?");
    assert_eq!(post(Some(sig), altered).await.status(), 403);
    // Valid signature, bad content.
    let not_json = "{\"object\": \"page\", ";
    let resp = app.deliver(not_json).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("JSON"));
    let not_page = json!({"object": "user", "entry": []}).to_string();
    assert_eq!(app.deliver(&not_page).await.status(), 404);
    // A body larger than any real delivery.
    let huge = format!(
        "{{\"object\":\"page\",\"pad\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let resp = app.deliver(&huge).await;
    assert_eq!(resp.status(), 413);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("larger than"));

    assert!(app.thread(PSID).await.is_none());
    assert!(app.jobs(PSID).await.is_empty());
    assert!(w.graph.received_requests().await.unwrap().is_empty());
    app.stop().await;
}
both_backends!(bad_signatures_and_bodies_store_nothing);

async fn the_whole_story(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    w.handed_over(&app).await;
    assert_eq!(w.graph_calls().await, vec!["pass_thread_control"]);

    let resp = app.deliver_ok(&delivery("standby_back_to_bot.json")).await;
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["stored"], 1);
    let thread = app.settled_in(PSID, State::Bot).await;
    assert_eq!(thread.owner_app_id.as_deref(), Some(APP_ID));

    assert_eq!(
        w.graph_calls().await,
        vec!["pass_thread_control", "take_thread_control", "messages"]
    );
    let take = &requests_to(&w.graph, "/take_thread_control").await[0];
    let take_body: Value = serde_json::from_slice(&take.body).unwrap();
    assert_eq!(take_body["recipient"], json!({"id": PSID}));
    assert!(take_body.get("target_app_id").is_none());
    assert_eq!(
        query_param(take, "appsecret_proof"),
        Some(signature::appsecret_proof(APP_SECRET, PAGE_TOKEN))
    );
    // reset: everything but the integration's own contexts is deleted, with the bearer token.
    assert_eq!(
        w.df_calls().await,
        vec![
            "GET contexts".to_owned(),
            "DELETE contexts/human_handover".to_owned(),
            "DELETE contexts/small-talk".to_owned(),
        ]
    );
    assert_eq!(requests_to(&w.df, "/token").await.len(), 1);
    assert_eq!(
        w.welcome_texts().await,
        vec![json!({
            "recipient": {"id": PSID},
            "messaging_type": "RESPONSE",
            "message": {"text": DEFAULT_WELCOME_BACK_MESSAGE}
        })]
    );
    // Sync ran before the welcome: jobs of one user run in order.
    let kinds: Vec<(String, JobStatus)> = app
        .jobs(PSID)
        .await
        .into_iter()
        .map(|j| (j.kind, j.status))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("pass".into(), JobStatus::Done),
            ("process_event".into(), JobStatus::Done),
            ("take".into(), JobStatus::Done),
            ("sync_contexts".into(), JobStatus::Done),
            ("send_welcome".into(), JobStatus::Done),
        ]
    );
    assert_eq!(
        app.audit(PSID).await,
        vec![
            "BOT->PASSING",
            "PASSING->HUMAN",
            "HUMAN->RETURNING",
            "RETURNING->BOT"
        ]
    );
    app.stop().await;
}
both_backends!(the_whole_story);

async fn an_agent_hands_back_with_hash_bot(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    w.handed_over(&app).await;
    // An ordinary agent reply changes nothing but the activity time.
    let hello = delivery("echo_from_inbox.json");
    app.deliver_ok(&hello).await;
    app.wait_thread(PSID, "agent activity", |t| t.last_agent_msg_at.is_some())
        .await;
    app.wait_idle(PSID).await;
    assert_eq!(app.thread(PSID).await.unwrap().state, State::Human);
    // The bot's own echo is not agent activity and not a hand-back. (It would prove the bot
    // has the thread; this one is timestamped right after the pass, so the service asks
    // thread_owner, which says the inbox.)
    app.deliver_ok(&delivery("echo_from_bot.json")).await;

    app.deliver_ok(&delivery("echo_agent_hash_bot.json")).await;
    app.settled_in(PSID, State::Bot).await;
    // Both echoes came within a second of the pass, closer than clocks can be trusted: the
    // service asked thread_owner (once or twice, as the checks overlap) before taking.
    let calls = w.graph_calls().await;
    let mut distinct = calls.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        vec![
            "pass_thread_control",
            "thread_owner",
            "take_thread_control",
            "messages"
        ],
        "{calls:?}"
    );
    let audit = app.store().transitions(PAGE_ID, PSID).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|t| t.cause.contains("AGENT_RETURN_PHRASES"))
    );
    app.stop().await;
}
both_backends!(an_agent_hands_back_with_hash_bot);

async fn the_inbox_passing_back_needs_no_take(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    w.handed_over(&app).await;
    // The agent marks the conversation done: at Meta the bot has the thread again.
    w.meta.set(Some(APP_ID));
    app.deliver_ok(&delivery("pass_to_us.json")).await;
    app.settled_in(PSID, State::Bot).await;
    // Done came within a second of the pass, closer than clocks can be trusted: the service
    // asked thread_owner before acting. No take.
    assert_eq!(
        w.graph_calls().await,
        vec!["pass_thread_control", "thread_owner", "messages"]
    );
    assert_eq!(w.df_calls().await.len(), 3, "contexts synced");
    app.stop().await;
}
both_backends!(the_inbox_passing_back_needs_no_take);

async fn duplicate_deliveries_take_once(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    w.handed_over(&app).await;
    let body = delivery("standby_back_to_bot.json");
    let (a, b) = tokio::join!(app.deliver(&body), app.deliver(&body));
    assert_eq!(
        (a.status(), b.status()),
        (reqwest::StatusCode::OK, reqwest::StatusCode::OK)
    );
    let third: Value = app.deliver(&body).await.json().await.unwrap();
    assert_eq!(third["duplicates"], 1);
    // The take event naming us (Meta may send it too) is a second signal of the same return.
    let mut take_event = fixture_json("messenger/take_by_inbox.json");
    let ev = &mut take_event["entry"][0]["messaging"][0];
    ev["take_thread_control"]["new_owner_app_id"] = json!(APP_ID);
    ev["take_thread_control"]["previous_owner_app_id"] = json!(INBOX);
    ev["timestamp"] = json!(messenger_handover::time::now_ms());
    app.wait_state(PSID, State::Bot).await;
    app.deliver_ok(&take_event.to_string()).await;
    app.wait_idle(PSID).await;
    assert_eq!(requests_to(&w.graph, "/take_thread_control").await.len(), 1);
    assert_eq!(
        w.welcome_texts().await.len(),
        1,
        "one welcome, not one per signal"
    );
    app.stop().await;
}
both_backends!(duplicate_deliveries_take_once);

async fn a_batch_of_entries_is_stored_whole(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    let resp = app.deliver(&delivery("batch_entries.json")).await;
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["stored"], 3);
    app.wait_idle(PSID).await;
    app.wait_idle(PSID_2).await;
    let ours = app.thread(PSID).await.unwrap();
    assert!(ours.last_user_msg_at.is_some());
    let second = app.thread(PSID_2).await.unwrap();
    assert!(
        second.last_user_msg_at.is_some(),
        "the standby entry was read too"
    );
    app.stop().await;
}
both_backends!(a_batch_of_entries_is_stored_whole);

async fn the_inbox_requesting_control_gets_it(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    app.fulfill("plain_intent.json").await;
    app.deliver_ok(&delivery("request_from_inbox.json")).await;
    let t = app.wait_state(PSID, State::Human).await;
    assert_eq!(t.owner_app_id.as_deref(), Some(INBOX));
    let pass = &requests_to(&w.graph, "/pass_thread_control").await[0];
    let body: Value = serde_json::from_slice(&pass.body).unwrap();
    assert_eq!(body["target_app_id"], json!(263902037430900u64));
    app.stop().await;
}
both_backends!(the_inbox_requesting_control_gets_it);

async fn an_agent_replying_moves_the_thread_to_human(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    app.deliver_ok(&delivery("take_by_inbox.json")).await;
    let t = app.wait_state(PSID, State::Human).await;
    assert_eq!(t.owner_app_id.as_deref(), Some(INBOX));
    app.wait_idle(PSID).await;
    assert!(w.graph.received_requests().await.unwrap().is_empty());
    app.stop().await;
}
both_backends!(an_agent_replying_moves_the_thread_to_human);

async fn context_on_return(db: Db, mode: &str) -> (Vec<String>, Vec<Value>) {
    let w = World::new(db).await.with("CONTEXT_ON_RETURN", mode);
    let app = w.start().await;
    w.handed_over(&app).await;
    app.deliver(&delivery("postback_back_to_bot.json")).await;
    app.settled_in(PSID, State::Bot).await;
    let created = w.df_bodies("POST").await;
    let calls = w.df_calls().await;
    app.stop().await;
    (calls, created)
}

async fn context_reset(db: Db) {
    let (calls, created) = context_on_return(db, "reset").await;
    assert_eq!(
        calls,
        vec![
            "GET contexts",
            "DELETE contexts/human_handover",
            "DELETE contexts/small-talk"
        ]
    );
    assert!(created.is_empty());
}
both_backends!(context_reset);

async fn context_restore(db: Db) {
    let (calls, created) = context_on_return(db, "restore").await;
    assert_eq!(
        calls,
        vec![
            "GET contexts",
            "DELETE contexts/human_handover",
            "DELETE contexts/small-talk",
            "POST contexts",
        ]
    );
    // The context that was active at handover comes back with its lifespan and parameters.
    assert_eq!(
        created,
        vec![json!({
            "name": format!("{SESSION}/contexts/order-followup"),
            "lifespanCount": 3,
            "parameters": {"order_id": "A-1042", "order_id.original": "A-1042"}
        })]
    );
}
both_backends!(context_restore);

async fn context_keep(db: Db) {
    let (calls, created) = context_on_return(db, "keep").await;
    assert_eq!(calls, vec!["DELETE contexts/human_handover"]);
    assert!(created.is_empty());
}
both_backends!(context_keep);

async fn a_silent_agent_gives_the_thread_back(db: Db) {
    let w = World::new(db).await.with("AGENT_IDLE_TIMEOUT_SECS", "1");
    let app = w.start().await;
    app.fulfill("handover.json").await;
    app.wait_state(PSID, State::Human).await;
    let t = app
        .wait_thread(PSID, "BOT after the idle timeout", |t| {
            t.state == State::Bot
        })
        .await;
    app.wait_idle(PSID).await;
    let human_for = t.state_since
        - app
            .store()
            .transitions(PAGE_ID, PSID)
            .await
            .unwrap()
            .iter()
            .find(|t| t.to_state == "HUMAN")
            .unwrap()
            .at;
    assert!(
        human_for >= 1000,
        "taken back after {human_for} ms, before the timeout"
    );
    assert_eq!(
        w.graph_calls().await,
        vec!["pass_thread_control", "take_thread_control", "messages"]
    );
    assert_eq!(
        w.welcome_texts().await[0]["message"]["text"],
        json!(DEFAULT_AGENT_TIMEOUT_MESSAGE)
    );
    app.stop().await;
}
both_backends!(a_silent_agent_gives_the_thread_back);

async fn the_welcome_waits_for_the_24_hour_window(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    // An agent took the thread in the inbox and hands it back; the user has not written
    // for days (the fixtures' timestamps are old).
    app.deliver_ok(&fixture("messenger/take_by_inbox.json"))
        .await;
    app.wait_state(PSID, State::Human).await;
    // The hand-back happened after the take (a fact older than the state would not count).
    let mut back = fixture_json("messenger/pass_to_us.json");
    back["entry"][0]["messaging"][0]["timestamp"] = json!(1_763_900_111_123i64);
    app.deliver_ok(&back.to_string()).await;
    let t = app
        .wait_thread(PSID, "a kept welcome", |t| t.pending_welcome.is_some())
        .await;
    assert_eq!(t.state, State::Bot);
    app.wait_idle(PSID).await;
    assert!(w.welcome_texts().await.is_empty());
    // The user's next message opens the window: the kept welcome goes out. The bot owns the
    // thread, so Meta delivers it on `messaging` (on `standby` it would mean another app has it).
    let mut next: serde_json::Value =
        serde_json::from_str(&delivery("standby_user_message.json")).unwrap();
    let event = next["entry"][0]["standby"].take();
    next["entry"][0]["messaging"] = event;
    app.deliver_ok(&next.to_string()).await;
    app.wait_thread(PSID, "the welcome sent", |t| t.pending_welcome.is_none())
        .await;
    app.wait_idle(PSID).await;
    assert_eq!(w.welcome_texts().await.len(), 1);
    app.stop().await;
}
both_backends!(the_welcome_waits_for_the_24_hour_window);

async fn a_crash_between_acknowledgement_and_take(db: Db) {
    // With PostgreSQL another replica may still hold a lease, so a dead worker's job waits
    // for its lease to run out; keep it short here.
    let w = World::new(db).await.with("JOB_LEASE_MS", "1500");
    let app = w.start().await;
    w.handed_over(&app).await;
    app.stop().await;

    // This time the Graph API hangs on take, and the process dies while it waits.
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&slow)
        .await;
    let mut raw = w.raw.clone();
    raw.set("GRAPH_API_BASE", slow.uri());
    raw.set("HTTP_TIMEOUT_MS", "60000");
    let app = TestApp::start(&raw).await;
    app.deliver_ok(&delivery("standby_back_to_bot.json")).await;
    eventually("the take to be in flight", || async {
        !requests_to(&slow, "/take_thread_control").await.is_empty()
    })
    .await;
    app.kill().await;

    // After the restart the acknowledged event still leads to the take.
    let app = w.start().await;
    app.settled_in(PSID, State::Bot).await;
    assert_eq!(requests_to(&w.graph, "/take_thread_control").await.len(), 1);
    assert_eq!(w.welcome_texts().await.len(), 1);
    let take = &app.jobs_of(PSID, "take").await[0];
    assert_eq!((take.status, take.attempts), (JobStatus::Done, 2));
    app.stop().await;
}
both_backends!(a_crash_between_acknowledgement_and_take);
