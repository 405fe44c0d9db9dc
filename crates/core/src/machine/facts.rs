//! Facts: who owns the thread at what time. Each fact is placed against the time of the
//! state it would change (`Span::age`); one that cannot be placed is checked with `thread_owner`.

use super::*;

/// When a fact held, compared with the time of the state it would change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Age {
    Newer,
    Older,
    Unsure,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    pub(super) from: i64,
    pub(super) to: i64,
}

impl Span {
    /// A Meta timestamp, give or take the clock skew.
    pub(super) fn meta(ts: i64) -> Span {
        Span {
            from: ts - CLOCK_SKEW_MS,
            to: ts + CLOCK_SKEW_MS,
        }
    }

    /// Our own call or decision: it happened between `from` and `to` on our clock.
    pub(super) fn ours(from: i64, to: i64) -> Span {
        Span {
            from,
            to: to.max(from),
        }
    }

    pub(super) fn age(self, thread: &Thread) -> Age {
        if self.from >= thread.state_at {
            Age::Newer
        } else if self.to < thread.state_at {
            Age::Older
        } else {
            Age::Unsure
        }
    }

    /// The time recorded as the state's when this fact changes it.
    pub(super) fn at(self) -> i64 {
        self.from.max(0) + (self.to - self.from) / 2
    }
}

/// Who a fact says owns the thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    Us,
    /// Another app. `moved`: control moved to it by a pass or take (not merely a `standby`
    /// delivery or an echo, which are expected while a take is still coming).
    Other {
        app: Option<String>,
        moved: bool,
    },
    Nobody,
}

/// Metadata of our own pass or take names its epoch (`… [handover 7]`), so the event it causes
/// is placed exactly, whatever its timestamp.
pub fn call_metadata(what: &str, epoch: i64) -> String {
    format!("messenger-handover: {what} [handover {epoch}]")
}

pub(super) fn our_epoch(metadata: &str) -> Option<i64> {
    let rest = metadata.strip_prefix("messenger-handover: ")?;
    let tail = rest.rsplit_once("[handover ")?.1.strip_suffix(']')?;
    tail.parse().ok()
}

/// A handover event caused by our own pass or take of `epoch`.
pub(super) fn our_call_event(
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
pub(super) fn bot_echo(d: &mut Decision, span: Span, policy: &Policy, now: i64) {
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
pub(super) fn correct_to_bot(d: &mut Decision, at: i64, policy: &Policy, now: i64, cause: &str) {
    d.thread.owner_app_id = Some(policy.app_id.clone());
    d.thread.human_since = None;
    d.thread.return_reason = None;
    d.cancel.extend([JobKind::Pass, JobKind::Take]);
    d.thread.returned_at = Some(at);
    d.to(State::Bot, at, now, policy, cause);
}

/// A `standby` delivery to the bot app: another app owned the thread when the user wrote.
pub(super) fn observe_standby(d: &mut Decision, span: Span, policy: &Policy, now: i64) {
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
pub(super) fn observe(
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
