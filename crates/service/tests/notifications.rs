//! Agent notifications (`NOTIFY_WEBHOOK_URL`) against the emulator: what the team's endpoint
//! receives for a handover, a wait, a return and a failed handover; signed, once per event
//! even when Meta duplicates and reorders its deliveries; and an endpoint that is down or
//! slow never holds a conversation back.

mod common;

use std::time::Duration;

use common::app::{eventually, wait_for};
use common::db::Db;
use common::emulated::Emulated;
use handover_core::State;
use handover_emulator::Chaos;
use messenger_handover::messenger::signature::verify;
use messenger_handover::store::JobStatus;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const USER: &str = "7002000000000101";
const HOOK: &str = "/hooks/team-key-3f9a";
const SECRET: &str = "notify-signing-key-8c1e";

/// The team's endpoint: answers `status` until changed.
async fn endpoint(status: u16) -> MockServer {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(status)).await;
    server
}

async fn answer(server: &MockServer, response: ResponseTemplate) {
    server.reset().await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(response)
        .mount(server)
        .await;
}

/// The service and the emulator, notifying `server`.
async fn start(db: Db, server: &MockServer, extra: &[(&str, &str)]) -> Emulated {
    let url = format!("{}{HOOK}", server.uri());
    let mut settings = vec![
        ("NOTIFY_WEBHOOK_URL", url.as_str()),
        ("NOTIFY_WEBHOOK_SECRET", SECRET),
        ("JOB_RETRY_BASE_MS", "50"),
    ];
    settings.extend_from_slice(extra);
    Emulated::start(db, &settings).await
}

/// What the endpoint received, in order, each checked against its signature.
async fn received(server: &MockServer) -> Vec<Value> {
    let requests = server.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .filter(|r| r.url.path() == HOOK)
        .map(|r| {
            let header = r
                .headers
                .get("x-handover-signature-256")
                .and_then(|v| v.to_str().ok());
            verify(SECRET, &r.body, header).expect("signed with NOTIFY_WEBHOOK_SECRET");
            assert_eq!(
                r.headers.get("content-type").unwrap(),
                "application/json; charset=utf-8"
            );
            let body: Value = serde_json::from_slice(&r.body).expect("JSON");
            assert_eq!(
                r.headers.get("x-handover-event").unwrap().to_str().unwrap(),
                body["event"].as_str().unwrap()
            );
            body
        })
        .collect()
}

fn events_for(bodies: &[Value], user: &str) -> Vec<String> {
    bodies
        .iter()
        .filter(|b| b["psid"] == user)
        .map(|b| b["event"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_events(server: &MockServer, user: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} notifications for {user}"), || async {
        let all = received(server).await;
        let mine: Vec<Value> = all.into_iter().filter(|b| b["psid"] == user).collect();
        (mine.len() >= n).then_some(mine)
    })
    .await
}

async fn a_handover_and_a_return_tell_the_team_once_each(db: Db) {
    let server = endpoint(200).await;
    let w = start(db, &server, &[]).await;
    w.handed_over(USER).await;
    let got = wait_events(&server, USER, 1).await;
    let handed = &got[0];
    assert_eq!(handed["event"], "handed_to_inbox");
    assert_eq!(handed["page_id"], w.page_id());
    assert_eq!(handed["epoch"], 1);
    let link = format!(
        "https://business.facebook.com/latest/inbox/all?asset_id={}&selected_item_id={USER}&thread_type=FB_MESSAGE",
        w.page_id()
    );
    assert_eq!(handed["inbox_url"], link.as_str());
    let text = handed["text"].as_str().unwrap();
    assert!(
        text.starts_with("A Messenger user is waiting in the Page Inbox"),
        "{text}"
    );
    assert!(text.ends_with(&link), "{text}");

    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator.user_says(USER, "back to bot").await;
    w.settled_in(USER, State::Bot).await;
    let got = wait_events(&server, USER, 2).await;
    assert_eq!(got[1]["event"], "returned_to_bot");
    assert_eq!(got[1]["cause"], "user_asked");
    assert_ne!(got[0]["id"], got[1]["id"]);
    // Nothing more: one notice per event (the wait ended with the agent's reply).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        events_for(&received(&server).await, USER),
        ["handed_to_inbox", "returned_to_bot"]
    );
    let metrics = w.services.metrics.render();
    assert!(
        metrics
            .contains(r#"handover_notifications_total{event="handed_to_inbox",result="sent"} 1"#),
        "{metrics}"
    );
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(a_handover_and_a_return_tell_the_team_once_each);

async fn a_user_left_waiting_is_noticed_once_per_wait(db: Db) {
    let server = endpoint(200).await;
    let w = start(db, &server, &[("NOTIFY_WAITING_SECS", "1")]).await;
    w.handed_over(USER).await;
    w.emulator.user_says(USER, "Hello? Anyone there?").await;
    let got = wait_events(&server, USER, 2).await;
    assert_eq!(got[1]["event"], "waiting");
    assert!(got[1]["waited_secs"].as_i64().unwrap() >= 1, "{}", got[1]);
    assert!(got[1]["text"].as_str().unwrap().contains("has waited"));
    // Still waiting, more messages: no second notice for the same wait.
    w.emulator.user_says(USER, "Hello??").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        events_for(&received(&server).await, USER),
        ["handed_to_inbox", "waiting"]
    );
    // An agent answers: that wait is over. The user writes again: a new one.
    w.emulator.agent_replies(USER, "Sorry, here now.").await;
    eventually("the agent's reply to end the wait", || async {
        w.services
            .store
            .thread(&w.page_id(), USER)
            .await
            .unwrap()
            .is_some_and(|t| t.waiting_since.is_none())
    })
    .await;
    w.emulator.user_says(USER, "My order is late").await;
    let got = wait_events(&server, USER, 3).await;
    assert_eq!(got[2]["event"], "waiting");
    assert_ne!(got[1]["id"], got[2]["id"]);
    w.stop().await;
}
both_backends!(a_user_left_waiting_is_noticed_once_per_wait);

/// The endpoint is down (HTTP 503) through a whole handover and return: the user is handed
/// over, welcomed back and answered as usual; the notices wait, retried, and arrive when the
/// endpoint is back, in their own lane.
async fn an_endpoint_that_is_down_never_holds_the_conversation_back(db: Db) {
    let server = endpoint(503).await;
    let extra = [("JOB_MAX_ATTEMPTS", "100"), ("JOB_RETRY_BASE_MS", "20")];
    let w = start(db, &server, &extra).await;
    w.emulator
        .user_says(USER, "I want to talk to a human")
        .await;
    assert!(w.wait_for_state(USER, State::Human).await);
    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator.user_says(USER, "back to bot").await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    let welcome = w.services.settings.welcome_back_message.clone();
    eventually("the welcome back", || async {
        w.emulator.flush().await;
        w.texts(USER).contains(&welcome)
    })
    .await;
    // The notices are still being retried: the endpoint has not taken one.
    let page = w.page_id();
    let jobs = w.services.store.jobs_for(&page, USER).await.unwrap();
    let notify: Vec<_> = jobs.iter().filter(|j| j.kind == "notify").collect();
    assert_eq!(notify.len(), 2, "{jobs:?}");
    assert!(
        notify
            .iter()
            .all(|j| matches!(j.status, JobStatus::Pending | JobStatus::Running)),
        "{notify:?}"
    );
    assert!(
        server.received_requests().await.unwrap().len() >= 2,
        "tried"
    );
    answer(&server, ResponseTemplate::new(204)).await;
    let got = wait_events(&server, USER, 2).await;
    let mut events = events_for(&got, USER);
    events.sort();
    assert_eq!(events, ["handed_to_inbox", "returned_to_bot"]);
    assert!(w.settle(USER).await);
    let metrics = w.services.metrics.render();
    let retries = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"handover_notifications_total{event="handed_to_inbox",result="retry"}"#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!(retries >= 1, "{metrics}");
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(an_endpoint_that_is_down_never_holds_the_conversation_back);

/// An endpoint that refuses the notice (HTTP 400: a wrong URL or a body it will never take)
/// is not retried: the notice is a dead letter at once, counted, and the conversation is not
/// marked stuck for it.
async fn a_refused_notice_is_a_dead_letter_at_once(db: Db) {
    let server = endpoint(400).await;
    let w = start(db, &server, &[]).await;
    w.handed_over(USER).await;
    let page = w.page_id();
    let job = wait_for("the notice to give up", || async {
        let jobs = w.services.store.jobs_for(&page, USER).await.unwrap();
        jobs.into_iter()
            .find(|j| j.kind == "notify" && j.status == JobStatus::Failed)
    })
    .await;
    assert_eq!(job.attempts, 1);
    let error = job.last_error.unwrap();
    assert_eq!(error, "the notification endpoint answered HTTP 400");
    assert!(!error.contains(HOOK), "the URL is a credential: {error}");
    let metrics = w.services.metrics.render();
    assert!(
        metrics
            .contains(r#"handover_notifications_total{event="handed_to_inbox",result="failed"} 1"#),
        "{metrics}"
    );
    w.stop().await;
}
both_backends!(a_refused_notice_is_a_dead_letter_at_once);

/// The endpoint takes the first notice but answers too late (past `HTTP_TIMEOUT_MS`): it is
/// sent again, with the same `id`, so the receiver can drop the repeat.
async fn a_notice_sent_twice_keeps_its_id(db: Db) {
    let server = endpoint(200).await;
    answer(
        &server,
        ResponseTemplate::new(200).set_delay(Duration::from_millis(1_500)),
    )
    .await;
    let w = start(db, &server, &[("HTTP_TIMEOUT_MS", "500")]).await;
    w.emulator
        .user_says(USER, "I want to talk to a human")
        .await;
    assert!(w.wait_for_state(USER, State::Human).await);
    let first = wait_events(&server, USER, 1).await;
    answer(&server, ResponseTemplate::new(200)).await;
    let again = wait_events(&server, USER, 1).await;
    assert_eq!(first[0], again[0], "the same notice, byte for byte");
    let page = w.page_id();
    eventually("the notice to be taken", || async {
        let jobs = w.services.store.jobs_for(&page, USER).await.unwrap();
        jobs.iter()
            .any(|j| j.kind == "notify" && j.status == JobStatus::Done && j.attempts >= 2)
    })
    .await;
    w.stop().await;
}
both_backends!(a_notice_sent_twice_keeps_its_id);

/// Meta delays, duplicates and reorders its deliveries, and loses the answers of calls it
/// applied: each user's handover and return are still told once each.
async fn an_adversarial_meta_still_tells_each_event_once(db: Db) {
    let server = endpoint(200).await;
    let w = start(db, &server, &[]).await;
    w.emulator.set_chaos(Chaos {
        seed: 12,
        webhook_max_delay_ms: 300,
        webhook_reorder: true,
        webhook_duplicate: 0.5,
        graph_error_500: 0.15,
        graph_applied_then_lost: 0.15,
        graph_hang_ms: 0,
        ..Chaos::default()
    });
    let users = ["7002000000000201", "7002000000000202", "7002000000000203"];
    for user in users {
        w.emulator
            .user_says(user, "I want to talk to a human")
            .await;
    }
    for user in users {
        w.settled_in(user, State::Human).await;
        w.emulator.agent_replies(user, "Hello").await;
        w.emulator.user_says(user, "back to bot").await;
    }
    for user in users {
        w.settled_in(user, State::Bot).await;
        let got = wait_events(&server, user, 2).await;
        let mut events = events_for(&got, user);
        events.sort();
        assert_eq!(events, ["handed_to_inbox", "returned_to_bot"], "{user}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = received(&server).await;
    assert_eq!(all.len(), 2 * users.len(), "{all:#?}");
    w.stop().await;
}
both_backends!(an_adversarial_meta_still_tells_each_event_once);
