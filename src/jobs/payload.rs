//! What a job does, stored as JSON in the `jobs` table.

use serde::{Deserialize, Serialize};

/// Which welcome text to send when the bot has the thread again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WelcomeKind {
    WelcomeBack,
    AgentTimeout,
}

impl WelcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WelcomeBack => "welcome_back",
            Self::AgentTimeout => "agent_timeout",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "welcome_back" => Some(Self::WelcomeBack),
            "agent_timeout" => Some(Self::AgentTimeout),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobPayload {
    /// Feed a stored webhook event to the state machine.
    ProcessEvent { event_id: i64 },
    /// `pass_thread_control` to the human inbox.
    Pass {
        target_app_id: String,
        metadata: String,
    },
    /// `take_thread_control` back to the bot.
    Take { metadata: String },
    /// Bring the Dialogflow session's contexts to `CONTEXT_ON_RETURN`.
    SyncContexts,
    /// The welcome-back (or agent-timeout) text through the Send API.
    SendWelcome { welcome: WelcomeKind },
    /// Agent idle timer for one stay in `HUMAN` (identified by when it began).
    IdleCheck { generation: i64 },
    /// Ask `thread_owner` and correct the state.
    CheckOwner,
    /// Periodic, one per deployment: find stuck threads, prune old rows.
    Reconcile,
}

impl JobPayload {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProcessEvent { .. } => "process_event",
            Self::Pass { .. } => "pass",
            Self::Take { .. } => "take",
            Self::SyncContexts => "sync_contexts",
            Self::SendWelcome { .. } => "send_welcome",
            Self::IdleCheck { .. } => "idle_check",
            Self::CheckOwner => "check_owner",
            Self::Reconcile => "reconcile",
        }
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
