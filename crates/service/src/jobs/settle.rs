//! How a job ends: its outcome, finishing it in the store, and the one retry policy that
//! settles a failed call into retry-at or failed (a dead letter). Every job runner uses these.

use tracing::info;

use crate::app::Services;
use crate::dialogflow::api::DialogflowError;
use crate::jobs::backoff;
use crate::messenger::graph::GraphError;
use crate::store::{ClaimedJob, Finish, Finished, StoreError, Then};
use crate::time::now_ms;
use handover_core::jobs::JobPayload;
use handover_core::machine::CLOCK_SKEW_MS;

/// How a job ended, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Skipped,
    Retry,
    Failed,
    LostLease,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::LostLease => "lost_lease",
        }
    }
}

/// A run's end: its outcome, and the job of the same thread the store claimed after it, which
/// the worker runs next in its place.
#[derive(Debug)]
pub struct Ended {
    pub outcome: Outcome,
    pub next: Option<ClaimedJob>,
}

impl From<Outcome> for Ended {
    fn from(outcome: Outcome) -> Self {
        Ended {
            outcome,
            next: None,
        }
    }
}

impl Ended {
    /// `outcome` if the store still held the job (`Outcome::LostLease` otherwise).
    pub(super) fn of<T>(finished: Finished<T>, outcome: Outcome) -> (Option<T>, Ended) {
        match finished {
            Finished::Held { result, next } => (Some(result), Ended { outcome, next }),
            Finished::LostLease => (None, Outcome::LostLease.into()),
        }
    }
}

/// What the worker's store transactions that finish a job claim after it.
pub(super) fn then(svc: &Services) -> Then {
    Then::ClaimNext {
        lease_ms: svc.settings.job_lease_ms as i64,
    }
}

pub(super) fn outcome_of(finish: &Finish) -> Outcome {
    match finish {
        Finish::Done => Outcome::Done,
        Finish::Retry { .. } => Outcome::Retry,
        Finish::Failed { .. } => Outcome::Failed,
    }
}

pub(super) async fn finish(
    svc: &Services,
    job: &ClaimedJob,
    finish: Finish,
) -> Result<Ended, StoreError> {
    let outcome = outcome_of(&finish);
    let finished = svc
        .store
        .finish_then(job, finish, then(svc), now_ms())
        .await?;
    Ok(Ended::of(finished, outcome).1)
}

pub(super) async fn skip(svc: &Services, job: &ClaimedJob, why: &str) -> Result<Ended, StoreError> {
    info!(why, "job skipped");
    let mut ended = finish(svc, job, Finish::Done).await?;
    if ended.outcome == Outcome::Done {
        ended.outcome = Outcome::Skipped;
    }
    Ok(ended)
}

/// A failed call, as the retry policy needs to know it.
pub(super) struct CallError {
    pub message: String,
    pub transient: bool,
    pub rate_limited: bool,
    pub retry_after_ms: Option<u64>,
    /// The call may have taken effect although it failed.
    pub unknown: bool,
}

impl From<&GraphError> for CallError {
    fn from(e: &GraphError) -> Self {
        CallError {
            message: e.to_string(),
            transient: e.is_transient(),
            rate_limited: e.is_rate_limited(),
            retry_after_ms: e.retry_after().map(|d| d.as_millis() as u64),
            unknown: e.outcome_unknown(),
        }
    }
}

impl From<&DialogflowError> for CallError {
    fn from(e: &DialogflowError) -> Self {
        CallError {
            message: e.to_string(),
            transient: e.is_transient(),
            rate_limited: false,
            retry_after_ms: None,
            unknown: false,
        }
    }
}

/// Passes and takes keep being retried for `JOB_RETRY_FOR_SECS`, with waits capped at a
/// minute so the user is not kept waiting long once Meta is back; other jobs
/// `JOB_MAX_ATTEMPTS` times.
const THREAD_CONTROL_MAX_WAIT_MS: u64 = 60_000;

/// Settles a failed call: try again at some time, or give up (`None`: the caller records it
/// as failed). Rate limits and `Retry-After` wait longer.
pub(super) fn retry_schedule(svc: &Services, job: &ClaimedJob, e: &CallError) -> Option<Finish> {
    if !e.transient {
        return None;
    }
    let settings = &svc.settings;
    let now = now_ms();
    let thread_control = matches!(
        job.payload,
        JobPayload::Pass { .. } | JobPayload::Take { .. }
    );
    let mut delay = backoff::delay_ms(
        settings.job_retry_base_ms,
        job.attempts as u32,
        &mut rand::rng(),
    );
    if thread_control {
        delay = delay.min(THREAD_CONTROL_MAX_WAIT_MS);
    }
    if e.rate_limited {
        // Graph's rate limits (codes 4, 17, 32, 613, HTTP 429) last longer than a blip.
        delay = delay.max(backoff::delay_ms(
            settings.job_retry_base_ms.saturating_mul(10),
            job.attempts as u32,
            &mut rand::rng(),
        ));
    }
    if let Some(after) = e.retry_after_ms {
        delay = delay.max(after);
    }
    if e.unknown {
        // The call may have been applied: its own webhook event (which names its epoch) is
        // usually on its way and settles the thread exactly; give it that time before asking
        // thread_owner, which cannot tell "never applied" from "applied and handed back".
        delay = delay.max(CLOCK_SKEW_MS as u64);
    }
    let run_at = now + delay as i64;
    let within = if thread_control {
        run_at <= job.created_at + settings.job_retry_for_secs as i64 * 1000
    } else {
        job.attempts < i64::from(settings.job_max_attempts)
    };
    within.then(|| Finish::Retry {
        run_at,
        error: e.message.clone(),
        in_doubt: e.unknown,
    })
}

/// The one place a failed call is settled: retried at some time, or a dead letter.
pub(super) fn settle(svc: &Services, job: &ClaimedJob, e: &CallError) -> Finish {
    retry_schedule(svc, job, e).unwrap_or_else(|| failed(job, e))
}

fn failed(job: &ClaimedJob, e: &CallError) -> Finish {
    Finish::Failed {
        error: if e.transient {
            format!("gave up after {} attempts: {}", job.attempts, e.message)
        } else {
            e.message.clone()
        },
    }
}

pub(super) fn thread_of(job: &ClaimedJob) -> Result<(&str, &str), StoreError> {
    match (job.page_id.as_deref(), job.psid.as_deref()) {
        (Some(p), Some(u)) => Ok((p, u)),
        _ => Err(StoreError::Corrupt(format!("job {} has no thread", job.id))),
    }
}
