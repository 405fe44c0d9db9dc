//! The admin API (`/admin/...`): off without `ADMIN_TOKEN`; the token checked; threads listed
//! by state and paged; one thread's trail and jobs; the operator's return and handover as
//! state-machine decisions, recorded in the audit trail; failed jobs listed and retried. Every
//! error is a JSON body naming what is wrong.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::app::*;
use common::db::run_sql;
use common::mocks::{World, edge, graph_error, owner_is};
use handover_core::jobs::{CheckWhy, JobPayload};
use handover_core::{Decision, State, Thread};
use messenger_handover::store::JobStatus;
use messenger_handover::time::now_ms;
use serde_json::{Value, json};
use wiremock::matchers::query_param;
use wiremock::{Request, Respond, ResponseTemplate};

const TOKEN: &str = "admin-token-0123456789abcdef";
const PSID_3: &str = "3000000000000003";

/// The mock world (Graph, Dialogflow) and the service in it, with the admin API on.
async fn start(db: Db, overrides: &[(&str, &str)]) -> (World, TestApp) {
    let mut world = World::new(db)
        .await
        .with("ADMIN_TOKEN", TOKEN)
        .with("STUCK_AFTER_SECS", "60");
    for (key, value) in overrides {
        world = world.with(key, value);
    }
    let app = world.start().await;
    (world, app)
}

async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    answer(resp).await
}

async fn post(app: &TestApp, path: &str, body: &str) -> (u16, Value) {
    let resp = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    answer(resp).await
}

/// A 400 or 404 that names `field`.
#[track_caller]
fn assert_refused(got: &(u16, Value), status: u16, field: &str) {
    assert_eq!(got.0, status, "{:?}", got.1);
    assert_eq!(got.1["field"], field, "{:?}", got.1);
    let error = got.1["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("{field}: ")), "{error}");
}

/// Puts `page`/`psid` in `state` since `age_ms` ago, as the state machine leaves it (the
/// reconciler's first look at a transitional state after 120 s, so not during the test).
async fn put(app: &TestApp, page: &str, psid: &str, state: State, age_ms: i64) {
    let now = now_ms();
    app.store()
        .apply(page, psid, now, move |t: &Thread| {
            let mut thread = t.clone();
            thread.state = state;
            thread.state_since = now - age_ms;
            thread.state_at = now - age_ms;
            thread.epoch = 1;
            thread.last_user_msg_at = Some(now - 60_000);
            if state == State::Human {
                thread.owner_app_id = Some(INBOX.into());
                thread.human_since = Some(now - age_ms);
            }
            let first_look = if state == State::Human {
                86_400_000
            } else {
                120_000
            };
            thread.next_check_at = Some(now - age_ms + first_look);
            Decision::set(thread, "test setup", vec![])
        })
        .await
        .unwrap();
}

/// The thread's audit trail as (from, to, cause).
async fn audit(app: &TestApp, psid: &str) -> Vec<(String, String, String)> {
    app.store()
        .transitions(PAGE_ID, psid)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from_state, t.to_state, t.cause))
        .collect()
}

/// Waits until job `id` has `status`; returns its attempts.
async fn job_reaches(app: &TestApp, psid: &str, id: i64, status: JobStatus) -> i64 {
    wait_for(&format!("job {id} {status:?}"), || async {
        app.jobs(psid)
            .await
            .into_iter()
            .find(|j| j.id == id && j.status == status)
            .map(|j| j.attempts)
    })
    .await
}

/// Queues a job for `psid` and waits until the worker has given it up; its id.
async fn failed_job(app: &TestApp, psid: &str, payload: JobPayload) -> i64 {
    let now = now_ms();
    let before: Vec<i64> = app.jobs(psid).await.iter().map(|j| j.id).collect();
    app.store()
        .enqueue(Some((PAGE_ID, psid)), &payload, now, now)
        .await
        .unwrap();
    app.services.wake.notify_one();
    let id = wait_for("the job is queued", || async {
        app.jobs(psid)
            .await
            .iter()
            .map(|j| j.id)
            .find(|id| !before.contains(id))
    })
    .await;
    job_reaches(app, psid, id, JobStatus::Failed).await;
    id
}

// ---------------------------------------------------------------------------------------------
// Off, and the token
// ---------------------------------------------------------------------------------------------

async fn every_admin_route_is_absent_without_a_token(db: Db) {
    let db = TestDb::new(db).await;
    let graph = wiremock::MockServer::start().await;
    let app = TestApp::against(&db, &graph, &[]).await;
    let (_, unknown) = answer(
        app.client
            .get(format!("{}/no-such-route", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for (verb, path) in [
        ("GET", "/admin"),
        ("GET", "/admin/threads"),
        ("GET", "/admin/threads/1534862223272449"),
        ("POST", "/admin/threads/1534862223272449/return"),
        ("POST", "/admin/threads/1534862223272449/handover"),
        ("GET", "/admin/jobs?status=failed"),
        ("POST", "/admin/jobs/1/retry"),
    ] {
        let request = match verb {
            "GET" => app.client.get(format!("{}{path}", app.base)),
            _ => app.client.post(format!("{}{path}", app.base)),
        };
        // With a token or without, as if the route did not exist.
        let got = answer(request.bearer_auth(TOKEN).send().await.unwrap()).await;
        assert_eq!(got, (404, unknown.clone()), "{verb} {path}");
    }
    app.stop().await;
}
both_backends!(every_admin_route_is_absent_without_a_token);

async fn the_token_is_required_and_checked(db: Db) {
    let (_world, app) = start(db, &[]).await;
    let url = format!("{}/admin/threads", app.base);
    // No credentials: 401 with a Bearer challenge.
    let resp = app.client.get(&url).send().await.unwrap();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (status, body) = answer(resp).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{challenge:?}"
    );
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    // Other schemes are no credentials either.
    let basic = app
        .client
        .get(&url)
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // A wrong token, of the same length or not: 403, and no challenge.
    for wrong in [
        "admin-token-0123456789abcdeX",
        "admin-token",
        "admin-token-0123456789abcdef0",
    ] {
        let resp = app
            .client
            .get(&url)
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert!(resp.headers().get("www-authenticate").is_none());
        let (status, body) = answer(resp).await;
        assert_eq!(status, 403, "{wrong}: {body}");
        assert_eq!(body["error"], "wrong admin token");
    }
    // Every route wants it (the page itself holds no data and does not).
    for (verb, path) in [
        ("GET", "/admin/threads/1534862223272449"),
        ("POST", "/admin/threads/1534862223272449/return"),
        ("POST", "/admin/threads/1534862223272449/handover"),
        ("GET", "/admin/jobs"),
        ("POST", "/admin/jobs/1/retry"),
    ] {
        let request = match verb {
            "GET" => app.client.get(format!("{}{path}", app.base)),
            _ => app.client.post(format!("{}{path}", app.base)),
        };
        assert_eq!(request.send().await.unwrap().status(), 401, "{verb} {path}");
    }
    let (status, body) = get(&app, "/admin/threads").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["threads"], json!([]));
    app.stop().await;
}
both_backends!(the_token_is_required_and_checked);

async fn the_page_is_served_with_a_strict_policy(db: Db) {
    let (_world, app) = start(db, &[]).await;
    let resp = app
        .client
        .get(format!("{}/admin", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header("content-type").starts_with("text/html"));
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("cache-control"), "no-store");
    let html = resp.text().await.unwrap();
    assert!(html.contains(&format!("Page {PAGE_ID}")), "{html}");
    assert!(!html.contains(TOKEN));
    app.stop().await;
}
both_backends!(the_page_is_served_with_a_strict_policy);

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

async fn threads_are_listed_by_state_and_paged_in_a_stable_order(db: Db) {
    let (_world, app) = start(db, &[]).await;
    // Five with a person (the longest first), two passing (one longer than STUCK_AFTER_SECS),
    // three with the bot.
    let humans: Vec<String> = (0..5).map(|i| format!("410000000000000{i}")).collect();
    for (i, psid) in humans.iter().enumerate() {
        put(
            &app,
            PAGE_ID,
            psid,
            State::Human,
            600_000 - i as i64 * 60_000,
        )
        .await;
    }
    put(&app, PAGE_ID, "4200000000000001", State::Passing, 90_000).await;
    put(&app, PAGE_ID, "4200000000000002", State::Passing, 5_000).await;
    for i in 0..3 {
        put(
            &app,
            PAGE_ID,
            &format!("430000000000000{i}"),
            State::Bot,
            1_000,
        )
        .await;
    }

    // Paged, two at a time: every HUMAN thread once, longest with a person first.
    let mut seen = Vec::new();
    let mut path = "/admin/threads?state=HUMAN&limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = get(&app, &path).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for t in body["threads"].as_array().unwrap() {
            assert_eq!(t["state"], "HUMAN");
            assert_eq!(t["page_id"], PAGE_ID);
            assert_eq!(t["owner"], "inbox");
            assert!(t["since_handover_secs"].as_i64().unwrap() >= 300, "{t}");
            assert_eq!(t["stuck"], false, "{t}");
            seen.push(t["psid"].as_str().unwrap().to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/admin/threads?state=HUMAN&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, humans);
    assert_eq!(pages, 3);

    // Several states, any case; the pass waiting longer than STUCK_AFTER_SECS is stuck.
    let (status, body) = get(&app, "/admin/threads?state=passing,Returning").await;
    assert_eq!(status, 200, "{body}");
    let threads = body["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2, "{body}");
    assert_eq!(threads[0]["psid"], "4200000000000001");
    assert_eq!(threads[0]["stuck"], true);
    let reason = threads[0]["stuck_reasons"][0].as_str().unwrap();
    assert!(reason.contains("STUCK_AFTER_SECS"), "{reason}");
    assert_eq!(threads[1]["stuck"], false);
    assert_eq!(body["stuck_after_secs"], 60);
    assert!(body["now"].as_i64().unwrap() > 0);

    // No state: every thread.
    let (_, all) = get(&app, "/admin/threads?limit=500").await;
    assert_eq!(all["threads"].as_array().unwrap().len(), 10, "{all}");
    assert_eq!(all["next_cursor"], Value::Null);

    // Bad requests name the field.
    assert_refused(
        &get(&app, "/admin/threads?state=HUMAN,WAITING").await,
        400,
        "state",
    );
    for limit in ["0", "501", "ten"] {
        let got = get(&app, &format!("/admin/threads?limit={limit}")).await;
        assert_refused(&got, 400, "limit");
    }
    assert_refused(
        &get(&app, "/admin/threads?cursor=not-ours").await,
        400,
        "cursor",
    );
    assert_refused(&get(&app, "/admin/threads?sort=age").await, 400, "sort");
    assert_refused(
        &get(&app, "/admin/threads?state=BOT&state=HUMAN").await,
        400,
        "state",
    );
    app.stop().await;
}
both_backends!(threads_are_listed_by_state_and_paged_in_a_stable_order);

async fn a_thread_shows_its_timers_audit_trail_and_jobs(db: Db) {
    let (_world, app) = start(db, &[("AGENT_IDLE_TIMEOUT_SECS", "3600")]).await;
    app.fulfill("handover.json").await;
    app.wait_state(PSID, State::Human).await;
    // Everything but the hour-long idle timer has run.
    eventually("the handover's jobs ran", || async {
        app.jobs(PSID).await.iter().all(|j| {
            j.kind == "idle_check" || !matches!(j.status, JobStatus::Pending | JobStatus::Running)
        })
    })
    .await;
    for path in [
        format!("/admin/threads/{PSID}"),
        format!("/admin/threads/{PSID}?page={PAGE_ID}"),
    ] {
        let (status, body) = get(&app, &path).await;
        assert_eq!(status, 200, "{body}");
        let t = &body["thread"];
        assert_eq!(t["psid"], PSID);
        assert_eq!(t["state"], "HUMAN");
        assert_eq!(t["owner"], "inbox");
        assert_eq!(t["owner_app_id"], INBOX);
        let human_since = t["human_since"].as_i64().unwrap();
        // The agent-idle timer and the reconciler's first look (a day in HUMAN).
        assert_eq!(
            t["timers"]["idle_check_at"].as_i64(),
            Some(human_since + 3_600_000)
        );
        assert!(t["timers"]["reconciler_check_at"].as_i64().unwrap() >= human_since + 86_400_000);
        assert_eq!(t["jobs"]["unfinished"], 1, "the idle check: {t}");
        let trail: Vec<(&str, &str)> = body["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["from"].as_str().unwrap(), r["to"].as_str().unwrap()))
            .collect();
        assert_eq!(trail, vec![("BOT", "PASSING"), ("PASSING", "HUMAN")]);
        assert!(
            body["transitions"][0]["cause"]
                .as_str()
                .unwrap()
                .contains("handover action")
        );
        let kinds: Vec<&str> = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"pass"), "{kinds:?}");
        assert!(kinds.contains(&"idle_check"), "{kinds:?}");
        let pass = body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "pass")
            .unwrap();
        assert_eq!(pass["status"], "done");
        assert_eq!(pass["payload"]["target_app_id"], INBOX);
    }
    let unknown = get(&app, "/admin/threads/9999999999999999").await;
    assert_refused(&unknown, 404, "psid");
    assert_refused(
        &get(&app, "/admin/threads/not%20an%20id").await,
        400,
        "psid",
    );
    assert_refused(
        &get(&app, &format!("/admin/threads/{PSID}?page=a%2Fb")).await,
        400,
        "page",
    );
    assert_refused(
        &get(&app, &format!("/admin/threads/{PSID}?state=HUMAN")).await,
        400,
        "state",
    );
    app.stop().await;
}
both_backends!(a_thread_shows_its_timers_audit_trail_and_jobs);

/// Without `FB_PAGE_ID` the Page is `?page=`, or the only one the PSID has a thread on.
async fn without_fb_page_id_the_page_is_found_or_asked_for(db: Db) {
    let (_world, app) = start(db, &[("FB_PAGE_ID", "")]).await;
    const OTHER_PAGE: &str = "102938475610293";
    put(&app, PAGE_ID, PSID, State::Human, 1_000).await;
    put(&app, OTHER_PAGE, PSID, State::Bot, 1_000).await;
    put(&app, OTHER_PAGE, PSID_2, State::Bot, 1_000).await;
    let (status, body) = get(&app, &format!("/admin/threads/{PSID_2}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["thread"]["page_id"], OTHER_PAGE);
    let several = get(&app, &format!("/admin/threads/{PSID}")).await;
    assert_refused(&several, 400, "page");
    let error = several.1["error"].as_str().unwrap();
    assert!(
        error.contains(PAGE_ID) && error.contains(OTHER_PAGE),
        "{error}"
    );
    let (status, body) = get(&app, &format!("/admin/threads/{PSID}?page={OTHER_PAGE}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["thread"]["state"], "BOT");
    assert_refused(
        &get(&app, "/admin/threads/9999999999999999").await,
        404,
        "psid",
    );
    let return_to_several = post(&app, &format!("/admin/threads/{PSID}/return"), "").await;
    assert_refused(&return_to_several, 400, "page");
    app.stop().await;
}
both_backends!(without_fb_page_id_the_page_is_found_or_asked_for);

// ---------------------------------------------------------------------------------------------
// The operator's decisions
// ---------------------------------------------------------------------------------------------

async fn give_back_returns_a_thread_with_the_usual_take_sync_and_welcome(db: Db) {
    let (world, app) = start(db, &[]).await;
    world.handed_over(&app).await;
    assert_eq!(world.meta.get().as_deref(), Some(INBOX));
    let (status, body) = post(
        &app,
        &format!("/admin/threads/{PSID}/return"),
        r#"{"note": "the customer called"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["decision"]["acted"], true);
    assert_eq!(
        body["decision"]["cause"],
        "admin: back to the bot (note: the customer called)"
    );
    let state = body["thread"]["state"].as_str().unwrap();
    assert!(state == "RETURNING" || state == "BOT", "{body}");
    if state == "RETURNING" {
        assert_eq!(body["thread"]["return_reason"], "admin");
    }

    let t = app.settled_in(PSID, State::Bot).await;
    assert_eq!(t.owner_app_id.as_deref(), Some(APP_ID));
    // Meta gave the thread to the bot; the contexts were synced; the user was welcomed once.
    assert_eq!(world.meta.get().as_deref(), Some(APP_ID));
    assert_eq!(
        requests_to(&world.graph, "/take_thread_control")
            .await
            .len(),
        1
    );
    assert!(
        world
            .df_calls()
            .await
            .iter()
            .any(|c| c.starts_with("DELETE")),
        "{:?}",
        world.df_calls().await
    );
    let welcome = &app.services.settings.welcome_back_message;
    let texts = world.welcome_texts().await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0]["message"]["text"], json!(welcome));
    let trail = audit(&app, PSID).await;
    let admin_row = trail
        .iter()
        .find(|(_, _, cause)| cause.starts_with("admin"))
        .unwrap();
    assert_eq!(
        (admin_row.0.as_str(), admin_row.1.as_str()),
        ("HUMAN", "RETURNING")
    );
    assert_eq!(trail.last().unwrap().1, "BOT");

    // Again, now that the bot has it: nothing to do, and still recorded.
    let (status, body) = post(&app, &format!("/admin/threads/{PSID}/return"), "").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["decision"]["acted"], false);
    assert_eq!(body["thread"]["state"], "BOT");
    let last = audit(&app, PSID).await.pop().unwrap();
    assert_eq!(last.0, "BOT");
    assert_eq!(last.1, "BOT");
    assert!(
        last.2
            .starts_with("admin: back to the bot asked; nothing to do"),
        "{last:?}"
    );
    assert_eq!(
        requests_to(&world.graph, "/take_thread_control")
            .await
            .len(),
        1
    );
    app.stop().await;
}
both_backends!(give_back_returns_a_thread_with_the_usual_take_sync_and_welcome);

async fn hand_over_passes_a_bot_thread_to_the_inbox(db: Db) {
    let (world, app) = start(db, &[]).await;
    put(&app, PAGE_ID, PSID, State::Bot, 1_000).await;
    let (status, body) = post(&app, &format!("/admin/threads/{PSID}/handover"), "{}").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["decision"]["acted"], true);
    assert_eq!(body["decision"]["cause"], "admin: to the inbox");
    app.settled_in(PSID, State::Human).await;
    assert_eq!(world.meta.get().as_deref(), Some(INBOX));
    let passes = requests_to(&world.graph, "/pass_thread_control").await;
    assert_eq!(passes.len(), 1);
    let pass: Value = serde_json::from_slice(&passes[0].body).unwrap();
    assert_eq!(pass["target_app_id"].to_string().trim_matches('"'), INBOX);
    let trail = audit(&app, PSID).await;
    assert!(
        trail.iter().any(|(from, to, cause)| from == "BOT"
            && to == "PASSING"
            && cause == "admin: to the inbox"),
        "{trail:?}"
    );
    // With the inbox already: nothing to do, recorded, no second pass.
    let (status, body) = post(&app, &format!("/admin/threads/{PSID}/handover"), "").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["decision"]["acted"], false);
    let last = audit(&app, PSID).await.pop().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str()), ("HUMAN", "HUMAN"));
    assert!(last.2.contains("the inbox has the thread"), "{last:?}");
    assert_eq!(
        requests_to(&world.graph, "/pass_thread_control")
            .await
            .len(),
        1
    );
    app.stop().await;
}
both_backends!(hand_over_passes_a_bot_thread_to_the_inbox);

async fn bad_actions_are_refused_and_change_nothing(db: Db) {
    let (_world, app) = start(db, &[]).await;
    // A PSID never seen: no thread is made up for it.
    for action in ["return", "handover"] {
        let got = post(&app, &format!("/admin/threads/{PSID_2}/{action}"), "").await;
        assert_refused(&got, 404, "psid");
    }
    assert!(app.thread(PSID_2).await.is_none());
    put(&app, PAGE_ID, PSID, State::Human, 1_000).await;
    let path = format!("/admin/threads/{PSID}/return");
    assert_refused(&post(&app, &path, "not json").await, 400, "body");
    assert_refused(&post(&app, &path, r#"{"reason": "x"}"#).await, 400, "body");
    assert_refused(&post(&app, &path, r#"["x"]"#).await, 400, "body");
    let long = json!({ "note": "x".repeat(501) }).to_string();
    assert_refused(&post(&app, &path, &long).await, 400, "note");
    assert_refused(
        &post(&app, &format!("{path}?force=1"), "").await,
        400,
        "force",
    );
    let handover = format!("/admin/threads/{PSID}/handover");
    assert_refused(&post(&app, &handover, "[]").await, 400, "body");
    assert_refused(
        &post(&app, &handover, r#"{"note": "a\tb"}"#).await,
        400,
        "note",
    );
    assert_refused(
        &post(&app, "/admin/threads/not%20an%20id/return", "").await,
        400,
        "psid",
    );
    let thread = app.thread(PSID).await.unwrap();
    assert_eq!(thread.state, State::Human);
    assert_eq!(thread.epoch, 1);
    let trail = audit(&app, PSID).await;
    assert!(
        trail.iter().all(|(_, _, c)| !c.starts_with("admin")),
        "{trail:?}"
    );
    // The wrong method gets a 405, as on every route.
    let (status, body) = get(&app, &path).await;
    assert_eq!(status, 405, "{body}");
    app.stop().await;
}
both_backends!(bad_actions_are_refused_and_change_nothing);

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/// `thread_owner` about one PSID fails (a permanent Graph error) until `heal`ed, then says the
/// inbox owns the thread.
#[derive(Clone, Default)]
struct Broken(Arc<AtomicBool>);

impl Broken {
    fn heal(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Respond for Broken {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        if self.0.load(Ordering::SeqCst) {
            owner_is(Some(INBOX))
        } else {
            graph_error(400, 100, None, "(#100) Invalid parameter")
        }
    }
}

async fn failed_jobs_are_listed_and_retried(db: Db) {
    let (world, app) = start(db, &[]).await;
    let broken = Broken::default();
    edge("GET", "thread_owner")
        .and(query_param("recipient", PSID_2))
        .respond_with(broken.clone())
        .with_priority(1)
        .mount(&world.graph)
        .await;
    put(&app, PAGE_ID, PSID, State::Bot, 1_000).await;
    put(&app, PAGE_ID, PSID_2, State::Human, 1_000).await;
    // Two dead letters of PSID's (their event is not in the store), one of PSID_2's.
    let lost = JobPayload::ProcessEvent { event_id: 424_242 };
    let first = failed_job(&app, PSID, lost.clone()).await;
    let second = failed_job(&app, PSID, lost).await;
    let check = JobPayload::CheckOwner {
        why: CheckWhy::Stuck,
    };
    let third = failed_job(&app, PSID_2, check).await;

    // Newest first, paged.
    let (status, body) = get(&app, "/admin/jobs?limit=2").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<i64> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![third, second]);
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = get(&app, &format!("/admin/jobs?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["jobs"][0]["id"], first);
    assert_eq!(rest["jobs"][0]["status"], "failed");
    assert_eq!(rest["jobs"][0]["psid"], PSID);
    assert!(
        rest["jobs"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("not in the store")
    );
    assert_eq!(rest["next_cursor"], Value::Null);
    // A failed job makes its thread look stuck.
    let (_, threads) = get(&app, "/admin/threads?state=BOT").await;
    assert_eq!(threads["threads"][0]["stuck"], true, "{threads}");
    assert_eq!(
        threads["threads"][0]["stuck_reasons"],
        json!(["2 failed jobs"])
    );
    // Other statuses (a timer an hour away is pending), and bad ones.
    let now = now_ms();
    let timer = JobPayload::IdleCheck { generation: 1 };
    app.store()
        .enqueue(Some((PAGE_ID, PSID)), &timer, now + 3_600_000, now)
        .await
        .unwrap();
    let (status, pending) = get(&app, "/admin/jobs?status=pending,running").await;
    assert_eq!(status, 200, "{pending}");
    let pending = pending["jobs"].as_array().unwrap();
    assert!(
        pending.iter().any(|j| j["kind"] == "idle_check"),
        "{pending:?}"
    );
    assert!(
        pending
            .iter()
            .all(|j| j["status"] == "pending" || j["status"] == "running"),
        "{pending:?}"
    );
    assert_refused(&get(&app, "/admin/jobs?status=done").await, 400, "status");
    assert_refused(&get(&app, "/admin/jobs?status=stuck").await, 400, "status");
    assert_refused(&get(&app, "/admin/jobs?cursor=x").await, 400, "cursor");
    assert_refused(&get(&app, "/admin/jobs?limit=0").await, 400, "limit");
    assert_refused(&get(&app, "/admin/jobs?kind=pass").await, 400, "kind");

    // The thread_owner check works again: retried, it runs and is done.
    broken.heal();
    let (status, body) = post(&app, &format!("/admin/jobs/{third}/retry"), "").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["job"]["id"], third);
    assert_eq!(body["job"]["status"], "pending");
    assert_eq!(body["job"]["attempts"], 0);
    job_reaches(&app, PSID_2, third, JobStatus::Done).await;
    let last = audit(&app, PSID_2).await.pop().unwrap();
    assert_eq!((last.0.as_str(), last.1.as_str()), ("HUMAN", "HUMAN"));
    assert!(
        last.2.starts_with(&format!(
            "admin: job {third} (check_owner) retried; it had failed:"
        )),
        "{last:?}"
    );
    // Not failed (any more): refused with 409.
    let again = post(&app, &format!("/admin/jobs/{third}/retry"), "").await;
    assert_eq!(again.0, 409, "{:?}", again.1);
    assert!(
        again.1["error"].as_str().unwrap().contains("is done"),
        "{:?}",
        again.1
    );

    // A job whose event is still lost runs again, attempts from 1, and fails again.
    let (status, body) = post(&app, &format!("/admin/jobs/{first}/retry"), "").await;
    assert_eq!(status, 202, "{body}");
    let attempts = job_reaches(&app, PSID, first, JobStatus::Failed).await;
    assert_eq!(attempts, 1);
    // Its retry is in the detail's trail.
    let (_, detail) = get(&app, &format!("/admin/threads/{PSID}")).await;
    let causes: Vec<&str> = detail["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cause"].as_str().unwrap())
        .collect();
    assert!(
        causes
            .iter()
            .any(|c| c.starts_with(&format!("admin: job {first} (process_event) retried"))),
        "{causes:?}"
    );

    assert_refused(&post(&app, "/admin/jobs/987654/retry", "").await, 404, "id");
    assert_refused(&post(&app, "/admin/jobs/x/retry", "").await, 400, "id");
    app.stop().await;
}
both_backends!(failed_jobs_are_listed_and_retried);

/// A retry that would make a second `thread_owner` check of a thread, and one of a job of no
/// thread, are refused.
async fn retries_that_cannot_be_are_refused(db: Db) {
    let (world, app) = start(db, &[]).await;
    edge("GET", "thread_owner")
        .and(query_param("recipient", PSID_3))
        .respond_with(graph_error(400, 100, None, "(#100) Invalid parameter"))
        .with_priority(1)
        .mount(&world.graph)
        .await;
    put(&app, PAGE_ID, PSID_3, State::Human, 1_000).await;
    let check = JobPayload::CheckOwner {
        why: CheckWhy::Stuck,
    };
    let failed = failed_job(&app, PSID_3, check.clone()).await;
    // Another check of that thread, queued for later, holds the name.
    let later = now_ms() + 3_600_000;
    app.store()
        .enqueue(Some((PAGE_ID, PSID_3)), &check, later, now_ms())
        .await
        .unwrap();
    let waiting = app
        .jobs(PSID_3)
        .await
        .into_iter()
        .find(|j| j.status == JobStatus::Pending && j.kind == "check_owner")
        .unwrap();
    let busy = post(&app, &format!("/admin/jobs/{failed}/retry"), "").await;
    assert_eq!(busy.0, 409, "{:?}", busy.1);
    assert!(
        busy.1["error"]
            .as_str()
            .unwrap()
            .contains(&format!("job {} ", waiting.id)),
        "{:?}",
        busy.1
    );
    let still = app.jobs(PSID_3).await;
    assert!(
        still
            .iter()
            .any(|j| j.id == failed && j.status == JobStatus::Failed)
    );
    // A pending job is not failed.
    let pending = post(&app, &format!("/admin/jobs/{}/retry", waiting.id), "").await;
    assert_eq!(pending.0, 409, "{:?}", pending.1);
    // A dead letter of no thread (a payload no version can read).
    let now = now_ms();
    run_sql(
        &world.db.url,
        &format!(
            "INSERT INTO jobs (kind, payload, status, ord, run_at, attempts, last_error, \
             created_at, updated_at, finished_at) VALUES ('reconcile', '{{}}', 'failed', {now}, \
             {now}, 1, 'the job''s payload cannot be decoded', {now}, {now}, {now})"
        ),
    )
    .await
    .unwrap();
    let (_, jobs) = get(&app, "/admin/jobs").await;
    let orphan = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["psid"].is_null())
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(jobs["jobs"][0]["payload"], Value::Null);
    let refused = post(&app, &format!("/admin/jobs/{orphan}/retry"), "").await;
    assert_eq!(refused.0, 409, "{:?}", refused.1);
    assert!(
        refused.1["error"]
            .as_str()
            .unwrap()
            .contains("no stored thread"),
        "{:?}",
        refused.1
    );
    app.stop().await;
}
both_backends!(retries_that_cannot_be_are_refused);

async fn a_store_that_is_down_is_a_503(db: Db) {
    let (_world, app) = start(db, &[]).await;
    put(&app, PAGE_ID, PSID, State::Human, 1_000).await;
    app.store().close().await;
    for got in [
        get(&app, "/admin/threads").await,
        get(&app, &format!("/admin/threads/{PSID}")).await,
        post(&app, &format!("/admin/threads/{PSID}/return"), "").await,
        get(&app, "/admin/jobs").await,
        post(&app, "/admin/jobs/1/retry", "").await,
    ] {
        assert_eq!(got.0, 503, "{:?}", got.1);
        assert_eq!(got.1["error"], "the store is not available; try again");
    }
    app.stop().await;
}
both_backends!(a_store_that_is_down_is_a_503);
