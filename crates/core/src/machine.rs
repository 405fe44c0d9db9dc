//! The conversation state machine: (thread, input) → new thread + jobs, as a pure function.
//!
//! Two kinds of input drive it:
//!
//! - **Decisions** (a handover or return action, a user's "back to bot", an agent's `#bot`,
//!   the idle timeout, the inbox's request) start a new *epoch* of the thread. Jobs carry the
//!   epoch they serve; when a newer decision arrives they are moot and are skipped.
//! - **Facts** say who owns the thread at some time: a handover event, a `standby` delivery or
//!   an agent's echo (another app owns it), the answer of our own pass or take, `thread_owner`.
//!   Every fact has a time. A fact newer than the state applies; one older than the state does
//!   not overturn it; one the service cannot place (within the clock skew of Meta's timestamp,
//!   or a call that was in flight when the state changed) is checked with `thread_owner` if it
//!   contradicts the state. Events caused by our own calls are recognised by the epoch in
//!   their metadata, so they are placed exactly. While such a check is pending nothing is sent
//!   to the user, and what the user asked for meanwhile is done once Meta has answered.
//!
//! The worker feeds inputs of one thread through the store's row lock, so `decide` never sees
//! two inputs of one thread at once; it may see them in any order.

use serde_json::Value;

use crate::event::{Channel, EventKind, IncomingEvent};
use crate::jobs::{CheckWhy, JobKind, JobPayload, NewJob, WelcomeKind};
use crate::text::PhraseSet;
use crate::thread::{Ask, ReturnReason, State, Thread};
use crate::time::{DAY_MS, HOUR_MS};

/// How far Meta's timestamps and our clock may disagree: facts closer than this to the state
/// they contradict cannot be placed before or after it.
pub const CLOCK_SKEW_MS: i64 = 1_000;

/// The reconciler's checks of one thread back off up to these.
const MAX_TRANSITIONAL_CHECK_MS: i64 = HOUR_MS;
const MAX_HUMAN_CHECK_MS: i64 = 7 * DAY_MS;

/// Settings the state machine needs, prepared once.
#[derive(Clone, Debug)]
pub struct Policy {
    pub app_id: String,
    pub target_app_id: String,
    pub return_phrases: PhraseSet,
    pub return_payload: String,
    pub agent_return_phrases: PhraseSet,
    /// 0 = off.
    pub idle_timeout_ms: i64,
    pub pass_delay_ms: i64,
    /// How long `PASSING`/`RETURNING` may last before the reconciler asks `thread_owner`.
    pub stuck_after_ms: i64,
    /// The app whose webhook receives the events is the bot app itself (bridge mode, or one
    /// app for both), so a `standby` delivery means another app owns the thread. In companion
    /// mode the companion gets every user message on `standby`, whoever owns the thread.
    pub standby_means_not_bot: bool,
}

/// A failed Graph API call, as the state machine needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Graph error (#10) subcode 2018300: another app controls the thread.
    pub not_thread_owner: bool,
    /// Code 10 subcode 2018278: outside the 24-hour window.
    pub outside_window: bool,
    pub message: String,
}

/// Who `thread_owner` says owns the thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Idle,
    App(String),
    /// Someone owns it, but not us and we are not allowed to see who.
    Hidden,
}

/// The outcome of our own pass or take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// The epoch the job served.
    pub epoch: i64,
    /// When the call started: its effect, if any, happened between then and now.
    pub started_at: i64,
    pub result: Result<(), Failure>,
}

/// What `thread_owner` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerCheck {
    pub owner: Owner,
    pub why: CheckWhy,
    pub started_at: i64,
}

#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// A handover action reached `/fulfillment`. `asked_at`: Meta's timestamp of the user's
    /// message that Dialogflow answered, when the request carries it.
    Handover {
        session: String,
        snapshot: Value,
        asked_at: Option<i64>,
    },
    /// A return action reached `/fulfillment`.
    ReturnByFulfillment {
        session: String,
        /// Meta's timestamp of the user's *message* Dialogflow answered (`None` for a
        /// postback): a message reaches Dialogflow only while the bot app owns the thread.
        heard_at: Option<i64>,
    },
    /// Any other action reached `/fulfillment`: Dialogflow talked with the user. Not evidence
    /// of ownership (postbacks reach the bot app whoever owns the thread).
    RememberSession {
        session: String,
    },
    /// A Messenger webhook event.
    Event(&'a IncomingEvent),
    PassDone(CallOutcome),
    TakeDone(CallOutcome),
    WelcomeSent {
        kind: WelcomeKind,
        epoch: i64,
        result: Result<(), Failure>,
    },
    /// Not sent now (not the owner, or outside 24 h): kept for the user's next message.
    WelcomeDeferred {
        kind: WelcomeKind,
        epoch: i64,
    },
    /// The Send API call may or may not have reached the user (timeout, crash): at most once,
    /// so it is not sent again.
    WelcomeUnknown {
        epoch: i64,
    },
    IdleCheck {
        generation: i64,
    },
    OwnerChecked(OwnerCheck),
}

/// What to store: the new thread, why (for the audit trail), jobs to add and pending jobs to cancel.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub thread: Thread,
    /// Present when something worth an audit row happened.
    pub cause: Option<String>,
    pub jobs: Vec<NewJob>,
    /// Job kinds (as in `JobPayload::kind`) whose pending jobs for this thread are cancelled.
    pub cancel: Vec<JobKind>,
    /// A fulfillment return: its own answer is this return's welcome (the bot owns the thread,
    /// so the integration can deliver it). Otherwise the service welcomes after the take.
    pub welcome_in_band: bool,
    /// The state and its start before this decision: a decision that passes through other
    /// states and ends where it began has not changed the state.
    before: (State, i64),
}

impl Decision {
    /// A decision that puts the thread as given, with these jobs (test and operator set-up;
    /// the state machine itself never writes a thread wholesale).
    pub fn set(thread: Thread, cause: &str, jobs: Vec<NewJob>) -> Self {
        let mut d = Self::unchanged(&thread);
        d.cause = Some(cause.to_owned());
        d.jobs = jobs;
        d
    }

    fn unchanged(thread: &Thread) -> Self {
        Self {
            thread: thread.clone(),
            cause: None,
            jobs: Vec::new(),
            cancel: Vec::new(),
            welcome_in_band: false,
            before: (thread.state, thread.state_since),
        }
    }

    /// Moves to `state` because of a fact or decision of time `at`.
    fn to(&mut self, state: State, at: i64, now: i64, policy: &Policy, cause: impl Into<String>) {
        if self.thread.state != state {
            self.thread.state = state;
            self.thread.state_since = if state == self.before.0 {
                self.before.1
            } else {
                now
            };
            self.thread.checks = 0;
            self.thread.next_check_at = first_check(state, now, policy);
        }
        self.thread.state_at = self.thread.state_at.max(at);
        self.cause = Some(cause.into());
    }

    fn job(&mut self, job: NewJob) {
        self.jobs.push(job);
    }

    /// A new handover or return: work queued for the previous one is moot.
    fn new_epoch(&mut self) -> i64 {
        self.thread.epoch += 1;
        self.thread.epoch
    }

    fn check_owner(&mut self, why: CheckWhy, cause: impl Into<String>) {
        let queued = self
            .jobs
            .iter()
            .any(|j| matches!(j.payload, JobPayload::CheckOwner { .. }));
        if !queued {
            self.job(NewJob::now(JobPayload::CheckOwner { why }));
        }
        self.thread.owner_in_doubt = true;
        self.cause = Some(cause.into());
    }
}

fn first_check(state: State, now: i64, policy: &Policy) -> Option<i64> {
    match state {
        State::Passing | State::Returning => Some(now + policy.stuck_after_ms),
        // Messenger hands an inactive thread back after 24 hours.
        State::Human => Some(now + DAY_MS),
        State::Bot | State::Idle => None,
    }
}

/// The reconciler asked and the state held: ask again later, less and less often.
fn back_off_check(d: &mut Decision, now: i64, policy: &Policy) {
    let (base, max) = match d.thread.state {
        State::Passing | State::Returning => (policy.stuck_after_ms, MAX_TRANSITIONAL_CHECK_MS),
        State::Human => (DAY_MS, MAX_HUMAN_CHECK_MS),
        State::Bot | State::Idle => {
            d.thread.next_check_at = None;
            return;
        }
    };
    d.thread.checks += 1;
    let factor = 1i64 << d.thread.checks.clamp(0, 20);
    d.thread.next_check_at = Some(now + base.max(1).saturating_mul(factor).min(max));
}

/// When a fact held, compared with the time of the state it would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Age {
    Newer,
    Older,
    Unsure,
}

#[derive(Clone, Copy, Debug)]
struct Span {
    from: i64,
    to: i64,
}

impl Span {
    /// A Meta timestamp, give or take the clock skew.
    fn meta(ts: i64) -> Span {
        Span {
            from: ts - CLOCK_SKEW_MS,
            to: ts + CLOCK_SKEW_MS,
        }
    }

    /// Our own call or decision: it happened between `from` and `to` on our clock.
    fn ours(from: i64, to: i64) -> Span {
        Span {
            from,
            to: to.max(from),
        }
    }

    fn age(self, thread: &Thread) -> Age {
        if self.from >= thread.state_at {
            Age::Newer
        } else if self.to < thread.state_at {
            Age::Older
        } else {
            Age::Unsure
        }
    }

    /// The time recorded as the state's when this fact changes it.
    fn at(self) -> i64 {
        self.from.max(0) + (self.to - self.from) / 2
    }
}

/// Who a fact says owns the thread.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Us,
    /// Another app. `moved`: control moved to it by a pass or take (not merely a `standby`
    /// delivery or an echo, which are expected while a take is still coming).
    Other {
        app: Option<String>,
        moved: bool,
    },
    Nobody,
}

pub fn decide(thread: &Thread, input: &Input<'_>, policy: &Policy, now: i64) -> Decision {
    let mut d = Decision::unchanged(thread);
    match input {
        Input::Handover {
            session,
            snapshot,
            asked_at,
        } => {
            d.thread.session = Some(session.clone());
            d.thread.snapshot = Some(snapshot.clone());
            d.thread.last_user_msg_at = Some(now);
            if thread.state == State::Passing {
                // One pass is already queued; a repeated request does not queue another.
                return d;
            }
            let asked = Span::meta(asked_at.unwrap_or(now).min(now));
            match (thread.state, asked.age(thread)) {
                // Asked before the inbox got the thread: a repeated request that the pass
                // already answered.
                (State::Human, Age::Older) => return d,
                // Around then: Meta says whether the bot has the thread (pass) or not.
                (State::Human, Age::Unsure) => {
                    d.thread.asked_in_doubt = Some(Ask::Handover);
                    d.check_owner(
                        CheckWhy::HandoverAsked,
                        "handover action while the inbox may have the thread: asking thread_owner",
                    );
                    return d;
                }
                // Newer: Dialogflow heard the user, so the bot had the thread again.
                _ => {}
            }
            let delay = policy.pass_delay_ms;
            start_pass(
                &mut d,
                policy,
                now,
                now,
                delay,
                "handover action in fulfillment",
            );
        }
        Input::ReturnByFulfillment { session, heard_at } => {
            d.thread.session = Some(session.clone());
            d.thread.last_user_msg_at = Some(now);
            let heard = heard_at.map(|at| Span::meta(at.min(now)));
            if matches!(thread.state, State::Human | State::Idle | State::Returning)
                && heard.is_some_and(|h| h.age(thread) == Age::Newer)
            {
                // Dialogflow heard the user's message, so the bot has the thread already (a
                // hand-back the service has not heard of yet): no take; this answer is the
                // welcome if one is owed.
                correct_to_bot(
                    &mut d,
                    now,
                    policy,
                    now,
                    "return action in fulfillment for a message: the bot has the thread",
                );
                if d.thread.notified_epoch < d.thread.epoch {
                    d.thread.pending_welcome = None;
                    d.thread.notified_epoch = d.thread.epoch;
                    d.welcome_in_band = true;
                }
                return d;
            }
            match thread.state {
                State::Passing => {
                    // The bot still owns the thread: this answer is the welcome. If the pass
                    // is already in flight and lands, its outcome takes the thread back.
                    let epoch = d.new_epoch();
                    d.cancel.push(JobKind::Pass);
                    d.thread.owner_app_id = Some(policy.app_id.clone());
                    d.thread.return_reason = Some(ReturnReason::Fulfillment);
                    d.thread.pending_welcome = None;
                    d.thread.notified_epoch = epoch;
                    d.welcome_in_band = true;
                    d.to(
                        State::Bot,
                        now,
                        now,
                        policy,
                        "return action in fulfillment before the pass ran; pass cancelled",
                    );
                }
                State::Bot => {
                    // Already back: only a welcome still owed for this return is given, here
                    // (the queued or kept one is then skipped).
                    if thread.notified_epoch < thread.epoch {
                        d.thread.pending_welcome = None;
                        d.thread.notified_epoch = thread.epoch;
                        d.welcome_in_band = true;
                        d.cause = Some("return action in fulfillment: the kept welcome".into());
                    }
                }
                State::Human | State::Idle => {
                    // Only a postback of the bot's own button reaches Dialogflow while another
                    // app owns the thread. The take waits HANDOVER_PASS_DELAY_MS, so the
                    // integration's own reply is refused while the inbox still owns the thread
                    // and the service's welcome after the take is the only one.
                    start_take(
                        &mut d,
                        policy,
                        now,
                        now,
                        ReturnReason::User,
                        "return action in fulfillment",
                    );
                }
                State::Returning => {}
            }
        }
        Input::RememberSession { session } => {
            d.thread.session = Some(session.clone());
            d.thread.last_user_msg_at = Some(now);
            send_kept_welcome(&mut d);
        }
        Input::Event(event) => on_event(&mut d, event, policy, now),
        Input::PassDone(call) => pass_done(&mut d, call, policy, now),
        Input::TakeDone(call) => take_done(&mut d, call, policy, now),
        Input::WelcomeSent {
            kind,
            epoch,
            result,
        } => match result {
            Ok(()) => {
                d.thread.notified_epoch = d.thread.notified_epoch.max((*epoch).min(thread.epoch));
                d.thread.pending_welcome = None;
                d.cause = Some(format!("sent the {} message", kind.as_str()));
            }
            Err(failure) if failure.not_thread_owner => {
                if *epoch == thread.epoch {
                    d.thread.pending_welcome = Some(*kind);
                }
                observe(
                    &mut d,
                    Seen::Other {
                        app: None,
                        moved: false,
                    },
                    Span::ours(now, now),
                    policy,
                    now,
                    "Send API: another app controls the thread (#10/2018300); message kept for later",
                );
            }
            Err(failure) if failure.outside_window => {
                if *epoch == thread.epoch {
                    d.thread.pending_welcome = Some(*kind);
                }
                d.cause = Some(
                    "message kept for the user's next message: outside the 24-hour window".into(),
                );
            }
            Err(failure) => {
                // A handover failure's reason stays the thread's last error.
                if d.thread.last_error.is_none() {
                    d.thread.last_error = Some(failure.message.clone());
                }
                d.cause = Some(format!("message not sent: {}", failure.message));
            }
        },
        Input::WelcomeDeferred { kind, epoch } => {
            if *epoch == thread.epoch && thread.notified_epoch < *epoch {
                d.thread.pending_welcome = Some(*kind);
            }
        }
        Input::WelcomeUnknown { epoch } => {
            d.thread.notified_epoch = d.thread.notified_epoch.max((*epoch).min(thread.epoch));
            d.thread.pending_welcome = None;
            d.cause = Some(
                "the message may have reached the user (no answer from the Send API): not sent again"
                    .into(),
            );
        }
        Input::IdleCheck { generation } => {
            if thread.state != State::Human
                || thread.human_since != Some(*generation)
                || policy.idle_timeout_ms <= 0
            {
                return d;
            }
            let last_activity = thread
                .last_agent_msg_at
                .unwrap_or(*generation)
                .max(*generation);
            let due = last_activity.saturating_add(policy.idle_timeout_ms);
            if now >= due {
                start_take(
                    &mut d,
                    policy,
                    now,
                    now,
                    ReturnReason::AgentTimeout,
                    "no agent message within AGENT_IDLE_TIMEOUT_SECS",
                );
            } else {
                d.job(NewJob::after(
                    JobPayload::IdleCheck {
                        generation: *generation,
                    },
                    due - now,
                ));
            }
        }
        Input::OwnerChecked(check) => owner_checked(&mut d, check, policy, now),
    }
    d
}

fn on_event(d: &mut Decision, event: &IncomingEvent, policy: &Policy, now: i64) {
    // Meta's timestamp, but never in the future: a clock far ahead would stall the idle timer.
    let ts = if event.timestamp_ms > 0 {
        event.timestamp_ms.min(now)
    } else {
        now
    };
    let span = Span::meta(ts);
    let standby = event.channel == Channel::Standby;
    match &event.kind {
        EventKind::Message {
            text,
            quick_reply_payload,
            ..
        } => {
            d.thread.last_user_msg_at = Some(ts.max(d.thread.last_user_msg_at.unwrap_or(0)));
            if standby {
                observe_standby(d, span, policy, now);
            }
            let asks_for_bot = text
                .as_deref()
                .is_some_and(|t| policy.return_phrases.matches(t))
                || quick_reply_payload.as_deref() == Some(policy.return_payload.as_str());
            if asks_for_bot {
                user_asks_for_bot(d, span, standby, policy, now, "the user asked for the bot");
            }
            if !standby {
                send_kept_welcome(d);
            }
        }
        EventKind::Postback { title, payload, .. } => {
            d.thread.last_user_msg_at = Some(ts.max(d.thread.last_user_msg_at.unwrap_or(0)));
            if standby {
                observe_standby(d, span, policy, now);
            }
            // On `standby` a postback comes without its payload: the title tells.
            let asks_for_bot = payload.as_deref() == Some(policy.return_payload.as_str())
                || title
                    .as_deref()
                    .is_some_and(|t| policy.return_phrases.matches(t));
            if asks_for_bot {
                let cause = "the user tapped a back-to-bot button";
                user_asks_for_bot(d, span, standby, policy, now, cause);
            }
            if !standby {
                send_kept_welcome(d);
            }
        }
        EventKind::Echo { app_id, text, .. } => {
            if app_id.as_deref() == Some(policy.app_id.as_str()) {
                bot_echo(d, span, policy, now);
                return;
            }
            d.thread.last_agent_msg_at = Some(ts.max(d.thread.last_agent_msg_at.unwrap_or(0)));
            // Placed against the state as it was before this message's own evidence.
            let age = span.age(&d.thread);
            observe(
                d,
                Seen::Other {
                    app: app_id.clone(),
                    moved: false,
                },
                span,
                policy,
                now,
                "an agent's message: another app owns the thread",
            );
            let hands_back = text
                .as_deref()
                .is_some_and(|t| policy.agent_return_phrases.matches(t));
            // Only when known to be newer than the state: a `#bot` typed before the user's
            // newest handover must not undo it.
            if hands_back
                && age == Age::Unsure
                && matches!(d.thread.state, State::Human | State::Passing | State::Idle)
            {
                // Typed around the time the thread changed: done if another app still has
                // the thread once thread_owner answers.
                d.thread.asked_in_doubt = Some(Ask::BotByAgent);
                d.check_owner(
                    CheckWhy::Doubt,
                    "an agent typed an AGENT_RETURN_PHRASES entry around a change: asking thread_owner",
                );
            } else if hands_back
                && matches!(d.thread.state, State::Human | State::Passing | State::Idle)
                && age == Age::Newer
            {
                d.cancel.push(JobKind::Pass);
                start_take(
                    d,
                    policy,
                    ts,
                    now,
                    ReturnReason::Agent,
                    "an agent typed an AGENT_RETURN_PHRASES entry",
                );
            }
        }
        EventKind::PassThreadControl {
            new_owner_app_id,
            metadata,
            ..
        }
        | EventKind::TakeThreadControl {
            new_owner_app_id,
            metadata,
            ..
        } => {
            let verb = event.kind.name();
            let is_pass = matches!(event.kind, EventKind::PassThreadControl { .. });
            if let Some(epoch) = metadata.as_deref().and_then(our_epoch) {
                our_call_event(
                    d,
                    is_pass,
                    epoch,
                    new_owner_app_id.as_deref(),
                    span,
                    policy,
                    now,
                );
                return;
            }
            let seen = match new_owner_app_id.as_deref() {
                Some(owner) if owner == policy.app_id => Seen::Us,
                Some(owner) => Seen::Other {
                    app: Some(owner.to_owned()),
                    moved: true,
                },
                None => {
                    d.cause = Some(format!("{verb} without new_owner_app_id ignored"));
                    return;
                }
            };
            let cause = match &seen {
                Seen::Us => format!("{verb}: the bot app is the new owner"),
                _ => format!(
                    "{verb}: app {} is the new owner",
                    new_owner_app_id.as_deref().unwrap_or("?")
                ),
            };
            observe(d, seen, span, policy, now, cause);
        }
        EventKind::RequestThreadControl {
            requested_owner_app_id,
            ..
        } => {
            let by_target =
                requested_owner_app_id.as_deref() == Some(policy.target_app_id.as_str());
            // Only a request known to be newer than the state: a late one must not undo a
            // return the user asked for since.
            if by_target
                && matches!(d.thread.state, State::Bot | State::Idle | State::Returning)
                && span.age(&d.thread) == Age::Newer
            {
                start_pass(
                    d,
                    policy,
                    ts,
                    now,
                    0,
                    "request_thread_control from the inbox: passing to it",
                );
            }
        }
        EventKind::Read | EventKind::Delivery | EventKind::Other { .. } => {}
    }
}

/// Metadata of our own pass or take names its epoch (`… [handover 7]`), so the event it causes
/// is placed exactly, whatever its timestamp.
pub fn call_metadata(what: &str, epoch: i64) -> String {
    format!("messenger-handover: {what} [handover {epoch}]")
}

fn our_epoch(metadata: &str) -> Option<i64> {
    let rest = metadata.strip_prefix("messenger-handover: ")?;
    let tail = rest.rsplit_once("[handover ")?.1.strip_suffix(']')?;
    tail.parse().ok()
}

/// A handover event caused by our own pass or take of `epoch`.
fn our_call_event(
    d: &mut Decision,
    is_pass: bool,
    epoch: i64,
    new_owner: Option<&str>,
    span: Span,
    policy: &Policy,
    now: i64,
) {
    let current = epoch == d.thread.epoch;
    match (is_pass, d.thread.state) {
        (true, State::Passing) if current => enter_human(
            d,
            new_owner.map(str::to_owned),
            span.at(),
            policy,
            now,
            "pass_thread_control: our pass reached the inbox",
        ),
        (true, State::Bot) if cancelled_by_return(&d.thread, epoch) => {
            take_back_superseded_pass(d, policy, now)
        }
        (false, State::Returning) if current => became_bot(
            d,
            span.at(),
            policy,
            now,
            "take_thread_control: our take succeeded",
        ),
        // The event of a call whose outcome was already recorded, or of moot work.
        _ => {}
    }
}

/// The bot app sent a message, so it owned the thread then (Meta refuses a non-owner's send).
/// Only worth storing while the service believes another app has the thread: then a return it
/// missed (a lost "Done", an expired inbox thread) is corrected, quietly (the bot is already
/// talking with the user: no sync, no welcome).
fn bot_echo(d: &mut Decision, span: Span, policy: &Policy, now: i64) {
    match (d.thread.state, span.age(&d.thread)) {
        (_, Age::Older) | (State::Bot | State::Passing, _) => {}
        // The take under way settles a message that cannot be placed after the return.
        (State::Returning, Age::Unsure) => {}
        (State::Returning, Age::Newer) => became_bot(
            d,
            span.at(),
            policy,
            now,
            "the bot sent a message: our take succeeded",
        ),
        (State::Human | State::Idle, Age::Unsure) => d.check_owner(
            CheckWhy::Doubt,
            "the bot sent a message around the time another app got the thread",
        ),
        (State::Human | State::Idle, Age::Newer) => correct_to_bot(
            d,
            span.at(),
            policy,
            now,
            "the bot sent a message, so it owns the thread (corrected; no sync, no welcome)",
        ),
    }
}

/// The bot has had the thread for a while without the service noticing: the state is
/// corrected, and nothing is reset or said.
fn correct_to_bot(d: &mut Decision, at: i64, policy: &Policy, now: i64, cause: &str) {
    d.thread.owner_app_id = Some(policy.app_id.clone());
    d.thread.human_since = None;
    d.thread.return_reason = None;
    d.cancel.extend([JobKind::Pass, JobKind::Take]);
    d.thread.returned_at = Some(at);
    d.to(State::Bot, at, now, policy, cause);
}

/// A `standby` delivery to the bot app: another app owned the thread when the user wrote.
fn observe_standby(d: &mut Decision, span: Span, policy: &Policy, now: i64) {
    if !policy.standby_means_not_bot {
        return;
    }
    observe(
        d,
        Seen::Other {
            app: None,
            moved: false,
        },
        span,
        policy,
        now,
        "a standby delivery: another app owns the thread",
    );
}

/// Applies a fact about the owner, by its time: newer facts change the state, older ones do
/// not overturn it, and a contradicting fact that cannot be placed is checked.
fn observe(
    d: &mut Decision,
    seen: Seen,
    span: Span,
    policy: &Policy,
    now: i64,
    cause: impl Into<String>,
) {
    let state = d.thread.state;
    let agrees = matches!(
        (&seen, state),
        (Seen::Us, State::Bot | State::Passing)
            | (Seen::Other { .. }, State::Human)
            | (Seen::Other { moved: false, .. }, State::Returning)
            | (Seen::Nobody, State::Idle)
    );
    let age = span.age(&d.thread);
    if agrees {
        if let (Seen::Other { app: Some(app), .. }, State::Human, Age::Newer) = (&seen, state, age)
        {
            d.thread.owner_app_id = Some(app.clone());
        }
        return;
    }
    match age {
        Age::Older => {}
        Age::Unsure => {
            // Handed back to us (a "Done" or a take naming us): if Meta confirms, it is a
            // return like any other; any other doubt only corrects the state.
            let why = if seen == Seen::Us {
                CheckWhy::HandedBack
            } else {
                CheckWhy::Doubt
            };
            d.check_owner(
                why,
                "a fact that contradicts the state and cannot be placed: asking thread_owner",
            );
        }
        Age::Newer => match seen {
            Seen::Us => became_bot(d, span.at(), policy, now, cause),
            Seen::Other { app, .. } => enter_human(d, app, span.at(), policy, now, cause),
            Seen::Nobody => {
                d.thread.owner_app_id = None;
                d.cancel.push(JobKind::Pass);
                d.cancel.push(JobKind::Take);
                d.to(State::Idle, span.at(), now, policy, cause);
            }
        },
    }
}

fn pass_done(d: &mut Decision, call: &CallOutcome, policy: &Policy, now: i64) {
    let current = call.epoch == d.thread.epoch;
    let span = Span::ours(call.started_at, now);
    match &call.result {
        Ok(()) if current && d.thread.state == State::Passing => enter_human(
            d,
            Some(policy.target_app_id.clone()),
            span.at(),
            policy,
            now,
            "pass_thread_control succeeded",
        ),
        Ok(()) if cancelled_by_return(&d.thread, call.epoch) => {
            take_back_superseded_pass(d, policy, now)
        }
        Ok(()) => {}
        Err(_) if !current => {}
        Err(failure) if failure.not_thread_owner => enter_human(
            d,
            None,
            span.at(),
            policy,
            now,
            "pass_thread_control: another app controls the thread (#10/2018300)",
        ),
        Err(failure) if d.thread.state == State::Passing => {
            let why = format!("pass_thread_control failed: {}", failure.message);
            handover_failed(d, policy, now, &why)
        }
        Err(_) => {}
    }
}

fn take_done(d: &mut Decision, call: &CallOutcome, policy: &Policy, now: i64) {
    if call.epoch != d.thread.epoch {
        // A take for a return that a newer handover made moot: the pass of that handover is
        // queued behind it and does what the user wants now.
        return;
    }
    let span = Span::ours(call.started_at, now);
    match &call.result {
        Ok(()) if d.thread.state == State::Returning => {
            became_bot(d, span.at(), policy, now, "take_thread_control succeeded")
        }
        Ok(()) => observe(
            d,
            Seen::Us,
            span,
            policy,
            now,
            "take_thread_control succeeded after the thread moved on",
        ),
        Err(failure) if d.thread.state == State::Returning => {
            d.thread.last_error = Some(failure.message.clone());
            d.thread.return_reason = None;
            let cause = if failure.not_thread_owner {
                "take_thread_control: another app controls the thread (#10/2018300)".to_owned()
            } else {
                format!("take_thread_control failed: {}", failure.message)
            };
            // The thread stays with whoever has it: a new stay in HUMAN, with its idle timer.
            start_human_stay(d, policy, now);
            d.to(State::Human, span.at(), now, policy, cause);
        }
        Err(_) => {}
    }
}

fn owner_checked(d: &mut Decision, check: &OwnerCheck, policy: &Policy, now: i64) {
    // Meta answered: a message held back by the doubt may go out, to the right owner.
    let was_in_doubt = std::mem::replace(&mut d.thread.owner_in_doubt, false);
    on_owner_checked(d, check, policy, now);
    // What the user asked for meanwhile, now that the owner is known.
    match (d.thread.asked_in_doubt.take(), d.thread.state) {
        (Some(Ask::Handover), State::Bot) => {
            start_pass(d, policy, now, now, 0, "the handover asked while in doubt")
        }
        (Some(Ask::Bot), State::Human | State::Idle) => start_take(
            d,
            policy,
            now,
            now,
            ReturnReason::User,
            "the user asked for the bot while in doubt (another app has the thread)",
        ),
        (Some(Ask::BotByAgent), State::Human | State::Idle) => start_take(
            d,
            policy,
            now,
            now,
            ReturnReason::Agent,
            "an agent typed an AGENT_RETURN_PHRASES entry while in doubt (another app has the thread)",
        ),
        _ => {}
    }
    if was_in_doubt {
        send_kept_welcome(d);
    }
}

fn on_owner_checked(d: &mut Decision, check: &OwnerCheck, policy: &Policy, now: i64) {
    let seen = match &check.owner {
        Owner::App(app) if *app == policy.app_id => Seen::Us,
        Owner::App(app) => Seen::Other {
            app: Some(app.clone()),
            moved: false,
        },
        Owner::Hidden => Seen::Other {
            app: None,
            moved: false,
        },
        Owner::Idle => Seen::Nobody,
    };
    let span = Span::ours(check.started_at, now);
    let state = d.thread.state;
    if check.why != CheckWhy::Stuck {
        let cause = "thread_owner answered a doubt";
        match (&seen, state) {
            // The call that is under way settles these.
            (Seen::Us, State::Passing) | (Seen::Other { .. }, State::Returning) => {}
            // The bot has the thread: a hand-back that could not be placed was real (a return
            // like any other); otherwise the belief was wrong and is only corrected.
            (Seen::Us, State::Human | State::Idle) if check.why != CheckWhy::HandedBack => {
                correct_to_bot(d, span.at(), policy, now, cause)
            }
            (Seen::Us, _) => became_bot(d, span.at(), policy, now, cause),
            _ => observe(d, seen, span, policy, now, cause),
        }
        return;
    }
    // The reconciler: the thread sat in its state with no job under way.
    match (seen, state) {
        (Seen::Us, State::Passing) => {
            handover_failed(d, policy, now, "the pass never completed");
        }
        (Seen::Us, State::Returning) => became_bot(
            d,
            span.at(),
            policy,
            now,
            "thread_owner: the bot owns the thread",
        ),
        (Seen::Us, State::Human | State::Idle) => {
            // Handed back without a word some time ago; the conversation with the bot may
            // have moved on, so the state is corrected and nothing is reset or said.
            correct_to_bot(
                d,
                span.at(),
                policy,
                now,
                "thread_owner: the bot owns the thread (corrected; no sync, no welcome)",
            );
        }
        (Seen::Other { app, .. }, State::Returning) => {
            // The take never happened: take again, for the same return.
            if let Some(app) = app {
                d.thread.owner_app_id = Some(app);
            }
            let epoch = d.thread.epoch;
            d.job(NewJob::now(take_job(
                "the earlier take never completed",
                epoch,
            )));
            back_off_check(d, now, policy);
            d.cause = Some("thread_owner: another app still owns the thread; taking again".into());
        }
        (Seen::Other { app, .. }, State::Human) => {
            if app.is_some() {
                d.thread.owner_app_id = app;
            }
            back_off_check(d, now, policy);
        }
        (Seen::Us, State::Bot) => {
            d.thread.owner_app_id = Some(policy.app_id.clone());
            back_off_check(d, now, policy);
        }
        (Seen::Nobody, State::Idle) => back_off_check(d, now, policy),
        (seen, _) => observe(
            d,
            seen,
            span,
            policy,
            now,
            "thread_owner answered the reconciler",
        ),
    }
}

/// The user wrote while the bot owns the thread: a message that could not be sent earlier
/// (not the owner, or outside the 24-hour window) goes out now, once.
fn send_kept_welcome(d: &mut Decision) {
    let t = &d.thread;
    if let (State::Bot, Some(kind)) = (t.state, t.pending_welcome)
        && t.notified_epoch < t.epoch
    {
        let epoch = t.epoch;
        d.thread.pending_welcome = None;
        d.job(NewJob::now(JobPayload::SendWelcome {
            welcome: kind,
            epoch,
        }));
        if d.cause.is_none() {
            d.cause = Some("sending the kept message".into());
        }
    }
}

/// The user asked for the bot: a message or button, on `standby` or not.
fn user_asks_for_bot(
    d: &mut Decision,
    span: Span,
    standby: bool,
    policy: &Policy,
    now: i64,
    cause: &str,
) {
    if span.age(&d.thread) == Age::Older {
        return; // asked before the thread got where it is now
    }
    if d.thread.returned_at.is_some_and(|back| span.from < back) {
        // Asked around the time of the last return (e.g. a second tap while the take was
        // under way): that return answered it. The user can ask again.
        return;
    }
    let at = span.at();
    if standby
        && !policy.standby_means_not_bot
        && matches!(d.thread.state, State::Bot | State::Passing)
    {
        if span.age(&d.thread) != Age::Newer {
            // Around the time the bot got the thread (back): most likely the copy of the
            // request that return answered. Dialogflow heard it if the bot has the thread.
            return;
        }
        // The companion hears every user message on standby: only Meta can say whether the
        // inbox has the thread (taken directly, or before this service was deployed).
        d.thread.asked_in_doubt = Some(Ask::Bot);
        d.check_owner(
            CheckWhy::UserAsked,
            format!("{cause} on standby: asking thread_owner who has the thread"),
        );
        return;
    }
    match d.thread.state {
        State::Passing => {
            // The pass has not run yet: cancel it; the bot still owns the thread. (The return
            // reason marks a BOT reached by cancelling a pass: if that pass was already in
            // flight and lands, the thread is taken back.)
            let epoch = d.new_epoch();
            d.cancel.push(JobKind::Pass);
            d.thread.return_reason = Some(ReturnReason::User);
            d.thread.pending_welcome = None;
            d.job(NewJob::now(JobPayload::SendWelcome {
                welcome: WelcomeKind::WelcomeBack,
                epoch,
            }));
            d.to(
                State::Bot,
                at,
                now,
                policy,
                format!("{cause} before the pass ran; pass cancelled"),
            );
        }
        State::Human | State::Idle => {
            start_take(d, policy, at, now, ReturnReason::User, cause);
        }
        State::Returning | State::Bot => {}
    }
}

/// A new handover: pass to the inbox after `delay_ms`.
fn start_pass(d: &mut Decision, policy: &Policy, at: i64, now: i64, delay_ms: i64, cause: &str) {
    let epoch = d.new_epoch();
    d.thread.return_reason = None;
    d.thread.pending_welcome = None;
    d.thread.last_error = None;
    // The return this handover replaces is moot.
    d.cancel
        .extend([JobKind::Take, JobKind::SyncContexts, JobKind::SendWelcome]);
    d.cancel.retain(|kind| *kind != JobKind::Pass);
    d.job(NewJob::after(pass_job(policy, epoch), delay_ms));
    d.to(State::Passing, at, now, policy, cause);
}

/// A new return that needs a take. The take waits `HANDOVER_PASS_DELAY_MS`: a reply the
/// integration makes to the same request meanwhile (a tap on the bot's button reaches it too)
/// is refused while another app still has the thread, so the service's welcome after the take
/// is the only one.
fn start_take(
    d: &mut Decision,
    policy: &Policy,
    at: i64,
    now: i64,
    reason: ReturnReason,
    cause: &str,
) {
    let epoch = d.new_epoch();
    d.thread.return_reason = Some(reason);
    d.thread.pending_welcome = None;
    d.cancel.extend([
        JobKind::SendWelcome,
        JobKind::ClearHandoverContext,
        JobKind::SyncContexts,
    ]);
    // A stay in HUMAN that this very decision began and ended needs no idle timer.
    d.jobs
        .retain(|j| !matches!(j.payload, JobPayload::IdleCheck { .. }));
    // Earlier work of this decision may have cancelled pending takes: this one stays.
    d.cancel.retain(|kind| *kind != JobKind::Take);
    d.job(NewJob::after(take_job(cause, epoch), policy.pass_delay_ms));
    d.to(State::Returning, at, now, policy, cause.to_owned());
}

/// The thread is `BOT` because the return right after the handover of `pass_epoch` cancelled
/// its pass (no take since): a pass of that handover that lands now must be undone.
fn cancelled_by_return(thread: &Thread, pass_epoch: i64) -> bool {
    thread.state == State::Bot && thread.return_reason.is_some() && pass_epoch + 1 == thread.epoch
}

/// Our pass landed after a return made it moot: take the thread back, for that return.
fn take_back_superseded_pass(d: &mut Decision, policy: &Policy, now: i64) {
    d.thread.owner_app_id = Some(policy.target_app_id.clone());
    let epoch = d.thread.epoch;
    d.job(NewJob::now(take_job(
        "the user asked for the bot during the pass",
        epoch,
    )));
    d.to(
        State::Returning,
        now,
        now,
        policy,
        "pass_thread_control succeeded after a return was asked; taking back",
    );
}

/// The handover cannot happen: the bot keeps the thread, the user is told, and the
/// `human_handover` context is cleared.
fn handover_failed(d: &mut Decision, policy: &Policy, now: i64, why: &str) {
    let epoch = d.thread.epoch;
    d.thread.last_error = Some(why.to_owned());
    d.thread.owner_app_id = Some(policy.app_id.clone());
    d.thread.return_reason = None;
    d.thread.pending_welcome = None;
    d.cancel.push(JobKind::Pass);
    d.job(NewJob::now(JobPayload::ClearHandoverContext { epoch }));
    if d.thread.notified_epoch < epoch {
        d.job(NewJob::now(JobPayload::SendWelcome {
            welcome: WelcomeKind::HandoverFailed,
            epoch,
        }));
    }
    d.to(
        State::Bot,
        now,
        now,
        policy,
        format!("the handover cannot happen: {why}"),
    );
}

/// The bot owns the thread again: sync contexts and welcome the user, once per return.
fn became_bot(d: &mut Decision, at: i64, policy: &Policy, now: i64, cause: impl Into<String>) {
    d.thread.owner_app_id = Some(policy.app_id.clone());
    let before = d.thread.state;
    if before == State::Bot {
        return; // a second signal of the same return: no second welcome
    }
    if before != State::Returning {
        // Handed back by someone else (the inbox's "Done"): a return of its own.
        d.new_epoch();
    }
    let epoch = d.thread.epoch;
    d.cancel.extend([JobKind::Pass, JobKind::Take]);
    d.thread.human_since = None;
    d.thread.last_error = None;
    let reason = d.thread.return_reason.take();
    // A fulfillment return already set the contexts in its own answer.
    if before != State::Passing && reason != Some(ReturnReason::Fulfillment) {
        d.job(NewJob::now(JobPayload::SyncContexts { epoch }));
        if d.thread.notified_epoch < epoch {
            let welcome = if reason == Some(ReturnReason::AgentTimeout) {
                WelcomeKind::AgentTimeout
            } else {
                WelcomeKind::WelcomeBack
            };
            d.job(NewJob::now(JobPayload::SendWelcome { welcome, epoch }));
        }
    }
    d.thread.returned_at = Some(at);
    d.to(State::Bot, at, now, policy, cause);
}

fn enter_human(
    d: &mut Decision,
    owner: Option<String>,
    at: i64,
    policy: &Policy,
    now: i64,
    cause: impl Into<String>,
) {
    let before = d.thread.state;
    if owner.is_some() || before != State::Human {
        d.thread.owner_app_id = owner;
    }
    d.cancel.push(JobKind::Pass);
    if before == State::Returning {
        // Someone else took the thread while we were taking it back: the take is moot.
        d.cancel.push(JobKind::Take);
    }
    if matches!(before, State::Bot | State::Idle) {
        // Taken by the inbox on its own (an agent replied): a new episode.
        d.new_epoch();
        d.cancel
            .extend([JobKind::SyncContexts, JobKind::SendWelcome]);
    }
    d.thread.return_reason = None;
    if before != State::Human {
        start_human_stay(d, policy, now);
    }
    d.to(State::Human, at, now, policy, cause);
}

/// A new stay in `HUMAN` begins now: it is the idle timer's generation.
fn start_human_stay(d: &mut Decision, policy: &Policy, now: i64) {
    d.thread.human_since = Some(now);
    if policy.idle_timeout_ms > 0 {
        d.job(NewJob::after(
            JobPayload::IdleCheck { generation: now },
            policy.idle_timeout_ms,
        ));
    }
}

fn pass_job(policy: &Policy, epoch: i64) -> JobPayload {
    JobPayload::Pass {
        target_app_id: policy.target_app_id.clone(),
        metadata: call_metadata("the user asked for a person", epoch),
        epoch,
    }
}

fn take_job(reason: &str, epoch: i64) -> JobPayload {
    JobPayload::Take {
        metadata: call_metadata(reason, epoch),
        epoch,
    }
}

/// Whether a message can be sent now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WelcomePlan {
    Send,
    /// Kept for the user's next message, with the reason.
    Defer(&'static str),
    /// Moot or already given: not sent at all, with the reason.
    Skip(&'static str),
}

/// Whether the message of `epoch` can go out now.
pub fn welcome_plan(thread: &Thread, epoch: i64, now: i64) -> WelcomePlan {
    if epoch != thread.epoch {
        return WelcomePlan::Skip("a newer handover or return made it moot");
    }
    if thread.notified_epoch >= epoch {
        return WelcomePlan::Skip("this return's message was already given");
    }
    if thread.state != State::Bot {
        return WelcomePlan::Defer("the bot does not own the thread");
    }
    if thread.owner_in_doubt {
        return WelcomePlan::Defer("thread_owner is being asked who owns the thread");
    }
    match thread.last_user_msg_at {
        Some(at) if now - at < DAY_MS => WelcomePlan::Send,
        _ => WelcomePlan::Defer("outside Messenger's 24-hour window"),
    }
}

#[cfg(test)]
mod tests;
