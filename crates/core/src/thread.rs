//! One conversation, as the store keeps it: a user of an account. On Messenger the account is
//! a Facebook Page and the user a page-scoped id (PSID); an Instagram account and its users
//! would fit the same fields.

use std::sync::Arc;

use serde_json::Value;

use crate::jobs::WelcomeKind;

/// The Dialogflow contexts active at handover, kept as the JSON text they were stored as: the
/// state machine only carries them from the handover to the return, so they are parsed only
/// where a return uses them (`value`), and copying a thread does not copy them.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot(Arc<str>);

impl Snapshot {
    /// From JSON text as stored (it was written from a `Value`).
    pub fn from_json(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The contexts as JSON; `None` if the stored text is not JSON.
    pub fn value(&self) -> Option<Value> {
        serde_json::from_str(&self.0).ok()
    }
}

impl From<Value> for Snapshot {
    fn from(value: Value) -> Self {
        Self(value.to_string().into())
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// The bot app owns the thread.
    Bot,
    /// A pass to the inbox is queued or running.
    Passing,
    /// A human (the inbox) or another app owns the thread.
    Human,
    /// A take back to the bot is queued or running.
    Returning,
    /// Nobody owns the thread (Conversation Routing's idle state).
    Idle,
}

impl State {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

/// Why the thread is coming back to the bot: decides the welcome text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum ReturnReason {
    /// The user asked on Messenger (phrase or postback).
    User,
    /// An agent typed an agent return phrase.
    Agent,
    /// No agent message for `AGENT_IDLE_TIMEOUT_SECS`.
    AgentTimeout,
    /// A return action reached `/fulfillment`, which answers the user itself.
    Fulfillment,
    /// An operator, through the admin API.
    Admin,
}

impl ReturnReason {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Thread {
    /// The account the user writes to (a Messenger Page id).
    pub account_id: String,
    /// The user, as the account sees them (a Messenger PSID).
    pub user_id: String,
    pub state: State,
    /// Last known owner app id; `None` when unknown or idle.
    pub owner_app_id: Option<String>,
    /// The Dialogflow session name, verbatim from the last fulfillment call.
    pub session: Option<String>,
    /// The contexts active at handover (a JSON array of Dialogflow contexts).
    pub snapshot: Option<Snapshot>,
    pub last_user_msg_at: Option<i64>,
    pub last_agent_msg_at: Option<i64>,
    /// A welcome that could not be sent yet (not the owner, or outside 24 h).
    pub pending_welcome: Option<WelcomeKind>,
    pub return_reason: Option<ReturnReason>,
    /// When the current stay in `HUMAN` began: the idle timer's generation.
    pub human_since: Option<i64>,
    pub last_error: Option<String>,
    /// When the service entered the state (its own clock).
    pub state_since: i64,
    /// The time of the newest fact or decision behind the state (Meta's timestamp for an
    /// event, the start of our own call, the decision time): an older fact does not overturn it.
    pub state_at: i64,
    /// Bumped by every handover and return; work queued for an older one is moot.
    pub epoch: i64,
    /// The newest epoch whose message to the user (welcome or handover-failed notice) was
    /// sent, answered in-band by fulfillment, or may have been sent: never a second one.
    pub notified_epoch: i64,
    /// When the reconciler should next ask `thread_owner` about this thread, and how many
    /// times it asked without the state changing (its backoff).
    pub next_check_at: Option<i64>,
    pub checks: i64,
    /// A fact contradicted the state and `thread_owner` is being asked: nothing is sent to
    /// the user until it answers.
    pub owner_in_doubt: bool,
    /// When the bot last got the thread back (the fact's time): a user's request for the bot
    /// from before then (give or take the clock skew) was answered by that return.
    pub returned_at: Option<i64>,
    /// What the user asked for while the owner was in doubt, to do once `thread_owner` answers.
    pub asked_in_doubt: Option<Ask>,
    /// With a human: since when the user has waited for an agent's reply (from the handover,
    /// or their first message after the agent's last one); `None` when an agent answered.
    pub waiting_since: Option<i64>,
}

/// A user's request that waits for `thread_owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum Ask {
    /// A handover action: pass if the bot has the thread.
    Handover,
    /// Back to the bot, asked by the user: take if another app has the thread.
    Bot,
    /// Back to the bot, handed back by an agent's `AGENT_RETURN_PHRASES` entry.
    BotByAgent,
}

impl Ask {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl Thread {
    pub fn new(account_id: &str, user_id: &str, now: i64) -> Self {
        Self {
            account_id: account_id.to_owned(),
            user_id: user_id.to_owned(),
            state: State::Bot,
            owner_app_id: None,
            session: None,
            snapshot: None,
            last_user_msg_at: None,
            last_agent_msg_at: None,
            pending_welcome: None,
            return_reason: None,
            human_since: None,
            last_error: None,
            state_since: now,
            // A thread never seen is assumed to be the bot's, and any fact overturns that.
            state_at: 0,
            epoch: 0,
            notified_epoch: 0,
            next_check_at: None,
            checks: 0,
            owner_in_doubt: false,
            returned_at: None,
            asked_in_doubt: None,
            waiting_since: None,
        }
    }

    /// The key jobs of one user are ordered by.
    pub fn key(&self) -> String {
        thread_key(&self.account_id, &self.user_id)
    }
}

pub fn thread_key(account_id: &str, user_id: &str) -> String {
    format!("{account_id}/{user_id}")
}
