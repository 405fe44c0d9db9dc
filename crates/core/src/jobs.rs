//! What a job does, stored as JSON in the `jobs` table.

use serde::{Deserialize, Serialize};

/// Which message the service sends the user on its own: a welcome when the bot has the
/// thread again, or the notice that a handover could not happen.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum WelcomeKind {
    WelcomeBack,
    AgentTimeout,
    HandoverFailed,
}

impl WelcomeKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
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

/// What an agent notification (`NOTIFY_WEBHOOK_URL`) tells the team.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum NoticeEvent {
    /// The user is with the Page Inbox now (our pass landed, or the inbox took the thread).
    HandedToInbox,
    /// A handover could not happen: the bot kept the user, who was told so.
    HandoverFailed,
    /// The user has waited `NOTIFY_WAITING_SECS` with a human and no agent reply.
    Waiting,
    /// The bot has the conversation again.
    ReturnedToBot,
}

impl NoticeEvent {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
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
    /// POST an agent notification to `NOTIFY_WEBHOOK_URL`. What it says is fixed when the
    /// decision is made (`at`, the decision's time), so a late delivery still tells the truth
    /// of its moment; never moot.
    Notify {
        event: NoticeEvent,
        epoch: i64,
        at: i64,
        /// Who or what moved the conversation, when the decision knows (`Cause`'s names).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
        /// How long the user had waited (`waiting`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waited_ms: Option<i64>,
        /// Why a handover failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The waiting timer (one per thread): `since` is when the wait it was set for began; the
    /// thread's own `waiting_since` says which wait is under way when it fires.
    WaitingCheck { since: i64 },
}

/// The kinds of job, by the name the store keeps in its `kind` column.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum JobKind {
    ProcessEvent,
    Pass,
    Take,
    SyncContexts,
    ClearHandoverContext,
    SendWelcome,
    IdleCheck,
    CheckOwner,
    Reconcile,
    Notify,
    WaitingCheck,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobPayload {
    pub fn kind(&self) -> JobKind {
        match self {
            Self::ProcessEvent { .. } => JobKind::ProcessEvent,
            Self::Pass { .. } => JobKind::Pass,
            Self::Take { .. } => JobKind::Take,
            Self::SyncContexts { .. } => JobKind::SyncContexts,
            Self::ClearHandoverContext { .. } => JobKind::ClearHandoverContext,
            Self::SendWelcome { .. } => JobKind::SendWelcome,
            Self::IdleCheck { .. } => JobKind::IdleCheck,
            Self::CheckOwner { .. } => JobKind::CheckOwner,
            Self::Reconcile => JobKind::Reconcile,
            Self::Notify { .. } => JobKind::Notify,
            Self::WaitingCheck { .. } => JobKind::WaitingCheck,
        }
    }

    /// Process-event jobs run in their own lane of the thread: a fact is applied as soon as it
    /// arrives, never held behind a Graph call that is being retried through an outage.
    pub fn is_event(&self) -> bool {
        matches!(self, Self::ProcessEvent { .. })
    }

    /// Agent notifications and their waiting timer run in a lane of their own: a notification
    /// endpoint that is down never holds a handover back, nor a Graph outage a notification.
    pub fn is_notice(&self) -> bool {
        matches!(self, Self::Notify { .. } | Self::WaitingCheck { .. })
    }

    /// The queue's ordering key for this job of the thread `thread_key`: jobs with one key run
    /// one at a time, in the order they were due. Each thread has three lanes: events (facts,
    /// applied as soon as they arrive), effects (Graph and Dialogflow calls, in order: pass
    /// before take, sync before welcome) and notices, so a call retried through an outage
    /// never holds the thread's facts back, and a notification never holds a call back.
    pub fn lane(&self, thread_key: &str) -> String {
        let suffix = if self.is_event() {
            EVENTS_LANE
        } else if self.is_notice() {
            NOTICES_LANE
        } else {
            EFFECTS_LANE
        };
        format!("{thread_key}{suffix}")
    }

    /// The name of which at most one unfinished job may be queued: one `thread_owner` check
    /// and one waiting timer per thread.
    pub fn singleton(&self, thread_key: &str) -> Option<String> {
        match self {
            Self::CheckOwner { .. } => Some(format!("check_owner:{thread_key}")),
            Self::WaitingCheck { .. } => Some(format!("waiting_check:{thread_key}")),
            _ => None,
        }
    }
}

/// What each lane adds to the thread's key (`JobPayload::lane`).
const EFFECTS_LANE: &str = "";
const EVENTS_LANE: &str = "#events";
const NOTICES_LANE: &str = "#notify";
/// Every lane's suffix: a thread's jobs are the jobs of these lanes (the store finds them so;
/// its SQL spells them out, and a test there holds it to this list).
pub const LANE_SUFFIXES: [&str; 3] = [EFFECTS_LANE, EVENTS_LANE, NOTICES_LANE];

/// The lane of a thread's facts (its `process_event` jobs).
pub fn events_lane(thread_key: &str) -> String {
    format!("{thread_key}{EVENTS_LANE}")
}

/// The lanes of the thread `thread_key`: its jobs are in these.
pub fn lanes(thread_key: &str) -> [String; 3] {
    LANE_SUFFIXES.map(|suffix| format!("{thread_key}{suffix}"))
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
