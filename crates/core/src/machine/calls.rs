//! The outcomes of our own `pass_thread_control` and `take_thread_control`.

use super::*;

pub(super) fn pass_done(d: &mut Decision, call: &CallOutcome, policy: &Policy, now: i64) {
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

pub(super) fn take_done(d: &mut Decision, call: &CallOutcome, policy: &Policy, now: i64) {
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
