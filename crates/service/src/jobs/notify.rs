//! The `notify` job: one agent notification POSTed to `NOTIFY_WEBHOOK_URL`, retried like any
//! call (`JOB_MAX_ATTEMPTS`, with backoff and `Retry-After`), then kept as a dead letter. It
//! runs in the thread's notice lane, so an endpoint that is down holds back only other
//! notifications, never a pass, a take or a welcome.

use tracing::{info, warn};

use super::settle::{CallError, Ended, finish, settle, skip, thread_of};
use crate::app::Services;
use crate::notify::{Notice, NotifyError};
use crate::store::{ClaimedJob, Finish, StoreError};
use handover_core::jobs::JobPayload;

impl From<&NotifyError> for CallError {
    fn from(e: &NotifyError) -> Self {
        CallError {
            message: e.to_string(),
            transient: e.is_transient(),
            rate_limited: matches!(e, NotifyError::Status { status: 429, .. }),
            retry_after_ms: e.retry_after().map(|d| d.as_millis() as u64),
            unknown: false,
        }
    }
}

pub(super) async fn send(svc: &Services, job: &ClaimedJob) -> Result<Ended, StoreError> {
    let JobPayload::Notify {
        event,
        epoch,
        at,
        cause,
        waited_ms,
        error,
    } = &job.payload
    else {
        return Err(StoreError::Corrupt(format!(
            "job {} is not a notify job",
            job.id
        )));
    };
    let Some(notifier) = &svc.notifier else {
        // Queued while NOTIFY_WEBHOOK_URL was set; it is not any more.
        return skip(
            svc,
            job,
            "notifications are off: NOTIFY_WEBHOOK_URL is not set",
        )
        .await;
    };
    let (page_id, psid) = thread_of(job)?;
    let notice = Notice {
        event: *event,
        page_id,
        psid,
        epoch: *epoch,
        at_ms: *at,
        cause: cause.as_deref(),
        waited_ms: *waited_ms,
        error: error.as_deref(),
    };
    match notifier.send(&notice).await {
        Ok(()) => {
            svc.metrics.notification(*event, "sent");
            info!(event = event.as_str(), "agent notification sent");
            finish(svc, job, Finish::Done).await
        }
        Err(e) => {
            let end = settle(svc, job, &CallError::from(&e));
            let result = match end {
                Finish::Retry { .. } => "retry",
                _ => "failed",
            };
            svc.metrics.notification(*event, result);
            warn!(event = event.as_str(), error = %e, result, "agent notification not taken");
            finish(svc, job, end).await
        }
    }
}
