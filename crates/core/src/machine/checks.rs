//! `thread_owner`: when the reconciler asks again, and what its answer settles.

use super::*;

pub(super) fn first_check(state: State, now: i64, policy: &Policy) -> Option<i64> {
    match state {
        State::Passing | State::Returning => Some(now + policy.stuck_after_ms),
        // Messenger hands an inactive thread back after 24 hours.
        State::Human => Some(now + DAY_MS),
        State::Bot | State::Idle => None,
    }
}

/// The reconciler asked and the state held: ask again later, less and less often.
pub(super) fn back_off_check(d: &mut Decision, now: i64, policy: &Policy) {
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

pub(super) fn owner_checked(d: &mut Decision, check: &OwnerCheck, policy: &Policy, now: i64) {
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

pub(super) fn on_owner_checked(d: &mut Decision, check: &OwnerCheck, policy: &Policy, now: i64) {
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
