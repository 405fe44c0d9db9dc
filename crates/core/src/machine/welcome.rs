//! Whether a welcome job sends now, later or never.

use super::*;

/// Whether a message can be sent now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WelcomePlan {
    Send,
    /// Kept for the user's next message, with the reason.
    Defer(&'static str),
    /// Moot or already given: not sent at all, with the reason.
    Skip(&'static str),
}

/// Whether the message of `epoch` can go out now.
pub fn welcome_plan(thread: &Thread, epoch: i64, now: i64) -> WelcomePlan {
    if epoch != thread.epoch {
        return WelcomePlan::Skip("a newer handover or return made it moot");
    }
    if thread.notified_epoch >= epoch {
        return WelcomePlan::Skip("this return's message was already given");
    }
    if thread.state != State::Bot {
        return WelcomePlan::Defer("the bot does not own the thread");
    }
    if thread.owner_in_doubt {
        return WelcomePlan::Defer("thread_owner is being asked who owns the thread");
    }
    match thread.last_user_msg_at {
        Some(at) if now - at < DAY_MS => WelcomePlan::Send,
        _ => WelcomePlan::Defer("outside Messenger's 24-hour window"),
    }
}
