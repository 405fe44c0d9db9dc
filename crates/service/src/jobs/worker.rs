//! The in-process worker: claims due jobs, runs them concurrently (never two of one user at
//! once: the claim query sees to that), and keeps each lease alive while its job runs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::run::{self, RECONCILE_SINGLETON};
use crate::app::Shared;
use crate::store::ClaimedJob;
use crate::time::now_ms;
use handover_core::jobs::JobPayload;

/// The longest the worker sleeps with nothing due: it is woken at once when this process
/// queues a job or a job ends, and sleeps until the next job is due; this bounds the wait for
/// what only the store knows (jobs another replica queued, leases that ran out).
const IDLE_POLL: Duration = Duration::from_secs(1);

pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Runs until `stop` is cancelled, then lets running jobs finish within the drain time of
/// `SHUTDOWN_GRACE_SECS` ([`crate::shutdown`]); jobs still running then are stopped and
/// released, to run again at once elsewhere or at the next start.
pub async fn run(svc: Shared, stop: CancellationToken) {
    let id = worker_id();
    let concurrency = svc.settings.job_concurrency;
    // Each task ends with the job the store claimed after its own, if any (`Then::ClaimNext`).
    let mut running: JoinSet<Option<ClaimedJob>> = JoinSet::new();
    // The job each task runs, for releasing it when it is stopped at shutdown.
    let mut held: HashMap<Id, ClaimedJob> = HashMap::new();
    let mut next_singleton_check = 0i64;
    info!(worker = id.as_str(), concurrency, "job worker started");
    // Whether to ask the store for due jobs this round. Not when the only news is a task that
    // handed on a successor: the slot it freed is taken again, and a claim would find nothing
    // the successor claims do not already cover.
    let mut claim_now = true;
    loop {
        while let Some(ended) = running.try_join_next_with_id() {
            claim_now |= hand_on(&svc, &stop, &mut running, &mut held, ended).await;
        }
        if stop.is_cancelled() {
            break;
        }
        let now = now_ms();
        if now >= next_singleton_check {
            // One reconciler per deployment: the singleton name makes this a no-op when
            // another replica (or an earlier run) already queued it.
            let due = now + svc.settings.reconcile_interval_secs as i64 * 1000;
            if let Err(e) = svc
                .store
                .enqueue_singleton(RECONCILE_SINGLETON, &JobPayload::Reconcile, due, now)
                .await
            {
                warn!(error = %e, "could not queue the reconciler");
            }
            next_singleton_check = now + svc.settings.reconcile_interval_secs as i64 * 1000;
        }
        let free = concurrency.saturating_sub(running.len());
        let mut claimed = 0;
        if free > 0 && std::mem::take(&mut claim_now) {
            match svc
                .store
                .claim(&id, free as i64, svc.settings.job_lease_ms as i64, now)
                .await
            {
                Ok(jobs) => {
                    claimed = jobs.len();
                    for job in jobs {
                        let task = running.spawn(run_one(svc.clone(), job.clone()));
                        held.insert(task.id(), job);
                    }
                }
                Err(e) => error!(error = %e, "claiming jobs failed"),
            }
        }
        if claimed > 0 && claimed == free {
            claim_now = true;
            continue; // there may be more due right now
        }
        let idle = idle_time(&svc, now).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = svc.wake.notified() => claim_now = true,
            _ = tokio::time::sleep(idle) => claim_now = true,
            Some(ended) = running.join_next_with_id(), if !running.is_empty() => {
                claim_now |= hand_on(&svc, &stop, &mut running, &mut held, ended).await;
            }
        }
    }
    let grace = Duration::from_secs(svc.settings.shutdown_grace_secs);
    let drained = tokio::time::timeout(crate::shutdown::drain_time(grace), async {
        while let Some(ended) = running.join_next_with_id().await {
            // Stopping: a successor is released, not run.
            hand_on(&svc, &stop, &mut running, &mut held, ended).await;
        }
    })
    .await;
    if drained.is_err() {
        let releasing = release(&svc, &mut running, &mut held);
        if tokio::time::timeout(crate::shutdown::reserve(grace), releasing)
            .await
            .is_err()
        {
            warn!("releasing the stopped jobs took too long; the rest run again after their lease");
        }
    }
    info!(worker = id.as_str(), "job worker stopped");
}

type TaskEnd = Result<(Id, Option<ClaimedJob>), JoinError>;

fn task_id(ended: &TaskEnd) -> Id {
    match ended {
        Ok((id, _)) => *id,
        Err(e) => e.id(),
    }
}

/// A task ended: the job the store claimed after its own runs at once in its place, or, when
/// the worker is stopping, is released to run again at once elsewhere. `true` when nothing
/// took the slot (the worker should claim).
async fn hand_on(
    svc: &Shared,
    stop: &CancellationToken,
    running: &mut JoinSet<Option<ClaimedJob>>,
    held: &mut HashMap<Id, ClaimedJob>,
    ended: TaskEnd,
) -> bool {
    held.remove(&task_id(&ended));
    let Ok((_, Some(next))) = ended else {
        return true;
    };
    if stop.is_cancelled() {
        release_one(svc, &next).await;
        return false;
    }
    let task = running.spawn(run_one(svc.clone(), next.clone()));
    held.insert(task.id(), next);
    false
}

/// Ends the lease of a job claimed but not run, so that it is claimable at once.
async fn release_one(svc: &Shared, job: &ClaimedJob) -> bool {
    match svc.store.extend_lease(job, now_ms()).await {
        Ok(released) => released,
        Err(e) => {
            warn!(job = job.id, error = %e, "could not release a stopped job; it runs again after its lease");
            false
        }
    }
}

/// Stops the jobs still running at the end of the drain and ends their leases now, so another
/// replica (or the next start) claims them at once instead of after `JOB_LEASE_MS`. A call one
/// of them made stays marked in doubt in the store, and is verified before it is repeated.
async fn release(
    svc: &Shared,
    running: &mut JoinSet<Option<ClaimedJob>>,
    held: &mut HashMap<Id, ClaimedJob>,
) {
    running.abort_all();
    let mut stopped = Vec::new();
    while let Some(ended) = running.join_next_with_id().await {
        let job = held.remove(&task_id(&ended));
        match ended {
            // A job that finished as it was stopped keeps its outcome; its successor is not run.
            Ok((_, next)) => stopped.extend(next),
            Err(e) if e.is_cancelled() => stopped.extend(job),
            Err(_) => {}
        }
    }
    let mut released = 0;
    for job in &stopped {
        // `false`: finished (or taken over) meanwhile.
        if release_one(svc, job).await {
            released += 1;
        }
    }
    warn!(
        released,
        "jobs still running at the end of the shutdown grace were stopped and released; they run again at once"
    );
}

/// How long to sleep when nothing more could be claimed: until the next pending job is due,
/// at most `IDLE_POLL`. A job due already but not claimable waits behind another job of its
/// thread, whose end wakes the worker.
async fn idle_time(svc: &Shared, now: i64) -> Duration {
    match svc.store.next_due().await {
        Ok(Some(due)) if due > now => Duration::from_millis((due - now) as u64).min(IDLE_POLL),
        Ok(_) => IDLE_POLL,
        Err(e) => {
            warn!(error = %e, "could not read when the next job is due");
            IDLE_POLL
        }
    }
}

/// Runs `job`; returns the job the store claimed after it, for the worker to run next.
async fn run_one(svc: Shared, job: ClaimedJob) -> Option<ClaimedJob> {
    let kind = job.payload.kind();
    let thread = match (&job.page_id, &job.psid) {
        (Some(page), Some(psid)) => svc.pseudonyms.thread(page, psid),
        _ => String::new(),
    };
    // Every line a job logs, here and in the clients it calls, carries these fields; the user
    // only pseudonymized.
    let span = tracing::info_span!("job", job = job.id, %kind, thread, attempt = job.attempts);
    // The lease is renewed while the job runs, and no longer once it ends or is stopped.
    let result = tokio::select! {
        result = run::run(&svc, &job).instrument(span.clone()) => result,
        never = keep_lease(&svc, &job) => match never {},
    };
    let (outcome, next) = match result {
        Ok(ended) => (ended.outcome.as_str(), ended.next),
        Err(e) => {
            // The store failed mid-job: the lease runs out and the job runs again.
            span.in_scope(|| error!(error = %e, "job interrupted by a store error"));
            ("store_error", None)
        }
    };
    svc.metrics.job_finished(kind.as_str(), outcome);
    next
}

async fn keep_lease(svc: &Shared, job: &ClaimedJob) -> Infallible {
    let lease = svc.settings.job_lease_ms as i64;
    let every = Duration::from_millis((lease / 3) as u64);
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = svc.store.extend_lease(job, now_ms() + lease).await {
            warn!(job = job.id, error = %e, "could not extend a job lease");
        }
    }
}
