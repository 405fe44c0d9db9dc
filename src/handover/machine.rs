//! The conversation state machine: (thread, input) → new thread + jobs, as a pure function.
//!
//! Facts drive state: a handover event names the new owner, a Graph API answer says whether a
//! call worked, `thread_owner` says who owns the thread. The worker feeds inputs one at a
//! time per user, so `decide` never sees two inputs of one user at once.

use serde_json::Value;

use super::text::PhraseSet;
use super::thread::{ReturnReason, State, Thread};
use crate::jobs::payload::{JobPayload, NewJob, WelcomeKind};
use crate::messenger::events::{EventKind, IncomingEvent};
use crate::time::DAY_MS;

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

#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// A handover action reached `/fulfillment`.
    Handover {
        session: String,
        snapshot: Value,
    },
    /// A return action reached `/fulfillment` (it answers the user and syncs in-band).
    ReturnByFulfillment {
        session: String,
    },
    /// Any other action reached `/fulfillment`: Dialogflow talked with the user.
    RememberSession {
        session: String,
    },
    /// A Messenger webhook event.
    Event(&'a IncomingEvent),
    PassDone(Result<(), Failure>),
    TakeDone(Result<(), Failure>),
    WelcomeSent {
        kind: WelcomeKind,
        result: Result<(), Failure>,
    },
    WelcomeDeferred {
        kind: WelcomeKind,
    },
    IdleCheck {
        generation: i64,
    },
    OwnerChecked(Owner),
}

/// What to store: the new thread, why (for the audit trail), jobs to add and pending jobs to cancel.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub thread: Thread,
    /// Present when something worth an audit row happened.
    pub cause: Option<String>,
    pub jobs: Vec<NewJob>,
    /// Job kinds (as in `JobPayload::kind`) whose pending jobs for this thread are cancelled.
    pub cancel: Vec<&'static str>,
}

impl Decision {
    fn unchanged(thread: &Thread) -> Self {
        Self {
            thread: thread.clone(),
            cause: None,
            jobs: Vec::new(),
            cancel: Vec::new(),
        }
    }

    fn to(&mut self, state: State, now: i64, cause: impl Into<String>) {
        if self.thread.state != state {
            self.thread.state = state;
            self.thread.state_since = now;
        }
        self.cause = Some(cause.into());
    }

    fn job(&mut self, job: NewJob) {
        self.jobs.push(job);
    }
}

pub fn decide(thread: &Thread, input: &Input<'_>, policy: &Policy, now: i64) -> Decision {
    let mut d = Decision::unchanged(thread);
    match input {
        Input::Handover { session, snapshot } => {
            d.thread.session = Some(session.clone());
            d.thread.snapshot = Some(snapshot.clone());
            d.thread.last_user_msg_at = Some(now);
            if thread.state == State::Passing {
                // One pass is already queued; a repeated request does not queue another.
                return d;
            }
            d.thread.return_reason = None;
            d.thread.pending_welcome = None;
            d.thread.last_error = None;
            d.cancel.push("take");
            d.job(NewJob::after(pass_job(policy), policy.pass_delay_ms));
            d.to(State::Passing, now, "handover action in fulfillment");
        }
        Input::ReturnByFulfillment { session } => {
            d.thread.session = Some(session.clone());
            d.thread.last_user_msg_at = Some(now);
            d.cancel.push("pass");
            match thread.state {
                State::Passing => {
                    d.thread.owner_app_id = Some(policy.app_id.clone());
                    d.thread.return_reason = Some(ReturnReason::Fulfillment);
                    d.to(
                        State::Bot,
                        now,
                        "return action in fulfillment before the pass ran; pass cancelled",
                    );
                }
                State::Human | State::Idle => {
                    // The integration cannot deliver this fulfillment's answer: the bot is
                    // not the owner yet. So after the take the service syncs and welcomes.
                    d.thread.return_reason = Some(ReturnReason::User);
                    d.job(NewJob::now(take_job("return action in fulfillment")));
                    d.to(State::Returning, now, "return action in fulfillment");
                }
                State::Returning | State::Bot => {}
            }
        }
        Input::RememberSession { session } => {
            d.thread.session = Some(session.clone());
            d.thread.last_user_msg_at = Some(now);
            if matches!(thread.state, State::Human | State::Idle) {
                // Dialogflow only hears users of threads the bot owns.
                d.thread.owner_app_id = Some(policy.app_id.clone());
                d.to(
                    State::Bot,
                    now,
                    "Dialogflow answered the user, so the bot owns the thread",
                );
            }
            send_kept_welcome(&mut d, thread);
        }
        Input::Event(event) => on_event(&mut d, thread, event, policy, now),
        Input::PassDone(Ok(())) => match thread.state {
            State::Passing => enter_human(
                &mut d,
                thread,
                Some(policy.target_app_id.clone()),
                policy,
                now,
                "pass_thread_control succeeded",
            ),
            State::Bot => {
                // A return cancelled the pass while it was already running: take it back.
                d.thread.owner_app_id = Some(policy.target_app_id.clone());
                d.job(NewJob::now(take_job(
                    "the user asked for the bot during the pass",
                )));
                d.to(
                    State::Returning,
                    now,
                    "pass_thread_control succeeded after a return was asked; taking back",
                );
            }
            _ => {}
        },
        Input::PassDone(Err(failure)) => {
            if failure.not_thread_owner {
                enter_human(
                    &mut d,
                    thread,
                    None,
                    policy,
                    now,
                    "pass_thread_control: another app controls the thread (#10/2018300)",
                );
            } else if thread.state == State::Passing {
                d.thread.last_error = Some(failure.message.clone());
                d.thread.owner_app_id = Some(policy.app_id.clone());
                d.to(
                    State::Bot,
                    now,
                    format!("pass_thread_control failed: {}", failure.message),
                );
            }
        }
        Input::TakeDone(Ok(())) => {
            became_bot(&mut d, thread, policy, now, "take_thread_control succeeded")
        }
        Input::TakeDone(Err(failure)) => {
            d.thread.last_error = Some(failure.message.clone());
            d.thread.return_reason = None;
            if thread.state == State::Returning {
                let cause = if failure.not_thread_owner {
                    "take_thread_control: another app controls the thread (#10/2018300)".to_owned()
                } else {
                    format!("take_thread_control failed: {}", failure.message)
                };
                // The thread stays with whoever has it: a new stay in HUMAN, with its idle timer.
                start_human_stay(&mut d, policy, now);
                d.to(State::Human, now, cause);
            }
        }
        Input::WelcomeSent { kind, result } => match result {
            Ok(()) => {
                d.thread.pending_welcome = None;
                d.cause = Some(format!("sent the {} message", kind.as_str()));
            }
            Err(failure) if failure.not_thread_owner => {
                d.thread.pending_welcome = Some(*kind);
                if thread.state != State::Human {
                    d.thread.owner_app_id = None;
                    start_human_stay(&mut d, policy, now);
                }
                d.to(
                    State::Human,
                    now,
                    "Send API: another app controls the thread (#10/2018300); welcome kept for later",
                );
            }
            Err(failure) if failure.outside_window => {
                d.thread.pending_welcome = Some(*kind);
                d.cause = Some(
                    "welcome kept for the user's next message: outside the 24-hour window".into(),
                );
            }
            Err(failure) => {
                d.thread.last_error = Some(failure.message.clone());
                d.cause = Some(format!("welcome not sent: {}", failure.message));
            }
        },
        Input::WelcomeDeferred { kind } => {
            d.thread.pending_welcome = Some(*kind);
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
                d.thread.return_reason = Some(ReturnReason::AgentTimeout);
                d.job(NewJob::now(take_job(
                    "no agent reply within the idle timeout",
                )));
                d.to(
                    State::Returning,
                    now,
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
        Input::OwnerChecked(owner) => match owner {
            Owner::App(app) if *app == policy.app_id => {
                if thread.state == State::Passing {
                    d.thread.last_error = Some("the pass never completed".into());
                    d.cancel.push("pass");
                    d.to(
                        State::Bot,
                        now,
                        "thread_owner: the bot still owns the thread; the pass never completed",
                    );
                } else {
                    became_bot(
                        &mut d,
                        thread,
                        policy,
                        now,
                        "thread_owner: the bot owns the thread",
                    );
                }
            }
            Owner::App(app) => enter_human(
                &mut d,
                thread,
                Some(app.clone()),
                policy,
                now,
                format!("thread_owner: app {app} owns the thread"),
            ),
            Owner::Hidden => enter_human(
                &mut d,
                thread,
                None,
                policy,
                now,
                "thread_owner: another app owns the thread",
            ),
            Owner::Idle => {
                if thread.state != State::Idle {
                    d.thread.owner_app_id = None;
                    d.cancel.push("pass");
                    d.cancel.push("take");
                    d.to(State::Idle, now, "thread_owner: the thread is idle");
                }
            }
        },
    }
    d
}

fn on_event(d: &mut Decision, thread: &Thread, event: &IncomingEvent, policy: &Policy, now: i64) {
    // Meta's timestamp, but never in the future: a clock far ahead would stall the idle timer.
    let ts = if event.timestamp_ms > 0 {
        event.timestamp_ms.min(now)
    } else {
        now
    };
    match &event.kind {
        EventKind::Message { text, .. } => {
            d.thread.last_user_msg_at = Some(ts.max(thread.last_user_msg_at.unwrap_or(0)));
            let asks_for_bot = text
                .as_deref()
                .is_some_and(|t| policy.return_phrases.matches(t));
            if asks_for_bot && thread.state != State::Bot {
                user_asks_for_bot(d, thread, now, "the user asked for the bot");
            } else {
                send_kept_welcome(d, thread);
            }
        }
        EventKind::Postback { payload, .. } => {
            d.thread.last_user_msg_at = Some(ts.max(thread.last_user_msg_at.unwrap_or(0)));
            if payload.as_deref() == Some(policy.return_payload.as_str())
                && thread.state != State::Bot
            {
                user_asks_for_bot(d, thread, now, "the user tapped the back-to-bot button");
            } else {
                send_kept_welcome(d, thread);
            }
        }
        EventKind::Echo { app_id, text, .. } => {
            if app_id.as_deref() == Some(policy.app_id.as_str()) {
                return; // the bot's own message
            }
            d.thread.last_agent_msg_at = Some(ts.max(thread.last_agent_msg_at.unwrap_or(0)));
            let hands_back = text
                .as_deref()
                .is_some_and(|t| policy.agent_return_phrases.matches(t));
            if hands_back && matches!(thread.state, State::Human | State::Passing | State::Idle) {
                d.cancel.push("pass");
                d.thread.return_reason = Some(ReturnReason::Agent);
                d.job(NewJob::now(take_job("an agent handed the thread back")));
                d.to(
                    State::Returning,
                    now,
                    "an agent typed an AGENT_RETURN_PHRASES entry",
                );
            }
        }
        EventKind::PassThreadControl {
            new_owner_app_id, ..
        }
        | EventKind::TakeThreadControl {
            new_owner_app_id, ..
        } => {
            let verb = event.kind.name();
            match new_owner_app_id.as_deref() {
                Some(owner) if owner == policy.app_id => became_bot(
                    d,
                    thread,
                    policy,
                    now,
                    format!("{verb}: the bot app is the new owner"),
                ),
                Some(owner) => enter_human(
                    d,
                    thread,
                    Some(owner.to_owned()),
                    policy,
                    now,
                    format!("{verb}: app {owner} is the new owner"),
                ),
                None => {
                    d.cause = Some(format!("{verb} without new_owner_app_id ignored"));
                }
            }
        }
        EventKind::RequestThreadControl {
            requested_owner_app_id,
            ..
        } => {
            let by_target =
                requested_owner_app_id.as_deref() == Some(policy.target_app_id.as_str());
            if by_target && matches!(thread.state, State::Bot | State::Idle | State::Returning) {
                d.cancel.push("take");
                d.thread.return_reason = None;
                d.job(NewJob::now(pass_job(policy)));
                d.to(
                    State::Passing,
                    now,
                    "request_thread_control from the inbox: passing to it",
                );
            }
        }
        EventKind::Read | EventKind::Delivery | EventKind::Other { .. } => {}
    }
}

/// The user wrote while the bot owns the thread: a welcome that could not be sent earlier
/// (not the owner, or outside the 24-hour window) goes out now.
fn send_kept_welcome(d: &mut Decision, thread: &Thread) {
    if let (State::Bot, Some(kind)) = (d.thread.state, thread.pending_welcome) {
        d.thread.pending_welcome = None;
        d.job(NewJob::now(JobPayload::SendWelcome { welcome: kind }));
        d.cause = Some("the user wrote again: sending the kept welcome".into());
    }
}

fn user_asks_for_bot(d: &mut Decision, thread: &Thread, now: i64, cause: &str) {
    match thread.state {
        State::Passing => {
            // The pass has not run yet: cancel it; the bot still owns the thread.
            d.cancel.push("pass");
            d.thread.return_reason = None;
            d.job(NewJob::now(JobPayload::SendWelcome {
                welcome: WelcomeKind::WelcomeBack,
            }));
            d.to(
                State::Bot,
                now,
                format!("{cause} before the pass ran; pass cancelled"),
            );
        }
        State::Human | State::Idle => {
            d.thread.return_reason = Some(ReturnReason::User);
            d.job(NewJob::now(take_job(cause)));
            d.to(State::Returning, now, cause.to_owned());
        }
        State::Returning | State::Bot => {}
    }
}

/// The bot owns the thread again: sync contexts and welcome the user, once.
fn became_bot(
    d: &mut Decision,
    thread: &Thread,
    policy: &Policy,
    now: i64,
    cause: impl Into<String>,
) {
    d.thread.owner_app_id = Some(policy.app_id.clone());
    if thread.state == State::Bot {
        return; // a second signal of the same return: no second welcome
    }
    d.cancel.push("pass");
    d.cancel.push("take");
    d.thread.human_since = None;
    d.thread.last_error = None;
    let reason = thread.return_reason;
    d.thread.return_reason = None;
    if thread.state != State::Passing && reason != Some(ReturnReason::Fulfillment) {
        // The fulfillment path answers the user and sets the contexts in its own response.
        d.job(NewJob::now(JobPayload::SyncContexts));
        let welcome = if reason == Some(ReturnReason::AgentTimeout) {
            WelcomeKind::AgentTimeout
        } else {
            WelcomeKind::WelcomeBack
        };
        d.job(NewJob::now(JobPayload::SendWelcome { welcome }));
    }
    d.to(State::Bot, now, cause);
}

fn enter_human(
    d: &mut Decision,
    thread: &Thread,
    owner: Option<String>,
    policy: &Policy,
    now: i64,
    cause: impl Into<String>,
) {
    if owner.is_some() || thread.state != State::Human {
        d.thread.owner_app_id = owner;
    }
    d.cancel.push("pass");
    if thread.state == State::Returning {
        // Someone else took the thread while we were taking it back: the take is moot.
        d.cancel.push("take");
    }
    d.thread.return_reason = None;
    if thread.state != State::Human {
        start_human_stay(d, policy, now);
    }
    d.to(State::Human, now, cause);
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

fn pass_job(policy: &Policy) -> JobPayload {
    JobPayload::Pass {
        target_app_id: policy.target_app_id.clone(),
        metadata: "messenger-handover: the user asked for a person".into(),
    }
}

fn take_job(reason: &str) -> JobPayload {
    JobPayload::Take {
        metadata: format!("messenger-handover: {reason}"),
    }
}

/// Whether a welcome can be sent now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WelcomePlan {
    Send,
    /// Kept for the user's next message, with the reason.
    Defer(&'static str),
}

pub fn welcome_plan(thread: &Thread, now: i64) -> WelcomePlan {
    if thread.state != State::Bot {
        return WelcomePlan::Defer("the bot does not own the thread");
    }
    match thread.last_user_msg_at {
        Some(at) if now - at < DAY_MS => WelcomePlan::Send,
        _ => WelcomePlan::Defer("outside Messenger's 24-hour window"),
    }
}

#[cfg(test)]
mod tests;
