//! The durable job queue.
//!
//! A job is claimed with a lease; a job whose holder died is claimed again once the lease
//! runs out. Jobs of one thread run one at a time, in the order they were due when queued
//! (`ord`; a retry keeps its place, so it still blocks the jobs queued after it). Failed
//! jobs stay in the table with their last error: the dead letters.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, RunWrite, Store, StoreError};
use handover_core::event::IncomingEvent;
use handover_core::jobs::{JobKind, JobPayload, events_lane};
use handover_core::thread::thread_key;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// A job this worker holds the lease of.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    pub id: i64,
    pub page_id: Option<String>,
    pub psid: Option<String>,
    pub payload: JobPayload,
    /// Including this run.
    pub attempts: i64,
    pub worker_id: String,
    pub created_at: i64,
    /// An earlier run made its call and its outcome is unknown (it timed out, or the process
    /// died during it): the effect may already have happened.
    pub in_doubt: bool,
}

/// A job as stored, for tests, the demo and operators.
#[derive(Clone, Debug)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    /// `None` when the stored payload cannot be decoded (such a job is a dead letter).
    pub payload: Option<JobPayload>,
    pub status: JobStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub run_at: i64,
    pub created_at: i64,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    Done,
    /// Try again at `run_at` (epoch ms). `in_doubt`: the call may have taken effect.
    Retry {
        run_at: i64,
        error: String,
        in_doubt: bool,
    },
    /// Dead letter: kept with its error, never retried.
    Failed {
        error: String,
    },
}

pub(super) async fn insert_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    thread: Option<(&str, &str)>,
    payload: &JobPayload,
    run_at: i64,
    now: i64,
    singleton: Option<&str>,
) -> Result<bool, StoreError> {
    let json = serde_json::to_string(payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let thread_key = thread.map(|(page, psid)| thread_key(page, psid));
    let key = thread_key.as_deref().map(|k| payload.lane(k));
    let singleton = match singleton {
        Some(name) => Some(name.to_owned()),
        None => thread_key.as_deref().and_then(|k| payload.singleton(k)),
    };
    let (page, psid) = thread.unzip();
    let result = sqlx::query(
        "INSERT INTO jobs (thread_key, page_id, psid, kind, payload, status, ord, run_at, \
         attempts, singleton, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, 0, $7, $8, $8) \
         ON CONFLICT (singleton) DO NOTHING",
    )
    .bind(key)
    .bind(page)
    .bind(psid)
    .bind(payload.kind().as_str())
    .bind(json)
    .bind(run_at)
    .bind(singleton)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Queues the jobs of webhook events, due `now`, in one statement (in order, so their ids keep
/// each user's order).
pub(super) async fn insert_many_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    jobs: &[(&IncomingEvent, JobPayload)],
    now: i64,
) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut sql = String::from(
        "INSERT INTO jobs (thread_key, page_id, psid, kind, payload, status, ord, run_at, \
         attempts, singleton, created_at, updated_at) VALUES ",
    );
    for i in 0..jobs.len() {
        let p = i * 7;
        if i > 0 {
            sql.push_str(", ");
        }
        let [a, b, c, d, e, f, g] = [1, 2, 3, 4, 5, 6, 7].map(|k| p + k);
        sql.push_str(&format!(
            "(${a}, ${b}, ${c}, ${d}, ${e}, 'pending', ${f}, ${f}, 0, ${g}, ${f}, ${f})"
        ));
    }
    sql.push_str(" ON CONFLICT (singleton) DO NOTHING");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (event, payload) in jobs {
        let json =
            serde_json::to_string(payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let key = thread_key(&event.account_id, &event.user_id);
        query = query
            .bind(payload.lane(&key))
            .bind(event.account_id.clone())
            .bind(event.user_id.clone())
            .bind(payload.kind().as_str())
            .bind(json)
            .bind(now)
            .bind(payload.singleton(&key));
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

pub(super) async fn cancel_pending_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    thread_key: &str,
    kind: JobKind,
    now: i64,
) -> Result<u64, StoreError> {
    let result = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = $3, updated_at = $3, \
         singleton = NULL WHERE thread_key = $1 AND kind = $2 AND status = 'pending'",
    )
    .bind(thread_key)
    .bind(kind.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(result.rows_affected())
}

/// Marks a job finished, if `job.worker_id` still holds it.
pub(super) async fn finish_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    job: &ClaimedJob,
    finish: &Finish,
    now: i64,
) -> Result<bool, StoreError> {
    let query = match finish {
        Finish::Done => sqlx::query(
            "UPDATE jobs SET status = 'done', finished_at = $3, updated_at = $3, \
             lease_until = NULL, singleton = NULL WHERE id = $1 AND locked_by = $2 \
             AND status = 'running'",
        )
        .bind(job.id)
        .bind(job.worker_id.as_str())
        .bind(now),
        Finish::Retry {
            run_at,
            error,
            in_doubt,
        } => sqlx::query(
            "UPDATE jobs SET status = 'pending', run_at = $4, last_error = $5, updated_at = $3, \
             lease_until = NULL, locked_by = NULL, in_doubt = $6 WHERE id = $1 AND locked_by = $2 \
             AND status = 'running'",
        )
        .bind(job.id)
        .bind(job.worker_id.as_str())
        .bind(now)
        .bind(*run_at)
        .bind(error.as_str())
        .bind(i64::from(*in_doubt)),
        Finish::Failed { error } => sqlx::query(
            "UPDATE jobs SET status = 'failed', finished_at = $3, updated_at = $3, \
             last_error = $4, lease_until = NULL, singleton = NULL WHERE id = $1 \
             AND locked_by = $2 AND status = 'running'",
        )
        .bind(job.id)
        .bind(job.worker_id.as_str())
        .bind(now)
        .bind(error.as_str()),
    };
    Ok(query.execute(&mut **tx).await?.rows_affected() == 1)
}

fn job_row(row: &AnyRow) -> Result<JobRow, StoreError> {
    let status: String = row.try_get("status")?;
    let payload: String = row.try_get("payload")?;
    Ok(JobRow {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload).ok(),
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("job status {status:?}")))?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        run_at: row.try_get("run_at")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Due jobs that may run now: pending and due, or running with an expired lease; and no
/// other unfinished job of the same thread comes before it or is running. Written so that
/// both the scan and the per-thread probe stay on unfinished rows (`status IN ...` first):
/// finished jobs, kept for days, are never visited. A running job was due when claimed, so
/// `run_at <= $1` holds for it too.
const ELIGIBLE: &str = "FROM jobs j \
     WHERE j.status IN ('pending', 'running') AND j.run_at <= $1 \
       AND (j.status = 'pending' OR j.lease_until <= $1) \
       AND (j.thread_key IS NULL OR NOT EXISTS ( \
         SELECT 1 FROM jobs o WHERE o.thread_key = j.thread_key \
           AND o.status IN ('pending', 'running') AND o.id <> j.id \
           AND ((o.status = 'running' AND o.lease_until > $1) \
             OR o.ord < j.ord OR (o.ord = j.ord AND o.id < j.id))))";

impl Store {
    /// Queues a job outside any state change (tests, the reconciler).
    pub async fn enqueue(
        &self,
        thread: Option<(&str, &str)>,
        payload: &JobPayload,
        run_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        insert_in(&mut tx, thread, payload, run_at, now, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a job unless an unfinished one with the same singleton name exists.
    pub async fn enqueue_singleton(
        &self,
        name: &str,
        payload: &JobPayload,
        run_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let inserted = insert_in(&mut tx, None, payload, run_at, now, Some(name)).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Claims up to `limit` jobs for `worker_id` with a lease of `lease_ms`.
    pub async fn claim(
        &self,
        worker_id: &str,
        limit: i64,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let select = match self.backend {
            // Several replicas: skip rows another replica is claiming right now.
            Backend::Postgres => format!(
                "SELECT j.id {ELIGIBLE} ORDER BY j.run_at, j.id LIMIT $2 FOR UPDATE OF j SKIP LOCKED"
            ),
            Backend::Sqlite => format!("SELECT j.id {ELIGIBLE} ORDER BY j.run_at, j.id LIMIT $2"),
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET status = 'running', lease_until = $3, locked_by = $4, \
             attempts = attempts + 1, updated_at = $1 WHERE id IN ({select}) \
             RETURNING id, page_id, psid, payload, attempts, created_at, in_doubt"
        ));
        let mut tx = self.begin().await?;
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(limit)
            .bind(now + lease_ms)
            .bind(worker_id)
            .fetch_all(&mut **tx)
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let payload: String = row.try_get("payload")?;
            match serde_json::from_str(&payload) {
                Ok(payload) => jobs.push(ClaimedJob {
                    id,
                    page_id: row.try_get("page_id")?,
                    psid: row.try_get("psid")?,
                    payload,
                    attempts: row.try_get("attempts")?,
                    worker_id: worker_id.to_owned(),
                    created_at: row.try_get("created_at")?,
                    in_doubt: row.try_get::<i64, _>("in_doubt")? != 0,
                }),
                Err(e) => {
                    // E.g. written by a newer version during a rolling deploy: this job fails
                    // alone, in the dead letters with the reason; the others run.
                    tracing::error!(job = id, error = %e, "job payload cannot be decoded");
                    sqlx::query(
                        "UPDATE jobs SET status = 'failed', finished_at = $2, updated_at = $2, \
                         last_error = $3, lease_until = NULL, singleton = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(format!("the job's payload cannot be decoded: {e}"))
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// Finishes a job that needs no state change. `false` if the lease was lost.
    pub async fn finish(
        &self,
        job: &ClaimedJob,
        finish: Finish,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let ok = finish_in(&mut tx, job, &finish, now).await?;
        tx.commit().await?;
        Ok(ok)
    }

    /// Records, before a call whose effect is not idempotent, that its outcome is in doubt
    /// until the run finishes: a crash during the call leaves the mark for the next run.
    pub async fn mark_in_doubt(&self, job: &ClaimedJob) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE jobs SET in_doubt = 1 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
        )
        .bind(job.id)
        .bind(job.worker_id.as_str())
        .run_write(self)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Whether facts about the thread are stored but not yet applied: unfinished jobs in its
    /// events lane that were due by `now`.
    pub async fn facts_waiting(
        &self,
        page_id: &str,
        psid: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let lane = events_lane(&thread_key(page_id, psid));
        let waiting: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE thread_key = $1 AND status IN ('pending', 'running') \
             AND run_at <= $2 LIMIT 1",
        )
        .bind(lane)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(waiting.is_some())
    }

    /// Lengthens the lease of a job that is still running.
    pub async fn extend_lease(&self, job: &ClaimedJob, until: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
        )
        .bind(job.id)
        .bind(job.worker_id.as_str())
        .bind(until)
        .run_write(self)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// With the embedded store only one process runs: whatever was running when it died is
    /// claimable at once instead of after its lease.
    pub async fn release_all_leases(&self, now: i64) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE status = 'running' AND lease_until > $1",
        )
        .bind(now)
        .run_write(self)
        .await?;
        Ok(result.rows_affected())
    }

    pub async fn jobs_for(&self, page_id: &str, psid: &str) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, payload, status, attempts, last_error, run_at, created_at \
             FROM jobs WHERE page_id = $1 AND psid = $2 ORDER BY id",
        )
        .bind(page_id)
        .bind(psid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    pub async fn failed_jobs(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, payload, status, attempts, last_error, run_at, created_at \
             FROM jobs WHERE status = 'failed' ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_row).collect()
    }

    /// Counts of jobs per (kind, status), for `/metrics`.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, status, COUNT(*) AS n FROM jobs GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// Earliest time a pending job is due, to sleep until then.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(run_at) FROM jobs WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(next)
    }

    /// Deletes finished (done or cancelled) jobs and processed events older than `before`.
    /// Failed jobs are kept.
    pub async fn prune(&self, before: i64) -> Result<u64, StoreError> {
        let jobs = sqlx::query(
            "DELETE FROM jobs WHERE status IN ('done', 'cancelled') AND finished_at < $1",
        )
        .bind(before)
        .run_write(self)
        .await?
        .rows_affected();
        let events = sqlx::query(
            "DELETE FROM events WHERE received_at < $1 AND NOT EXISTS (SELECT 1 FROM jobs j \
             WHERE j.kind = 'process_event' AND j.status IN ('pending', 'running', 'failed') \
             AND j.page_id = events.page_id AND j.psid = events.psid)",
        )
        .bind(before)
        .run_write(self)
        .await?
        .rows_affected();
        Ok(jobs + events)
    }
}
