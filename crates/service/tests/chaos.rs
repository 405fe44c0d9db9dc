//! The adversarial model test (issue 8): random conversations of several users at once against
//! the emulator, with webhook deliveries delayed, duplicated, reordered and dropped, Graph API
//! calls slow, failing, rate-limited, applied-then-lost and dropped, and the service killed and
//! restarted at random moments. After chaos is turned off and everything has quiesced, each
//! user's history must keep the invariants (see `common/chaos.rs` for their exact wording):
//!
//! - I1 the service's state agrees with the thread's owner (no PASSING / RETURNING left);
//! - I2 every accepted handover reached the inbox, or the user was told it failed, or a later
//!   return by the user superseded it;
//! - I3 at most one welcome back per return;
//! - I4 no pass or take applied twice for one decision;
//! - I5 nothing sent while not the owner.
//!
//! A failing seed prints the user's emulator history and the service's audit trail, and writes
//! them to `target/tmp/chaos/seed-N-<backend>.txt`. Reproduce one seed (as far as timing
//! allows) with the settings of the fixed seeds (5 users × 12 steps, 2 kills):
//! `SEEDS=3-3 USERS=5 STEPS=12 KILLS=2 bench/chaos.sh`.
//!
//! Also here: the emulator's fault injection and hold/release controls themselves, and the
//! invariant checkers on hand-written histories.

mod common;

use std::time::Duration;

use common::app::Db;
use common::chaos::{self as model, Model, RunConfig};
use common::emulated::{BotGraph, Emulated};
use handover_emulator::{
    Chaos, DeliveryOutcome, DeliveryRecord, Emulator, EmulatorConfig, Observation, Observed,
    OwnerChange, PAGE_INBOX_APP_ID, ThreadControlCall,
};
use serde_json::json;

/// The seeds `cargo test` runs.
const SEEDS: &[u64] = &[1, 2, 3, 4, 5, 6, 7, 8];
const USERS: usize = 5;
const STEPS: usize = 12;
const KILLS: usize = 2;
/// Seeds run at once (each with its own emulator, service and database).
const PARALLEL: usize = 4;

async fn fixed_seeds(db: Db) {
    model::run_seeds(SEEDS, USERS, STEPS, KILLS, PARALLEL, db).await;
}
both_backends!(fixed_seeds);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `CHAOS_SEEDS`: a list (`3,17,40`), a range (`100-199`), or a count `N` (seeds 1..=N);
/// default 1-40. `CHAOS_USERS` (default 8), `CHAOS_STEPS` (16), `CHAOS_KILLS` (3),
/// `CHAOS_PARALLEL` (3), `CHAOS_DB` (`sqlite` or `postgres`, the latter with
/// TEST_POSTGRES_URL).
fn seeds_from_env() -> Vec<u64> {
    let spec = std::env::var("CHAOS_SEEDS").unwrap_or_else(|_| "1-40".into());
    let spec = spec.trim();
    if let Some((a, b)) = spec.split_once('-') {
        let (a, b): (u64, u64) = (a.trim().parse().unwrap_or(1), b.trim().parse().unwrap_or(1));
        return (a..=b).collect();
    }
    if spec.contains(',') {
        return spec
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
    }
    let n: u64 = spec.parse().unwrap_or(40);
    (1..=n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: cargo test --test chaos -- --ignored, or bench/chaos.sh"]
async fn long_run() {
    let db = match std::env::var("CHAOS_DB").as_deref() {
        Ok("postgres") => Db::Postgres,
        _ => Db::Sqlite,
    };
    model::run_seeds(
        &seeds_from_env(),
        env_number("CHAOS_USERS", 8) as usize,
        env_number("CHAOS_STEPS", 16) as usize,
        env_number("CHAOS_KILLS", 3) as usize,
        env_number("CHAOS_PARALLEL", 3) as usize,
        db,
    )
    .await;
}

/// One seed with chaos but no user activity at all: the machinery itself (start, quiesce,
/// kill and restart, check) finds nothing to complain about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_run_breaks_nothing() {
    let report = model::run(RunConfig {
        seed: 99,
        users: 2,
        steps: 0,
        kills: 1,
        db: Db::Sqlite,
    })
    .await;
    assert!(report.violations.is_empty(), "{}", report.text);
}

// ── The emulator's controls ─────────────────────────────────────────────────────────────

async fn world() -> Emulated {
    Emulated::start(Db::Sqlite, &[("HANDOVER_PASS_DELAY_MS", "0")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_deliveries_wait_and_are_released_in_the_order_asked() {
    let w = world().await;
    let e = &w.emulator;
    let user = "7003000000000001";
    e.user_says(user, "Hi").await;
    assert!(w.settle(user).await);
    e.hold_companion_deliveries();
    e.user_says(user, "I want to talk to a human").await;
    // The pass happens (the service's job), but its event to the service is held.
    assert!(
        e.wait_for_owner(user, Some(PAGE_INBOX_APP_ID), Duration::from_secs(10))
            .await
    );
    e.agent_replies(user, "Hello, Sam here").await;
    e.flush().await;
    let held = e.held();
    let kinds: Vec<&str> = held.iter().map(|h| h.summary.as_str()).collect();
    assert!(
        kinds.iter().any(|k| k.starts_with("pass_thread_control")),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k.starts_with("echo")), "{kinds:?}");
    assert!(held.iter().all(|h| h.psid == user));
    // Release the echo first, then the rest in reverse order.
    let echo = held
        .iter()
        .position(|h| h.summary.starts_with("echo"))
        .unwrap();
    e.release_held(&[echo]).await;
    assert_eq!(e.held().len(), held.len() - 1);
    let rest: Vec<usize> = (0..e.held().len()).rev().collect();
    e.release_held(&rest).await;
    assert!(e.held().is_empty());
    // Still holding: a new delivery is held, then dropped.
    e.user_says(user, "Are you there?").await;
    assert_eq!(e.held().len(), 1);
    assert_eq!(e.drop_held(), 1);
    e.stop_holding();
    assert!(w.wait_for_state(user, handover_core::State::Human).await);
    let journal = e.journal(user).join("\n");
    assert!(journal.contains("→ held"), "{journal}");
    assert!(journal.contains("DROPPED while held"), "{journal}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_faults_happen_as_configured() {
    let e = Emulator::start(EmulatorConfig::default()).await.unwrap();
    // As the service's client: it gives up after 400 ms (HTTP_TIMEOUT_MS in the chaos runs).
    let g = BotGraph::with_timeout(&e, Duration::from_millis(400));
    let user = "7003000000000002";
    e.user_says(user, "Hi").await;
    let bot = e.config().bot_app_id;
    let take = json!({ "recipient": { "id": user } });
    let pass = json!({ "recipient": { "id": user }, "target_app_id": PAGE_INBOX_APP_ID });

    // 500 (#2), not applied.
    e.set_chaos(Chaos {
        graph_error_500: 1.0,
        ..Chaos::default()
    });
    let (status, _, body) = g.try_post("pass_thread_control", pass.clone()).await;
    assert_eq!(status, "500");
    assert_eq!(body["error"]["code"], 2);
    assert_eq!(e.owner(user), Some(bot.clone()));

    // 429 (#613) with Retry-After: 1, not applied.
    e.set_chaos(Chaos {
        graph_rate_limit: 1.0,
        ..Chaos::default()
    });
    let (status, retry, body) = g.try_post("pass_thread_control", pass.clone()).await;
    assert_eq!(status, "429");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], 613);
    assert_eq!(e.owner(user), Some(bot.clone()));

    // Dropped before applying.
    e.set_chaos(Chaos {
        graph_dropped: 1.0,
        graph_hang_ms: 600,
        ..Chaos::default()
    });
    let (status, _, _) = g.try_post("pass_thread_control", pass.clone()).await;
    assert!(status == "timeout" || status == "transport", "{status}");
    assert_eq!(e.owner(user), Some(bot.clone()));

    // Applied, then the answer is lost.
    e.set_chaos(Chaos {
        graph_applied_then_lost: 1.0,
        graph_hang_ms: 600,
        ..Chaos::default()
    });
    let (status, _, _) = g.try_post("pass_thread_control", pass.clone()).await;
    assert!(status == "timeout" || status == "transport", "{status}");
    assert_eq!(e.owner(user).as_deref(), Some(PAGE_INBOX_APP_ID));

    // Slow (past the client's timeout), applied.
    e.set_chaos(Chaos {
        graph_slow: 1.0,
        graph_slow_max_ms: 0,
        ..Chaos::default()
    });
    let (status, _, _) = g.try_post("take_thread_control", take.clone()).await;
    assert_eq!(status, "200");
    assert_eq!(e.owner(user), Some(bot.clone()));

    // A take by the owner is applied but changes nothing: a redundant application.
    e.set_chaos(Chaos::default());
    let (status, _, _) = g.try_post("take_thread_control", take.clone()).await;
    assert_eq!(status, "200");
    let calls: Vec<ThreadControlCall> = e.thread_control_calls(user);
    let summary: Vec<(String, bool)> = calls.iter().map(|c| (c.call.clone(), c.changed)).collect();
    assert_eq!(
        summary,
        vec![
            ("pass_thread_control".to_owned(), true),
            ("take_thread_control".to_owned(), true),
            ("take_thread_control".to_owned(), false),
        ]
    );
    let owners: Vec<(Option<String>, Option<String>, String)> = e
        .ownership_history(user)
        .into_iter()
        .map(|c| (c.from, c.to, c.via))
        .collect();
    assert_eq!(
        owners,
        vec![
            (
                None,
                Some(bot.clone()),
                "user message (idle thread)".to_owned()
            ),
            (
                Some(bot.clone()),
                Some(PAGE_INBOX_APP_ID.to_owned()),
                "pass_thread_control".to_owned()
            ),
            (
                Some(PAGE_INBOX_APP_ID.to_owned()),
                Some(bot.clone()),
                "take_thread_control".to_owned()
            ),
        ]
    );
    // Injected faults are not protocol violations.
    assert_eq!(e.errors(), Vec::<String>::new());
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaotic_webhooks_are_delayed_duplicated_and_dropped_but_the_bot_path_is_not() {
    let w = world().await;
    let e = &w.emulator;
    e.set_chaos(Chaos {
        seed: 7,
        webhook_max_delay_ms: 200,
        webhook_reorder: true,
        webhook_duplicate: 0.5,
        webhook_drop: 0.2,
        bot_max_delay_ms: 30,
        ..Chaos::default()
    });
    let user = "7003000000000003";
    for i in 0..12 {
        e.user_says(user, &format!("Where is my order {i}?")).await;
    }
    assert!(e.drain(Duration::from_secs(20)).await);
    // The bot answered every message, in order.
    let answers: Vec<String> = e
        .messages_to_user(user)
        .into_iter()
        .map(|m| m.text)
        .collect();
    let expected: Vec<String> = (0..12)
        .map(|i| format!("Order A-{i} is on its way."))
        .collect();
    assert_eq!(answers, expected);
    let journal = e.journal(user).join("\n");
    assert!(journal.contains("duplicate"), "{journal}");
    assert!(journal.contains("DROPPED"), "{journal}");
    // The same chaos off: straight through again.
    e.set_chaos(Chaos::default());
    e.user_says(user, "Hi").await;
    assert!(e.drain(Duration::from_secs(5)).await);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_comes_back_on_the_same_database() {
    let mut w = world().await;
    let user = "7003000000000004";
    w.emulator
        .user_says(user, "I want to talk to a human")
        .await;
    assert!(w.wait_for_state(user, handover_core::State::Human).await);
    let old = w.base.clone();
    w.kill_and_restart().await.unwrap();
    assert_ne!(w.base, old);
    assert_eq!(w.restarts, 1);
    assert_eq!(w.state(user).await, Some(handover_core::State::Human));
    w.emulator.user_says(user, "back to bot").await;
    assert!(w.wait_for_state(user, handover_core::State::Bot).await);
    w.stop().await;
}

// ── The invariant checkers, on hand-written histories ───────────────────────────────────

const BOT: &str = "111111111111111";

fn test_model(idle_timeout_ms: i64) -> Model {
    Model {
        bot: BOT.into(),
        welcome_texts: vec!["Welcome back!".into(), "Timed out, the bot is back.".into()],
        handover_failed_text: model::HANDOVER_FAILED_TEXT.into(),
        handover_reply_texts: vec!["Connecting you with a person…".into()],
        return_phrases: vec!["back to bot".into()],
        return_payload: "BACK_TO_BOT".into(),
        agent_return_phrases: vec!["#bot".into()],
        idle_timeout_ms,
    }
}

/// Builds a timeline: each entry gets seq = index + 1 and the given time.
fn history(entries: Vec<(i64, Observed)>) -> Vec<Observation> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (at_ms, what))| {
            let seq = i as u64 + 1;
            let what = match what {
                Observed::OwnerChanged(mut c) => {
                    c.seq = seq;
                    c.at_ms = at_ms;
                    Observed::OwnerChanged(c)
                }
                Observed::ThreadControl(mut t) => {
                    t.seq = seq;
                    t.at_ms = at_ms;
                    Observed::ThreadControl(t)
                }
                other => other,
            };
            Observation { seq, at_ms, what }
        })
        .collect()
}

fn owner(from: Option<&str>, to: Option<&str>, by: &str, via: &str) -> Observed {
    Observed::OwnerChanged(OwnerChange {
        seq: 0,
        at_ms: 0,
        from: from.map(String::from),
        to: to.map(String::from),
        by: by.into(),
        via: via.into(),
    })
}

fn control(call: &str, from: Option<&str>, to: Option<&str>) -> Observed {
    Observed::ThreadControl(ThreadControlCall {
        seq: 0,
        at_ms: 0,
        app_id: BOT.into(),
        call: call.into(),
        from: from.map(String::from),
        to: to.map(String::from),
        changed: from != to,
        via: "graph api".into(),
    })
}

fn sent(from: &str, text: &str) -> Observed {
    Observed::Sent {
        from_app_id: from.into(),
        text: text.into(),
        by_integration: false,
        mid: format!("m_{}", text.len()),
    }
}

/// The echo of `sent(from, text)` reached the service.
fn echo_delivered(from: &str, text: &str) -> Observed {
    Observed::Delivery(DeliveryRecord {
        mid: Some(format!("m_{}", text.len())),
        detail: "200".into(),
        ..record(
            &format!("echo from {from}: {text:?}"),
            DeliveryOutcome::Delivered,
        )
    })
}

fn says(text: &str, owner: &str) -> Observed {
    Observed::UserMessage {
        text: text.into(),
        quick_reply_payload: None,
        owner: Some(owner.into()),
    }
}

fn intent(action: &str) -> Observed {
    Observed::Intent {
        action: action.into(),
        webhook: true,
    }
}

fn fulfilled(action: &str, ok: bool) -> Observed {
    Observed::Fulfillment {
        action: action.into(),
        ok,
    }
}

const INBOX: &str = PAGE_INBOX_APP_ID;

/// A handover and a return by the user, done right.
fn good_round_trip() -> Vec<(i64, Observed)> {
    vec![
        (
            1,
            owner(None, Some(BOT), "user", "user message (idle thread)"),
        ),
        (1, says("I want to talk to a human", BOT)),
        (2, intent("input.handover")),
        (2, fulfilled("input.handover", true)),
        (3, sent(BOT, "Connecting you with a person…")),
        (100, control("pass_thread_control", Some(BOT), Some(INBOX))),
        (
            100,
            owner(Some(BOT), Some(INBOX), BOT, "pass_thread_control"),
        ),
        (500, says("back to bot", INBOX)),
        (600, control("take_thread_control", Some(INBOX), Some(BOT))),
        (
            600,
            owner(Some(INBOX), Some(BOT), BOT, "take_thread_control"),
        ),
        (700, sent(BOT, "Welcome back!")),
    ]
}

#[test]
fn a_good_round_trip_keeps_every_invariant() {
    let m = test_model(0);
    let h = history(good_round_trip());
    let v = model::check_timeline(&m, &h);
    assert!(v.is_empty(), "{v:?}");
    assert!(model::check_agreement(&m, Some("BOT"), Some(BOT)).is_empty());
    assert!(model::check_agreement(&m, None, Some(BOT)).is_empty());
    assert_eq!(
        model::check_agreement(&m, Some("BOT"), Some(INBOX)).len(),
        1
    );
    assert_eq!(
        model::check_agreement(&m, Some("RETURNING"), Some(BOT)).len(),
        1
    );
    assert!(model::check_agreement(&m, Some("HUMAN"), Some(INBOX)).is_empty());
}

#[test]
fn a_lost_handover_is_caught_unless_the_user_was_told_or_asked_back() {
    let m = test_model(0);
    let lost = history(good_round_trip()[..5].to_vec());
    let v = model::check_handovers(&m, &lost);
    assert_eq!(v.len(), 1, "{v:?}");
    let mut told = good_round_trip()[..5].to_vec();
    told.push((900, sent(BOT, model::HANDOVER_FAILED_TEXT)));
    assert!(model::check_handovers(&m, &history(told)).is_empty());
    let mut superseded = good_round_trip()[..5].to_vec();
    superseded.push((50, says("back to bot", BOT)));
    assert!(model::check_handovers(&m, &history(superseded)).is_empty());
    // A handover whose fulfillment failed (the service was down) is not the service's.
    let mut unheard = good_round_trip()[..3].to_vec();
    unheard.push((2, fulfilled("input.handover", false)));
    assert!(model::check_handovers(&m, &history(unheard)).is_empty());
    // Accepted while the inbox already had the thread (it had asked for it): reached.
    let mut already = good_round_trip()[..2].to_vec();
    already.push((2, owner(Some(BOT), Some(INBOX), BOT, "pass_thread_control")));
    already.push((3, intent("input.handover")));
    already.push((3, fulfilled("input.handover", true)));
    already.push((9, owner(Some(INBOX), Some(BOT), INBOX, "page inbox: done")));
    assert!(model::check_handovers(&m, &history(already)).is_empty());
}

#[test]
fn two_welcomes_for_one_return_are_caught() {
    let m = test_model(0);
    let mut h = good_round_trip();
    h.push((800, sent(BOT, "Welcome back!")));
    assert_eq!(model::check_welcomes(&m, &history(h)).len(), 1);
    // Away and back between the two: two returns, two welcomes.
    let mut h = good_round_trip();
    h.push((
        800,
        owner(Some(BOT), Some(INBOX), INBOX, "page inbox: agent reply"),
    ));
    h.push((
        900,
        owner(Some(INBOX), Some(BOT), INBOX, "page inbox: done"),
    ));
    h.push((950, sent(BOT, "Timed out, the bot is back.")));
    assert!(model::check_welcomes(&m, &history(h)).is_empty());
    // A handover cancelled before the pass is a return too.
    let mut h = good_round_trip();
    h.push((800, says("I want to talk to a human", BOT)));
    h.push((801, intent("input.handover")));
    h.push((850, says("back to bot", BOT)));
    h.push((851, sent(BOT, "Welcome back!")));
    assert!(model::check_welcomes(&m, &history(h.clone())).is_empty());
    // ... but only one welcome for it.
    h.push((900, sent(BOT, "Welcome back!")));
    assert_eq!(model::check_welcomes(&m, &history(h)).len(), 1);
    // A user who asks twice in one return may hear two answers (the service's welcome and
    // Dialogflow's answer to the second request), but not three.
    let mut h = good_round_trip();
    h.push((800, says("back to bot", BOT)));
    h.push((850, sent(BOT, "Welcome back!")));
    assert!(model::check_welcomes(&m, &history(h.clone())).is_empty());
    h.push((900, sent(BOT, "Welcome back!")));
    assert_eq!(model::check_welcomes(&m, &history(h)).len(), 1);
}

#[test]
fn a_take_applied_twice_is_caught_but_a_take_racing_done_is_not() {
    let m = test_model(0);
    // The take's answer was lost and it was re-run blindly.
    let mut h = good_round_trip();
    h.push((650, control("take_thread_control", Some(BOT), Some(BOT))));
    let v = model::check_applied_once(&m, &history(h));
    assert_eq!(v.len(), 1, "{v:?}");
    // A take with no reason at all.
    let mut h = good_round_trip();
    h.push((
        700,
        owner(Some(BOT), Some(INBOX), INBOX, "page inbox: agent reply"),
    ));
    h.push((900, control("take_thread_control", Some(INBOX), Some(BOT))));
    let v = model::check_applied_once(&m, &history(h));
    assert_eq!(v.len(), 1, "{v:?}");
    // The same after a take whose answer was lost, the agent's reply not yet told to the
    // service: the race no service can win (I5 (a)), not counted; once told, counted.
    let lost = |told: bool| {
        let mut h = good_round_trip();
        h.push((
            600,
            Observed::Note(
                "service take_thread_control: [chaos] applied (HTTP 200), then the answer was lost"
                    .into(),
            ),
        ));
        h.push((
            700,
            owner(Some(BOT), Some(INBOX), INBOX, "page inbox: agent reply"),
        ));
        if told {
            h.push((
                750,
                Observed::Delivery(DeliveryRecord {
                    channel: "messaging".into(),
                    summary: "take_thread_control bot app → page inbox".into(),
                    event_ts: 700,
                    mid: None,
                    outcome: DeliveryOutcome::Delivered,
                    detail: "200".into(),
                }),
            ));
        }
        h.push((
            1_500,
            control("take_thread_control", Some(INBOX), Some(BOT)),
        ));
        model::check_applied_once(&m, &history(h))
    };
    assert!(lost(false).is_empty(), "{:?}", lost(false));
    assert_eq!(lost(true).len(), 1, "{:?}", lost(true));
    // The agent marked Done while the service's take (for the user's request) was in flight.
    let mut h = good_round_trip()[..8].to_vec();
    h.push((
        550,
        owner(Some(INBOX), Some(BOT), INBOX, "page inbox: done"),
    ));
    h.push((600, control("take_thread_control", Some(BOT), Some(BOT))));
    let v = model::check_applied_once(&m, &history(h));
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn a_stale_pass_after_done_is_caught() {
    let m = test_model(0);
    let mut h = good_round_trip()[..7].to_vec();
    h.push((
        400,
        owner(Some(INBOX), Some(BOT), INBOX, "page inbox: done"),
    ));
    h.push((450, control("pass_thread_control", Some(BOT), Some(INBOX))));
    h.push((
        450,
        owner(Some(BOT), Some(INBOX), BOT, "pass_thread_control"),
    ));
    let v = model::check_applied_once(&m, &history(h));
    assert_eq!(v.len(), 1, "{v:?}");
    // With a second request in between, a second pass is right.
    let mut h = good_round_trip()[..7].to_vec();
    h.push((
        400,
        owner(Some(INBOX), Some(BOT), INBOX, "page inbox: done"),
    ));
    h.push((420, intent("input.handover")));
    h.push((450, control("pass_thread_control", Some(BOT), Some(INBOX))));
    assert!(model::check_applied_once(&m, &history(h)).is_empty());
}

#[test]
fn an_idle_timeout_justifies_a_take_only_after_the_agent_was_silent_long_enough() {
    let m = test_model(3000);
    let base = good_round_trip()[..7].to_vec(); // the inbox owns from t=100
    let mut early = base.clone();
    early.push((2000, sent(INBOX, "Let me check")));
    early.push((2100, echo_delivered(INBOX, "Let me check")));
    early.push((4000, control("take_thread_control", Some(INBOX), Some(BOT))));
    assert_eq!(model::check_applied_once(&m, &history(early)).len(), 1);
    let mut due = base.clone();
    due.push((2000, sent(INBOX, "Let me check")));
    due.push((2100, echo_delivered(INBOX, "Let me check")));
    due.push((5100, control("take_thread_control", Some(INBOX), Some(BOT))));
    assert!(model::check_applied_once(&m, &history(due)).is_empty());
    // The agent's message never reached the service: its timer ran from the stay's start.
    let mut unseen = base.clone();
    unseen.push((2000, sent(INBOX, "Let me check")));
    unseen.push((3200, control("take_thread_control", Some(INBOX), Some(BOT))));
    assert!(model::check_applied_once(&m, &history(unseen)).is_empty());
    // Done raced the idle timer: the take is redundant but the timer was due.
    let mut raced = base;
    raced.push((
        3000,
        owner(Some(INBOX), Some(BOT), INBOX, "page inbox: done"),
    ));
    raced.push((3150, control("take_thread_control", Some(BOT), Some(BOT))));
    assert!(model::check_applied_once(&m, &history(raced)).is_empty());
}

#[test]
fn sends_refused_for_the_service_or_the_handover_reply_are_caught() {
    let m = test_model(0);
    let refused = |call: &str, by_integration: bool| Observed::Refused {
        app_id: BOT.into(),
        call: call.into(),
        error: "(#10) another app is controlling this thread now. [code 10/2018300]".into(),
        by_integration,
    };
    let reply = "send_api \"Connecting you with a person…\"";
    // The service's own send, refused.
    let h = history(vec![(1, refused("send_api", false))]);
    assert_eq!(model::check_owner_sends(&m, &h).len(), 1);
    // ... after its own pass: counted.
    let mut h = good_round_trip()[..7].to_vec();
    h.push((900, refused("send_api", false)));
    assert_eq!(model::check_owner_sends(&m, &history(h)).len(), 1);
    // ... just after an agent took the thread, before the service could hear of it: a race.
    let mut h = good_round_trip();
    h.push((
        800,
        owner(Some(BOT), Some(INBOX), INBOX, "page inbox: agent reply"),
    ));
    h.push((810, refused("send_api", false)));
    assert!(model::check_owner_sends(&m, &history(h.clone())).is_empty());
    // ... but not once the take event had reached the service.
    h.pop();
    h.push((
        850,
        Observed::Delivery(DeliveryRecord {
            channel: "messaging".into(),
            summary: "take_thread_control bot app → page inbox".into(),
            event_ts: 800,
            mid: None,
            outcome: DeliveryOutcome::Delivered,
            detail: "200".into(),
        }),
    ));
    h.push((1500, refused("send_api", false)));
    assert_eq!(model::check_owner_sends(&m, &history(h)).len(), 1);
    // The pass for this handover ran before the integration's reply.
    let mut h = good_round_trip()[..4].to_vec();
    h.push((100, control("pass_thread_control", Some(BOT), Some(INBOX))));
    h.push((
        100,
        owner(Some(BOT), Some(INBOX), BOT, "pass_thread_control"),
    ));
    h.push((101, refused(reply, true)));
    assert_eq!(model::check_owner_sends(&m, &history(h)).len(), 1);
    // The pass for an earlier request, late, landed while Dialogflow answered a second one.
    let mut h = good_round_trip()[..4].to_vec();
    h.push((50, says("I want to talk to a human", BOT)));
    h.push((51, intent("input.handover")));
    h.push((100, control("pass_thread_control", Some(BOT), Some(INBOX))));
    h.push((
        100,
        owner(Some(BOT), Some(INBOX), BOT, "pass_thread_control"),
    ));
    h.push((101, refused(reply, true)));
    assert!(model::check_owner_sends(&m, &history(h)).is_empty());
    // The inbox asked for the thread and got it just before Dialogflow answered: a race.
    let mut h = good_round_trip()[..2].to_vec();
    h.push((2, Observed::InboxRequestedControl));
    h.push((3, owner(Some(BOT), Some(INBOX), BOT, "pass_thread_control")));
    h.push((4, intent("input.handover")));
    h.push((5, refused(reply, true)));
    assert!(model::check_owner_sends(&m, &history(h)).is_empty());
    // Any other integration reply refused: a note, not a violation.
    let h = history(vec![(
        1,
        refused("send_api \"Order A-1042 is on its way.\"", true),
    )]);
    assert!(model::check_owner_sends(&m, &h).is_empty());
}

/// A delivery about `summary`, with `outcome`.
fn delivery(summary: &str, outcome: DeliveryOutcome) -> Observed {
    Observed::Delivery(record(summary, outcome))
}

fn record(summary: &str, outcome: DeliveryOutcome) -> DeliveryRecord {
    DeliveryRecord {
        channel: "messaging".into(),
        summary: summary.into(),
        event_ts: 0,
        mid: None,
        outcome,
        detail: String::new(),
    }
}

#[test]
fn only_a_move_by_another_app_whose_news_was_all_lost_waits_for_the_next_contact() {
    let m = test_model(0);
    let done = "pass_thread_control page inbox → bot app";
    let mut trip = good_round_trip();
    trip.push((
        800,
        owner(Some(BOT), Some(INBOX), BOT, "pass_thread_control"),
    ));
    trip.push((
        900,
        owner(Some(INBOX), Some(BOT), INBOX, "page inbox: done"),
    ));
    let unseen = {
        let mut t = trip.clone();
        t.push((901, delivery(done, DeliveryOutcome::Dropped)));
        history(t)
    };
    assert_eq!(model::last_move_unseen(&m, &unseen), Some(13));
    // Anything delivered after the move could have told the service.
    let told = {
        let mut t = trip.clone();
        t.push((901, delivery(done, DeliveryOutcome::Dropped)));
        t.push((950, echo_delivered(INBOX, "bye")));
        history(t)
    };
    assert_eq!(model::last_move_unseen(&m, &told), None);
    // Nothing lost: the delivery may still be on its way, the service must see it.
    assert_eq!(model::last_move_unseen(&m, &history(trip.clone())), None);
    // The service's own call, its answer and its event lost: the service's to verify.
    let own = {
        let mut t = trip;
        t.push((
            1000,
            owner(Some(BOT), Some(INBOX), BOT, "pass_thread_control"),
        ));
        t.push((
            1001,
            delivery(
                "pass_thread_control bot app → page inbox",
                DeliveryOutcome::Dropped,
            ),
        ));
        history(t)
    };
    assert_eq!(model::last_move_unseen(&m, &own), None);
}
