//! Whole conversations against the emulator: a protocol mistake (sending while not the
//! owner, a take with a target_app_id, a bad appsecret_proof) is rejected there and fails here.

mod common;

use std::time::Duration;

use common::app::{Db, TestDb};
use handover_core::State;
use handover_emulator::PAGE_INBOX_APP_ID;
use messenger_handover::demo::World;

const USER: &str = "7002000000000001";

/// The service on `db` (a fresh database) against a fresh emulator; `None` when that backend
/// is not available here.
async fn world(db: Db, overrides: &[(&str, &str)]) -> Option<(World, TestDb)> {
    let db = TestDb::new(db).await?;
    let mut all = vec![("DATABASE_URL", db.url.as_str())];
    all.extend_from_slice(overrides);
    let w = World::start(&all)
        .await
        .expect("the service and the emulator start");
    Some((w, db))
}

async fn finish(w: World, db: TestDb) {
    w.stop().await;
    db.drop_db().await;
}

fn ids(world: &World) -> Vec<String> {
    world
        .emulator
        .contexts(USER)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

fn bot(world: &World) -> String {
    world.emulator.config().bot_app_id
}

async fn handed_over(w: &World) {
    w.emulator.user_says(USER, "Where is my order 1042?").await;
    w.emulator
        .user_says(USER, "I want to talk to a human")
        .await;
    assert!(w.wait_for_state(USER, State::Human).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER).as_deref(), Some(PAGE_INBOX_APP_ID));
    assert!(ids(w).contains(&"human_handover".to_owned()));
}

fn texts(w: &World) -> Vec<String> {
    w.emulator
        .messages_to_user(USER)
        .into_iter()
        .map(|m| m.text)
        .collect()
}

async fn user_asks_back_and_contexts_are_reset(db: Db) {
    let Some((w, db)) = world(db, &[("CONTEXT_ON_RETURN", "reset")]).await else {
        return;
    };
    handed_over(&w).await;
    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator.user_says(USER, "  BACK to bot!! ").await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER), Some(bot(&w)));
    // reset: only the integration's own context is left.
    assert_eq!(ids(&w), vec!["generic"]);
    let welcome = &w.services.settings.welcome_back_message;
    assert_eq!(texts(&w).last(), Some(welcome));
    assert_eq!(texts(&w).iter().filter(|t| *t == welcome).count(), 1);
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    // The bot answers the next message itself again.
    w.emulator.user_says(USER, "Where is my order 1042?").await;
    assert!(texts(&w).last().unwrap().contains("Order"));
    finish(w, db).await;
}
both_backends!(user_asks_back_and_contexts_are_reset);

async fn keep_only_clears_the_handover_context(db: Db) {
    let Some((w, db)) = world(db, &[("CONTEXT_ON_RETURN", "keep")]).await else {
        return;
    };
    handed_over(&w).await;
    w.emulator.user_says(USER, "back to bot").await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    let mut got = ids(&w);
    got.sort();
    assert_eq!(got, vec!["generic", "order-followup"]);
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(keep_only_clears_the_handover_context);

async fn the_agent_types_hash_bot(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    handed_over(&w).await;
    w.emulator
        .agent_replies(USER, "All done, handing you back.")
        .await;
    w.emulator.agent_replies(USER, "#bot").await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER), Some(bot(&w)));
    let calls: Vec<String> = w.emulator.log().into_iter().map(|e| e.call).collect();
    assert!(calls.contains(&"take_thread_control".to_owned()));
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(the_agent_types_hash_bot);

async fn the_inbox_marks_done(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    handed_over(&w).await;
    w.emulator.agent_marks_done(USER).await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    // Passed back by the inbox: no take needed.
    let calls: Vec<String> = w.emulator.log().into_iter().map(|e| e.call).collect();
    assert!(!calls.contains(&"take_thread_control".to_owned()));
    assert_eq!(
        texts(&w).last(),
        Some(&w.services.settings.welcome_back_message)
    );
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(the_inbox_marks_done);

async fn the_inbox_asks_for_a_thread_the_bot_owns(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    w.emulator.user_says(USER, "Hi").await;
    assert!(w.settle(USER).await);
    w.emulator.inbox_requests_control(USER).await;
    assert!(w.wait_for_state(USER, State::Human).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER).as_deref(), Some(PAGE_INBOX_APP_ID));
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(the_inbox_asks_for_a_thread_the_bot_owns);

async fn an_agent_replying_to_a_bot_thread_is_noticed(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    w.emulator.user_says(USER, "Hi").await;
    w.emulator
        .agent_replies(USER, "Hi! A person here, jumping in.")
        .await;
    assert!(w.wait_for_state(USER, State::Human).await);
    w.emulator.user_says(USER, "talk to the bot").await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER), Some(bot(&w)));
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(an_agent_replying_to_a_bot_thread_is_noticed);

async fn a_silent_agent_times_out(db: Db) {
    let Some((w, db)) = world(db, &[("AGENT_IDLE_TIMEOUT_SECS", "1")]).await else {
        return;
    };
    handed_over(&w).await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER), Some(bot(&w)));
    assert_eq!(
        texts(&w).last(),
        Some(&w.services.settings.agent_timeout_message)
    );
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(a_silent_agent_times_out);

async fn without_take_permission_the_thread_stays_with_the_inbox(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    handed_over(&w).await;
    // The Page's "Take control of conversations" toggle is off for the bot app.
    w.emulator.set_bot_can_take_control(false);
    w.emulator.take_errors();
    w.emulator.user_says(USER, "back to bot").await;
    let t = loop {
        let t = w
            .services
            .store
            .thread(&w.page_id(), USER)
            .await
            .unwrap()
            .unwrap();
        if t.last_error.is_some() {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(w.settle(USER).await);
    assert_eq!(t.state, State::Human);
    assert!(t.last_error.unwrap().contains("#200"));
    assert_eq!(w.emulator.owner(USER).as_deref(), Some(PAGE_INBOX_APP_ID));
    // No message was attempted while the inbox owns the thread.
    assert!(
        w.emulator
            .take_errors()
            .iter()
            .all(|e| !e.contains("2018300")),
        "the service tried to send without owning the thread"
    );
    finish(w, db).await;
}
both_backends!(without_take_permission_the_thread_stays_with_the_inbox);

fn welcomes(w: &World) -> usize {
    let welcome = &w.services.settings.welcome_back_message;
    texts(w).iter().filter(|t| *t == welcome).count()
}

/// Before: a thread the service had never seen (the inbox took it directly, or before the
/// service was deployed) was believed to be the bot's, and "back to bot" was ignored.
async fn a_thread_never_seen_is_taken_back_when_the_user_asks(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    w.emulator.user_says(USER, "Hi").await;
    assert!(w.settle(USER).await);
    // The inbox got the thread without any event reaching the service.
    w.emulator.force_owner(USER, Some(PAGE_INBOX_APP_ID));
    w.emulator.user_says(USER, "Back to bot").await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER), Some(bot(&w)));
    assert_eq!(welcomes(&w), 1);
    // Companion mode cannot tell from a standby delivery who owns the thread: it asked.
    let calls: Vec<String> = w.emulator.log().into_iter().map(|e| e.call).collect();
    assert!(calls.contains(&"thread_owner".to_owned()), "{calls:?}");
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(a_thread_never_seen_is_taken_back_when_the_user_asks);

/// Before: "back to bot" on standby while the bot owns the thread (companion mode hears every
/// message on standby) would have taken and welcomed; now it asks and leaves the bot alone.
async fn back_to_bot_while_the_bot_has_the_thread_changes_nothing(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    w.emulator.user_says(USER, "Hi").await;
    w.emulator.user_says(USER, "back to bot").await;
    assert!(w.settle(USER).await);
    assert_eq!(w.state(USER).await, Some(State::Bot));
    let calls: Vec<String> = w.emulator.log().into_iter().map(|e| e.call).collect();
    assert!(
        !calls.contains(&"take_thread_control".to_owned()),
        "{calls:?}"
    );
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(back_to_bot_while_the_bot_has_the_thread_changes_nothing);

/// Before: the companion app gets a postback on standby without its payload, so a "Back to
/// bot" button could not work; both paths (the integration's fulfillment return and the
/// companion's standby postback) now lead to one take and one welcome.
async fn the_back_to_bot_button_returns_once(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    handed_over(&w).await;
    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator
        .user_taps_postback(USER, "Back to bot", "BACK_TO_BOT")
        .await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER), Some(bot(&w)));
    assert_eq!(welcomes(&w), 1, "{:?}", texts(&w));
    let takes = w
        .emulator
        .log()
        .into_iter()
        .filter(|e| e.call == "take_thread_control" && e.actor == "service" && e.ok)
        .count();
    assert_eq!(takes, 1);
    finish(w, db).await;
}
both_backends!(the_back_to_bot_button_returns_once);

async fn a_back_to_bot_quick_reply_returns(db: Db) {
    let Some((w, db)) = world(db, &[]).await else {
        return;
    };
    handed_over(&w).await;
    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator
        .user_taps_quick_reply(USER, "Bot please", "BACK_TO_BOT")
        .await;
    assert!(w.wait_for_state(USER, State::Bot).await);
    assert!(w.settle(USER).await);
    assert_eq!(w.emulator.owner(USER), Some(bot(&w)));
    assert_eq!(welcomes(&w), 1);
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    finish(w, db).await;
}
both_backends!(a_back_to_bot_quick_reply_returns);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_binary_exits_0() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_messenger-handover"))
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for call in [
        "pass_thread_control",
        "take_thread_control",
        "contexts.delete",
        "send_api",
    ] {
        assert!(stdout.contains(call), "the transcript names {call}");
    }
    assert!(stdout.contains("Every step behaved as expected."));
    assert!(!stdout.contains('✗'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_can_be_played_by_hand() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_messenger-handover"))
        .args(["demo", "--serve"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("demo --serve starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let control = loop {
        let line = lines.next().expect("demo --serve prints its URLs").unwrap();
        if let Some(rest) = line.trim().strip_prefix("control") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let client = reqwest::Client::new();
    let said: serde_json::Value = client
        .post(format!("{control}/users/42/says"))
        .body("I want to talk to a human")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(said["owner"], "page inbox", "{said}");
    assert_eq!(said["state"], "HUMAN");
    let back: serde_json::Value = client
        .post(format!("{control}/users/42/says"))
        .body("back to bot")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back["state"], "BOT", "{back}");
    let calls = back["calls"].to_string();
    assert!(calls.contains("take_thread_control"), "{calls}");
    let _ = child.kill();
    let _ = child.wait();
}
