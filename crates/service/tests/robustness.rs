//! Robustness (issue 8): late and reordered facts, calls that time out or half-happen, long
//! outages, `Retry-After`, the reconciler's backoff and budgets, and undecodable jobs, against
//! the real service with a mock Graph API and a mock Dialogflow API with its OAuth endpoint.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::app::*;
use handover_core::State;
use handover_core::jobs::JobPayload;
use messenger_handover::config::{DEFAULT_HANDOVER_FAILED_MESSAGE, DEFAULT_WELCOME_BACK_MESSAGE};
use messenger_handover::store::{JobStatus, Store};
use messenger_handover::time::{DAY_MS, now_ms};
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use common::mocks::*;

/// A `take_thread_control` event by which the bot app got the thread back from the inbox,
/// timestamped `ts` by Meta.
fn take_event(ts: i64, metadata: Option<&str>) -> String {
    let mut v = fixture_json("messenger/take_by_inbox.json");
    v["entry"][0]["time"] = json!(now_ms());
    let ev = &mut v["entry"][0]["messaging"][0];
    ev["timestamp"] = json!(ts);
    ev["take_thread_control"] = json!({
        "previous_owner_app_id": INBOX,
        "new_owner_app_id": APP_ID,
        "metadata": metadata,
    });
    v.to_string()
}

/// A mock answer that notes when it was given (epoch ms, the clock the service stores).
struct Stamped {
    template: ResponseTemplate,
    at: Arc<Mutex<Vec<i64>>>,
}

impl Respond for Stamped {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.at.lock().unwrap().push(now_ms());
        self.template.clone()
    }
}

/// Rewrites the stored payload (and kind) of every job of `psid`, as a newer version would
/// have written it.
async fn rewrite_payload(url: &str, psid: &str, kind: &str, payload: &str) {
    let (kind, payload, psid) = (kind.to_owned(), payload.to_owned(), psid.to_owned());
    common::db::with_conn(url, move |conn| {
        conn.execute(
            "UPDATE jobs SET kind = $1, payload = $2 WHERE psid = $3",
            &[
                kind.as_str().into(),
                payload.as_str().into(),
                psid.as_str().into(),
            ],
        )
    })
    .await
    .unwrap();
}

// ---- 1. Late events of our own calls ----

/// The user returns (take), then asks for a person again; Meta's event for the earlier take
/// arrives while the new pass waits. `ours`: with the take's own metadata (`[handover N]`),
/// timestamped just before the new handover; otherwise with no metadata of ours, seconds
/// before it.
async fn late_take_event(db: Db, ours: bool) {
    // The pass of a handover waits, so the late event is processed while the thread is PASSING.
    let w = World::new(db).await.with("HANDOVER_PASS_DELAY_MS", "1500");
    let app = w.start().await;
    w.handed_over(&app).await;
    let returned = w.user_returned(&app).await;
    let takes = requests_to(&w.graph, "/take_thread_control").await;
    assert_eq!(takes.len(), 1);
    let take_body: Value = serde_json::from_slice(&takes[0].body).unwrap();
    let metadata = take_body["metadata"]
        .as_str()
        .expect("the take carries metadata")
        .to_owned();
    assert!(
        metadata.ends_with(&format!("[handover {}]", returned.epoch)),
        "{metadata}"
    );

    let second_at = now_ms();
    app.fulfill("handover.json").await;
    let passing = app.wait_state(PSID, State::Passing).await;
    assert!(passing.epoch > returned.epoch);

    let late = if ours {
        take_event(second_at - 300, Some(&metadata))
    } else {
        take_event(second_at - 3_000, None)
    };
    let ack: Value = app.deliver(&late).await.json().await.unwrap();
    assert_eq!(ack["stored"], 1);
    eventually("the late event to be processed", || async {
        app.jobs(PSID)
            .await
            .iter()
            .filter(|j| j.kind == "process_event")
            .all(|j| j.status == JobStatus::Done)
    })
    .await;
    // Still waiting for the pass (or, if the pass already ran, with the inbox: never BOT).
    let t = app.thread(PSID).await.unwrap();
    let passes = requests_to(&w.graph, "/pass_thread_control").await.len();
    assert!(
        t.state == State::Passing || (t.state == State::Human && passes == 2),
        "the late take event overturned the new handover: {t:?}, {passes} passes"
    );
    assert_eq!(t.epoch, passing.epoch, "the late event started an epoch");
    let pass_jobs = app.jobs_of(PSID, "pass").await;
    assert!(
        pass_jobs.iter().all(|j| j.status != JobStatus::Cancelled),
        "{pass_jobs:?}"
    );

    let t = app.settled_in(PSID, State::Human).await;
    assert_eq!(t.epoch, passing.epoch);
    assert_eq!(requests_to(&w.graph, "/pass_thread_control").await.len(), 2);
    assert_eq!(requests_to(&w.graph, "/take_thread_control").await.len(), 1);
    assert_eq!(
        w.welcome_texts().await.len(),
        1,
        "only the first return's welcome"
    );
    assert_eq!(
        app.audit(PSID).await,
        vec![
            "BOT->PASSING",
            "PASSING->HUMAN",
            "HUMAN->RETURNING",
            "RETURNING->BOT",
            "BOT->PASSING",
            "PASSING->HUMAN",
        ]
    );
    app.stop().await;
}

// Before (issue 8, "A stale fact cancels a new handover"): Meta's `take_thread_control` event
// for the earlier take, processed after the user asked for a person again, ran `became_bot`:
// the new pass was cancelled and the thread set to BOT, so the user was told "connecting you
// with a person" and nobody came.
async fn a_late_take_event_does_not_cancel_a_new_handover(db: Db) {
    late_take_event(db, true).await;
}
both_backends!(a_late_take_event_does_not_cancel_a_new_handover);

// Before: the same with a take event that carries no metadata of ours and is seconds older
// than the new handover: any take naming the bot app moved a PASSING thread to BOT and
// cancelled its pass, whatever its time.
async fn a_late_take_event_without_our_metadata_is_ignored(db: Db) {
    late_take_event(db, false).await;
}
both_backends!(a_late_take_event_without_our_metadata_is_ignored);

// ---- 2, 3. Calls that time out ----

// Before (issue 8, "Crashes and timeouts double effects"): a take that Meta applied but whose
// answer never came (HTTP_TIMEOUT_MS elapsed) was re-run blindly: the thread was taken twice,
// and a user could get two welcome-back messages.
async fn a_take_that_timed_out_is_verified_not_repeated(db: Db) {
    let w = World::new(db).await.with("HTTP_TIMEOUT_MS", "500");
    // Meta applies the take, but answers long after the service stopped waiting.
    Mock::given(method("POST"))
        .and(path_regex(r"/take_thread_control$"))
        .respond_with(success().set_delay(Duration::from_secs(4)))
        .with_priority(1)
        .mount(&w.graph)
        .await;
    mount_owner(&w.graph, PSID, Some(APP_ID)).await;
    let app = w.start().await;
    w.handed_over(&app).await;
    let t = w.user_returned(&app).await;
    assert_eq!(t.owner_app_id.as_deref(), Some(APP_ID));
    assert_eq!(
        requests_to(&w.graph, "/take_thread_control").await.len(),
        1,
        "the take was repeated instead of verified"
    );
    // Verified after the take, not before.
    let calls = w.graph_calls().await;
    let take_at = calls.iter().position(|c| c == "take_thread_control");
    let check_at = calls.iter().position(|c| c == "thread_owner");
    assert!(
        matches!((take_at, check_at), (Some(a), Some(b)) if a < b),
        "{calls:?}"
    );
    let welcomes = w.welcome_texts().await;
    assert_eq!(welcomes.len(), 1, "{welcomes:?}");
    assert_eq!(
        welcomes[0]["message"]["text"],
        json!(DEFAULT_WELCOME_BACK_MESSAGE)
    );
    let take = app.jobs_of(PSID, "take").await;
    assert_eq!(take.len(), 1);
    assert_eq!((take[0].status, take[0].attempts), (JobStatus::Done, 2));
    app.stop().await;
}
both_backends!(a_take_that_timed_out_is_verified_not_repeated);

// Before (issue 8, "Crashes and timeouts double effects"): a welcome whose Send API call timed
// out was retried like any failure, so a user who had in fact received it got it again.
async fn a_welcome_that_timed_out_is_not_sent_twice(db: Db) {
    let w = World::new(db).await.with("HTTP_TIMEOUT_MS", "500");
    // The Send API delivers, but answers long after the service stopped waiting.
    Mock::given(method("POST"))
        .and(path_regex(r"/messages$"))
        .respond_with(
            ok(json!({"recipient_id": PSID, "message_id": "m_welcome"}))
                .set_delay(Duration::from_secs(4)),
        )
        .with_priority(1)
        .mount(&w.graph)
        .await;
    let app = w.start().await;
    w.handed_over(&app).await;
    w.user_returned(&app).await;
    assert_eq!(
        requests_to(&w.graph, "/messages").await.len(),
        1,
        "the welcome was sent again"
    );
    let t = app.thread(PSID).await.unwrap();
    assert_eq!(t.state, State::Bot);
    assert_eq!(t.pending_welcome, None, "{t:?}");
    assert_eq!(t.notified_epoch, t.epoch, "{t:?}");
    let welcome = app.jobs_of(PSID, "send_welcome").await;
    assert_eq!(welcome.len(), 1);
    assert_eq!(
        (welcome[0].status, welcome[0].attempts),
        (JobStatus::Done, 1)
    );
    app.stop().await;
}
both_backends!(a_welcome_that_timed_out_is_not_sent_twice);

// ---- 4, 5. Outages and rate limits ----

// Before (issue 8, "Outages drop handovers silently"): retries were a count, and when they ran
// out the pass was dropped without a word: the thread went back to BOT, `human_handover` stayed
// active in Dialogflow, and the user, told "connecting you with a person", was never told
// otherwise.
async fn a_long_outage_tells_the_user_the_handover_failed(db: Db) {
    let w = World::new(db)
        .await
        .with("JOB_RETRY_FOR_SECS", "2")
        .with("JOB_RETRY_BASE_MS", "50");
    Mock::given(method("POST"))
        .and(path_regex(r"/pass_thread_control$"))
        .respond_with(graph_error(
            500,
            2,
            None,
            "An unexpected error has occurred. Please retry your request later.",
        ))
        .with_priority(1)
        .mount(&w.graph)
        .await;
    let app = w.start().await;
    app.fulfill("handover.json").await;
    let t = app
        .wait_thread(PSID, "BOT after the outage", |t| {
            t.state == State::Bot && t.last_error.is_some()
        })
        .await;
    app.wait_idle(PSID).await;
    assert_eq!(t.owner_app_id.as_deref(), Some(APP_ID));
    assert!(
        requests_to(&w.graph, "/pass_thread_control").await.len() >= 2,
        "the pass was not retried"
    );
    // The user is told.
    let texts: Vec<Value> = w
        .welcome_texts()
        .await
        .iter()
        .map(|m| m["message"]["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!(DEFAULT_HANDOVER_FAILED_MESSAGE)]);
    // `human_handover` is cleared, and only it.
    let deleted: Vec<String> =
        w.df.received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.method.as_str() == "DELETE")
            .map(|r| r.url.path().to_owned())
            .collect();
    assert_eq!(
        deleted,
        vec![format!("/v2/{SESSION}/contexts/human_handover")]
    );
    assert_eq!(w.df_calls().await, vec!["DELETE contexts/human_handover"]);
    // The pass is a dead letter, with its reason.
    let dead = app.store().failed_jobs(10).await.unwrap();
    assert!(
        dead.iter().any(|j| j.kind == "pass"
            && matches!(j.payload, Some(JobPayload::Pass { .. }))
            && j.attempts >= 2
            && j.last_error
                .as_deref()
                .is_some_and(|e| e.contains("gave up"))),
        "{dead:?}"
    );
    let trail = app.store().transitions(PAGE_ID, PSID).await.unwrap();
    assert_eq!(app.audit(PSID).await, vec!["BOT->PASSING", "PASSING->BOT"]);
    assert!(
        trail.last().unwrap().cause.contains("cannot happen"),
        "{trail:?}"
    );
    app.stop().await;
}
both_backends!(a_long_outage_tells_the_user_the_handover_failed);

// Before (issue 8, "Outages drop handovers silently"): a `Retry-After` header on a 429 was
// ignored; the pass was retried after about 0.13 s.
async fn retry_after_is_honoured(db: Db) {
    let w = World::new(db).await;
    let refused_at = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path_regex(r"/pass_thread_control$"))
        .respond_with(Stamped {
            template: graph_error(429, 4, None, "(#4) Application request limit reached")
                .insert_header("Retry-After", "2"),
            at: refused_at.clone(),
        })
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&w.graph)
        .await;
    let app = w.start().await;
    app.fulfill("handover.json").await;
    let waiting = wait_for("the pass to wait for its retry", || async {
        app.jobs_of(PSID, "pass")
            .await
            .into_iter()
            .find(|j| j.status == JobStatus::Pending && j.attempts == 1 && j.last_error.is_some())
    })
    .await;
    let refused = refused_at.lock().unwrap()[0];
    assert!(
        waiting.run_at - refused >= 2_000,
        "retry due {} ms after the 429 that said Retry-After: 2",
        waiting.run_at - refused
    );
    app.settled_in(PSID, State::Human).await;
    assert_eq!(requests_to(&w.graph, "/pass_thread_control").await.len(), 2);
    let pass = app.jobs_of(PSID, "pass").await;
    assert_eq!(pass.len(), 1);
    assert_eq!((pass[0].status, pass[0].attempts), (JobStatus::Done, 2));
    app.stop().await;
}
both_backends!(retry_after_is_honoured);

// ---- 6. The reconciler ----

// Before (issue 8, "The reconciler"): it asked `thread_owner` about every HUMAN thread older
// than 24 h on every interval, forever (their `state_since` never moves), and with more of
// them than one batch (LIMIT 100) the PASSING/RETURNING threads it exists for were never
// reached.
async fn the_reconciler_backs_off_and_does_not_starve(db: Db) {
    const HUMANS: usize = 150;
    const BATCH: usize = 100;
    let db = TestDb::new(db).await;
    let passing = "3999999999999999".to_owned();
    let humans: Vec<String> = (0..HUMANS).map(|i| format!("4{i:015}")).collect();
    // The HUMAN threads are older and due earlier than the stuck pass: whatever order one
    // shared batch took them in, the pass would come after them.
    let mut threads: Vec<(String, State, i64)> = humans
        .iter()
        .map(|p| (p.clone(), State::Human, 2 * DAY_MS))
        .collect();
    threads.push((passing.clone(), State::Passing, 180_000));
    put_threads(&db.url, &threads).await;

    let graph = MockServer::start().await;
    mount_owner(&graph, &passing, Some(APP_ID)).await;
    edge("GET", "thread_owner")
        .respond_with(owner_is(Some(INBOX)))
        .mount(&graph)
        .await;
    accept_posts(&graph).await;
    let app = TestApp::against(&db, &graph, &RECONCILE_EVERY_SECOND).await;

    // The stuck pass is corrected: Meta says the bot still has the thread.
    let t = app
        .wait_thread(&passing, "the stuck pass corrected", |t| {
            t.state == State::Bot
        })
        .await;
    assert!(
        t.last_error
            .as_deref()
            .is_some_and(|e| e.contains("never completed")),
        "{t:?}"
    );
    let asked = owner_asked(&graph).await;
    let at = asked.iter().position(|p| *p == passing).unwrap();
    assert!(
        at < BATCH,
        "the PASSING thread was asked only after {at} HUMAN threads"
    );
    app.wait_idle(&passing).await;
    let told: Vec<Value> = requests_to(&graph, "/messages")
        .await
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .filter(|m| m["recipient"]["id"] == json!(passing))
        .map(|m| m["message"]["text"].clone())
        .collect();
    assert_eq!(told, vec![json!(DEFAULT_HANDOVER_FAILED_MESSAGE)]);

    // Every HUMAN thread gets its first check...
    eventually("every HUMAN thread to be checked", || async {
        let asked = owner_asked(&graph).await;
        humans.iter().all(|p| asked.contains(p))
    })
    .await;
    // ...and, backed off, none is asked again in the next intervals.
    let runs = || async {
        app.store()
            .job_counts()
            .await
            .unwrap()
            .iter()
            .filter(|(kind, status, _)| kind == "reconcile" && status == "done")
            .map(|(_, _, n)| *n)
            .sum::<i64>()
    };
    let before = runs().await;
    eventually("three more reconciler runs", || async {
        runs().await >= before + 3
    })
    .await;
    let asked = owner_asked(&graph).await;
    for p in humans.iter().chain([&passing]) {
        let n = asked.iter().filter(|a| *a == p).count();
        assert_eq!(n, 1, "{p} was asked {n} times");
    }
    for p in &humans {
        let t = app.thread(p).await.unwrap();
        assert_eq!(t.state, State::Human, "{t:?}");
        assert!(
            t.next_check_at.is_some_and(|at| at > now_ms() + DAY_MS),
            "{t:?}"
        );
    }
    app.stop().await;
}
both_backends!(the_reconciler_backs_off_and_does_not_starve);

// ---- 7. Undecodable jobs ----

// Before (issue 8, "One undecodable job payload"): a job whose payload could not be decoded
// (written by a newer version during a rolling deploy) failed the whole claim: every job claimed
// with it stayed `running` until its lease ran out, then again, forever, and its user's queue
// was blocked behind it.
async fn an_undecodable_job_fails_alone(db: Db) {
    let w = World::new(db).await;
    let store = Store::connect(&w.db.url).await.unwrap();
    store.migrate().await.unwrap();
    let now = now_ms();
    // A job of a newer version for one user...
    store
        .enqueue(
            Some((PAGE_ID, PSID_2)),
            &JobPayload::IdleCheck { generation: 1 },
            now,
            now,
        )
        .await
        .unwrap();
    rewrite_payload(
        &w.db.url,
        PSID_2,
        "from_a_newer_version",
        r#"{"kind":"from_a_newer_version"}"#,
    )
    .await;
    // ...with one of ours queued behind it, and one for another user, all due at once (they
    // are claimed together).
    for (psid, generation) in [(PSID_2, 2), (PSID, 3)] {
        store
            .enqueue(
                Some((PAGE_ID, psid)),
                &JobPayload::IdleCheck { generation },
                now,
                now,
            )
            .await
            .unwrap();
    }
    store.close().await;

    let app = w.start().await;
    // The other user's work goes on: a handover reaches the inbox.
    w.handed_over(&app).await;
    assert_eq!(requests_to(&w.graph, "/pass_thread_control").await.len(), 1);
    app.wait_idle(PSID_2).await;
    let jobs = app.jobs(PSID_2).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let (bad, next) = (&jobs[0], &jobs[1]);
    assert_eq!(bad.kind, "from_a_newer_version");
    assert_eq!(bad.status, JobStatus::Failed, "{bad:?}");
    assert!(bad.payload.is_none());
    assert!(
        bad.last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot be decoded")),
        "{bad:?}"
    );
    assert_eq!(next.status, JobStatus::Done, "the user's queue is blocked");
    let dead: Vec<i64> = app
        .store()
        .failed_jobs(10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(dead, vec![bad.id]);
    let counts = app.store().job_counts().await.unwrap();
    assert!(
        counts.iter().all(|(_, status, _)| status != "running"),
        "{counts:?}"
    );
    app.stop().await;
}
both_backends!(an_undecodable_job_fails_alone);

// ---- 8. Ordinary intents ----

// Before (issue 8, "An ordinary intent flips the belief"): a fulfillment call for an ordinary
// action while HUMAN (a user tapping an old bot button: postbacks still reach the integration)
// moved the thread to BOT; the user's "back to bot" was then ignored: no take, no welcome.
async fn an_ordinary_intent_while_human_keeps_the_thread_human(db: Db) {
    let w = World::new(db).await;
    let app = w.start().await;
    w.handed_over(&app).await;
    app.fulfill("plain_intent.json").await;
    app.wait_idle(PSID).await;
    let t = app.thread(PSID).await.unwrap();
    assert_eq!(t.state, State::Human, "{t:?}");
    assert_eq!(t.owner_app_id.as_deref(), Some(INBOX));

    w.user_returned(&app).await;
    assert_eq!(
        w.graph_calls().await,
        vec!["pass_thread_control", "take_thread_control", "messages"]
    );
    assert_eq!(
        w.welcome_texts().await[0]["message"]["text"],
        json!(DEFAULT_WELCOME_BACK_MESSAGE)
    );
    app.stop().await;
}
both_backends!(an_ordinary_intent_while_human_keeps_the_thread_human);
