//! Running one claimed job: the I/O around the pure state machine.

use tracing::{info, warn};

use crate::app::Services;
use crate::dialogflow::api::DialogflowError;
use crate::handover::{Failure, Input, Owner, State, WelcomePlan, decide, welcome_plan};
use crate::jobs::backoff;
use crate::jobs::payload::{JobPayload, WelcomeKind};
use crate::jobs::sync_contexts;
use crate::messenger::graph::{GraphError, MessagingType, ThreadOwner};
use crate::store::{ClaimedJob, Finish, StoreError};
use crate::time::{DAY_MS, now_ms};

/// How long finished jobs and old events are kept before the reconciler prunes them.
const KEEP_FINISHED_MS: i64 = 7 * DAY_MS;

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

fn failure_of(e: &GraphError) -> Failure {
    Failure {
        not_thread_owner: e.is_not_thread_owner(),
        outside_window: e.is_outside_window(),
        message: e.to_string(),
    }
}

pub async fn run(svc: &Services, job: &ClaimedJob) -> Result<Outcome, StoreError> {
    match &job.payload {
        JobPayload::ProcessEvent { event_id } => process_event(svc, job, *event_id).await,
        JobPayload::Pass {
            target_app_id,
            metadata,
        } => pass(svc, job, target_app_id, metadata).await,
        JobPayload::Take { metadata } => take(svc, job, metadata).await,
        JobPayload::SyncContexts => sync(svc, job).await,
        JobPayload::SendWelcome { welcome } => send_welcome(svc, job, *welcome).await,
        JobPayload::IdleCheck { generation } => {
            let input = Input::IdleCheck {
                generation: *generation,
            };
            apply(svc, job, Finish::Done, &input).await
        }
        JobPayload::CheckOwner => check_owner(svc, job).await,
        JobPayload::Reconcile => reconcile(svc, job).await,
    }
}

/// Finishes the job and feeds `input` to the state machine in the same transaction.
async fn apply(
    svc: &Services,
    job: &ClaimedJob,
    finish: Finish,
    input: &Input<'_>,
) -> Result<Outcome, StoreError> {
    let now = now_ms();
    let outcome = match &finish {
        Finish::Done => Outcome::Done,
        Finish::Retry { .. } => Outcome::Retry,
        Finish::Failed { .. } => Outcome::Failed,
    };
    let decision = svc
        .store
        .finish_and_apply(job, finish, now, |t| decide(t, input, &svc.policy, now))
        .await?;
    match decision {
        Some(d) => {
            if let Some(cause) = &d.cause {
                info!(
                    job = job.id,
                    kind = job.payload.kind(),
                    state = d.thread.state.as_str(),
                    cause = cause.as_str(),
                    "thread updated"
                );
            }
            if !d.jobs.is_empty() {
                svc.wake.notify_one();
            }
            Ok(outcome)
        }
        None => Ok(Outcome::LostLease),
    }
}

async fn finish(svc: &Services, job: &ClaimedJob, finish: Finish) -> Result<Outcome, StoreError> {
    let outcome = match &finish {
        Finish::Done => Outcome::Done,
        Finish::Retry { .. } => Outcome::Retry,
        Finish::Failed { .. } => Outcome::Failed,
    };
    if svc.store.finish(job, finish, now_ms()).await? {
        Ok(outcome)
    } else {
        Ok(Outcome::LostLease)
    }
}

async fn skip(svc: &Services, job: &ClaimedJob, why: &str) -> Result<Outcome, StoreError> {
    info!(job = job.id, kind = job.payload.kind(), why, "job skipped");
    finish(svc, job, Finish::Done).await?;
    Ok(Outcome::Skipped)
}

/// A transient failure is retried with backoff until `JOB_MAX_ATTEMPTS`; after that, or for a
/// permanent failure, `None`: the caller records it as failed.
fn retry_schedule(
    svc: &Services,
    job: &ClaimedJob,
    transient: bool,
    error: &str,
) -> Option<Finish> {
    let max = i64::from(svc.settings.job_max_attempts);
    if !transient || job.attempts >= max {
        return None;
    }
    let delay = backoff::delay_ms(
        svc.settings.job_retry_base_ms,
        job.attempts as u32,
        &mut rand::rng(),
    );
    Some(Finish::Retry {
        run_at: now_ms() + delay as i64,
        error: error.to_owned(),
    })
}

fn failed(job: &ClaimedJob, error: &str, transient: bool) -> Finish {
    Finish::Failed {
        error: if transient {
            format!("gave up after {} attempts: {error}", job.attempts)
        } else {
            error.to_owned()
        },
    }
}

fn thread_of(job: &ClaimedJob) -> Result<(&str, &str), StoreError> {
    match (job.page_id.as_deref(), job.psid.as_deref()) {
        (Some(p), Some(u)) => Ok((p, u)),
        _ => Err(StoreError::Corrupt(format!("job {} has no thread", job.id))),
    }
}

async fn process_event(
    svc: &Services,
    job: &ClaimedJob,
    event_id: i64,
) -> Result<Outcome, StoreError> {
    match svc.store.event(event_id).await? {
        Some(event) => apply(svc, job, Finish::Done, &Input::Event(&event)).await,
        None => {
            finish(
                svc,
                job,
                Finish::Failed {
                    error: format!("event {event_id} is not in the store"),
                },
            )
            .await
        }
    }
}

async fn pass(
    svc: &Services,
    job: &ClaimedJob,
    target: &str,
    metadata: &str,
) -> Result<Outcome, StoreError> {
    let (page_id, psid) = thread_of(job)?;
    let state = svc.store.thread(page_id, psid).await?.map(|t| t.state);
    if state != Some(State::Passing) {
        return skip(
            svc,
            job,
            "the thread is not waiting for a pass (already with the inbox, or returned)",
        )
        .await;
    }
    let result = svc.graph.pass_thread_control(psid, target, metadata).await;
    thread_control_done(svc, job, "pass_thread_control", result, Input::PassDone).await
}

async fn take(svc: &Services, job: &ClaimedJob, metadata: &str) -> Result<Outcome, StoreError> {
    let (page_id, psid) = thread_of(job)?;
    let state = svc.store.thread(page_id, psid).await?.map(|t| t.state);
    if state == Some(State::Bot) {
        return skip(svc, job, "the bot already owns the thread").await;
    }
    let result = svc.graph.take_thread_control(psid, metadata).await;
    thread_control_done(svc, job, "take_thread_control", result, Input::TakeDone).await
}

/// Records a pass or take: success or a permanent failure goes to the state machine; a
/// transient failure is retried until `JOB_MAX_ATTEMPTS`, then counts as a failure too.
async fn thread_control_done(
    svc: &Services,
    job: &ClaimedJob,
    endpoint: &str,
    result: Result<(), GraphError>,
    done: fn(Result<(), Failure>) -> Input<'static>,
) -> Result<Outcome, StoreError> {
    graph_metric(svc, endpoint, &result);
    match result {
        Ok(()) => apply(svc, job, Finish::Done, &done(Ok(()))).await,
        Err(e) => {
            let msg = e.to_string();
            warn!(job = job.id, error = %msg, endpoint, "thread control call failed");
            if let Some(retry) = retry_schedule(svc, job, e.is_transient(), &msg) {
                return finish(svc, job, retry).await;
            }
            let input = done(Err(failure_of(&e)));
            apply(svc, job, failed(job, &msg, e.is_transient()), &input).await
        }
    }
}

async fn sync(svc: &Services, job: &ClaimedJob) -> Result<Outcome, StoreError> {
    let Some(client) = &svc.dialogflow else {
        return skip(
            svc,
            job,
            "context sync is off: DIALOGFLOW_PROJECT_ID is not set",
        )
        .await;
    };
    let (page_id, psid) = thread_of(job)?;
    let Some(thread) = svc.store.thread(page_id, psid).await? else {
        return skip(svc, job, "unknown thread").await;
    };
    let Some(session) = thread.session.as_deref() else {
        return skip(
            svc,
            job,
            "no Dialogflow session is known for this user (no fulfillment call seen yet)",
        )
        .await;
    };
    let mode = svc.settings.context_on_return;
    let result = sync_contexts::sync(client, session, thread.snapshot.as_ref(), mode).await;
    dialogflow_metric(svc, "sync_contexts", &result);
    match result {
        Ok(report) => {
            info!(
                job = job.id,
                mode = mode.as_str(),
                deleted = ?report.deleted,
                created = ?report.created,
                "Dialogflow contexts synced"
            );
            finish(svc, job, Finish::Done).await
        }
        Err(e) => {
            let msg = e.to_string();
            warn!(job = job.id, error = %msg, "context sync failed");
            match retry_schedule(svc, job, e.is_transient(), &msg) {
                Some(retry) => finish(svc, job, retry).await,
                None => finish(svc, job, failed(job, &msg, e.is_transient())).await,
            }
        }
    }
}

async fn send_welcome(
    svc: &Services,
    job: &ClaimedJob,
    kind: WelcomeKind,
) -> Result<Outcome, StoreError> {
    let (page_id, psid) = thread_of(job)?;
    let Some(thread) = svc.store.thread(page_id, psid).await? else {
        return skip(svc, job, "unknown thread").await;
    };
    if let WelcomePlan::Defer(why) = welcome_plan(&thread, now_ms()) {
        info!(
            job = job.id,
            why, "welcome kept for the user's next message"
        );
        return apply(svc, job, Finish::Done, &Input::WelcomeDeferred { kind }).await;
    }
    let text = match kind {
        WelcomeKind::WelcomeBack => &svc.settings.welcome_back_message,
        WelcomeKind::AgentTimeout => &svc.settings.agent_timeout_message,
    };
    let result = svc
        .graph
        .send_text(psid, text, &[], MessagingType::Response)
        .await
        .map(|_| ());
    graph_metric(svc, "send_api", &result);
    match result {
        Ok(()) => {
            let input = Input::WelcomeSent {
                kind,
                result: Ok(()),
            };
            apply(svc, job, Finish::Done, &input).await
        }
        Err(e) => {
            let msg = e.to_string();
            warn!(job = job.id, error = %msg, "welcome message not sent");
            if let Some(retry) = retry_schedule(svc, job, e.is_transient(), &msg) {
                return finish(svc, job, retry).await;
            }
            let input = Input::WelcomeSent {
                kind,
                result: Err(failure_of(&e)),
            };
            // Not the owner or outside the window: kept for later, nothing is lost.
            let end = if e.is_not_thread_owner() || e.is_outside_window() {
                Finish::Done
            } else {
                failed(job, &msg, e.is_transient())
            };
            apply(svc, job, end, &input).await
        }
    }
}

async fn check_owner(svc: &Services, job: &ClaimedJob) -> Result<Outcome, StoreError> {
    let (_, psid) = thread_of(job)?;
    let result = svc.graph.thread_owner(psid).await;
    graph_metric(svc, "thread_owner", &result);
    match result {
        Ok(owner) => {
            let owner = match owner {
                ThreadOwner::Idle => Owner::Idle,
                ThreadOwner::App(app) => Owner::App(app),
                ThreadOwner::Hidden => Owner::Hidden,
            };
            apply(svc, job, Finish::Done, &Input::OwnerChecked(owner)).await
        }
        Err(e) => {
            let msg = e.to_string();
            match retry_schedule(svc, job, e.is_transient(), &msg) {
                Some(retry) => finish(svc, job, retry).await,
                None => finish(svc, job, failed(job, &msg, e.is_transient())).await,
            }
        }
    }
}

pub const RECONCILE_SINGLETON: &str = "reconcile";

async fn reconcile(svc: &Services, job: &ClaimedJob) -> Result<Outcome, StoreError> {
    let now = now_ms();
    let stuck = svc
        .store
        .stuck_threads(
            now,
            svc.settings.stuck_after_secs as i64 * 1000,
            DAY_MS,
            200,
        )
        .await?;
    for (page_id, psid) in &stuck {
        svc.store
            .enqueue(Some((page_id, psid)), &JobPayload::CheckOwner, now, now)
            .await?;
    }
    let pruned = svc.store.prune(now - KEEP_FINISHED_MS).await?;
    if !stuck.is_empty() || pruned > 0 {
        info!(stuck = stuck.len(), pruned, "reconciler ran");
        svc.wake.notify_one();
    }
    let outcome = finish(svc, job, Finish::Done).await?;
    let next = now + svc.settings.reconcile_interval_secs as i64 * 1000;
    svc.store
        .enqueue_singleton(RECONCILE_SINGLETON, &JobPayload::Reconcile, next, now)
        .await?;
    Ok(outcome)
}

fn graph_metric<T>(svc: &Services, endpoint: &str, result: &Result<T, GraphError>) {
    let result = match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => match (e.code(), e.subcode()) {
            (Some(c), Some(s)) => format!("error_{c}_{s}"),
            (Some(c), None) => format!("error_{c}"),
            _ => "error".to_owned(),
        },
    };
    svc.metrics.inc(
        "handover_graph_calls_total",
        format!("endpoint=\"{endpoint}\",result=\"{result}\""),
    );
}

fn dialogflow_metric<T>(svc: &Services, op: &str, result: &Result<T, DialogflowError>) {
    let result = if result.is_ok() { "ok" } else { "error" };
    svc.metrics.inc(
        "handover_dialogflow_calls_total",
        format!("operation=\"{op}\",result=\"{result}\""),
    );
}
