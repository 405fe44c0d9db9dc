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
    let mut running: JoinSet<()> = JoinSet::new();
    // The job each task runs, for releasing it when it is stopped at shutdown.
    let mut held: HashMap<Id, ClaimedJob> = HashMap::new();
    let mut next_singleton_check = 0i64;
    info!(worker = id.as_str(), concurrency, "job worker started");
    loop {
        while let Some(ended) = running.try_join_next_with_id() {
            held.remove(&task_id(&ended));
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
        if free > 0 {
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
            continue; // there may be more due right now
        }
        let idle = idle_time(&svc, now).await;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = svc.wake.notified() => {}
            _ = tokio::time::sleep(idle) => {}
            Some(ended) = running.join_next_with_id(), if !running.is_empty() => {
                held.remove(&task_id(&ended));
            }
        }
    }
    let grace = Duration::from_secs(svc.settings.shutdown_grace_secs);
    let drained = tokio::time::timeout(crate::shutdown::drain_time(grace), async {
        while let Some(ended) = running.join_next_with_id().await {
            held.remove(&task_id(&ended));
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

fn task_id(ended: &Result<(Id, ()), JoinError>) -> Id {
    match ended {
        Ok((id, ())) => *id,
        Err(e) => e.id(),
    }
}

/// Stops the jobs still running at the end of the drain and ends their leases now, so another
/// replica (or the next start) claims them at once instead of after `JOB_LEASE_MS`. A call one
/// of them made stays marked in doubt in the store, and is verified before it is repeated.
async fn release(svc: &Shared, running: &mut JoinSet<()>, held: &mut HashMap<Id, ClaimedJob>) {
    running.abort_all();
    let mut stopped = Vec::new();
    while let Some(ended) = running.join_next_with_id().await {
        let job = held.remove(&task_id(&ended));
        // A job that finished as it was stopped keeps its outcome.
        if matches!(&ended, Err(e) if e.is_cancelled()) {
            stopped.extend(job);
        }
    }
    let now = now_ms();
    let mut released = 0;
    for job in &stopped {
        match svc.store.extend_lease(job, now).await {
            Ok(true) => released += 1,
            Ok(false) => {} // finished (or taken over) meanwhile
            Err(e) => {
                warn!(job = job.id, error = %e, "could not release a stopped job; it runs again after its lease")
            }
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

async fn run_one(svc: Shared, job: ClaimedJob) {
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
    let outcome = match result {
        Ok(outcome) => outcome.as_str(),
        Err(e) => {
            // The store failed mid-job: the lease runs out and the job runs again.
            span.in_scope(|| error!(error = %e, "job interrupted by a store error"));
            "store_error"
        }
    };
    svc.metrics.job_finished(kind.as_str(), outcome);
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
