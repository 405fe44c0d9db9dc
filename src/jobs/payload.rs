//! What a job does, stored as JSON in the `jobs` table.

use serde::{Deserialize, Serialize};

/// Which message the service sends the user on its own: a welcome when the bot has the
/// thread again, or the notice that a handover could not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WelcomeKind {
    WelcomeBack,
    AgentTimeout,
    HandoverFailed,
}

impl WelcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WelcomeBack => "welcome_back",
            Self::AgentTimeout => "agent_timeout",
            Self::HandoverFailed => "handover_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "welcome_back" => Some(Self::WelcomeBack),
            "agent_timeout" => Some(Self::AgentTimeout),
            "handover_failed" => Some(Self::HandoverFailed),
            _ => None,
        }
    }
}

/// Why the service asks `thread_owner`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckWhy {
    /// The reconciler: the thread sat in its state long enough to be suspicious, with no job
    /// under way.
    #[default]
    Stuck,
    /// A fact arrived that contradicts the state and cannot be placed before or after it.
    Doubt,
    /// The same, for a hand-back to the bot (a "Done" or a take naming it): if Meta confirms
    /// the bot has the thread, it is a return (sync and welcome), not a mere correction.
    HandedBack,
    /// A handover action arrived while the service believed the inbox had the thread, too
    /// close to tell whether it was asked before: pass if the bot has the thread.
    HandoverAsked,
    /// The user asked for the bot on `standby` while the service believed the bot had the
    /// thread (companion mode cannot tell from the delivery): take it if another app has it.
    UserAsked,
}

/// Effect jobs carry the `epoch` of the handover or return they serve: when the thread has
/// moved on to a newer one, the job is moot and is skipped. (`serde(default)`: payloads
/// queued by an older version still decode.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobPayload {
    /// Feed a stored webhook event to the state machine.
    ProcessEvent { event_id: i64 },
    /// `pass_thread_control` to the human inbox.
    Pass {
        target_app_id: String,
        metadata: String,
        #[serde(default)]
        epoch: i64,
    },
    /// `take_thread_control` back to the bot.
    Take {
        metadata: String,
        #[serde(default)]
        epoch: i64,
    },
    /// Bring the Dialogflow session's contexts to `CONTEXT_ON_RETURN`.
    SyncContexts {
        #[serde(default)]
        epoch: i64,
    },
    /// Delete the `human_handover` context after a handover that could not happen.
    ClearHandoverContext {
        #[serde(default)]
        epoch: i64,
    },
    /// The welcome-back, agent-timeout or handover-failed text through the Send API.
    SendWelcome {
        welcome: WelcomeKind,
        #[serde(default)]
        epoch: i64,
    },
    /// Agent idle timer for one stay in `HUMAN` (identified by when it began).
    IdleCheck { generation: i64 },
    /// Ask `thread_owner` and correct the state. At most one is queued per thread.
    CheckOwner {
        #[serde(default)]
        why: CheckWhy,
    },
    /// Periodic, one per deployment: find stuck threads, prune old rows.
    Reconcile,
}

impl JobPayload {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProcessEvent { .. } => "process_event",
            Self::Pass { .. } => "pass",
            Self::Take { .. } => "take",
            Self::SyncContexts { .. } => "sync_contexts",
            Self::ClearHandoverContext { .. } => "clear_handover_context",
            Self::SendWelcome { .. } => "send_welcome",
            Self::IdleCheck { .. } => "idle_check",
            Self::CheckOwner { .. } => "check_owner",
            Self::Reconcile => "reconcile",
        }
    }

    /// Process-event jobs run in their own lane of the thread: a fact is applied as soon as it
    /// arrives, never held behind a Graph call that is being retried through an outage.
    pub fn is_event(&self) -> bool {
        matches!(self, Self::ProcessEvent { .. })
    }
}

/// A job the state machine wants, relative to now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    pub payload: JobPayload,
    pub delay_ms: i64,
}

impl NewJob {
    pub fn now(payload: JobPayload) -> Self {
        Self {
            payload,
            delay_ms: 0,
        }
    }

    pub fn after(payload: JobPayload, delay_ms: i64) -> Self {
        Self {
            payload,
            delay_ms: delay_ms.max(0),
        }
    }
}
