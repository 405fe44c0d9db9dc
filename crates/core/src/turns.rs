//! Plain turns: a Dialogflow turn that is neither a handover nor a return.
//!
//! Such a turn only tells the service the user's session and that the user just spoke (for
//! the 24-hour window), and sends a welcome that was kept for the user's next message. Most
//! turns change nothing worth a store write: the session is the one stored and the stored time
//! of the user's last message is recent. The time is kept to within [`TURN_TIME_RESOLUTION_MS`]:
//! at most one write a minute per user. A window computed from a time up to a minute old
//! closes up to a minute early, so the service errs towards not messaging the user.

use crate::thread::{State, Thread};

/// How stale the stored time of a user's last message may be before a plain turn writes it.
pub const TURN_TIME_RESOLUTION_MS: i64 = 60_000;

/// What a plain turn would find on a thread, taken from a thread as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnFacts {
    pub session: Option<String>,
    pub last_user_msg_at: Option<i64>,
}

impl TurnFacts {
    /// `None` when a plain turn on `thread` would do more than note the session and the time:
    /// a welcome is kept for the user's next message.
    pub fn of(thread: &Thread) -> Option<TurnFacts> {
        let kept_welcome = thread.state == State::Bot
            && thread.pending_welcome.is_some()
            && thread.notified_epoch < thread.epoch;
        (!kept_welcome).then(|| TurnFacts {
            session: thread.session.clone(),
            last_user_msg_at: thread.last_user_msg_at,
        })
    }

    /// A plain turn of `session` at `now` would change nothing worth writing.
    pub fn cover(&self, session: &str, now: i64) -> bool {
        self.session.as_deref() == Some(session)
            && self
                .last_user_msg_at
                .is_some_and(|at| at <= now && now - at < TURN_TIME_RESOLUTION_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::WelcomeKind;

    fn thread() -> Thread {
        let mut t = Thread::new("page", "user", 0);
        t.session = Some("projects/p/agent/sessions/s".into());
        t.last_user_msg_at = Some(1_000_000);
        t
    }

    #[test]
    fn a_recent_turn_of_the_same_session_needs_no_write() {
        let facts = TurnFacts::of(&thread()).unwrap();
        assert!(facts.cover("projects/p/agent/sessions/s", 1_000_000));
        assert!(facts.cover("projects/p/agent/sessions/s", 1_059_999));
    }

    #[test]
    fn a_minute_later_the_time_is_written() {
        let facts = TurnFacts::of(&thread()).unwrap();
        assert!(!facts.cover("projects/p/agent/sessions/s", 1_060_000));
    }

    #[test]
    fn another_session_or_no_time_is_written() {
        let facts = TurnFacts::of(&thread()).unwrap();
        assert!(!facts.cover("projects/p/agent/sessions/other", 1_000_001));
        let mut t = thread();
        t.last_user_msg_at = None;
        assert!(
            !TurnFacts::of(&t)
                .unwrap()
                .cover("projects/p/agent/sessions/s", 1_000_001)
        );
        // A clock that went backwards is not trusted either.
        assert!(
            !TurnFacts::of(&thread())
                .unwrap()
                .cover("projects/p/agent/sessions/s", 999_999)
        );
    }

    #[test]
    fn a_kept_welcome_makes_every_turn_a_write() {
        let mut t = thread();
        t.pending_welcome = Some(WelcomeKind::WelcomeBack);
        t.epoch = 2;
        t.notified_epoch = 1;
        assert_eq!(TurnFacts::of(&t), None);
        // Already given for this epoch: nothing left to send.
        t.notified_epoch = 2;
        assert!(TurnFacts::of(&t).is_some());
        // Kept while another app has the thread: sent only once the bot has it.
        t.notified_epoch = 1;
        t.state = State::Human;
        assert!(TurnFacts::of(&t).is_some());
    }
}
