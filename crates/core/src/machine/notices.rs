//! Agent notifications: what a decision tells the team (`NOTIFY_WEBHOOK_URL`). Read from the
//! thread before and after, like `report`: a user handed to the inbox, a handover that failed,
//! a user waiting too long for an agent, a conversation back with the bot. Each is queued as a
//! `notify` job in the decision that made it true, so it is sent once per such decision (the
//! job is retried until the endpoint takes it) and never holds the conversation back.

use super::*;

/// What the notifications need of the settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotifyPolicy {
    /// `NOTIFY_WEBHOOK_URL` is set.
    pub enabled: bool,
    /// `NOTIFY_WAITING_SECS` in ms; 0 = no waiting notices.
    pub waiting_ms: i64,
}

impl NotifyPolicy {
    fn waiting_on(&self) -> bool {
        self.enabled && self.waiting_ms > 0
    }
}

/// Keeps `waiting_since` true to the decision and queues the notices it calls for.
pub(super) fn add(before: &Thread, d: &mut Decision, policy: &Policy, now: i64) {
    track_waiting(before, d, now);
    let notify = policy.notify;
    if !notify.enabled {
        return;
    }
    let after = d.thread.state;
    let epoch = d.thread.epoch;
    if after == State::Human && matches!(before.state, State::Bot | State::Passing | State::Idle) {
        let cause = d.handover.map(|h| h.cause.as_str().to_owned());
        d.job(notice(
            NoticeEvent::HandedToInbox,
            epoch,
            now,
            cause,
            None,
            None,
        ));
    }
    // Only `handover_failed` queues the clearing of the handover context.
    let failed = d
        .jobs
        .iter()
        .any(|j| matches!(j.payload, JobPayload::ClearHandoverContext { .. }));
    if failed {
        let error = d.thread.last_error.clone();
        d.job(notice(
            NoticeEvent::HandoverFailed,
            epoch,
            now,
            None,
            None,
            error,
        ));
    }
    if after == State::Bot && matches!(before.state, State::Human | State::Returning) {
        let cause = before
            .return_reason
            .map(return_cause)
            .or(d.handover.map(|h| h.cause))
            .unwrap_or(Cause::Corrected);
        let cause = Some(cause.as_str().to_owned());
        d.job(notice(
            NoticeEvent::ReturnedToBot,
            epoch,
            now,
            cause,
            None,
            None,
        ));
    }
    if notify.waiting_on()
        && d.thread.waiting_since != before.waiting_since
        && let Some(since) = d.thread.waiting_since
    {
        d.job(NewJob::after(
            JobPayload::WaitingCheck { since },
            since.saturating_add(notify.waiting_ms) - now,
        ));
    }
}

/// The waiting timer (at most one per thread is queued): a notice if the user has waited
/// `NOTIFY_WAITING_SECS`, once per wait; else the timer again for the wait under way (one that
/// began while this timer was queued had no timer of its own).
pub(super) fn waiting_check(d: &mut Decision, policy: &Policy, now: i64) {
    let t = &d.thread;
    let (true, State::Human, Some(waiting)) =
        (policy.notify.waiting_on(), t.state, t.waiting_since)
    else {
        return;
    };
    let due = waiting.saturating_add(policy.notify.waiting_ms);
    if now < due {
        let timer = JobPayload::WaitingCheck { since: waiting };
        d.job(NewJob::after(timer, due - now));
        return;
    }
    let waited = Some(now - waiting);
    d.job(notice(
        NoticeEvent::Waiting,
        t.epoch,
        now,
        None,
        waited,
        None,
    ));
}

/// With a human, the user waits from the handover, or from their first message after an
/// agent's; an agent's message ends the wait, and so does leaving `HUMAN`.
fn track_waiting(before: &Thread, d: &mut Decision, now: i64) {
    let t = &mut d.thread;
    if t.state != State::Human || t.last_agent_msg_at > before.last_agent_msg_at {
        t.waiting_since = None;
    } else if before.state != State::Human
        || (t.last_user_msg_at > before.last_user_msg_at && t.waiting_since.is_none())
    {
        t.waiting_since = Some(now);
    }
}

fn return_cause(reason: ReturnReason) -> Cause {
    match reason {
        ReturnReason::User => Cause::UserAsked,
        ReturnReason::Agent => Cause::AgentHandedBack,
        ReturnReason::AgentTimeout => Cause::IdleTimeout,
        ReturnReason::Fulfillment => Cause::Fulfillment,
        ReturnReason::Admin => Cause::Admin,
    }
}

fn notice(
    event: NoticeEvent,
    epoch: i64,
    at: i64,
    cause: Option<String>,
    waited_ms: Option<i64>,
    error: Option<String>,
) -> NewJob {
    NewJob::now(JobPayload::Notify {
        event,
        epoch,
        at,
        cause,
        waited_ms,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "111111111111111";
    const INBOX: &str = "263902037430900";
    const T0: i64 = 1_763_900_000_000;
    const WAIT: i64 = 300_000;

    fn policy(enabled: bool) -> Policy {
        Policy {
            app_id: APP.into(),
            target_app_id: INBOX.into(),
            return_phrases: PhraseSet::new(&["back to bot"]),
            return_payload: "BACK_TO_BOT".into(),
            agent_return_phrases: PhraseSet::new(&["#bot"]),
            idle_timeout_ms: 0,
            pass_delay_ms: 0,
            stuck_after_ms: 300_000,
            // Companion mode: the user's messages reach us on `standby` while a human has them.
            standby_means_not_bot: false,
            notify: NotifyPolicy {
                enabled,
                waiting_ms: WAIT,
            },
        }
    }

    fn event(channel: Channel, at: i64, kind: EventKind) -> IncomingEvent {
        IncomingEvent {
            account_id: "958823367603818".into(),
            user_id: "1534862223272449".into(),
            channel,
            timestamp_ms: at,
            dedupe_key: format!("{}:{at}", kind.name()),
            kind,
        }
    }

    fn user_says(text: &str, at: i64) -> IncomingEvent {
        let kind = EventKind::Message {
            mid: format!("m_{at}"),
            text: Some(text.into()),
            quick_reply_payload: None,
        };
        event(Channel::Standby, at, kind)
    }

    fn agent_says(text: &str, at: i64) -> IncomingEvent {
        let kind = EventKind::Echo {
            mid: format!("m_{at}"),
            app_id: Some(INBOX.into()),
            text: Some(text.into()),
            metadata: None,
        };
        event(Channel::Messaging, at, kind)
    }

    /// A notice as `(event, cause, waited_ms, error)`.
    type Told<'a> = (NoticeEvent, Option<&'a str>, Option<i64>, Option<&'a str>);

    /// The notices a decision queued.
    fn notices(d: &Decision) -> Vec<Told<'_>> {
        d.jobs
            .iter()
            .filter_map(|j| match &j.payload {
                JobPayload::Notify {
                    event,
                    cause,
                    waited_ms,
                    error,
                    ..
                } => Some((*event, cause.as_deref(), *waited_ms, error.as_deref())),
                _ => None,
            })
            .collect()
    }

    fn waiting_checks(d: &Decision) -> Vec<(i64, i64)> {
        d.jobs
            .iter()
            .filter_map(|j| match j.payload {
                JobPayload::WaitingCheck { since } => Some((since, j.delay_ms)),
                _ => None,
            })
            .collect()
    }

    /// A handover action for a user with the bot, just before `T0`: the pass is queued.
    fn asked_for_a_person(policy: &Policy) -> Decision {
        let bot = Thread::new("958823367603818", "1534862223272449", T0 - 10_000);
        let asked = Input::Handover {
            session: "projects/p/agent/sessions/s".into(),
            snapshot: Snapshot::from_json("[]"),
            asked_at: None,
        };
        decide(&bot, &asked, policy, T0 - 1_000)
    }

    /// A thread the inbox has had since `T0`, through our own pass.
    fn with_a_human(policy: &Policy) -> Thread {
        let passing = asked_for_a_person(policy).thread;
        let landed = Input::PassDone(CallOutcome {
            epoch: passing.epoch,
            started_at: T0 - 500,
            result: Ok(()),
        });
        let d = decide(&passing, &landed, policy, T0);
        assert_eq!(d.thread.state, State::Human);
        d.thread
    }

    #[test]
    fn a_pass_that_lands_tells_the_team_and_starts_the_waiting_timer() {
        let p = policy(true);
        let passing = asked_for_a_person(&p);
        assert!(
            notices(&passing).is_empty(),
            "nothing yet: the pass has not run"
        );
        let landed = Input::PassDone(CallOutcome {
            epoch: passing.thread.epoch,
            started_at: T0 - 500,
            result: Ok(()),
        });
        let d = decide(&passing.thread, &landed, &p, T0);
        assert_eq!(
            notices(&d),
            vec![(NoticeEvent::HandedToInbox, None, None, None)]
        );
        assert_eq!(d.thread.waiting_since, Some(T0));
        assert_eq!(waiting_checks(&d), vec![(T0, WAIT)]);
        // A notice runs beside the thread's calls, never in their lane.
        let key = d.thread.key();
        for job in d.jobs.iter().filter(|j| j.payload.is_notice()) {
            assert_eq!(job.payload.lane(&key), format!("{key}#notify"));
        }
    }

    #[test]
    fn without_a_notification_url_nothing_is_queued() {
        let p = policy(false);
        let human = with_a_human(&p);
        assert_eq!(human.waiting_since, Some(T0), "the wait is still kept");
        let d = decide(&human, &Input::WaitingCheck { since: T0 }, &p, T0 + WAIT);
        assert!(d.jobs.is_empty(), "{:?}", d.jobs);
        let back = Input::AdminReturn { note: None };
        let d = decide(&human, &back, &p, T0 + 1_000);
        assert!(notices(&d).is_empty());
    }

    #[test]
    fn the_inbox_taking_the_thread_on_its_own_tells_its_cause() {
        let p = policy(true);
        let bot = Thread::new("958823367603818", "1534862223272449", T0 - 10_000);
        let took = event(
            Channel::Messaging,
            T0,
            EventKind::TakeThreadControl {
                new_owner_app_id: Some(INBOX.into()),
                previous_owner_app_id: Some(APP.into()),
                metadata: None,
            },
        );
        let d = decide(&bot, &Input::Event(&took), &p, T0 + 100);
        assert_eq!(d.thread.state, State::Human);
        assert_eq!(
            notices(&d),
            vec![(NoticeEvent::HandedToInbox, Some("inbox_took"), None, None)]
        );
        // An agent who writes first is answering: the user does not wait.
        let bot = Thread::new("958823367603818", "1534862223272449", T0 - 10_000);
        let d = decide(&bot, &Input::Event(&agent_says("Hi!", T0)), &p, T0 + 100);
        assert_eq!(d.thread.state, State::Human);
        assert_eq!(d.thread.waiting_since, None);
        assert!(waiting_checks(&d).is_empty());
    }

    #[test]
    fn the_wait_ends_with_an_agents_reply_and_starts_again_with_the_users_next_message() {
        let p = policy(true);
        let human = with_a_human(&p);
        let replied = decide(
            &human,
            &Input::Event(&agent_says("Hello", T0 + 5_000)),
            &p,
            T0 + 5_100,
        );
        assert_eq!(replied.thread.waiting_since, None);
        // The timer of the answered wait finds nothing to say.
        let d = decide(
            &replied.thread,
            &Input::WaitingCheck { since: T0 },
            &p,
            T0 + WAIT,
        );
        assert!(d.jobs.is_empty(), "{:?}", d.jobs);
        // The user writes again: a new wait, one timer.
        let at = T0 + 10_000;
        let wrote = decide(
            &replied.thread,
            &Input::Event(&user_says("and?", at)),
            &p,
            at + 50,
        );
        assert_eq!(wrote.thread.waiting_since, Some(at + 50));
        assert_eq!(waiting_checks(&wrote), vec![(at + 50, WAIT)]);
        let again = decide(
            &wrote.thread,
            &Input::Event(&user_says("hello?", at + 1_000)),
            &p,
            at + 1_050,
        );
        assert_eq!(
            again.thread.waiting_since,
            Some(at + 50),
            "the wait began earlier"
        );
        assert!(waiting_checks(&again).is_empty(), "no second timer");
    }

    #[test]
    fn a_user_still_waiting_when_the_timer_fires_is_noticed_once() {
        let p = policy(true);
        let human = with_a_human(&p);
        // Early (a clock ahead): the timer is set again for the rest.
        let early = decide(
            &human,
            &Input::WaitingCheck { since: T0 },
            &p,
            T0 + WAIT - 2_000,
        );
        assert!(notices(&early).is_empty());
        assert_eq!(waiting_checks(&early), vec![(T0, 2_000)]);
        let d = decide(
            &human,
            &Input::WaitingCheck { since: T0 },
            &p,
            T0 + WAIT + 40,
        );
        assert_eq!(
            notices(&d),
            vec![(NoticeEvent::Waiting, None, Some(WAIT + 40), None)]
        );
        assert!(waiting_checks(&d).is_empty(), "once per wait");
        // Back with the bot meanwhile: nothing.
        let mut bot = human.clone();
        bot.state = State::Bot;
        bot.waiting_since = None;
        let d = decide(&bot, &Input::WaitingCheck { since: T0 }, &p, T0 + WAIT);
        assert!(d.jobs.is_empty());
    }

    #[test]
    fn a_failed_handover_tells_why() {
        let p = policy(true);
        let passing = asked_for_a_person(&p).thread;
        let refused = Input::PassDone(CallOutcome {
            epoch: passing.epoch,
            started_at: T0 - 500,
            result: Err(Failure {
                not_thread_owner: false,
                outside_window: false,
                message: "(#100) invalid target app".into(),
            }),
        });
        let d = decide(&passing, &refused, &p, T0);
        assert_eq!(d.thread.state, State::Bot);
        let told = notices(&d);
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0].0, NoticeEvent::HandoverFailed);
        assert!(
            told[0].3.is_some_and(|e| e.contains("invalid target app")),
            "{told:?}"
        );
    }

    #[test]
    fn a_return_is_told_when_the_bot_has_the_thread_with_why() {
        let p = policy(true);
        let human = with_a_human(&p);
        let asked = decide(
            &human,
            &Input::Event(&user_says("back to bot", T0 + 1_000)),
            &p,
            T0 + 1_100,
        );
        assert_eq!(asked.thread.state, State::Returning);
        assert!(notices(&asked).is_empty(), "not yet: the take has not run");
        let took = Input::TakeDone(CallOutcome {
            epoch: asked.thread.epoch,
            started_at: T0 + 1_200,
            result: Ok(()),
        });
        let d = decide(&asked.thread, &took, &p, T0 + 1_300);
        assert_eq!(
            notices(&d),
            vec![(NoticeEvent::ReturnedToBot, Some("user_asked"), None, None)]
        );
        assert_eq!(d.thread.waiting_since, None);
        // The inbox's "Done" (a pass naming the bot) is an agent's hand-back.
        let done = event(
            Channel::Messaging,
            T0 + 2_000,
            EventKind::PassThreadControl {
                new_owner_app_id: Some(APP.into()),
                previous_owner_app_id: Some(INBOX.into()),
                metadata: None,
            },
        );
        let d = decide(&human, &Input::Event(&done), &p, T0 + 2_100);
        assert_eq!(d.thread.state, State::Bot);
        assert_eq!(
            notices(&d),
            vec![(
                NoticeEvent::ReturnedToBot,
                Some("agent_handed_back"),
                None,
                None
            )]
        );
    }
}
