//! What handlers and jobs share: settings, store, API clients, policy, metrics.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::dialogflow::SessionSync;
use crate::messenger::graph::GraphClient;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::Store;
use crate::telemetry::Pseudonyms;
use handover_core::text::PhraseSet;
use handover_core::{NotifyPolicy, Policy};

pub struct Services {
    pub settings: Settings,
    pub store: Store,
    pub graph: GraphClient,
    /// `None` when `DIALOGFLOW_PROJECT_ID` is not set: context sync is off.
    pub dialogflow: Option<Arc<dyn SessionSync>>,
    /// `None` when `NOTIFY_WEBHOOK_URL` is not set: no agent notifications.
    pub notifier: Option<Notifier>,
    /// Shared with the store's writer, which may run a decision after the request's task.
    pub policy: Arc<Policy>,
    pub metrics: Metrics,
    /// How users appear in logs.
    pub pseudonyms: Pseudonyms,
    /// Wakes the worker when a job was queued, so it need not wait for its next poll.
    pub wake: Notify,
}

pub type Shared = Arc<Services>;

pub fn policy_from(settings: &Settings) -> Policy {
    Policy {
        app_id: settings.fb_app_id.clone(),
        target_app_id: settings.handover_target_app_id.clone(),
        return_phrases: PhraseSet::new(&settings.return_phrases),
        return_payload: settings.return_payload.clone(),
        agent_return_phrases: PhraseSet::new(&settings.agent_return_phrases),
        idle_timeout_ms: (settings.agent_idle_timeout_secs as i64) * 1000,
        pass_delay_ms: settings.handover_pass_delay_ms as i64,
        stuck_after_ms: (settings.stuck_after_secs as i64) * 1000,
        standby_means_not_bot: settings.fb_webhook_app_id == settings.fb_app_id,
        notify: NotifyPolicy {
            enabled: settings.notify.is_some(),
            waiting_ms: settings
                .notify
                .as_ref()
                .map_or(0, |n| n.waiting_secs as i64 * 1000),
        },
    }
}
