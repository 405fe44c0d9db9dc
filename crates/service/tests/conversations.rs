//! Whole conversations against the emulator: a protocol mistake (sending while not the
//! owner, a take with a target_app_id, a bad appsecret_proof) is rejected there and fails here.

mod common;

use std::time::Duration;

use common::db::Db;
use common::emulated::{Emulated, json_of};
use handover_core::State;
use handover_emulator::PAGE_INBOX_APP_ID;

const USER: &str = "7002000000000001";

async fn user_asks_back_and_contexts_are_reset(db: Db) {
    let w = Emulated::start(db, &[("CONTEXT_ON_RETURN", "reset")]).await;
    w.handed_over(USER).await;
    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator.user_says(USER, "  BACK to bot!! ").await;
    w.settled_in(USER, State::Bot).await;
    assert_eq!(w.emulator.owner(USER), Some(w.bot()));
    // reset: only the integration's own context is left.
    assert_eq!(w.context_ids(USER), vec!["generic"]);
    let welcome = &w.services.settings.welcome_back_message;
    assert_eq!(w.texts(USER).last(), Some(welcome));
    assert_eq!(w.texts(USER).iter().filter(|t| *t == welcome).count(), 1);
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    // The bot answers the next message itself again.
    w.emulator.user_says(USER, "Where is my order 1042?").await;
    assert!(w.texts(USER).last().unwrap().contains("Order"));
    w.stop().await;
}
both_backends!(user_asks_back_and_contexts_are_reset);

async fn keep_only_clears_the_handover_context(db: Db) {
    let w = Emulated::start(db, &[("CONTEXT_ON_RETURN", "keep")]).await;
    w.handed_over(USER).await;
    w.emulator.user_says(USER, "back to bot").await;
    w.settled_in(USER, State::Bot).await;
    let mut got = w.context_ids(USER);
    got.sort();
    assert_eq!(got, vec!["generic", "order-followup"]);
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(keep_only_clears_the_handover_context);

async fn the_agent_types_hash_bot(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.handed_over(USER).await;
    w.emulator
        .agent_replies(USER, "All done, handing you back.")
        .await;
    w.emulator.agent_replies(USER, "#bot").await;
    w.settled_in(USER, State::Bot).await;
    assert_eq!(w.emulator.owner(USER), Some(w.bot()));
    let calls = w.calls();
    assert!(calls.contains(&"take_thread_control".to_owned()));
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(the_agent_types_hash_bot);

async fn the_inbox_marks_done(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.handed_over(USER).await;
    w.emulator.agent_marks_done(USER).await;
    w.settled_in(USER, State::Bot).await;
    // Passed back by the inbox: no take needed.
    let calls = w.calls();
    assert!(!calls.contains(&"take_thread_control".to_owned()));
    assert_eq!(
        w.texts(USER).last(),
        Some(&w.services.settings.welcome_back_message)
    );
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(the_inbox_marks_done);

async fn the_inbox_asks_for_a_thread_the_bot_owns(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.emulator.user_says(USER, "Hi").await;
    assert!(w.settle(USER).await);
    w.emulator.inbox_requests_control(USER).await;
    w.settled_in(USER, State::Human).await;
    assert_eq!(w.emulator.owner(USER).as_deref(), Some(PAGE_INBOX_APP_ID));
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(the_inbox_asks_for_a_thread_the_bot_owns);

async fn an_agent_replying_to_a_bot_thread_is_noticed(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.emulator.user_says(USER, "Hi").await;
    w.emulator
        .agent_replies(USER, "Hi! A person here, jumping in.")
        .await;
    assert!(w.wait_for_state(USER, State::Human).await);
    w.emulator.user_says(USER, "talk to the bot").await;
    w.settled_in(USER, State::Bot).await;
    assert_eq!(w.emulator.owner(USER), Some(w.bot()));
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(an_agent_replying_to_a_bot_thread_is_noticed);

async fn a_silent_agent_times_out(db: Db) {
    let w = Emulated::start(db, &[("AGENT_IDLE_TIMEOUT_SECS", "1")]).await;
    w.handed_over(USER).await;
    w.settled_in(USER, State::Bot).await;
    assert_eq!(w.emulator.owner(USER), Some(w.bot()));
    assert_eq!(
        w.texts(USER).last(),
        Some(&w.services.settings.agent_timeout_message)
    );
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(a_silent_agent_times_out);

async fn without_take_permission_the_thread_stays_with_the_inbox(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.handed_over(USER).await;
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
    w.stop().await;
}
both_backends!(without_take_permission_the_thread_stays_with_the_inbox);

/// Before: a thread the service had never seen (the inbox took it directly, or before the
/// service was deployed) was believed to be the bot's, and "back to bot" was ignored.
async fn a_thread_never_seen_is_taken_back_when_the_user_asks(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.emulator.user_says(USER, "Hi").await;
    assert!(w.settle(USER).await);
    // The inbox got the thread without any event reaching the service.
    w.emulator.force_owner(USER, Some(PAGE_INBOX_APP_ID));
    w.emulator.user_says(USER, "Back to bot").await;
    w.settled_in(USER, State::Bot).await;
    assert_eq!(w.emulator.owner(USER), Some(w.bot()));
    assert_eq!(w.welcomes(USER), 1);
    // Companion mode cannot tell from a standby delivery who owns the thread: it asked.
    let calls = w.calls();
    assert!(calls.contains(&"thread_owner".to_owned()), "{calls:?}");
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(a_thread_never_seen_is_taken_back_when_the_user_asks);

/// Before: "back to bot" on standby while the bot owns the thread (companion mode hears every
/// message on standby) would have taken and welcomed; now it asks and leaves the bot alone.
async fn back_to_bot_while_the_bot_has_the_thread_changes_nothing(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.emulator.user_says(USER, "Hi").await;
    w.emulator.user_says(USER, "back to bot").await;
    assert!(w.settle(USER).await);
    assert_eq!(w.state(USER).await, Some(State::Bot));
    let calls = w.calls();
    assert!(
        !calls.contains(&"take_thread_control".to_owned()),
        "{calls:?}"
    );
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
}
both_backends!(back_to_bot_while_the_bot_has_the_thread_changes_nothing);

/// Before: the companion app gets a postback on standby without its payload, so a "Back to
/// bot" button could not work; both paths (the integration's fulfillment return and the
/// companion's standby postback) now lead to one take and one welcome.
async fn the_back_to_bot_button_returns_once(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.handed_over(USER).await;
    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator
        .user_taps_postback(USER, "Back to bot", "BACK_TO_BOT")
        .await;
    w.settled_in(USER, State::Bot).await;
    assert_eq!(w.emulator.owner(USER), Some(w.bot()));
    assert_eq!(w.welcomes(USER), 1, "{:?}", w.texts(USER));
    let takes = w
        .emulator
        .log()
        .into_iter()
        .filter(|e| e.call == "take_thread_control" && e.actor == "service" && e.ok)
        .count();
    assert_eq!(takes, 1);
    w.stop().await;
}
both_backends!(the_back_to_bot_button_returns_once);

async fn a_back_to_bot_quick_reply_returns(db: Db) {
    let w = Emulated::start(db, &[]).await;
    w.handed_over(USER).await;
    w.emulator.agent_replies(USER, "Hello, Sam here.").await;
    w.emulator
        .user_taps_quick_reply(USER, "Bot please", "BACK_TO_BOT")
        .await;
    w.settled_in(USER, State::Bot).await;
    assert_eq!(w.emulator.owner(USER), Some(w.bot()));
    assert_eq!(w.welcomes(USER), 1);
    assert_eq!(w.emulator.errors(), Vec::<String>::new());
    w.stop().await;
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
    let said = json_of(
        client
            .post(format!("{control}/users/42/says"))
            .body("I want to talk to a human"),
    )
    .await;
    assert_eq!(said["owner"], "page inbox", "{said}");
    assert_eq!(said["state"], "HUMAN");
    let back = json_of(
        client
            .post(format!("{control}/users/42/says"))
            .body("back to bot"),
    )
    .await;
    assert_eq!(back["state"], "BOT", "{back}");
    let calls = back["calls"].to_string();
    assert!(calls.contains("take_thread_control"), "{calls}");
    let _ = child.kill();
    let _ = child.wait();
}
