//! The conversation state machine: (thread, input) → new thread + jobs, as a pure function.
//!
//! Two kinds of input drive it:
//!
//! - **Decisions** (a handover or return action, a user's "back to bot", an agent's `#bot`,
//!   the idle timeout, the inbox's request, an operator through the admin API) start a new
//!   *epoch* of the thread. Jobs carry the epoch they serve; when a newer decision arrives
//!   they are moot and are skipped.
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

mod admin;
mod calls;
mod checks;
mod events;
mod facts;
mod notices;
mod report;
mod transitions;
mod welcome;

use crate::event::{Channel, EventKind, IncomingEvent};
use crate::jobs::{CheckWhy, JobKind, JobPayload, NewJob, NoticeEvent, WelcomeKind};
use crate::text::PhraseSet;
use crate::thread::{Ask, ReturnReason, Snapshot, State, Thread};
use crate::time::{DAY_MS, HOUR_MS};

pub use admin::ADMIN_CAUSE;
use admin::*;
use calls::*;
use checks::*;
use events::*;
pub use facts::call_metadata;
use facts::*;
pub use notices::NotifyPolicy;
pub use report::{Cause, Direction, Handover};
pub use transitions::cancelled_by_return;
use transitions::*;
pub use welcome::{WelcomePlan, welcome_plan};

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
    /// Agent notifications (`NOTIFY_*`); off by default.
    pub notify: NotifyPolicy,
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
        snapshot: Snapshot,
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
    /// The waiting timer of the user's wait that began at `since` (agent notifications).
    WaitingCheck {
        since: i64,
    },
    OwnerChecked(OwnerCheck),
    /// An operator, through the admin API: back to the bot now (the usual take, context sync
    /// and welcome). `note`: the operator's words for the audit trail.
    AdminReturn {
        note: Option<String>,
    },
    /// An operator, through the admin API: to the inbox now (a pass).
    AdminHandover {
        note: Option<String>,
    },
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
    /// The handover this decision started, or found had happened (for the metrics).
    pub handover: Option<Handover>,
    /// How long the stay with a human that this decision ended lasted, in ms.
    pub human_stay_ms: Option<i64>,
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
            handover: None,
            human_stay_ms: None,
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

pub fn decide(thread: &Thread, input: &Input<'_>, policy: &Policy, now: i64) -> Decision {
    let mut d = decide_state(thread, input, policy, now);
    d.handover = report::handover_of(thread, input, &d, policy);
    d.human_stay_ms = report::human_stay_ended(thread, &d, now);
    notices::add(thread, &mut d, policy, now);
    d
}

fn decide_state(thread: &Thread, input: &Input<'_>, policy: &Policy, now: i64) -> Decision {
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
                    supersede_asked_in_doubt(&mut d);
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
                    // Already back: only a welcome kept for the user's next message is given,
                    // here. One still owed without being kept has its job queued or under
                    // way (its Send API call may be in flight): that job gives it, once.
                    if thread.notified_epoch < thread.epoch && thread.pending_welcome.is_some() {
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
        // The timer's own start is not needed: the thread says which wait is under way.
        Input::WaitingCheck { .. } => notices::waiting_check(&mut d, policy, now),
        Input::OwnerChecked(check) => owner_checked(&mut d, check, policy, now),
        Input::AdminReturn { note } => admin_return(&mut d, note.as_deref(), policy, now),
        Input::AdminHandover { note } => admin_handover(&mut d, note.as_deref(), policy, now),
    }
    d
}

#[cfg(test)]
mod tests;
