//! Unit tests of the pure conversation state machine: one test per rule, then property-style
//! checks over every state and a broad list of inputs.

use super::*;
use crate::event::Channel;
use crate::time::HOUR_MS;
use crate::turns::TurnFacts;
use serde_json::json;

const APP: &str = "111111111111111";
const INBOX: &str = "263902037430900";
const OTHER_APP: &str = "555555555555555";
const PAGE: &str = "958823367603818";
const USER: &str = "1534862223272449";
const SESSION: &str = "projects/demo/agent/sessions/1534862223272449";
/// When the thread reached its current state.
const T0: i64 = 1_763_900_000_000;
/// When `decide` runs (unless a test says otherwise).
const NOW: i64 = T0 + 60_000;
/// When an event says it happened.
const EVENT_TS: i64 = NOW - 1_000;
const PASS_DELAY: i64 = 1_500;
const IDLE: i64 = 600_000;
const ALL_STATES: [State; 5] = [
    State::Bot,
    State::Passing,
    State::Human,
    State::Returning,
    State::Idle,
];

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

fn phrases(csv: &str) -> PhraseSet {
    PhraseSet::new(&csv.split(',').collect::<Vec<_>>())
}

fn policy_with_idle(idle_timeout_ms: i64) -> Policy {
    Policy {
        app_id: APP.into(),
        target_app_id: INBOX.into(),
        return_phrases: phrases("back to bot,talk to bot,talk to the bot"),
        return_payload: "BACK_TO_BOT".into(),
        agent_return_phrases: phrases("#bot"),
        idle_timeout_ms,
        pass_delay_ms: PASS_DELAY,
        stuck_after_ms: 300_000,
        standby_means_not_bot: true,
        notify: Default::default(),
    }
}

fn policy() -> Policy {
    policy_with_idle(0)
}

/// A thread in `state`, as it looks after getting there the usual way, since `T0`.
fn thread(state: State) -> Thread {
    let mut t = Thread::new(PAGE, USER, T0);
    t.state = state;
    // Got there by the decision of epoch 1, whose message (if any) is not given yet.
    t.epoch = 1;
    t.state_at = T0;
    t.session = Some(SESSION.into());
    t.last_user_msg_at = Some(T0 - 5_000);
    match state {
        State::Bot | State::Passing => t.owner_app_id = Some(APP.into()),
        State::Human => {
            t.owner_app_id = Some(INBOX.into());
            t.human_since = Some(T0);
        }
        State::Returning => {
            t.owner_app_id = Some(INBOX.into());
            t.human_since = Some(T0 - 100_000);
            t.return_reason = Some(ReturnReason::User);
        }
        State::Idle => {}
    }
    t
}

fn event(channel: Channel, kind: EventKind) -> IncomingEvent {
    IncomingEvent {
        account_id: PAGE.into(),
        user_id: USER.into(),
        channel,
        timestamp_ms: EVENT_TS,
        dedupe_key: format!("{}:{USER}:{EVENT_TS}", kind.name()),
        kind,
    }
}

fn message(channel: Channel, text: &str) -> IncomingEvent {
    event(
        channel,
        EventKind::Message {
            mid: "m_user".into(),
            text: Some(text.into()),
            quick_reply_payload: None,
        },
    )
}

fn standby(text: &str) -> IncomingEvent {
    message(Channel::Standby, text)
}

fn postback(channel: Channel, payload: &str) -> IncomingEvent {
    event(
        channel,
        EventKind::Postback {
            mid: Some("m_postback".into()),
            title: Some("Back to bot".into()),
            payload: Some(payload.into()),
        },
    )
}

fn echo(app_id: Option<&str>, text: &str) -> IncomingEvent {
    event(
        Channel::Messaging,
        EventKind::Echo {
            mid: "m_echo".into(),
            app_id: app_id.map(str::to_owned),
            text: Some(text.into()),
            metadata: None,
        },
    )
}

fn pass_event(new_owner: Option<&str>) -> IncomingEvent {
    event(
        Channel::Messaging,
        EventKind::PassThreadControl {
            new_owner_app_id: new_owner.map(str::to_owned),
            previous_owner_app_id: Some(INBOX.into()),
            metadata: None,
        },
    )
}

fn take_event(new_owner: Option<&str>) -> IncomingEvent {
    event(
        Channel::Messaging,
        EventKind::TakeThreadControl {
            new_owner_app_id: new_owner.map(str::to_owned),
            previous_owner_app_id: None,
            metadata: None,
        },
    )
}

fn request(requested: Option<&str>) -> IncomingEvent {
    event(
        Channel::Messaging,
        EventKind::RequestThreadControl {
            requested_owner_app_id: requested.map(str::to_owned),
            metadata: Some("Conversation moved to Inbox".into()),
        },
    )
}

fn not_owner() -> Failure {
    Failure {
        not_thread_owner: true,
        outside_window: false,
        message: "(#10) Another app controls this thread (subcode 2018300)".into(),
    }
}

fn outside_window() -> Failure {
    Failure {
        not_thread_owner: false,
        outside_window: true,
        message: "(#10) outside the 24-hour window (2018278)".into(),
    }
}

fn other_failure() -> Failure {
    Failure {
        not_thread_owner: false,
        outside_window: false,
        message: "(#2) Service temporarily unavailable".into(),
    }
}

/// Our own pass or take for the thread's current epoch, started just before `NOW`.
fn done(t: &Thread, result: Result<(), Failure>) -> CallOutcome {
    CallOutcome {
        epoch: t.epoch,
        started_at: NOW - 100,
        result,
    }
}

/// What the reconciler's `thread_owner` check answered.
fn checked(owner: Owner) -> OwnerCheck {
    OwnerCheck {
        owner,
        why: CheckWhy::Stuck,
        started_at: NOW - 100,
    }
}

fn run(t: &Thread, input: Input<'_>) -> Decision {
    decide(t, &input, &policy(), NOW)
}

fn run_with(t: &Thread, input: Input<'_>, policy: &Policy, now: i64) -> Decision {
    decide(t, &input, policy, now)
}

/// The names of the job kinds a decision cancels, as the store keeps them.
fn names(kinds: &[JobKind]) -> Vec<&'static str> {
    kinds.iter().map(|k| k.as_str()).collect()
}

fn on(t: &Thread, e: &IncomingEvent) -> Decision {
    run(t, Input::Event(e))
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// A job as "what @delay", checking the payload details that are not in the text.
fn describe(job: &NewJob) -> String {
    let what = match &job.payload {
        JobPayload::Pass {
            target_app_id,
            metadata,
            ..
        } => {
            assert!(metadata.starts_with("messenger-handover: "), "{metadata}");
            format!("pass to {target_app_id}")
        }
        JobPayload::Take { metadata, .. } => {
            assert!(metadata.starts_with("messenger-handover: "), "{metadata}");
            "take".to_owned()
        }
        JobPayload::SendWelcome { welcome, .. } => format!("send_welcome {}", welcome.as_str()),
        JobPayload::IdleCheck { generation } => format!("idle_check {generation}"),
        other => other.kind().to_string(),
    };
    format!("{what} @{}", job.delay_ms)
}

fn jobs(d: &Decision) -> Vec<String> {
    d.jobs.iter().map(describe).collect()
}

/// A take of a return: it waits `HANDOVER_PASS_DELAY_MS` (see `start_take`).
fn take_soon() -> String {
    format!("take @{PASS_DELAY}")
}

fn take_now() -> String {
    "take @0".to_owned()
}

fn pass_after(delay: i64) -> String {
    format!("pass to {INBOX} @{delay}")
}

fn sync_now() -> String {
    "sync_contexts @0".to_owned()
}

fn welcome_now(kind: WelcomeKind) -> String {
    format!("send_welcome {} @0", kind.as_str())
}

fn idle_check(generation: i64, delay: i64) -> String {
    format!("idle_check {generation} @{delay}")
}

fn sorted(mut kinds: Vec<&'static str>) -> Vec<&'static str> {
    kinds.sort_unstable();
    kinds.dedup();
    kinds
}

/// The decision moved the thread to `state` at `NOW`, with a cause for the audit trail.
#[track_caller]
fn assert_moved(d: &Decision, before: &Thread, state: State) {
    assert_ne!(before.state, state, "test setup: already in {state:?}");
    assert_eq!(d.thread.state, state, "{d:#?}");
    assert_eq!(d.thread.state_since, NOW, "{d:#?}");
    assert!(d.cause.is_some(), "a transition needs a cause: {d:#?}");
}

/// The decision left the state alone and asked for no work.
#[track_caller]
fn assert_quiet(d: &Decision, before: &Thread) {
    assert_eq!(d.thread.state, before.state, "{d:#?}");
    assert_eq!(d.thread.state_since, before.state_since, "{d:#?}");
    assert!(d.jobs.is_empty(), "{d:#?}");
    assert!(d.cancel.is_empty(), "{d:#?}");
}

/// Like `assert_quiet`, and the thread is byte-for-byte the same except for the fields a
/// user's message always refreshes.
#[track_caller]
/// Untouched but the user's time and, with a human, the start of their wait for an agent.
fn assert_untouched_but_user_time(d: &Decision, before: &Thread) {
    assert_quiet(d, before);
    let mut expected = before.clone();
    expected.last_user_msg_at = d.thread.last_user_msg_at;
    if before.state == State::Human && before.waiting_since.is_none() {
        expected.waiting_since = Some(NOW);
    }
    assert_eq!(d.thread, expected);
}

// ---------------------------------------------------------------------------------------------
// Flow 1: handover
// ---------------------------------------------------------------------------------------------

#[test]
fn handover_from_bot_queues_one_pass_after_the_delay() {
    let mut before = thread(State::Bot);
    before.pending_welcome = Some(WelcomeKind::WelcomeBack);
    before.return_reason = Some(ReturnReason::Fulfillment);
    before.last_error = Some("old".into());
    let snapshot = json!([{"name": "ctx", "lifespanCount": 2}]);
    let d = run(
        &before,
        Input::Handover {
            session: SESSION.into(),
            snapshot: snapshot.clone().into(),
            asked_at: None,
        },
    );
    assert_moved(&d, &before, State::Passing);
    assert_eq!(
        d.jobs,
        vec![NewJob::after(
            JobPayload::Pass {
                target_app_id: INBOX.into(),
                metadata: call_metadata("the user asked for a person", 2),
                epoch: 2,
            },
            PASS_DELAY,
        )]
    );
    assert_eq!(
        names(&d.cancel),
        vec!["take", "sync_contexts", "send_welcome"]
    );
    assert_eq!(d.thread.session.as_deref(), Some(SESSION));
    assert_eq!(d.thread.snapshot, Some(snapshot.into()));
    assert_eq!(d.thread.last_user_msg_at, Some(NOW));
    assert_eq!(d.thread.pending_welcome, None);
    assert_eq!(d.thread.return_reason, None);
    assert_eq!(d.thread.last_error, None);
    // The bot still owns the thread until the pass runs.
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(APP));
}

#[test]
fn handover_uses_the_configured_delay_and_target() {
    let mut p = policy();
    p.pass_delay_ms = 0;
    p.target_app_id = OTHER_APP.into();
    let d = run_with(
        &thread(State::Bot),
        Input::Handover {
            session: SESSION.into(),
            snapshot: json!([]).into(),
            asked_at: None,
        },
        &p,
        NOW,
    );
    assert_eq!(jobs(&d), vec![format!("pass to {OTHER_APP} @0")]);
}

#[test]
fn repeated_handover_while_passing_queues_no_second_pass() {
    let before = thread(State::Passing);
    let snapshot = json!([{"name": "newer"}]);
    let d = run(
        &before,
        Input::Handover {
            session: "projects/demo/agent/sessions/other".into(),
            snapshot: snapshot.clone().into(),
            asked_at: None,
        },
    );
    assert_quiet(&d, &before);
    assert_eq!(d.cause, None);
    // The session facts are still refreshed.
    assert_eq!(
        d.thread.session.as_deref(),
        Some("projects/demo/agent/sessions/other")
    );
    assert_eq!(d.thread.snapshot, Some(snapshot.into()));
    assert_eq!(d.thread.last_user_msg_at, Some(NOW));
}

#[test]
fn handover_while_returning_cancels_the_take_and_passes() {
    let before = thread(State::Returning);
    let d = run(
        &before,
        Input::Handover {
            session: SESSION.into(),
            snapshot: json!([]).into(),
            asked_at: None,
        },
    );
    assert_moved(&d, &before, State::Passing);
    assert_eq!(jobs(&d), vec![pass_after(PASS_DELAY)]);
    assert_eq!(
        names(&d.cancel),
        vec!["take", "sync_contexts", "send_welcome"]
    );
    assert_eq!(d.thread.return_reason, None);
}

#[test]
fn handover_then_pass_done_reaches_human() {
    let p = policy_with_idle(IDLE);
    let t0 = thread(State::Bot);
    let d1 = run_with(
        &t0,
        Input::Handover {
            session: SESSION.into(),
            snapshot: json!([]).into(),
            asked_at: None,
        },
        &p,
        NOW,
    );
    let later = NOW + PASS_DELAY;
    let d2 = run_with(
        &d1.thread,
        Input::PassDone(done(&d1.thread, Ok(()))),
        &p,
        later,
    );
    assert_eq!(d2.thread.state, State::Human);
    assert_eq!(d2.thread.state_since, later);
    assert_eq!(d2.thread.owner_app_id.as_deref(), Some(INBOX));
    assert_eq!(d2.thread.human_since, Some(later));
    assert_eq!(jobs(&d2), vec![idle_check(later, IDLE)]);
}

// ---------------------------------------------------------------------------------------------
// Fulfillment return action
// ---------------------------------------------------------------------------------------------

#[test]
fn return_by_fulfillment_while_passing_cancels_the_pass_without_take() {
    let before = thread(State::Passing);
    let d = run(
        &before,
        Input::ReturnByFulfillment {
            session: SESSION.into(),
            heard_at: None,
        },
    );
    assert_moved(&d, &before, State::Bot);
    assert_eq!(names(&d.cancel), vec!["pass"]);
    // No take (the bot still owns it), no sync/welcome (the fulfillment response does that).
    assert!(d.jobs.is_empty(), "{:?}", jobs(&d));
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(APP));
    assert_eq!(d.thread.return_reason, Some(ReturnReason::Fulfillment));
    assert_eq!(d.thread.last_user_msg_at, Some(NOW));
}

#[test]
fn return_by_fulfillment_while_human_takes_then_syncs_and_welcomes() {
    let before = thread(State::Human);
    let d = run(
        &before,
        Input::ReturnByFulfillment {
            session: SESSION.into(),
            heard_at: None,
        },
    );
    assert_moved(&d, &before, State::Returning);
    assert_eq!(jobs(&d), vec![format!("take @{PASS_DELAY}")]);
    assert!(!d.welcome_in_band, "the service welcomes after the take");
    assert_eq!(d.thread.return_reason, Some(ReturnReason::User));

    // The take succeeds. The integration could not deliver the fulfillment's own answer (the
    // bot was not the owner), so the service syncs and welcomes the user itself.
    let d2 = run(&d.thread, Input::TakeDone(done(&d.thread, Ok(()))));
    assert_eq!(d2.thread.state, State::Bot);
    assert_eq!(
        d2.jobs
            .iter()
            .map(|j| j.payload.kind().as_str())
            .collect::<Vec<_>>(),
        vec!["sync_contexts", "send_welcome"]
    );
    assert_eq!(d2.thread.return_reason, None);
    assert_eq!(d2.thread.owner_app_id.as_deref(), Some(APP));
}

#[test]
fn return_by_fulfillment_while_idle_takes() {
    let before = thread(State::Idle);
    let d = run(
        &before,
        Input::ReturnByFulfillment {
            session: SESSION.into(),
            heard_at: None,
        },
    );
    assert_moved(&d, &before, State::Returning);
    assert_eq!(jobs(&d), vec![format!("take @{PASS_DELAY}")]);
}

#[test]
fn return_by_fulfillment_while_bot_or_returning_only_cancels_a_stray_pass() {
    for state in [State::Bot, State::Returning] {
        let mut before = thread(state);
        before.notified_epoch = before.epoch; // the return was already welcomed
        let d = run(
            &before,
            Input::ReturnByFulfillment {
                session: SESSION.into(),
                heard_at: None,
            },
        );
        assert_eq!(d.thread.state, state);
        assert_eq!(d.thread.state_since, T0);
        assert!(d.jobs.is_empty(), "{state:?}: {:?}", jobs(&d));
        assert!(d.cancel.is_empty());
        assert!(!d.welcome_in_band, "no second welcome");
    }
}

// ---------------------------------------------------------------------------------------------
// Flow 2: the user asks for the bot on Messenger
// ---------------------------------------------------------------------------------------------

#[test]
fn standby_back_to_bot_while_human_returns_then_syncs_and_welcomes() {
    let before = thread(State::Human);
    let e = standby("Back to bot!");
    let d = on(&before, &e);
    assert_moved(&d, &before, State::Returning);
    assert_eq!(jobs(&d), vec![take_soon()]);
    assert_eq!(d.thread.return_reason, Some(ReturnReason::User));
    assert_eq!(d.thread.last_user_msg_at, Some(EVENT_TS));

    let d2 = run(&d.thread, Input::TakeDone(done(&d.thread, Ok(()))));
    assert_eq!(d2.thread.state, State::Bot);
    assert_eq!(
        jobs(&d2),
        vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)]
    );
    assert_eq!(sorted(names(&d2.cancel)), vec!["pass", "take"]);
    assert_eq!(d2.thread.owner_app_id.as_deref(), Some(APP));
    assert_eq!(d2.thread.human_since, None);
    assert_eq!(d2.thread.return_reason, None);
}

#[test]
fn return_phrases_ignore_case_accents_punctuation_and_spaces() {
    for text in [
        "back to bot",
        "  BACK   to bot ",
        "Báck tó bót?!",
        "talk to bot",
        "Talk to the bot.",
    ] {
        let before = thread(State::Human);
        let d = on(&before, &standby(text));
        assert_eq!(d.thread.state, State::Returning, "{text:?}");
        assert_eq!(jobs(&d), vec![take_soon()], "{text:?}");
    }
}

#[test]
fn other_standby_messages_only_refresh_the_user_time() {
    for text in ["back to bot please", "bot", "", "thanks", "#bot"] {
        let before = thread(State::Human);
        let d = on(&before, &standby(text));
        assert_untouched_but_user_time(&d, &before);
        assert_eq!(d.thread.last_user_msg_at, Some(EVENT_TS), "{text:?}");
    }
    // A message without text (a sticker, an attachment).
    let before = thread(State::Human);
    let e = event(
        Channel::Standby,
        EventKind::Message {
            mid: "m_sticker".into(),
            text: None,
            quick_reply_payload: None,
        },
    );
    assert_untouched_but_user_time(&on(&before, &e), &before);
}

#[test]
fn standby_back_to_bot_while_bot_takes_the_thread() {
    // A standby delivery means another app owns the thread, whatever the service believed.
    let before = thread(State::Bot);
    let d = on(&before, &standby("Back to bot!"));
    assert_moved(&d, &before, State::Returning);
    assert_eq!(jobs(&d), vec![take_soon()]);
    // A thread never seen before, too.
    let never = Thread::new(PAGE, USER, NOW);
    let d = on(&never, &standby("back to bot"));
    assert_eq!(d.thread.state, State::Returning);
    assert_eq!(jobs(&d), vec![take_soon()]);
}

#[test]
fn back_to_bot_while_returning_queues_no_second_take() {
    let before = thread(State::Returning);
    let d = on(&before, &standby("back to bot"));
    assert_untouched_but_user_time(&d, &before);
}

#[test]
fn back_to_bot_while_idle_takes() {
    let before = thread(State::Idle);
    let d = on(&before, &standby("back to bot"));
    assert_moved(&d, &before, State::Returning);
    assert_eq!(jobs(&d), vec![take_soon()]);
    assert_eq!(d.thread.return_reason, Some(ReturnReason::User));
}

#[test]
fn back_to_bot_before_the_pass_ran_cancels_it_and_welcomes() {
    let before = thread(State::Passing);
    let d = on(&before, &message(Channel::Messaging, "back to bot"));
    assert_moved(&d, &before, State::Bot);
    assert_eq!(names(&d.cancel), vec!["pass"]);
    assert_eq!(jobs(&d), vec![welcome_now(WelcomeKind::WelcomeBack)]);
}

#[test]
fn user_time_never_goes_backwards() {
    let mut before = thread(State::Human);
    before.last_user_msg_at = Some(EVENT_TS + 10_000);
    let d = on(&before, &standby("thanks"));
    assert_eq!(d.thread.last_user_msg_at, Some(EVENT_TS + 10_000));
    // An event without a timestamp counts as now.
    let mut e = standby("thanks");
    e.timestamp_ms = 0;
    let d = on(&thread(State::Human), &e);
    assert_eq!(d.thread.last_user_msg_at, Some(NOW));
}

#[test]
fn back_to_bot_postback_on_either_channel_returns() {
    for channel in [Channel::Messaging, Channel::Standby] {
        let before = thread(State::Human);
        let d = on(&before, &postback(channel, "BACK_TO_BOT"));
        assert_moved(&d, &before, State::Returning);
        assert_eq!(jobs(&d), vec![take_soon()], "{channel:?}");
        assert_eq!(d.thread.return_reason, Some(ReturnReason::User));
        assert_eq!(d.thread.last_user_msg_at, Some(EVENT_TS));
    }
}

#[test]
fn other_postbacks_and_back_to_bot_while_bot_do_nothing() {
    for payload in ["GET_STARTED", "back_to_bot", ""] {
        let before = thread(State::Human);
        let mut e = postback(Channel::Standby, payload);
        if let EventKind::Postback { title, .. } = &mut e.kind {
            *title = Some("Get started".into());
        }
        let d = on(&before, &e);
        assert_untouched_but_user_time(&d, &before);
    }
    let before = thread(State::Bot);
    let d = on(&before, &postback(Channel::Messaging, "BACK_TO_BOT"));
    assert_untouched_but_user_time(&d, &before);
}

// ---------------------------------------------------------------------------------------------
// Flow 3 and 6: handover events
// ---------------------------------------------------------------------------------------------

#[test]
fn pass_to_us_while_human_syncs_and_welcomes() {
    let before = thread(State::Human);
    let d = on(&before, &pass_event(Some(APP)));
    assert_moved(&d, &before, State::Bot);
    assert_eq!(
        jobs(&d),
        vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)]
    );
    assert_eq!(sorted(names(&d.cancel)), vec!["pass", "take"]);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(APP));
    assert_eq!(d.thread.human_since, None);
}

#[test]
fn pass_to_us_while_idle_or_returning_syncs_and_welcomes() {
    for state in [State::Idle, State::Returning] {
        let before = thread(state);
        let d = on(&before, &pass_event(Some(APP)));
        assert_moved(&d, &before, State::Bot);
        assert_eq!(
            jobs(&d),
            vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)],
            "{state:?}"
        );
    }
}

#[test]
fn control_to_us_while_passing_agrees_and_the_pass_goes_on() {
    // The bot owns the thread until the pass runs: a fact that says so changes nothing, and
    // no stale fact cancels the handover the user just asked for.
    let before = thread(State::Passing);
    let d = on(&before, &take_event(Some(APP)));
    assert_quiet(&d, &before);
}

#[test]
fn a_pass_to_us_while_passing_ends_the_pass() {
    // The inbox had the thread after our pass began (our pass was applied and its answer
    // lost, or the inbox took it) and gave it back: the pass is not made or repeated.
    let before = thread(State::Passing);
    let d = on(&before, &pass_event(Some(APP)));
    assert_moved(&d, &before, State::Bot);
    assert!(d.thread.epoch > before.epoch, "a return of its own: {d:#?}");
    assert!(d.cancel.contains(&JobKind::Pass), "{d:#?}");
    assert!(jobs(&d).is_empty(), "{:?}", jobs(&d));
}

#[test]
fn our_take_then_its_event_welcomes_exactly_once() {
    let human = thread(State::Human);
    let asked = on(&human, &standby("back to bot"));
    assert_eq!(asked.thread.state, State::Returning);

    let took = run(&asked.thread, Input::TakeDone(done(&asked.thread, Ok(()))));
    assert_eq!(took.thread.state, State::Bot);
    // The second signal of the same return: the take event naming us, then a pass event too.
    let echo_take = on(&took.thread, &take_event(Some(APP)));
    let echo_pass = on(&echo_take.thread, &pass_event(Some(APP)));
    for d in [&echo_take, &echo_pass] {
        assert_quiet(d, &took.thread);
        assert_eq!(d.thread, took.thread);
    }
    let welcomes = [&asked, &took, &echo_take, &echo_pass]
        .iter()
        .flat_map(|d| d.jobs.iter())
        .filter(|j| matches!(j.payload, JobPayload::SendWelcome { .. }))
        .count();
    assert_eq!(welcomes, 1);
}

#[test]
fn the_take_event_before_our_take_result_also_welcomes_exactly_once() {
    let returning = thread(State::Returning);
    let by_event = on(&returning, &take_event(Some(APP)));
    assert_eq!(by_event.thread.state, State::Bot);
    assert_eq!(
        jobs(&by_event),
        vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)]
    );
    let took = run(
        &by_event.thread,
        Input::TakeDone(done(&by_event.thread, Ok(()))),
    );
    assert_quiet(&took, &by_event.thread);
    assert_eq!(took.thread, by_event.thread);
}

#[test]
fn take_by_another_app_while_bot_means_human_with_that_owner() {
    let before = thread(State::Bot);
    let d = on(&before, &take_event(Some(INBOX)));
    assert_moved(&d, &before, State::Human);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
    assert_eq!(d.thread.human_since, Some(NOW));
    assert!(d.jobs.is_empty(), "idle timeout off: {:?}", jobs(&d));
    assert!(names(&d.cancel).contains(&"pass"));
}

#[test]
fn control_to_another_app_queues_the_idle_check_when_enabled() {
    let p = policy_with_idle(IDLE);
    for e in [take_event(Some(INBOX)), pass_event(Some(OTHER_APP))] {
        let before = thread(State::Bot);
        let d = run_with(&before, Input::Event(&e), &p, NOW);
        assert_moved(&d, &before, State::Human);
        assert_eq!(jobs(&d), vec![idle_check(NOW, IDLE)]);
        assert_eq!(d.thread.human_since, Some(NOW));
    }
}

#[test]
fn pass_to_the_inbox_while_passing_means_human() {
    let before = thread(State::Passing);
    let d = on(&before, &pass_event(Some(INBOX)));
    assert_moved(&d, &before, State::Human);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
    assert_eq!(names(&d.cancel), vec!["pass"]);
    // Then our own pass result arrives: nothing more to do.
    let done = run(&d.thread, Input::PassDone(done(&d.thread, Ok(()))));
    assert_quiet(&done, &d.thread);
    assert_eq!(done.thread, d.thread);
}

#[test]
fn another_app_taking_while_returning_cancels_our_take() {
    let before = thread(State::Returning);
    let d = on(&before, &take_event(Some(OTHER_APP)));
    assert_moved(&d, &before, State::Human);
    assert_eq!(sorted(names(&d.cancel)), vec!["pass", "take"]);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(OTHER_APP));
    assert_eq!(d.thread.return_reason, None);
    assert_eq!(d.thread.human_since, Some(NOW));
}

#[test]
fn control_moving_between_other_apps_keeps_the_human_stay() {
    let p = policy_with_idle(IDLE);
    let before = thread(State::Human);
    let d = run_with(&before, Input::Event(&pass_event(Some(OTHER_APP))), &p, NOW);
    assert_eq!(d.thread.state, State::Human);
    assert_eq!(d.thread.state_since, T0);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(OTHER_APP));
    // Same stay: same generation, no second idle timer.
    assert_eq!(d.thread.human_since, Some(T0));
    assert!(d.jobs.is_empty(), "{:?}", jobs(&d));
}

#[test]
fn control_events_without_a_new_owner_are_ignored() {
    for state in ALL_STATES {
        for e in [pass_event(None), take_event(None)] {
            let before = thread(state);
            let d = on(&before, &e);
            assert_quiet(&d, &before);
            assert_eq!(d.thread, before);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flow 5: the inbox asks for the thread
// ---------------------------------------------------------------------------------------------

#[test]
fn request_from_the_inbox_while_bot_passes_now() {
    let before = thread(State::Bot);
    let d = on(&before, &request(Some(INBOX)));
    assert_moved(&d, &before, State::Passing);
    assert_eq!(jobs(&d), vec![pass_after(0)]);
    assert_eq!(
        names(&d.cancel),
        vec!["take", "sync_contexts", "send_welcome"]
    );
}

#[test]
fn request_from_another_app_or_nobody_does_nothing() {
    for requested in [Some(OTHER_APP), Some(APP), None] {
        let before = thread(State::Bot);
        let d = on(&before, &request(requested));
        assert_quiet(&d, &before);
        assert_eq!(d.thread, before, "{requested:?}");
    }
}

#[test]
fn request_from_the_inbox_when_it_is_passing_or_human_does_nothing() {
    for state in [State::Passing, State::Human] {
        let before = thread(state);
        let d = on(&before, &request(Some(INBOX)));
        assert_quiet(&d, &before);
        assert_eq!(d.thread, before, "{state:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Agent echoes
// ---------------------------------------------------------------------------------------------

#[test]
fn agent_echo_while_human_records_agent_activity() {
    let before = thread(State::Human);
    let d = on(&before, &echo(Some(INBOX), "Hi, I'm Anna from support"));
    assert_quiet(&d, &before);
    let mut expected = before.clone();
    expected.last_agent_msg_at = Some(EVENT_TS);
    assert_eq!(d.thread, expected);
}

#[test]
fn agent_activity_time_never_goes_backwards() {
    let mut before = thread(State::Human);
    before.last_agent_msg_at = Some(EVENT_TS + 5);
    let d = on(&before, &echo(Some(INBOX), "hello"));
    assert_eq!(d.thread.last_agent_msg_at, Some(EVENT_TS + 5));
}

#[test]
fn echo_without_app_id_counts_as_an_agent() {
    let before = thread(State::Human);
    let d = on(&before, &echo(None, "typed in the Page app"));
    assert_eq!(d.thread.last_agent_msg_at, Some(EVENT_TS));
    let d = on(&before, &echo(None, "#bot"));
    assert_eq!(d.thread.state, State::Returning);
}

#[test]
fn agent_hash_bot_hands_the_thread_back() {
    for text in ["#bot", "#BOT ", " #Bot. "] {
        let before = thread(State::Human);
        let d = on(&before, &echo(Some(INBOX), text));
        assert_moved(&d, &before, State::Returning);
        assert_eq!(jobs(&d), vec![take_soon()], "{text:?}");
        assert!(names(&d.cancel).contains(&"pass"));
        assert_eq!(d.thread.return_reason, Some(ReturnReason::Agent));
        assert_eq!(d.thread.last_agent_msg_at, Some(EVENT_TS));

        let d2 = run(&d.thread, Input::TakeDone(done(&d.thread, Ok(()))));
        assert_eq!(d2.thread.state, State::Bot);
        assert_eq!(
            jobs(&d2),
            vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)]
        );
    }
}

#[test]
fn agent_text_that_is_not_exactly_a_phrase_does_not_hand_back() {
    for text in ["bot", "#bot please", "back to bot", "# bot"] {
        let before = thread(State::Human);
        let d = on(&before, &echo(Some(INBOX), text));
        assert_quiet(&d, &before);
        assert_eq!(d.thread.last_agent_msg_at, Some(EVENT_TS), "{text:?}");
    }
}

#[test]
fn echo_of_our_own_app_proves_the_bot_has_the_thread() {
    // Never a command, and no news while the bot is believed to have the thread.
    for state in [State::Bot, State::Passing] {
        for text in ["#bot", "Welcome back!"] {
            let before = thread(state);
            let d = on(&before, &echo(Some(APP), text));
            assert_quiet(&d, &before);
            assert_eq!(d.thread, before, "{state:?} {text:?}");
            assert_eq!(d.cause, None);
        }
    }
    // A return the service missed (a lost "Done"): corrected quietly.
    for state in [State::Human, State::Idle] {
        let before = thread(state);
        let d = on(&before, &echo(Some(APP), "#bot"));
        assert_moved(&d, &before, State::Bot);
        assert!(d.jobs.is_empty(), "{:?}", jobs(&d));
    }
    // Our take landed.
    let before = thread(State::Returning);
    let d = on(&before, &echo(Some(APP), "Order A-1042 is on its way."));
    assert_moved(&d, &before, State::Bot);
    assert_eq!(
        jobs(&d),
        vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)]
    );
}

#[test]
fn agent_hash_bot_while_returning_does_not_take_again() {
    let before = thread(State::Returning);
    let d = on(&before, &echo(Some(INBOX), "#bot"));
    assert_quiet(&d, &before);
    assert_eq!(d.thread.last_agent_msg_at, Some(EVENT_TS));
}

#[test]
fn agent_echo_while_bot_is_evidence_and_hash_bot_then_takes() {
    // The inbox could only write because it owns the thread: the belief "BOT" was wrong.
    let before = thread(State::Bot);
    let d = on(&before, &echo(Some(INBOX), "Hi, Sam here"));
    assert_moved(&d, &before, State::Human);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
    let d = on(&before, &echo(Some(INBOX), "#bot"));
    assert_moved(&d, &before, State::Returning);
    assert_eq!(jobs(&d), vec![take_soon()]);
    assert_eq!(d.thread.return_reason, Some(ReturnReason::Agent));
}

// ---------------------------------------------------------------------------------------------
// Pass and take results
// ---------------------------------------------------------------------------------------------

#[test]
fn pass_done_ok_while_passing_means_human_with_the_inbox() {
    let before = thread(State::Passing);
    let d = run(&before, Input::PassDone(done(&before, Ok(()))));
    assert_moved(&d, &before, State::Human);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
    assert_eq!(d.thread.human_since, Some(NOW));
    assert!(d.jobs.is_empty());
}

#[test]
fn pass_done_not_thread_owner_means_human() {
    let p = policy_with_idle(IDLE);
    let before = thread(State::Passing);
    let d = run_with(
        &before,
        Input::PassDone(done(&before, Err(not_owner()))),
        &p,
        NOW,
    );
    assert_moved(&d, &before, State::Human);
    // Someone else owns it; we do not know who.
    assert_eq!(d.thread.owner_app_id, None);
    assert_eq!(d.thread.human_since, Some(NOW));
    assert_eq!(jobs(&d), vec![idle_check(NOW, IDLE)]);
}

#[test]
fn pass_done_other_failure_leaves_the_bot_in_charge() {
    let before = thread(State::Passing);
    let d = run(
        &before,
        Input::PassDone(done(&before, Err(other_failure()))),
    );
    assert_moved(&d, &before, State::Bot);
    assert!(
        d.thread
            .last_error
            .as_deref()
            .unwrap()
            .ends_with(&other_failure().message)
    );
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(APP));
    assert_eq!(
        jobs(&d),
        vec![
            "clear_handover_context @0".to_owned(),
            welcome_now(WelcomeKind::HandoverFailed)
        ]
    );
    assert!(d.cause.as_deref().unwrap().contains("Service temporarily"));
}

#[test]
fn pass_done_after_a_return_cancelled_it_takes_back() {
    let passing = thread(State::Passing);
    let returned = run(
        &passing,
        Input::ReturnByFulfillment {
            session: SESSION.into(),
            heard_at: None,
        },
    );
    assert_eq!(returned.thread.state, State::Bot);
    // The pass was already running and went through.
    let d = run(&returned.thread, Input::PassDone(done(&passing, Ok(()))));
    assert_eq!(d.thread.state, State::Returning);
    assert_eq!(d.thread.state_since, NOW);
    assert!(d.cause.is_some());
    assert_eq!(jobs(&d), vec![take_now()]);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
    // The fulfillment already answered the user: no sync or welcome after the take either.
    let d2 = run(&d.thread, Input::TakeDone(done(&d.thread, Ok(()))));
    assert_eq!(d2.thread.state, State::Bot);
    assert!(d2.jobs.is_empty(), "{:?}", jobs(&d2));
}

#[test]
fn pass_done_in_other_states_changes_nothing() {
    for state in [State::Human, State::Returning, State::Idle] {
        let before = thread(state);
        let d = run(&before, Input::PassDone(done(&before, Ok(()))));
        assert_quiet(&d, &before);
        assert_eq!(d.thread, before, "{state:?}");
    }
    for state in [State::Bot, State::Human, State::Returning, State::Idle] {
        let before = thread(state);
        let d = run(
            &before,
            Input::PassDone(done(&before, Err(other_failure()))),
        );
        assert_quiet(&d, &before);
        assert_eq!(d.thread, before, "{state:?}");
    }
}

#[test]
fn take_done_failure_leaves_the_thread_with_the_human() {
    for failure in [not_owner(), other_failure()] {
        let before = thread(State::Returning);
        let d = run(
            &before,
            Input::TakeDone(done(&before, Err(failure.clone()))),
        );
        assert_moved(&d, &before, State::Human);
        assert_eq!(d.thread.last_error, Some(failure.message.clone()));
        assert_eq!(d.thread.return_reason, None);
        assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
        // A new stay in HUMAN: a new idle-timer generation.
        assert_eq!(d.thread.human_since, Some(NOW));
        assert!(d.jobs.is_empty(), "idle timeout off: {:?}", jobs(&d));
    }
}

#[test]
fn take_done_failure_restarts_the_idle_timer() {
    let p = policy_with_idle(IDLE);
    let before = thread(State::Returning);
    let d = run_with(
        &before,
        Input::TakeDone(done(&before, Err(not_owner()))),
        &p,
        NOW,
    );
    assert_eq!(d.thread.state, State::Human);
    assert_eq!(jobs(&d), vec![idle_check(NOW, IDLE)]);
    // Without a new timer the thread would never be taken back by the idle timeout.
    let later = NOW + IDLE;
    let check = run_with(&d.thread, Input::IdleCheck { generation: NOW }, &p, later);
    assert_eq!(check.thread.state, State::Returning);
}

#[test]
fn take_done_while_bot_is_a_second_signal() {
    let before = thread(State::Bot);
    let d = run(&before, Input::TakeDone(done(&before, Ok(()))));
    assert_quiet(&d, &before);
    assert_eq!(d.thread, before);
}

// ---------------------------------------------------------------------------------------------
// Flow 4: agent idle timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn idle_check_when_due_takes_back_with_the_timeout_text() {
    let p = policy_with_idle(IDLE);
    let before = thread(State::Human);
    let now = T0 + IDLE;
    let d = run_with(&before, Input::IdleCheck { generation: T0 }, &p, now);
    assert_eq!(d.thread.state, State::Returning);
    assert_eq!(d.thread.state_since, now);
    assert!(d.cause.is_some());
    assert_eq!(jobs(&d), vec![take_soon()]);
    assert_eq!(d.thread.return_reason, Some(ReturnReason::AgentTimeout));

    let d2 = run_with(
        &d.thread,
        Input::TakeDone(done(&d.thread, Ok(()))),
        &p,
        now + 500,
    );
    assert_eq!(d2.thread.state, State::Bot);
    assert_eq!(
        jobs(&d2),
        vec![sync_now(), welcome_now(WelcomeKind::AgentTimeout)]
    );
    assert_eq!(d2.thread.return_reason, None);
}

#[test]
fn idle_check_reported_by_the_take_event_also_uses_the_timeout_text() {
    let mut before = thread(State::Returning);
    before.return_reason = Some(ReturnReason::AgentTimeout);
    let d = on(&before, &take_event(Some(APP)));
    assert_eq!(
        jobs(&d),
        vec![sync_now(), welcome_now(WelcomeKind::AgentTimeout)]
    );
}

#[test]
fn idle_check_not_due_reschedules_after_agent_activity() {
    let p = policy_with_idle(IDLE);
    let mut before = thread(State::Human);
    before.last_agent_msg_at = Some(T0 + 100_000);
    let now = T0 + IDLE; // due for the stay, not for the last agent message
    let d = run_with(&before, Input::IdleCheck { generation: T0 }, &p, now);
    assert_quiet_but_jobs(&d, &before);
    // Due at last agent message + timeout.
    let due = T0 + 100_000 + IDLE;
    assert_eq!(jobs(&d), vec![idle_check(T0, due - now)]);
    assert_eq!(d.jobs[0].delay_ms, 100_000);
}

#[test]
fn idle_check_early_reschedules_for_the_rest_of_the_timeout() {
    let p = policy_with_idle(IDLE);
    let before = thread(State::Human);
    let now = T0 + 1_000;
    let d = run_with(&before, Input::IdleCheck { generation: T0 }, &p, now);
    assert_quiet_but_jobs(&d, &before);
    assert_eq!(jobs(&d), vec![idle_check(T0, IDLE - 1_000)]);
}

#[test]
fn idle_check_ignores_agent_messages_from_an_earlier_stay() {
    let p = policy_with_idle(IDLE);
    let mut before = thread(State::Human);
    before.last_agent_msg_at = Some(T0 - 1_000_000);
    let d = run_with(&before, Input::IdleCheck { generation: T0 }, &p, T0 + IDLE);
    assert_eq!(d.thread.state, State::Returning);
}

#[test]
fn idle_check_stale_generation_or_wrong_state_or_disabled_does_nothing() {
    let p = policy_with_idle(IDLE);
    let now = T0 + 10 * IDLE;
    // A timer from an earlier stay.
    let before = thread(State::Human);
    let d = run_with(&before, Input::IdleCheck { generation: T0 - 1 }, &p, now);
    assert_quiet(&d, &before);
    assert_eq!(d.thread, before);
    // Not in HUMAN any more.
    for state in [State::Bot, State::Passing, State::Returning, State::Idle] {
        let mut before = thread(state);
        before.human_since = Some(T0);
        let d = run_with(&before, Input::IdleCheck { generation: T0 }, &p, now);
        assert_quiet(&d, &before);
        assert_eq!(d.thread, before, "{state:?}");
    }
    // The timeout was switched off since the timer was queued.
    let before = thread(State::Human);
    let d = run(&before, Input::IdleCheck { generation: T0 });
    assert_quiet(&d, &before);
    assert_eq!(d.thread, before);
}

#[test]
fn idle_check_survives_absurd_agent_timestamps() {
    let p = policy_with_idle(IDLE);
    let mut before = thread(State::Human);
    before.last_agent_msg_at = Some(i64::MAX);
    let d = run_with(&before, Input::IdleCheck { generation: T0 }, &p, T0 + IDLE);
    assert_eq!(d.thread.state, State::Human);
    assert_eq!(d.jobs.len(), 1);
    assert!(d.jobs[0].delay_ms > 0);
}

#[track_caller]
fn assert_quiet_but_jobs(d: &Decision, before: &Thread) {
    assert_eq!(d.thread, *before);
    assert!(d.cancel.is_empty());
    assert_eq!(d.cause, None);
}

// ---------------------------------------------------------------------------------------------
// Welcome back
// ---------------------------------------------------------------------------------------------

#[test]
fn welcome_deferred_is_kept() {
    for kind in [WelcomeKind::WelcomeBack, WelcomeKind::AgentTimeout] {
        let before = thread(State::Bot);
        let d = run(&before, Input::WelcomeDeferred { kind, epoch: 1 });
        assert_quiet(&d, &before);
        assert_eq!(d.thread.pending_welcome, Some(kind));
    }
}

#[test]
fn welcome_sent_clears_the_pending_welcome() {
    let mut before = thread(State::Bot);
    before.pending_welcome = Some(WelcomeKind::AgentTimeout);
    let d = run(
        &before,
        Input::WelcomeSent {
            epoch: 1,
            kind: WelcomeKind::AgentTimeout,
            result: Ok(()),
        },
    );
    assert_quiet(&d, &before);
    assert_eq!(d.thread.pending_welcome, None);
    assert!(d.cause.as_deref().unwrap().contains("agent_timeout"));
}

#[test]
fn welcome_not_owner_means_human_and_keeps_the_welcome() {
    let p = policy_with_idle(IDLE);
    let before = thread(State::Bot);
    let d = run_with(
        &before,
        Input::WelcomeSent {
            epoch: 1,
            kind: WelcomeKind::WelcomeBack,
            result: Err(not_owner()),
        },
        &p,
        NOW,
    );
    assert_moved(&d, &before, State::Human);
    assert_eq!(d.thread.pending_welcome, Some(WelcomeKind::WelcomeBack));
    assert_eq!(d.thread.owner_app_id, None);
    assert_eq!(d.thread.human_since, Some(NOW));
    // The idle timer runs for this stay like for any other.
    assert_eq!(jobs(&d), vec![idle_check(NOW, IDLE)]);
}

#[test]
fn welcome_not_owner_while_human_keeps_the_stay() {
    let p = policy_with_idle(IDLE);
    let before = thread(State::Human);
    let d = run_with(
        &before,
        Input::WelcomeSent {
            epoch: 1,
            kind: WelcomeKind::WelcomeBack,
            result: Err(not_owner()),
        },
        &p,
        NOW,
    );
    assert_eq!(d.thread.state, State::Human);
    assert_eq!(d.thread.state_since, T0);
    // The running idle timer's generation stays valid.
    assert_eq!(d.thread.human_since, Some(T0));
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
    assert!(d.jobs.is_empty(), "{:?}", jobs(&d));
    assert_eq!(d.thread.pending_welcome, Some(WelcomeKind::WelcomeBack));
}

#[test]
fn welcome_outside_the_window_waits_for_the_user() {
    let before = thread(State::Bot);
    let d = run(
        &before,
        Input::WelcomeSent {
            epoch: 1,
            kind: WelcomeKind::AgentTimeout,
            result: Err(outside_window()),
        },
    );
    assert_quiet(&d, &before);
    assert_eq!(d.thread.pending_welcome, Some(WelcomeKind::AgentTimeout));
    assert!(d.cause.is_some());
    assert_eq!(d.thread.last_error, None);
}

#[test]
fn welcome_other_failure_is_recorded() {
    let before = thread(State::Bot);
    let d = run(
        &before,
        Input::WelcomeSent {
            epoch: 1,
            kind: WelcomeKind::WelcomeBack,
            result: Err(other_failure()),
        },
    );
    assert_quiet(&d, &before);
    assert_eq!(d.thread.last_error, Some(other_failure().message));
    assert_eq!(d.thread.pending_welcome, None);
}

#[test]
fn user_message_while_bot_sends_the_kept_welcome() {
    for kind in [WelcomeKind::WelcomeBack, WelcomeKind::AgentTimeout] {
        let mut before = thread(State::Bot);
        before.pending_welcome = Some(kind);
        let d = on(&before, &message(Channel::Messaging, "hello again"));
        assert_eq!(d.thread.state, State::Bot);
        assert_eq!(jobs(&d), vec![welcome_now(kind)]);
        assert_eq!(d.thread.pending_welcome, None);
        assert_eq!(d.thread.last_user_msg_at, Some(EVENT_TS));
        assert!(d.cause.is_some());
    }
    // Even if the message is a return phrase: the bot already has the thread.
    let mut before = thread(State::Bot);
    before.pending_welcome = Some(WelcomeKind::WelcomeBack);
    let d = on(&before, &message(Channel::Messaging, "back to bot"));
    assert_eq!(jobs(&d), vec![welcome_now(WelcomeKind::WelcomeBack)]);
}

#[test]
fn user_message_without_a_kept_welcome_or_not_bot_sends_nothing() {
    let before = thread(State::Bot);
    let d = on(&before, &message(Channel::Messaging, "hello"));
    assert_untouched_but_user_time(&d, &before);
    let mut before = thread(State::Human);
    before.pending_welcome = Some(WelcomeKind::WelcomeBack);
    let d = on(&before, &standby("hello"));
    assert_untouched_but_user_time(&d, &before);
    assert_eq!(d.thread.pending_welcome, Some(WelcomeKind::WelcomeBack));
}

#[test]
fn welcome_plan_follows_ownership_and_the_24_hour_window() {
    let mut t = thread(State::Bot);
    t.last_user_msg_at = Some(NOW - HOUR_MS);
    assert_eq!(welcome_plan(&t, t.epoch, NOW), WelcomePlan::Send);
    t.last_user_msg_at = Some(NOW - DAY_MS + 1);
    assert_eq!(welcome_plan(&t, t.epoch, NOW), WelcomePlan::Send);
    for outside in [Some(NOW - DAY_MS), Some(NOW - 2 * DAY_MS), None] {
        t.last_user_msg_at = outside;
        assert!(
            matches!(welcome_plan(&t, t.epoch, NOW), WelcomePlan::Defer(why) if why.contains("24-hour")),
            "{outside:?}"
        );
    }
    for state in [State::Passing, State::Human, State::Returning, State::Idle] {
        let mut t = thread(state);
        t.last_user_msg_at = Some(NOW - 1_000);
        assert!(
            matches!(welcome_plan(&t, t.epoch, NOW), WelcomePlan::Defer(why) if why.contains("does not own")),
            "{state:?}"
        );
    }
}

#[test]
fn welcome_kept_outside_the_window_goes_out_with_the_next_message() {
    // The agent handed back two days after the user last wrote.
    let mut human = thread(State::Human);
    human.last_user_msg_at = Some(NOW - 2 * DAY_MS);
    let back = on(&human, &pass_event(Some(APP)));
    assert_eq!(back.thread.state, State::Bot);
    assert!(matches!(
        welcome_plan(&back.thread, back.thread.epoch, NOW),
        WelcomePlan::Defer(_)
    ));
    let deferred = run(
        &back.thread,
        Input::WelcomeDeferred {
            epoch: back.thread.epoch,
            kind: WelcomeKind::WelcomeBack,
        },
    );
    let wrote = on(&deferred.thread, &message(Channel::Messaging, "hi"));
    assert_eq!(jobs(&wrote), vec![welcome_now(WelcomeKind::WelcomeBack)]);
    assert_eq!(
        welcome_plan(&wrote.thread, wrote.thread.epoch, NOW),
        WelcomePlan::Send
    );
}

// ---------------------------------------------------------------------------------------------
// thread_owner answers
// ---------------------------------------------------------------------------------------------

#[test]
fn owner_checked_bot_while_passing_means_the_pass_never_completed() {
    let before = thread(State::Passing);
    let d = run(
        &before,
        Input::OwnerChecked(checked(Owner::App(APP.into()))),
    );
    assert_moved(&d, &before, State::Bot);
    assert_eq!(names(&d.cancel), vec!["pass"]);
    // The user is told, and the handover context is cleared.
    assert_eq!(
        jobs(&d),
        vec![
            "clear_handover_context @0".to_owned(),
            welcome_now(WelcomeKind::HandoverFailed)
        ]
    );
    assert!(d.thread.last_error.is_some());
}

#[test]
fn owner_checked_bot_after_a_human_stay_corrects_and_a_return_welcomes() {
    // The reconciler finds the bot owns a thread it thought was with the inbox: the
    // conversation with the bot may have moved on, so only the state is corrected.
    let before = thread(State::Human);
    let d = run(
        &before,
        Input::OwnerChecked(checked(Owner::App(APP.into()))),
    );
    assert_moved(&d, &before, State::Bot);
    assert_eq!(jobs(&d), Vec::<String>::new());
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(APP));

    let mut before = thread(State::Returning);
    before.return_reason = Some(ReturnReason::AgentTimeout);
    let d = run(
        &before,
        Input::OwnerChecked(checked(Owner::App(APP.into()))),
    );
    assert_moved(&d, &before, State::Bot);
    assert_eq!(
        jobs(&d),
        vec![sync_now(), welcome_now(WelcomeKind::AgentTimeout)]
    );
    assert_eq!(sorted(names(&d.cancel)), vec!["pass", "take"]);
}

#[test]
fn owner_checked_bot_while_bot_changes_nothing_but_the_owner() {
    let mut before = thread(State::Bot);
    before.owner_app_id = None;
    let d = run(
        &before,
        Input::OwnerChecked(checked(Owner::App(APP.into()))),
    );
    assert_quiet(&d, &before);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(APP));
}

#[test]
fn owner_checked_another_app_means_human_with_that_owner() {
    // Stuck in RETURNING with another owner: the take never happened, so it is made again.
    let before = thread(State::Returning);
    let d = run(
        &before,
        Input::OwnerChecked(checked(Owner::App(OTHER_APP.into()))),
    );
    assert_eq!(d.thread.state, State::Returning);
    assert_eq!(jobs(&d), vec![take_now()]);
    for state in [State::Bot, State::Passing, State::Idle] {
        let before = thread(state);
        let d = run(
            &before,
            Input::OwnerChecked(checked(Owner::App(OTHER_APP.into()))),
        );
        assert_moved(&d, &before, State::Human);
        assert_eq!(d.thread.owner_app_id.as_deref(), Some(OTHER_APP));
        assert_eq!(d.thread.human_since, Some(NOW));
        assert!(names(&d.cancel).contains(&"pass"));
        assert_eq!(
            names(&d.cancel).contains(&"take"),
            state == State::Returning
        );
    }
    let before = thread(State::Human);
    let d = run(
        &before,
        Input::OwnerChecked(checked(Owner::App(OTHER_APP.into()))),
    );
    assert_eq!(d.thread.state, State::Human);
    assert_eq!(d.thread.state_since, T0);
    assert_eq!(d.thread.human_since, Some(T0));
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(OTHER_APP));
}

#[test]
fn owner_checked_hidden_means_human_with_an_unknown_owner() {
    let before = thread(State::Bot);
    let d = run(&before, Input::OwnerChecked(checked(Owner::Hidden)));
    assert_moved(&d, &before, State::Human);
    assert_eq!(d.thread.owner_app_id, None);
    // Already with a known human owner: keep what we know.
    let before = thread(State::Human);
    let d = run(&before, Input::OwnerChecked(checked(Owner::Hidden)));
    assert_eq!(d.thread.state, State::Human);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
}

#[test]
fn owner_checked_idle_means_idle() {
    for state in [State::Bot, State::Passing, State::Human, State::Returning] {
        let before = thread(state);
        let d = run(&before, Input::OwnerChecked(checked(Owner::Idle)));
        assert_moved(&d, &before, State::Idle);
        assert_eq!(d.thread.owner_app_id, None);
        assert_eq!(sorted(names(&d.cancel)), vec!["pass", "take"]);
        assert!(d.jobs.is_empty());
    }
    let before = thread(State::Idle);
    let d = run(&before, Input::OwnerChecked(checked(Owner::Idle)));
    assert_quiet(&d, &before);
    assert_eq!(d.thread, before);
}

// ---------------------------------------------------------------------------------------------
// Other fulfillment calls
// ---------------------------------------------------------------------------------------------

#[test]
fn remember_session_never_moves_the_thread() {
    // Postbacks of old bot buttons reach the integration whoever owns the thread: an
    // ordinary intent is no evidence that the bot owns it.
    for state in ALL_STATES {
        let before = thread(state);
        let d = run(
            &before,
            Input::RememberSession {
                session: "projects/demo/agent/sessions/new".into(),
            },
        );
        assert_eq!(d.thread.state, state);
        assert_eq!(d.thread.owner_app_id, before.owner_app_id);
        assert_eq!(
            d.thread.session.as_deref(),
            Some("projects/demo/agent/sessions/new")
        );
        assert_eq!(d.thread.last_user_msg_at, Some(NOW));
        assert!(d.jobs.is_empty());
    }
}

#[test]
fn remember_session_in_other_states_keeps_the_state() {
    for state in [State::Bot, State::Passing, State::Returning] {
        let before = thread(state);
        let d = run(
            &before,
            Input::RememberSession {
                session: SESSION.into(),
            },
        );
        assert_quiet(&d, &before);
        assert_eq!(d.thread.last_user_msg_at, Some(NOW));
        assert_eq!(d.cause, None);
    }
}

// ---------------------------------------------------------------------------------------------
// Properties over every state and many inputs
// ---------------------------------------------------------------------------------------------

/// Every state, each with a few shapes of the other fields.
fn thread_variants() -> Vec<Thread> {
    let mut out = Vec::new();
    for state in ALL_STATES {
        let base = thread(state);
        out.push(base.clone());
        let mut bare = Thread::new(PAGE, USER, T0);
        bare.state = state;
        out.push(bare);
        for reason in [
            ReturnReason::User,
            ReturnReason::Agent,
            ReturnReason::AgentTimeout,
            ReturnReason::Fulfillment,
            ReturnReason::Admin,
        ] {
            let mut t = base.clone();
            t.return_reason = Some(reason);
            t.pending_welcome = Some(WelcomeKind::AgentTimeout);
            t.human_since = Some(T0);
            out.push(t);
        }
        let mut extreme = base.clone();
        extreme.human_since = Some(T0);
        extreme.last_agent_msg_at = Some(i64::MAX);
        extreme.last_user_msg_at = Some(i64::MAX);
        out.push(extreme);
        let mut ancient = base.clone();
        ancient.human_since = Some(T0);
        ancient.last_agent_msg_at = Some(1);
        ancient.last_user_msg_at = Some(1);
        out.push(ancient);
    }
    out
}

fn event_variants() -> Vec<IncomingEvent> {
    let mut events = Vec::new();
    for channel in [Channel::Messaging, Channel::Standby] {
        for text in ["Back to bot!", "hello", "#bot", ""] {
            events.push(message(channel, text));
        }
        events.push(event(
            channel,
            EventKind::Message {
                mid: String::new(),
                text: None,
                quick_reply_payload: Some("BACK_TO_BOT".into()),
            },
        ));
        for payload in ["BACK_TO_BOT", "GET_STARTED"] {
            events.push(postback(channel, payload));
        }
        events.push(event(
            channel,
            EventKind::Postback {
                mid: None,
                title: None,
                payload: None,
            },
        ));
    }
    for app in [Some(APP), Some(INBOX), Some(OTHER_APP), None] {
        for text in ["#bot", "hello"] {
            events.push(echo(app, text));
        }
        events.push(pass_event(app));
        events.push(take_event(app));
        events.push(request(app));
    }
    events.push(event(
        Channel::Messaging,
        EventKind::Echo {
            mid: "m".into(),
            app_id: Some(INBOX.into()),
            text: None,
            metadata: Some("x".into()),
        },
    ));
    events.push(event(Channel::Messaging, EventKind::Read));
    events.push(event(Channel::Standby, EventKind::Delivery));
    events.push(event(
        Channel::Messaging,
        EventKind::Other {
            key: "referral".into(),
        },
    ));
    // Odd timestamps: missing, tiny, saturated.
    let mut odd = Vec::new();
    for ts in [0, 1, i64::MAX] {
        for e in [
            standby("hello"),
            echo(Some(INBOX), "hi"),
            echo(Some(INBOX), "#bot"),
        ] {
            let mut e = e;
            e.timestamp_ms = ts;
            odd.push(e);
        }
    }
    events.extend(odd);
    events
}

fn non_event_inputs() -> Vec<Input<'static>> {
    let mut inputs = vec![
        Input::Handover {
            session: SESSION.into(),
            snapshot: json!([{"name": "c"}]).into(),
            asked_at: None,
        },
        Input::Handover {
            session: String::new(),
            snapshot: serde_json::Value::Null.into(),
            asked_at: None,
        },
        Input::ReturnByFulfillment {
            session: SESSION.into(),
            heard_at: None,
        },
        Input::RememberSession {
            session: SESSION.into(),
        },
        Input::PassDone(done(&thread(State::Bot), Ok(()))),
        Input::TakeDone(done(&thread(State::Bot), Ok(()))),
        Input::OwnerChecked(checked(Owner::Idle)),
        Input::OwnerChecked(checked(Owner::Hidden)),
        Input::OwnerChecked(checked(Owner::App(APP.into()))),
        Input::OwnerChecked(checked(Owner::App(INBOX.into()))),
        Input::OwnerChecked(checked(Owner::App(String::new()))),
    ];
    for failure in [not_owner(), outside_window(), other_failure()] {
        inputs.push(Input::PassDone(done(
            &thread(State::Bot),
            Err(failure.clone()),
        )));
        inputs.push(Input::TakeDone(done(
            &thread(State::Bot),
            Err(failure.clone()),
        )));
        for kind in [WelcomeKind::WelcomeBack, WelcomeKind::AgentTimeout] {
            inputs.push(Input::WelcomeSent {
                epoch: 1,
                kind,
                result: Err(failure.clone()),
            });
        }
    }
    for kind in [WelcomeKind::WelcomeBack, WelcomeKind::AgentTimeout] {
        inputs.push(Input::WelcomeSent {
            epoch: 1,
            kind,
            result: Ok(()),
        });
        inputs.push(Input::WelcomeDeferred { kind, epoch: 1 });
    }
    for generation in [T0, T0 - 1, 0, i64::MAX, i64::MIN] {
        inputs.push(Input::IdleCheck { generation });
    }
    for note in [None, Some("the customer called".to_owned())] {
        inputs.push(Input::AdminReturn { note: note.clone() });
        inputs.push(Input::AdminHandover { note });
    }
    inputs
}

fn policies() -> Vec<Policy> {
    let mut odd = policy_with_idle(1);
    odd.pass_delay_ms = -5;
    vec![
        policy(),
        policy_with_idle(IDLE),
        policy_with_idle(i64::MAX),
        odd,
    ]
}

#[track_caller]
fn check_invariants(before: &Thread, input: &Input<'_>, policy: &Policy, now: i64) {
    let d = decide(before, input, policy, now);
    let ctx = || format!("before {before:?}\ninput {input:?}\ndecision {d:#?}");
    let state = d.thread.state;
    // state_since changes exactly when the state does.
    assert_eq!(
        state != before.state,
        d.thread.state_since != before.state_since,
        "{}",
        ctx()
    );
    if state != before.state {
        assert_eq!(d.thread.state_since, now, "{}", ctx());
        assert!(d.cause.is_some(), "a transition without a cause: {}", ctx());
    }
    assert_eq!(d.thread.account_id, before.account_id);
    // Time and epochs only move forward; no message for an epoch not begun.
    assert!(d.thread.state_at >= before.state_at, "{}", ctx());
    assert!(d.thread.epoch >= before.epoch, "{}", ctx());
    assert!(d.thread.notified_epoch <= d.thread.epoch, "{}", ctx());
    assert_eq!(d.thread.user_id, before.user_id);
    for job in &d.jobs {
        assert!(job.delay_ms >= 0, "{}", ctx());
        match &job.payload {
            JobPayload::Take { .. } => {
                assert_eq!(state, State::Returning, "take outside RETURNING: {}", ctx())
            }
            JobPayload::Pass { target_app_id, .. } => {
                assert_eq!(state, State::Passing, "pass outside PASSING: {}", ctx());
                assert_eq!(*target_app_id, policy.target_app_id);
            }
            JobPayload::SyncContexts { .. } | JobPayload::ClearHandoverContext { .. } => {
                assert_eq!(state, State::Bot, "sync outside BOT: {}", ctx())
            }
            JobPayload::SendWelcome { epoch, .. } => {
                assert_eq!(state, State::Bot, "welcome outside BOT: {}", ctx());
                // Once per return: for the current epoch, never one already given.
                assert_eq!(*epoch, d.thread.epoch, "{}", ctx());
                assert!(
                    before.notified_epoch < *epoch,
                    "a second welcome: {}",
                    ctx()
                );
            }
            JobPayload::CheckOwner { .. } => {}
            JobPayload::IdleCheck { generation } => {
                assert_eq!(state, State::Human, "idle check outside HUMAN: {}", ctx());
                assert_eq!(d.thread.human_since, Some(*generation), "{}", ctx());
                assert!(policy.idle_timeout_ms > 0, "{}", ctx());
            }
            other => panic!("unexpected job {other:?}: {}", ctx()),
        }
    }
    // At most one job of each kind.
    let mut kinds: Vec<_> = d.jobs.iter().map(|j| j.payload.kind().as_str()).collect();
    let n = kinds.len();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), n, "duplicate jobs: {}", ctx());
    // Nothing cancels the kind of job it just queued.
    for job in &d.jobs {
        assert!(
            !d.cancel.contains(&job.payload.kind()),
            "cancels its own {}: {}",
            job.payload.kind(),
            ctx()
        );
    }
    // A plain turn the service answers without a write (`turns`) would have changed nothing
    // but the time of the user's last message.
    if let Input::RememberSession { session } = input
        && TurnFacts::of(before).is_some_and(|f| f.cover(session, now))
    {
        let mut skipped = d.thread.clone();
        skipped.last_user_msg_at = before.last_user_msg_at;
        assert_eq!(&skipped, before, "{}", ctx());
        assert!(
            d.jobs.is_empty() && d.cancel.is_empty() && d.cause.is_none(),
            "{}",
            ctx()
        );
    }
    // Pure: the same call gives the same answer.
    assert_eq!(decide(before, input, policy, now), d, "{}", ctx());
}

#[test]
fn invariants_hold_for_every_state_and_input() {
    let threads = thread_variants();
    let events = event_variants();
    let mut inputs: Vec<Input<'_>> = non_event_inputs();
    inputs.extend(events.iter().map(Input::Event));
    let mut checked = 0;
    for policy in policies() {
        for t in &threads {
            for input in &inputs {
                for now in [NOW, T0 + IDLE, T0 + 2 * DAY_MS] {
                    check_invariants(t, input, &policy, now);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
}

/// Random walks through the machine: whatever order facts arrive in, the invariants hold at
/// every step and the state stays consistent with the owner where that is known.
#[test]
fn invariants_hold_along_random_walks() {
    let events = event_variants();
    let mut inputs: Vec<Input<'_>> = non_event_inputs();
    inputs.extend(events.iter().map(Input::Event));
    let p = policy_with_idle(IDLE);
    // A small deterministic generator (xorshift), so failures reproduce.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _walk in 0..300 {
        let mut t = thread(ALL_STATES[(next() % 5) as usize]);
        let mut now = NOW;
        for _step in 0..40 {
            let input = &inputs[(next() % inputs.len() as u64) as usize];
            now += (next() % 120_000) as i64;
            check_invariants(&t, input, &p, now);
            t = decide(&t, input, &p, now).thread;
            if matches!(t.state, State::Human) {
                assert!(t.human_since.is_some(), "HUMAN without a stay: {t:?}");
            }
        }
    }
}

#[test]
fn every_return_signal_after_a_human_stay_welcomes_once_in_total() {
    // Every pair of "the bot has it again" signals, in either order, from RETURNING.
    let signals: Vec<IncomingEvent> = vec![pass_event(Some(APP)), take_event(Some(APP))];
    let mut inputs: Vec<Input<'_>> = vec![
        Input::TakeDone(done(&thread(State::Bot), Ok(()))),
        Input::OwnerChecked(checked(Owner::App(APP.into()))),
    ];
    inputs.extend(signals.iter().map(Input::Event));
    for first in &inputs {
        for second in &inputs {
            let t = thread(State::Returning);
            let d1 = run(&t, first.clone());
            let d2 = run(&d1.thread, second.clone());
            let welcomes = d1
                .jobs
                .iter()
                .chain(&d2.jobs)
                .filter(|j| matches!(j.payload, JobPayload::SendWelcome { .. }))
                .count();
            assert_eq!(welcomes, 1, "{first:?} then {second:?}");
            assert_eq!(d2.thread.state, State::Bot);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Facts have times, decisions have epochs (late, reordered and unplaceable facts)
// ---------------------------------------------------------------------------------------------

/// A handover event caused by our own call of `epoch`, as Meta echoes its metadata.
fn our_event(pass: bool, epoch: i64, new_owner: &str, ts: i64) -> IncomingEvent {
    let metadata = Some(call_metadata("test", epoch));
    let kind = if pass {
        EventKind::PassThreadControl {
            new_owner_app_id: Some(new_owner.into()),
            previous_owner_app_id: Some(APP.into()),
            metadata,
        }
    } else {
        EventKind::TakeThreadControl {
            new_owner_app_id: Some(new_owner.into()),
            previous_owner_app_id: Some(INBOX.into()),
            metadata,
        }
    };
    let mut e = event(Channel::Messaging, kind);
    e.timestamp_ms = ts;
    e
}

#[test]
fn a_stale_take_event_of_an_earlier_return_does_not_cancel_a_new_handover() {
    // Returned (take of epoch 1), then asked for a person again (epoch 2): the late event of
    // the earlier take arrives, even with a timestamp that looks newer.
    let mut passing = thread(State::Passing);
    passing.epoch = 2;
    for ts in [T0 - 5_000, T0 + 10, NOW] {
        let d = on(&passing, &our_event(false, 1, APP, ts));
        assert_quiet(&d, &passing);
    }
}

#[test]
fn a_take_done_for_an_earlier_return_does_not_cancel_a_new_handover() {
    let mut passing = thread(State::Passing);
    passing.epoch = 2;
    let mut call = done(&passing, Ok(()));
    call.epoch = 1;
    let d = run(&passing, Input::TakeDone(call));
    assert_quiet(&d, &passing);
}

#[test]
fn our_own_events_are_placed_by_their_epoch() {
    // This handover's pass reaches the inbox: HUMAN, whatever the timestamp.
    let passing = thread(State::Passing);
    let d = on(
        &passing,
        &our_event(true, passing.epoch, INBOX, T0 - 60_000),
    );
    assert_moved(&d, &passing, State::Human);
    // This return's take: BOT with sync and welcome.
    let returning = thread(State::Returning);
    let d = on(
        &returning,
        &our_event(false, returning.epoch, APP, T0 - 60_000),
    );
    assert_moved(&d, &returning, State::Bot);
    assert_eq!(
        jobs(&d),
        vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)]
    );
    // A pass of a handover that a return made moot lands: taken back.
    let mut bot = thread(State::Bot);
    bot.epoch = 2;
    bot.return_reason = Some(ReturnReason::User);
    let d = on(&bot, &our_event(true, 1, INBOX, NOW));
    assert_moved(&d, &bot, State::Returning);
    assert_eq!(jobs(&d), vec![take_now()]);
}

#[test]
fn a_stale_foreign_fact_does_not_overturn_the_state() {
    // HUMAN since T0 (our pass); a "Done" from another app, timestamped well before.
    let human = thread(State::Human);
    let mut done_event = pass_event(Some(APP));
    done_event.timestamp_ms = T0 - 30_000;
    if let EventKind::PassThreadControl {
        previous_owner_app_id,
        ..
    } = &mut done_event.kind
    {
        *previous_owner_app_id = Some(OTHER_APP.into());
    }
    let d = on(&human, &done_event);
    assert_quiet(&d, &human);
    // An inbox take from before the bot got the thread back.
    let bot = thread(State::Bot);
    let mut take = take_event(Some(INBOX));
    take.timestamp_ms = T0 - 30_000;
    assert_quiet(&on(&bot, &take), &bot);
}

#[test]
fn an_unplaceable_contradicting_fact_is_checked_with_thread_owner() {
    // The bot got the thread at T0; an agent's echo timestamped within the clock skew.
    let bot = thread(State::Bot);
    let mut e = echo(Some(INBOX), "Hi, Sam here");
    e.timestamp_ms = T0 - CLOCK_SKEW_MS / 2;
    let d = on(&bot, &e);
    assert_eq!(d.thread.state, State::Bot);
    assert_eq!(
        d.jobs.iter().map(|j| &j.payload).collect::<Vec<_>>(),
        vec![&JobPayload::CheckOwner {
            why: CheckWhy::Doubt
        }]
    );
    // The answer is trusted.
    let check = OwnerCheck {
        owner: Owner::App(INBOX.into()),
        why: CheckWhy::Doubt,
        started_at: NOW - 50,
    };
    let d = run(&d.thread, Input::OwnerChecked(check));
    assert_eq!(d.thread.state, State::Human);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(INBOX));
}

#[test]
fn our_pass_of_an_earlier_handover_is_not_undone_after_a_take() {
    // Handover 1 passed, return 2 took the thread back: the late event of pass 1 is old news.
    let mut bot = thread(State::Bot);
    bot.epoch = 2;
    bot.return_reason = None;
    let d = on(&bot, &our_event(true, 1, INBOX, NOW));
    assert_quiet(&d, &bot);
    let mut call = done(&bot, Ok(()));
    call.epoch = 1;
    assert_quiet(&run(&bot, Input::PassDone(call)), &bot);
}

#[test]
fn a_done_that_cannot_be_placed_is_checked() {
    // HUMAN since T0; a "Done" timestamped within the skew before: it may predate the pass
    // that gave the inbox the thread, so thread_owner decides.
    let human = thread(State::Human);
    let mut done_event = pass_event(Some(APP));
    done_event.timestamp_ms = T0 - CLOCK_SKEW_MS / 2;
    let d = on(&human, &done_event);
    assert_eq!(d.thread.state, State::Human);
    assert_eq!(
        d.jobs.iter().map(|j| &j.payload).collect::<Vec<_>>(),
        vec![&JobPayload::CheckOwner {
            why: CheckWhy::HandedBack
        }]
    );
    // Meta confirms: a return like any other, with sync and welcome.
    let answer = |why| {
        Input::OwnerChecked(OwnerCheck {
            owner: Owner::App(APP.into()),
            why,
            started_at: NOW - 50,
        })
    };
    let back = run(&d.thread, answer(CheckWhy::HandedBack));
    assert_eq!(back.thread.state, State::Bot);
    assert_eq!(
        jobs(&back),
        vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)]
    );
    // Any other doubt that finds the bot with the thread only corrects the belief.
    let corrected = run(&d.thread, answer(CheckWhy::Doubt));
    assert_eq!(corrected.thread.state, State::Bot);
    assert!(corrected.jobs.is_empty());
}

#[test]
fn a_request_older_than_the_state_is_not_acted_on() {
    // The agent took the thread after the user's "back to bot" was sent; Meta delivers it late.
    let human = thread(State::Human);
    let mut late = standby("back to bot");
    late.timestamp_ms = T0 - 60_000;
    let d = on(&human, &late);
    assert_eq!(d.thread.state, State::Human);
    assert!(d.jobs.is_empty());
}

#[test]
fn companion_mode_asks_before_acting_on_standby() {
    let mut p = policy();
    p.standby_means_not_bot = false;
    // Every user message reaches the companion on standby: no evidence by itself.
    let bot = thread(State::Bot);
    let d = run_with(&bot, Input::Event(&standby("hello")), &p, NOW);
    assert_quiet(&d, &bot);
    // "Back to bot": ask who has the thread, then take if another app has it.
    let d = run_with(&bot, Input::Event(&standby("back to bot")), &p, NOW);
    assert_eq!(d.thread.state, State::Bot);
    assert_eq!(
        d.jobs.iter().map(|j| &j.payload).collect::<Vec<_>>(),
        vec![&JobPayload::CheckOwner {
            why: CheckWhy::UserAsked
        }]
    );
    let answer = |owner| {
        Input::OwnerChecked(OwnerCheck {
            owner,
            why: CheckWhy::UserAsked,
            started_at: NOW - 50,
        })
    };
    let taken = run_with(&d.thread, answer(Owner::App(INBOX.into())), &p, NOW);
    assert_eq!(taken.thread.state, State::Returning);
    assert_eq!(jobs(&taken), vec![take_soon()]);
    let ours = run_with(&d.thread, answer(Owner::App(APP.into())), &p, NOW);
    assert_quiet(&ours, &d.thread);
}

#[test]
fn back_to_bot_buttons_return() {
    let human = thread(State::Human);
    // A quick reply with the payload, whatever its title.
    let qr = event(
        Channel::Standby,
        EventKind::Message {
            mid: "m_qr".into(),
            text: Some("🤖".into()),
            quick_reply_payload: Some("BACK_TO_BOT".into()),
        },
    );
    assert_eq!(on(&human, &qr).thread.state, State::Returning);
    // A postback on standby comes without its payload: the title counts.
    let pb = event(
        Channel::Standby,
        EventKind::Postback {
            mid: Some("m_pb".into()),
            title: Some("Back to bot".into()),
            payload: None,
        },
    );
    assert_eq!(on(&human, &pb).thread.state, State::Returning);
}

#[test]
fn a_kept_welcome_is_replaced_by_the_next_return_not_added() {
    let mut human = thread(State::Human);
    human.pending_welcome = Some(WelcomeKind::WelcomeBack);
    let asked = on(&human, &standby("back to bot"));
    assert_eq!(asked.thread.pending_welcome, None);
    let back = run(&asked.thread, Input::TakeDone(done(&asked.thread, Ok(()))));
    let welcomes = back
        .jobs
        .iter()
        .filter(|j| matches!(j.payload, JobPayload::SendWelcome { .. }))
        .count();
    assert_eq!(welcomes, 1);
    // The user writes before it went out: no second one.
    let wrote = on(&back.thread, &message(Channel::Messaging, "hi"));
    assert!(wrote.jobs.is_empty(), "{:?}", jobs(&wrote));
}

#[test]
fn a_welcome_of_unknown_outcome_is_never_repeated() {
    let mut bot = thread(State::Bot);
    bot.pending_welcome = Some(WelcomeKind::WelcomeBack);
    let d = run(&bot, Input::WelcomeUnknown { epoch: bot.epoch });
    assert_eq!(d.thread.notified_epoch, bot.epoch);
    assert_eq!(d.thread.pending_welcome, None);
    assert!(matches!(
        welcome_plan(&d.thread, bot.epoch, NOW),
        WelcomePlan::Skip(_)
    ));
}

#[test]
fn the_reconciler_asks_a_long_human_stay_less_and_less_often() {
    let mut t = thread(State::Human);
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let d = run(&t, Input::OwnerChecked(checked(Owner::App(INBOX.into()))));
        assert_eq!(d.thread.state, State::Human);
        gaps.push(d.thread.next_check_at.unwrap() - NOW);
        t = d.thread;
    }
    assert_eq!(
        gaps,
        vec![2 * DAY_MS, 4 * DAY_MS, 7 * DAY_MS, 7 * DAY_MS, 7 * DAY_MS]
    );
    // A state change starts the schedule over.
    let d = run(&t, Input::Event(&pass_event(Some(APP))));
    assert_eq!(d.thread.next_check_at, None);
    assert_eq!(d.thread.checks, 0);
}

#[test]
fn nothing_is_sent_while_the_owner_is_in_doubt() {
    // Back with the bot, a welcome owed; an agent's echo that cannot be placed arrives.
    let bot = thread(State::Bot);
    let mut e = echo(Some(INBOX), "Hi, Sam here");
    e.timestamp_ms = T0 + CLOCK_SKEW_MS / 2;
    let d = on(&bot, &e);
    assert!(d.thread.owner_in_doubt);
    assert!(matches!(
        welcome_plan(&d.thread, d.thread.epoch, NOW),
        WelcomePlan::Defer(_)
    ));
    let kept = run(
        &d.thread,
        Input::WelcomeDeferred {
            kind: WelcomeKind::WelcomeBack,
            epoch: d.thread.epoch,
        },
    );
    // Meta says the bot has it: the kept welcome goes out now.
    let check = |owner| {
        Input::OwnerChecked(OwnerCheck {
            owner,
            why: CheckWhy::Doubt,
            started_at: NOW - 50,
        })
    };
    let ours = run(&kept.thread, check(Owner::App(APP.into())));
    assert!(!ours.thread.owner_in_doubt);
    assert_eq!(jobs(&ours), vec![welcome_now(WelcomeKind::WelcomeBack)]);
    // Meta says the inbox has it: kept for later, nothing sent.
    let theirs = run(&kept.thread, check(Owner::App(INBOX.into())));
    assert_eq!(theirs.thread.state, State::Human);
    assert!(
        !theirs
            .jobs
            .iter()
            .any(|j| matches!(j.payload, JobPayload::SendWelcome { .. }))
    );
}

#[test]
fn a_return_action_for_a_message_proves_the_bot_has_the_thread() {
    // The service still believes the inbox has the thread (its "Done" is on its way), but
    // Dialogflow heard the user's message: no take, and the answer is the welcome.
    let human = thread(State::Human);
    let d = run(
        &human,
        Input::ReturnByFulfillment {
            session: SESSION.into(),
            heard_at: Some(EVENT_TS),
        },
    );
    assert_moved(&d, &human, State::Bot);
    assert!(d.jobs.is_empty(), "{:?}", jobs(&d));
    assert!(d.welcome_in_band);
    assert_eq!(d.thread.notified_epoch, d.thread.epoch);
    // A postback (no message time) proves nothing: the take is made.
    let d = run(
        &human,
        Input::ReturnByFulfillment {
            session: SESSION.into(),
            heard_at: None,
        },
    );
    assert_eq!(d.thread.state, State::Returning);
    assert_eq!(jobs(&d), vec![take_soon()]);
}

#[test]
fn a_plain_turn_within_the_minute_is_covered_and_changes_only_the_time() {
    let p = policy();
    let input = Input::RememberSession {
        session: "projects/p/agent/sessions/s".into(),
    };
    for state in ALL_STATES {
        let first = decide(&thread(state), &input, &p, NOW).thread;
        let facts = TurnFacts::of(&first).expect("nothing kept after a turn");
        let later = NOW + 30_000;
        assert!(
            facts.cover("projects/p/agent/sessions/s", later),
            "{state:?}"
        );
        check_invariants(&first, &input, &p, later);
        let again = decide(&first, &input, &p, later);
        assert_eq!(again.thread.last_user_msg_at, Some(later));
    }
}

// ---------------------------------------------------------------------------------------------
// An operator's decisions (the admin API)
// ---------------------------------------------------------------------------------------------

fn admin_return() -> Input<'static> {
    Input::AdminReturn { note: None }
}

fn admin_handover() -> Input<'static> {
    Input::AdminHandover { note: None }
}

#[track_caller]
fn assert_admin_cause(d: &Decision) {
    let cause = d.cause.as_deref().unwrap_or_default();
    assert!(cause.starts_with("admin: "), "{cause:?}");
}

/// What each admin input does in each state: the state after, the jobs, and whether a new
/// epoch began (every admin decision that acts does, like the other decisions).
#[test]
fn admin_inputs_in_every_state() {
    let take = take_soon();
    let pass_now = pass_after(0);
    let welcome = welcome_now(WelcomeKind::WelcomeBack);
    let table: [(Input<'static>, State, State, Vec<String>, bool); 10] = [
        (admin_return(), State::Bot, State::Bot, vec![], false),
        (
            admin_return(),
            State::Passing,
            State::Bot,
            vec![sync_now(), welcome.clone()],
            true,
        ),
        (
            admin_return(),
            State::Human,
            State::Returning,
            vec![take.clone()],
            true,
        ),
        (
            admin_return(),
            State::Returning,
            State::Returning,
            vec![],
            false,
        ),
        (
            admin_return(),
            State::Idle,
            State::Returning,
            vec![take],
            true,
        ),
        (
            admin_handover(),
            State::Bot,
            State::Passing,
            vec![pass_now.clone()],
            true,
        ),
        (
            admin_handover(),
            State::Passing,
            State::Passing,
            vec![],
            false,
        ),
        (admin_handover(), State::Human, State::Human, vec![], false),
        (
            admin_handover(),
            State::Returning,
            State::Passing,
            vec![pass_now.clone()],
            true,
        ),
        (
            admin_handover(),
            State::Idle,
            State::Passing,
            vec![pass_now],
            true,
        ),
    ];
    for (input, from, to, expected_jobs, new_epoch) in table {
        let before = thread(from);
        let d = run(&before, input.clone());
        let ctx = format!("{input:?} in {from:?}");
        assert_eq!(d.thread.state, to, "{ctx}");
        assert_eq!(jobs(&d), expected_jobs, "{ctx}");
        assert_eq!(d.thread.epoch, before.epoch + i64::from(new_epoch), "{ctx}");
        // Recorded in every case, acted on or not.
        assert_admin_cause(&d);
        if from == to {
            assert_quiet(&d, &before);
        } else {
            assert_moved(&d, &before, to);
        }
        check_invariants(&before, &input, &policy(), NOW);
    }
}

#[test]
fn admin_return_from_human_takes_and_then_syncs_and_welcomes_back() {
    let p = policy_with_idle(IDLE);
    let mut before = thread(State::Human);
    before.pending_welcome = Some(WelcomeKind::AgentTimeout);
    let d = run_with(&before, admin_return(), &p, NOW);
    assert_moved(&d, &before, State::Returning);
    assert_eq!(jobs(&d), vec![take_soon()]);
    assert_eq!(d.thread.return_reason, Some(ReturnReason::Admin));
    assert_eq!(d.thread.pending_welcome, None);
    assert_eq!(
        names(&d.cancel),
        vec!["send_welcome", "clear_handover_context", "sync_contexts"]
    );
    // The take lands: the usual sync and the welcome back (not the agent-timeout text).
    let back = run_with(&d.thread, Input::TakeDone(done(&d.thread, Ok(()))), &p, NOW);
    assert_eq!(back.thread.state, State::Bot);
    assert_eq!(
        jobs(&back),
        vec![sync_now(), welcome_now(WelcomeKind::WelcomeBack)]
    );
    assert_eq!(back.thread.owner_app_id.as_deref(), Some(APP));
    assert_eq!(back.thread.human_since, None);
}

#[test]
fn admin_return_while_passing_cancels_the_pass_and_a_pass_that_lands_is_taken_back() {
    let before = thread(State::Passing);
    let d = run(&before, admin_return());
    assert_moved(&d, &before, State::Bot);
    assert_eq!(names(&d.cancel), vec!["pass"]);
    assert_eq!(d.thread.owner_app_id.as_deref(), Some(APP));
    assert_eq!(d.thread.return_reason, Some(ReturnReason::Admin));
    // The pass of epoch 1 was already in flight and lands: taken back, for this return.
    let landed = CallOutcome {
        epoch: before.epoch,
        started_at: NOW - 100,
        result: Ok(()),
    };
    let after = run(&d.thread, Input::PassDone(landed));
    assert_eq!(after.thread.state, State::Returning);
    assert_eq!(jobs(&after), vec![take_now()]);
}

#[test]
fn admin_handover_from_bot_passes_now_and_forgets_an_old_snapshot() {
    let mut before = thread(State::Bot);
    before.snapshot = Some(json!([{"name": "from-an-earlier-handover"}]).into());
    before.last_error = Some("old".into());
    let d = run(&before, admin_handover());
    assert_moved(&d, &before, State::Passing);
    assert_eq!(jobs(&d), vec![pass_after(0)]);
    assert_eq!(d.thread.snapshot, None);
    assert_eq!(d.thread.last_error, None);
    // Then the ordinary path: the pass lands, the inbox has the thread.
    let human = run(&d.thread, Input::PassDone(done(&d.thread, Ok(()))));
    assert_eq!(human.thread.state, State::Human);
    assert_eq!(human.thread.owner_app_id.as_deref(), Some(INBOX));
}

#[test]
fn admin_handover_while_returning_cancels_the_take_and_keeps_the_snapshot() {
    let mut before = thread(State::Returning);
    let snapshot: Snapshot = json!([{"name": "order-followup"}]).into();
    before.snapshot = Some(snapshot.clone());
    let d = run(&before, admin_handover());
    assert_moved(&d, &before, State::Passing);
    assert_eq!(
        names(&d.cancel),
        vec!["take", "sync_contexts", "send_welcome"]
    );
    assert_eq!(d.thread.return_reason, None);
    // Still the contexts of the handover this return would have ended.
    assert_eq!(d.thread.snapshot, Some(snapshot));
}

#[test]
fn admin_handover_of_a_thread_another_app_has_names_that_app() {
    let mut before = thread(State::Human);
    before.owner_app_id = Some(OTHER_APP.into());
    let d = run(&before, admin_handover());
    assert_quiet(&d, &before);
    let cause = d.cause.unwrap();
    assert!(cause.contains(OTHER_APP), "{cause}");
    let inbox = run(&thread(State::Human), admin_handover());
    assert!(inbox.cause.unwrap().contains("the inbox has the thread"));
}

#[test]
fn an_admin_decision_supersedes_what_the_user_asked_while_in_doubt() {
    // The user asked for a person while the owner was in doubt; the operator gives the
    // thread back to the bot: thread_owner's answer must not pass it on afterwards.
    let mut before = thread(State::Human);
    before.owner_in_doubt = true;
    before.asked_in_doubt = Some(Ask::Handover);
    let d = run(&before, admin_return());
    assert_eq!(d.thread.asked_in_doubt, None);
    let answered = run(
        &d.thread,
        Input::OwnerChecked(OwnerCheck {
            owner: Owner::App(INBOX.into()),
            why: CheckWhy::Doubt,
            started_at: NOW - 100,
        }),
    );
    assert_eq!(answered.thread.state, State::Returning);
    assert!(
        !answered
            .jobs
            .iter()
            .any(|j| matches!(j.payload, JobPayload::Pass { .. })),
        "{answered:#?}"
    );
}

#[test]
fn the_operators_note_is_in_the_cause() {
    let d = run(
        &thread(State::Human),
        Input::AdminReturn {
            note: Some("  customer called  ".into()),
        },
    );
    assert_eq!(
        d.cause.as_deref(),
        Some("admin: back to the bot (note: customer called)")
    );
    let blank = run(
        &thread(State::Bot),
        Input::AdminHandover {
            note: Some(" ".into()),
        },
    );
    assert_eq!(blank.cause.as_deref(), Some("admin: to the inbox"));
}

// ---------------------------------------------------------------------------------------------
// Found by the property tests (tests/properties.rs)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_fulfillment_return_while_the_welcome_job_is_under_way_is_no_second_welcome() {
    // Back with the bot after a take: the welcome job is queued, or its Send API call is in
    // flight (the thread cannot tell). The user's return action meanwhile is not welcomed
    // again in its answer: the job gives the welcome, once.
    let back = thread(State::Bot);
    assert!(back.notified_epoch < back.epoch && back.pending_welcome.is_none());
    let return_action = || Input::ReturnByFulfillment {
        session: SESSION.into(),
        heard_at: None,
    };
    let d = run(&back, return_action());
    assert!(!d.welcome_in_band);
    assert_eq!(d.thread.notified_epoch, back.notified_epoch);
    assert!(matches!(
        welcome_plan(&d.thread, back.epoch, NOW),
        WelcomePlan::Send
    ));
    // A welcome kept for the user's next message (no job under way) is this answer.
    let mut kept = back.clone();
    kept.pending_welcome = Some(WelcomeKind::WelcomeBack);
    let d = run(&kept, return_action());
    assert!(d.welcome_in_band);
    assert_eq!(d.thread.notified_epoch, kept.epoch);
    assert_eq!(d.thread.pending_welcome, None);
}

#[test]
fn a_request_after_one_kept_in_doubt_supersedes_it() {
    // With the inbox, a handover action around the time it got the thread: kept until
    // thread_owner answers. Then the user taps "back to bot": a take.
    let human = thread(State::Human);
    let asked = run(
        &human,
        Input::Handover {
            session: SESSION.into(),
            snapshot: json!([]).into(),
            asked_at: Some(T0),
        },
    );
    assert_eq!(asked.thread.asked_in_doubt, Some(Ask::Handover));
    let tapped = on(&asked.thread, &postback(Channel::Messaging, "BACK_TO_BOT"));
    assert_eq!(tapped.thread.state, State::Returning);
    assert_eq!(tapped.thread.asked_in_doubt, None);
    // Meta answers that the bot has the thread: back with the bot, not passed again.
    let d = run(
        &tapped.thread,
        Input::OwnerChecked(OwnerCheck {
            owner: Owner::App(APP.into()),
            why: CheckWhy::HandoverAsked,
            started_at: NOW,
        }),
    );
    assert_eq!(d.thread.state, State::Bot);
    assert!(
        !d.jobs
            .iter()
            .any(|j| matches!(j.payload, JobPayload::Pass { .. })),
        "{:?}",
        jobs(&d)
    );
}

#[test]
fn a_handover_asked_in_doubt_after_a_confirmed_return_queues_no_moot_welcome() {
    // With the inbox; a take naming the bot that cannot be placed, then a handover action
    // around then: both wait for thread_owner. It says the bot has the thread: the return
    // happened, and the handover asked meanwhile passes to the inbox. The return's sync and
    // welcome are moot: not queued with the pass.
    let human = thread(State::Human);
    let mut take = take_event(Some(APP));
    take.timestamp_ms = T0;
    let doubt = on(&human, &take);
    assert!(doubt.thread.owner_in_doubt);
    let asked = run(
        &doubt.thread,
        Input::Handover {
            session: SESSION.into(),
            snapshot: json!([]).into(),
            asked_at: Some(T0),
        },
    );
    assert_eq!(asked.thread.asked_in_doubt, Some(Ask::Handover));
    let d = run(
        &asked.thread,
        Input::OwnerChecked(OwnerCheck {
            owner: Owner::App(APP.into()),
            why: CheckWhy::HandedBack,
            started_at: NOW,
        }),
    );
    assert_eq!(d.thread.state, State::Passing);
    assert_eq!(jobs(&d), vec![pass_after(0)]);
    for job in &d.jobs {
        assert!(!d.cancel.contains(&job.payload.kind()));
    }
}
