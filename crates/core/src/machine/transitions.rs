//! The moves every path shares: starting a pass or a take, the bot or a human getting the
//! thread, a handover that failed, a kept welcome.

use super::*;

/// The user wrote while the bot owns the thread: a message that could not be sent earlier
/// (not the owner, or outside the 24-hour window) goes out now, once.
pub(super) fn send_kept_welcome(d: &mut Decision) {
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
pub(super) fn user_asks_for_bot(
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
            supersede_asked_in_doubt(d);
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

/// A new handover or return asked for now supersedes what was asked while the owner was in
/// doubt: once `thread_owner` answers, the older request must not undo the newer one (found by
/// the property tests: a handover asked in doubt, then "back to bot", passed to the inbox).
pub(super) fn supersede_asked_in_doubt(d: &mut Decision) {
    d.thread.asked_in_doubt = None;
}

/// Jobs this very decision queued before it started a new epoch that makes them moot (a
/// return that `thread_owner` confirmed, then the handover asked meanwhile): not queued at
/// all, so no decision queues a welcome or a sync for a thread it leaves in PASSING (found by
/// the property tests).
fn drop_own_jobs(d: &mut Decision, kinds: &[JobKind]) {
    d.jobs.retain(|j| !kinds.contains(&j.payload.kind()));
}

/// A new handover: pass to the inbox after `delay_ms`.
pub(super) fn start_pass(
    d: &mut Decision,
    policy: &Policy,
    at: i64,
    now: i64,
    delay_ms: i64,
    cause: &str,
) {
    let epoch = d.new_epoch();
    supersede_asked_in_doubt(d);
    d.thread.return_reason = None;
    d.thread.pending_welcome = None;
    d.thread.last_error = None;
    // The return this handover replaces is moot.
    let moot = [JobKind::Take, JobKind::SyncContexts, JobKind::SendWelcome];
    d.cancel.extend(moot);
    d.cancel.retain(|kind| *kind != JobKind::Pass);
    drop_own_jobs(d, &moot);
    d.job(NewJob::after(pass_job(policy, epoch), delay_ms));
    d.to(State::Passing, at, now, policy, cause);
}

/// A new return that needs a take. The take waits `HANDOVER_PASS_DELAY_MS`: a reply the
/// integration makes to the same request meanwhile (a tap on the bot's button reaches it too)
/// is refused while another app still has the thread, so the service's welcome after the take
/// is the only one.
pub(super) fn start_take(
    d: &mut Decision,
    policy: &Policy,
    at: i64,
    now: i64,
    reason: ReturnReason,
    cause: &str,
) {
    let epoch = d.new_epoch();
    supersede_asked_in_doubt(d);
    d.thread.return_reason = Some(reason);
    d.thread.pending_welcome = None;
    let moot = [
        JobKind::SendWelcome,
        JobKind::ClearHandoverContext,
        JobKind::SyncContexts,
    ];
    d.cancel.extend(moot);
    // A stay in HUMAN that this very decision began and ended needs no idle timer.
    drop_own_jobs(d, &[JobKind::IdleCheck]);
    drop_own_jobs(d, &moot);
    // Earlier work of this decision may have cancelled pending takes: this one stays.
    d.cancel.retain(|kind| *kind != JobKind::Take);
    d.job(NewJob::after(take_job(cause, epoch), policy.pass_delay_ms));
    d.to(State::Returning, at, now, policy, cause.to_owned());
}

/// The thread is `BOT` because the return right after the handover of `pass_epoch` cancelled
/// its pass (no take since): a pass of that handover that lands now must be undone. So a
/// pass of that handover whose outcome is unknown must still learn whether it landed.
pub fn cancelled_by_return(thread: &Thread, pass_epoch: i64) -> bool {
    thread.state == State::Bot && thread.return_reason.is_some() && pass_epoch + 1 == thread.epoch
}

/// Our pass landed after a return made it moot: take the thread back, for that return.
pub(super) fn take_back_superseded_pass(d: &mut Decision, policy: &Policy, now: i64) {
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
pub(super) fn handover_failed(d: &mut Decision, policy: &Policy, now: i64, why: &str) {
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
pub(super) fn became_bot(
    d: &mut Decision,
    at: i64,
    policy: &Policy,
    now: i64,
    cause: impl Into<String>,
) {
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
            // This job gives the welcome: one kept from earlier in the return (deferred while
            // the take ran) must not also be given in-band (found by the property tests).
            d.thread.pending_welcome = None;
            d.job(NewJob::now(JobPayload::SendWelcome { welcome, epoch }));
        }
    }
    d.thread.returned_at = Some(at);
    d.to(State::Bot, at, now, policy, cause);
}

pub(super) fn enter_human(
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
pub(super) fn start_human_stay(d: &mut Decision, policy: &Policy, now: i64) {
    d.thread.human_since = Some(now);
    if policy.idle_timeout_ms > 0 {
        d.job(NewJob::after(
            JobPayload::IdleCheck { generation: now },
            policy.idle_timeout_ms,
        ));
    }
}

pub(super) fn pass_job(policy: &Policy, epoch: i64) -> JobPayload {
    JobPayload::Pass {
        target_app_id: policy.target_app_id.clone(),
        metadata: call_metadata("the user asked for a person", epoch),
        epoch,
    }
}

pub(super) fn take_job(reason: &str, epoch: i64) -> JobPayload {
    JobPayload::Take {
        metadata: call_metadata(reason, epoch),
        epoch,
    }
}
