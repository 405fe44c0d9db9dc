//! Webhook events: what each kind of Messenger event means for the thread.

use super::*;

pub(super) fn on_event(d: &mut Decision, event: &IncomingEvent, policy: &Policy, now: i64) {
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
            // Passed to us by another app after our pass began: that app had the thread since
            // (our pass was applied, its answer maybe lost, or the inbox took the thread) and
            // gave it back, like the inbox's "Done". The pass is over, not to be made or
            // repeated (the chaos test's seed 5: a pass in doubt was verified by thread_owner
            // after the hand-back, found the bot owner, and made again). A take naming us
            // says only that we own the thread, which a thread being passed still is.
            if is_pass
                && seen == Seen::Us
                && d.thread.state == State::Passing
                && span.age(&d.thread) == Age::Newer
            {
                became_bot(d, span.at(), policy, now, cause);
                return;
            }
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
