//! What a decision means for the people watching the service: the handover it starts (to a
//! human or back to the bot, and why) and the stay with a human it ends. Read from the thread
//! before and after and from the input, never from the audit text; the metrics count these.

use super::*;

/// Which way a handover goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Direction {
    ToHuman,
    ToBot,
}

/// Who or what moved the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Cause {
    /// The user asked on Messenger: a return phrase, the return payload or button.
    UserAsked,
    /// A Dialogflow action reached `/fulfillment` (a handover or a return action).
    Fulfillment,
    /// An agent handed the thread back: `AGENT_RETURN_PHRASES`, or the inbox's "Done" (a pass
    /// naming the bot app).
    AgentHandedBack,
    /// No agent message for `AGENT_IDLE_TIMEOUT_SECS`.
    IdleTimeout,
    /// The inbox asked for the thread (`request_thread_control`).
    InboxRequest,
    /// The inbox (or another app) took the thread on its own: an agent replied, or Meta said
    /// another app has it.
    InboxTook,
    /// The reconciler's `thread_owner` check of a thread that sat in its state too long.
    Reconciler,
    /// The service learned that the bot had the thread without being told (its own message
    /// went out, `thread_owner` answered a doubt, or a take landed after all).
    Corrected,
    /// An operator, through the admin API. No input produces it yet: the admin API sets it.
    Admin,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub const ALL: [Direction; 2] = [Direction::ToHuman, Direction::ToBot];
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The causes a handover in `direction` can have (for metrics set to 0 at start).
    pub fn all_for(direction: Direction) -> &'static [Cause] {
        match direction {
            Direction::ToHuman => &[
                Cause::Fulfillment,
                Cause::InboxRequest,
                Cause::InboxTook,
                Cause::Reconciler,
                Cause::Admin,
            ],
            Direction::ToBot => &[
                Cause::UserAsked,
                Cause::Fulfillment,
                Cause::AgentHandedBack,
                Cause::IdleTimeout,
                Cause::Reconciler,
                Cause::Corrected,
                Cause::Admin,
            ],
        }
    }
}

/// A handover a decision started (or found had happened).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handover {
    pub direction: Direction,
    pub cause: Cause,
}

/// The side of the conversation a state is on (`IDLE` is on neither).
fn side(state: State) -> Option<Direction> {
    match state {
        State::Passing | State::Human => Some(Direction::ToHuman),
        State::Returning | State::Bot => Some(Direction::ToBot),
        State::Idle => None,
    }
}

/// The handover `d` stands for, if any: a decision that starts a new handover or return (a new
/// epoch), or that moves the thread to the other side (a correction). Not a handover: a pass
/// that failed (the bot keeps the thread) and a take that failed (the human keeps it).
pub(super) fn handover_of(
    before: &Thread,
    input: &Input<'_>,
    d: &Decision,
    policy: &Policy,
) -> Option<Handover> {
    let direction = side(d.thread.state)?;
    let new_epoch = d.thread.epoch > before.epoch;
    let crossed = side(before.state) != Some(direction);
    if !new_epoch && !crossed {
        return None;
    }
    let failed = match direction {
        // A take that failed leaves the thread with whoever had it.
        Direction::ToHuman => matches!(input, Input::TakeDone(_)),
        // A handover that cannot happen: PASSING back to BOT with no return asked.
        Direction::ToBot => {
            before.state == State::Passing
                && d.thread.state == State::Bot
                && d.thread.return_reason.is_none()
        }
    };
    if failed && !new_epoch {
        return None;
    }
    Some(Handover {
        direction,
        cause: cause_of(before, input, direction, policy),
    })
}

fn cause_of(before: &Thread, input: &Input<'_>, direction: Direction, policy: &Policy) -> Cause {
    let by_fact = match direction {
        Direction::ToHuman => Cause::InboxTook,
        Direction::ToBot => Cause::Corrected,
    };
    match input {
        Input::Handover { .. }
        | Input::ReturnByFulfillment { .. }
        | Input::RememberSession { .. } => Cause::Fulfillment,
        Input::Event(event) => match &event.kind {
            EventKind::Message { .. } | EventKind::Postback { .. } => match direction {
                Direction::ToBot => Cause::UserAsked,
                // A standby delivery: another app has the thread.
                Direction::ToHuman => Cause::InboxTook,
            },
            EventKind::Echo { .. } | EventKind::PassThreadControl { .. } => match direction {
                Direction::ToBot if is_bot_echo(event, policy) => Cause::Corrected,
                Direction::ToBot => Cause::AgentHandedBack,
                Direction::ToHuman => Cause::InboxTook,
            },
            EventKind::RequestThreadControl { .. } => Cause::InboxRequest,
            _ => by_fact,
        },
        Input::IdleCheck { .. } => Cause::IdleTimeout,
        Input::AdminReturn { .. } | Input::AdminHandover { .. } => Cause::Admin,
        Input::OwnerChecked(check) if check.why == CheckWhy::Stuck => Cause::Reconciler,
        Input::OwnerChecked(check) => match (before.asked_in_doubt, check.why) {
            (Some(Ask::Handover), _) => Cause::Fulfillment,
            (Some(Ask::Bot), _) | (None, CheckWhy::UserAsked) => Cause::UserAsked,
            (Some(Ask::BotByAgent), _) => Cause::AgentHandedBack,
            (None, CheckWhy::HandedBack) if direction == Direction::ToBot => Cause::AgentHandedBack,
            _ => by_fact,
        },
        Input::PassDone(_)
        | Input::TakeDone(_)
        | Input::WaitingCheck { .. }
        | Input::WelcomeSent { .. }
        | Input::WelcomeDeferred { .. }
        | Input::WelcomeUnknown { .. } => by_fact,
    }
}

/// An echo of a message the bot app itself sent, as opposed to an agent's.
fn is_bot_echo(event: &IncomingEvent, policy: &Policy) -> bool {
    matches!(&event.kind, EventKind::Echo { app_id: Some(app), .. } if *app == policy.app_id)
}

/// How long the stay with a human that `d` ends lasted (ms): the thread was `HUMAN` and is
/// not any more.
pub(super) fn human_stay_ended(before: &Thread, d: &Decision, now: i64) -> Option<i64> {
    if before.state != State::Human || d.thread.state == State::Human {
        return None;
    }
    let since = before.human_since.unwrap_or(before.state_since);
    Some((now - since).max(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Channel;

    const APP: &str = "111111111111111";
    const INBOX: &str = "263902037430900";
    const T0: i64 = 1_763_900_000_000;
    const NOW: i64 = T0 + 60_000;

    fn policy() -> Policy {
        Policy {
            app_id: APP.into(),
            target_app_id: INBOX.into(),
            return_phrases: PhraseSet::new(&["back to bot"]),
            return_payload: "BACK_TO_BOT".into(),
            agent_return_phrases: PhraseSet::new(&["#bot"]),
            idle_timeout_ms: 600_000,
            pass_delay_ms: 0,
            stuck_after_ms: 300_000,
            standby_means_not_bot: false,
            notify: Default::default(),
        }
    }

    fn thread(state: State) -> Thread {
        let mut t = Thread::new("958823367603818", "1534862223272449", T0);
        t.state = state;
        t.epoch = 1;
        t.state_at = T0;
        t.session = Some("projects/p/agent/sessions/s".into());
        if state == State::Human {
            t.human_since = Some(T0);
            t.owner_app_id = Some(INBOX.into());
        }
        t
    }

    fn event(channel: Channel, kind: EventKind) -> IncomingEvent {
        IncomingEvent {
            account_id: "958823367603818".into(),
            user_id: "1534862223272449".into(),
            channel,
            timestamp_ms: NOW - 1_000,
            kind,
            dedupe_key: "k".into(),
        }
    }

    fn says(channel: Channel, text: &str) -> IncomingEvent {
        let kind = EventKind::Message {
            mid: "m".into(),
            text: Some(text.into()),
            quick_reply_payload: None,
        };
        event(channel, kind)
    }

    fn echo(app: &str, text: &str) -> IncomingEvent {
        let kind = EventKind::Echo {
            mid: "e".into(),
            app_id: Some(app.into()),
            text: Some(text.into()),
            metadata: None,
        };
        event(Channel::Messaging, kind)
    }

    fn control(take: bool, new_owner: &str) -> IncomingEvent {
        let (new_owner_app_id, previous_owner_app_id) = (Some(new_owner.into()), None);
        let kind = if take {
            EventKind::TakeThreadControl {
                new_owner_app_id,
                previous_owner_app_id,
                metadata: None,
            }
        } else {
            EventKind::PassThreadControl {
                new_owner_app_id,
                previous_owner_app_id,
                metadata: None,
            }
        };
        event(Channel::Messaging, kind)
    }

    fn call(t: &Thread, result: Result<(), Failure>) -> CallOutcome {
        CallOutcome {
            epoch: t.epoch,
            started_at: NOW - 100,
            result,
        }
    }

    fn failure(not_thread_owner: bool) -> Failure {
        Failure {
            not_thread_owner,
            outside_window: false,
            message: "(#2) Service temporarily unavailable".into(),
        }
    }

    fn run(t: &Thread, input: Input<'_>) -> Decision {
        decide(t, &input, &policy(), NOW)
    }

    /// The handover as `direction/cause`, or `-`.
    fn moved(d: &Decision) -> String {
        d.handover.map_or("-".into(), |h| {
            format!("{}/{}", h.direction.as_str(), h.cause.as_str())
        })
    }

    #[test]
    fn a_handover_action_starts_a_handover_and_its_pass_only_completes_it() {
        let handover = Input::Handover {
            session: "projects/p/agent/sessions/s".into(),
            snapshot: serde_json::json!([]).into(),
            asked_at: None,
        };
        let d = run(&thread(State::Bot), handover);
        assert_eq!(d.thread.state, State::Passing);
        assert_eq!(moved(&d), "to_human/fulfillment");
        let passing = d.thread;
        let d = run(&passing, Input::PassDone(call(&passing, Ok(()))));
        assert_eq!((d.thread.state, moved(&d)), (State::Human, "-".into()));
        assert_eq!(d.human_stay_ms, None, "a stay begins, none ends");
        // A pass that failed is no handover either way: the bot keeps the thread.
        let d = run(
            &passing,
            Input::PassDone(call(&passing, Err(failure(false)))),
        );
        assert_eq!((d.thread.state, moved(&d)), (State::Bot, "-".into()));
    }

    #[test]
    fn returns_by_cause_and_the_stay_they_end() {
        let human = thread(State::Human);
        let cases = [
            (says(Channel::Standby, "back to bot"), "to_bot/user_asked"),
            (echo(INBOX, "#bot"), "to_bot/agent_handed_back"),
            // The inbox's "Done": a pass naming the bot app.
            (control(false, APP), "to_bot/agent_handed_back"),
            // The bot's own message went out: it had the thread already.
            (echo(APP, "Your order is on its way"), "to_bot/corrected"),
        ];
        for (event, want) in cases {
            let d = run(&human, Input::Event(&event));
            assert_eq!(moved(&d), want, "{:?}", event.kind);
            assert_eq!(d.human_stay_ms, Some(NOW - T0), "{:?}", event.kind);
        }
        let later = T0 + policy().idle_timeout_ms;
        let d = decide(
            &human,
            &Input::IdleCheck { generation: T0 },
            &policy(),
            later,
        );
        assert_eq!(moved(&d), "to_bot/idle_timeout");
        assert_eq!(d.human_stay_ms, Some(later - T0));
        // An agent's plain reply changes nothing.
        let d = run(&human, Input::Event(&echo(INBOX, "Hello, Sam here")));
        assert_eq!((moved(&d), d.human_stay_ms), ("-".into(), None));
    }

    #[test]
    fn a_take_completes_a_return_and_a_failed_take_is_no_handover() {
        let mut returning = thread(State::Returning);
        returning.human_since = Some(T0 - 5_000);
        returning.return_reason = Some(ReturnReason::User);
        let d = run(&returning, Input::TakeDone(call(&returning, Ok(()))));
        assert_eq!((d.thread.state, moved(&d)), (State::Bot, "-".into()));
        let d = run(
            &returning,
            Input::TakeDone(call(&returning, Err(failure(true)))),
        );
        assert_eq!((d.thread.state, moved(&d)), (State::Human, "-".into()));
        assert_eq!(d.human_stay_ms, None, "the thread was RETURNING, not HUMAN");
    }

    #[test]
    fn the_inbox_asking_or_taking_is_a_handover_to_a_human() {
        let bot = thread(State::Bot);
        let request = event(
            Channel::Messaging,
            EventKind::RequestThreadControl {
                requested_owner_app_id: Some(INBOX.into()),
                metadata: None,
            },
        );
        assert_eq!(
            moved(&run(&bot, Input::Event(&request))),
            "to_human/inbox_request"
        );
        let took = control(true, INBOX);
        assert_eq!(
            moved(&run(&bot, Input::Event(&took))),
            "to_human/inbox_took"
        );
    }

    #[test]
    fn the_reconciler_and_a_return_before_the_pass_ran() {
        let check = OwnerCheck {
            owner: Owner::App(APP.into()),
            why: CheckWhy::Stuck,
            started_at: NOW - 100,
        };
        let d = run(&thread(State::Human), Input::OwnerChecked(check));
        assert_eq!(
            (d.thread.state, moved(&d)),
            (State::Bot, "to_bot/reconciler".into())
        );
        // The user changed their mind before the pass ran: a return of its own.
        let passing = thread(State::Passing);
        let d = run(
            &passing,
            Input::Event(&says(Channel::Messaging, "back to bot")),
        );
        assert_eq!(
            (d.thread.state, moved(&d)),
            (State::Bot, "to_bot/user_asked".into())
        );
        let fulfillment = Input::ReturnByFulfillment {
            session: "projects/p/agent/sessions/s".into(),
            heard_at: None,
        };
        let d = run(&passing, fulfillment);
        assert_eq!(
            (d.thread.state, moved(&d)),
            (State::Bot, "to_bot/fulfillment".into())
        );
    }

    #[test]
    fn every_cause_a_handover_gets_is_listed_for_its_direction() {
        for direction in Direction::ALL {
            let causes = Cause::all_for(direction);
            assert!(causes.contains(&Cause::Admin) && causes.contains(&Cause::Reconciler));
        }
        assert!(!Cause::all_for(Direction::ToHuman).contains(&Cause::IdleTimeout));
    }
}
