//! What the admin API reads and does: threads with their timers and job counts, one thread's
//! trail and jobs, the job queue by status; an operator's decisions and job retries, each
//! recorded in the audit trail (`transitions`) with a cause beginning `admin`.

use super::db::{Conn, Row, Value, params};
use super::engine::WriteKind;
use super::queue::JobStatus;
use super::threads::{THREAD_COLUMNS, TransitionRow, apply_in, thread_from_row, thread_in};
use super::{Backend, Store, StoreError};
use handover_core::jobs::{JobPayload, lanes};
use handover_core::machine::ADMIN_CAUSE;
use handover_core::thread::thread_key;
use handover_core::{Decision, State, Thread};

/// A thread as the admin API shows it: the thread, its pending idle timer and its jobs.
#[derive(Clone, Debug)]
pub struct AdminThread {
    pub thread: Thread,
    /// When the pending agent-idle check of the thread is due.
    pub idle_check_at: Option<i64>,
    /// Jobs pending or running.
    pub unfinished_jobs: i64,
    /// Unfinished jobs that failed at least once and wait for their next attempt.
    pub retrying_jobs: i64,
    /// Dead letters: jobs that gave up. Not agent notifications: one that was not taken
    /// leaves the conversation as it was (`/admin/jobs?status=failed` lists it).
    pub failed_jobs: i64,
}

/// Where a page of threads ended: the next page starts after this thread, in the order
/// (`state_since`, `page_id`, `psid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadCursor {
    pub state_since: i64,
    pub page_id: String,
    pub psid: String,
}

/// A job as the admin API shows it.
#[derive(Clone, Debug)]
pub struct AdminJob {
    pub id: i64,
    pub page_id: Option<String>,
    pub psid: Option<String>,
    pub kind: String,
    /// `None` when the stored payload cannot be decoded.
    pub payload: Option<JobPayload>,
    pub status: JobStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub run_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// An attempt's outcome is unknown: the next one asks `thread_owner` first.
    pub in_doubt: bool,
}

/// What a retry of a job came to.
#[derive(Clone, Debug)]
pub enum Retry {
    /// Pending again, due now, its attempts reset; recorded in the thread's audit trail.
    Retried(Box<AdminJob>),
    NotFound,
    NotFailed(JobStatus),
    /// A job of no thread (the reconciler's, which the service queues again itself), or
    /// whose thread is no longer stored.
    NoThread,
    /// An unfinished job with the same singleton name (this job, id) exists.
    Busy(i64),
}

/// A job's columns, in the order `admin_job` reads them.
const JOB_COLUMNS: &str = "id, page_id, psid, kind, payload, status, attempts, last_error, \
     run_at, created_at, updated_at, finished_at, in_doubt";

fn admin_job(row: &Row) -> Result<AdminJob, StoreError> {
    let status = row.text(5)?;
    Ok(AdminJob {
        id: row.int(0)?,
        page_id: row.opt_text(1)?,
        psid: row.opt_text(2)?,
        kind: row.text(3)?,
        payload: serde_json::from_str(&row.text(4)?).ok(),
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("job status {status:?}")))?,
        attempts: row.int(6)?,
        last_error: row.opt_text(7)?,
        run_at: row.int(8)?,
        created_at: row.int(9)?,
        updated_at: row.int(10)?,
        finished_at: row.opt_int(11)?,
        in_doubt: row.int(12)? != 0,
    })
}

/// A thread with what `AdminThread` adds, from `threads t`, then `tail` (WHERE, ORDER, LIMIT).
/// The job counts use `jobs_thread` (thread_key, status, ord), through the thread's lanes.
fn thread_select(tail: &str) -> String {
    const OF_T: &str = concat!("FROM jobs j WHERE j.thread_key IN ", lanes_of!("t"));
    format!(
        "SELECT {THREAD_COLUMNS}, \
         (SELECT MIN(j.run_at) {OF_T} AND j.status = 'pending' AND j.kind = 'idle_check'), \
         (SELECT COUNT(*) {OF_T} AND j.status IN ('pending', 'running')), \
         (SELECT COUNT(*) {OF_T} AND j.status IN ('pending', 'running') AND j.attempts > 0 \
            AND j.last_error IS NOT NULL), \
         (SELECT COUNT(*) {OF_T} AND j.status = 'failed' AND j.kind <> 'notify') \
         FROM threads t {tail}"
    )
}

/// The number of columns `thread_from_row` reads; `AdminThread`'s follow them.
const THREAD_WIDTH: usize = 22;

fn admin_thread(row: &Row) -> Result<AdminThread, StoreError> {
    Ok(AdminThread {
        thread: thread_from_row(row)?,
        idle_check_at: row.opt_int(THREAD_WIDTH)?,
        unfinished_jobs: row.int(THREAD_WIDTH + 1)?,
        retrying_jobs: row.int(THREAD_WIDTH + 2)?,
        failed_jobs: row.int(THREAD_WIDTH + 3)?,
    })
}

/// `$first, $first+1, …`: one placeholder per value of an `IN` list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An audit row of an admin action that changed neither the state nor the owner (`apply_in`
/// writes one only for those).
fn record_in(
    conn: &mut dyn Conn,
    page_id: &str,
    psid: &str,
    state: State,
    cause: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO transitions (page_id, psid, from_state, to_state, cause, at) \
         VALUES ($1, $2, $3, $3, $4, $5)",
        params![page_id, psid, state.as_str(), cause, now],
    )?;
    Ok(())
}

fn retry_in(conn: &mut dyn Conn, id: i64, now: i64) -> Result<Retry, StoreError> {
    let lock = match conn.backend() {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let select = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{lock}");
    let Some(row) = conn.query_opt(&select, params![id])? else {
        return Ok(Retry::NotFound);
    };
    let job = admin_job(&row)?;
    if job.status != JobStatus::Failed {
        return Ok(Retry::NotFailed(job.status));
    }
    let (Some(page_id), Some(psid)) = (job.page_id.as_deref(), job.psid.as_deref()) else {
        return Ok(Retry::NoThread);
    };
    let Some(state) = conn
        .query_opt(
            "SELECT state FROM threads WHERE page_id = $1 AND psid = $2",
            params![page_id, psid],
        )?
        .map(|r| r.text(0))
        .transpose()?
    else {
        return Ok(Retry::NoThread);
    };
    let state = State::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("thread state {state:?}")))?;
    // A failed job gave its singleton name up; a retried one takes it back, unless another
    // job of that name (one `thread_owner` check per thread) is under way.
    let singleton = job
        .payload
        .as_ref()
        .and_then(|p| p.singleton(&thread_key(page_id, psid)));
    if let Some(name) = &singleton
        && let Some(other) = conn.scalar(
            "SELECT id FROM jobs WHERE singleton = $1",
            params![name.as_str()],
        )?
    {
        return Ok(Retry::Busy(other));
    }
    // Due now and queued behind what its lane has now (`ord`); its last error and whether an
    // attempt's outcome is unknown stay, so a call in doubt is verified before it is repeated.
    conn.execute(
        "UPDATE jobs SET status = 'pending', run_at = $2, ord = $2, attempts = 0, \
         finished_at = NULL, lease_until = NULL, locked_by = NULL, singleton = $3, \
         updated_at = $2 WHERE id = $1 AND status = 'failed'",
        params![id, now, singleton.as_deref()],
    )?;
    let cause = format!(
        "{ADMIN_CAUSE}: job {id} ({}) retried; it had failed: {}",
        job.kind,
        job.last_error.as_deref().unwrap_or("no error recorded")
    );
    record_in(conn, page_id, psid, state, &cause, now)?;
    let row = conn.query_one(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
        params![id],
    )?;
    Ok(Retry::Retried(Box::new(admin_job(&row)?)))
}

impl Store {
    /// Threads in any of `states`, in the order (`state_since`, `page_id`, `psid`): the
    /// longest in their state first; `limit` of them after `after`. A thread that changes
    /// state between two pages moves to the end (its `state_since` is new).
    pub async fn admin_threads(
        &self,
        states: &[State],
        after: Option<ThreadCursor>,
        limit: i64,
    ) -> Result<Vec<AdminThread>, StoreError> {
        let states: Vec<&'static str> = states.iter().map(|s| s.as_str()).collect();
        let after = after.unwrap_or(ThreadCursor {
            state_since: i64::MIN,
            page_id: String::new(),
            psid: String::new(),
        });
        let sql = thread_select(&format!(
            "WHERE t.state IN ({}) AND (t.state_since, t.page_id, t.psid) > ($1, $2, $3) \
             ORDER BY t.state_since, t.page_id, t.psid LIMIT $4",
            placeholders(5, states.len())
        ));
        self.engine
            .read(move |conn| {
                let mut values = vec![
                    Value::Int(after.state_since),
                    Value::Text(&after.page_id),
                    Value::Text(&after.psid),
                    Value::Int(limit),
                ];
                values.extend(states.iter().map(|s| Value::Text(s)));
                conn.query(&sql, &values)?
                    .iter()
                    .map(admin_thread)
                    .collect()
            })
            .await
    }

    /// One thread, as `admin_threads` shows it.
    pub async fn admin_thread(
        &self,
        page_id: &str,
        psid: &str,
    ) -> Result<Option<AdminThread>, StoreError> {
        let sql = thread_select("WHERE t.page_id = $1 AND t.psid = $2");
        let (page_id, psid) = (page_id.to_owned(), psid.to_owned());
        self.engine
            .read(move |conn| {
                conn.query_opt(&sql, params![&page_id, &psid])?
                    .as_ref()
                    .map(admin_thread)
                    .transpose()
            })
            .await
    }

    /// The pages that have a thread of `psid` (a few at most), by the `threads_psid` index.
    pub async fn pages_of(&self, psid: &str) -> Result<Vec<String>, StoreError> {
        let psid = psid.to_owned();
        self.engine
            .read(move |conn| {
                conn.query(
                    "SELECT page_id FROM threads WHERE psid = $1 ORDER BY page_id LIMIT 10",
                    params![&psid],
                )?
                .iter()
                .map(|r| r.text(0))
                .collect()
            })
            .await
    }

    /// The thread's newest `limit` audit rows, oldest first.
    pub async fn recent_transitions(
        &self,
        page_id: &str,
        psid: &str,
        limit: i64,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let (page_id, psid) = (page_id.to_owned(), psid.to_owned());
        self.engine
            .read(move |conn| {
                let mut rows = conn
                    .query(
                        "SELECT from_state, to_state, cause, at FROM transitions \
                         WHERE page_id = $1 AND psid = $2 ORDER BY id DESC LIMIT $3",
                        params![&page_id, &psid, limit],
                    )?
                    .iter()
                    .map(|r| {
                        Ok(TransitionRow {
                            from_state: r.text(0)?,
                            to_state: r.text(1)?,
                            cause: r.text(2)?,
                            at: r.int(3)?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                rows.reverse();
                Ok(rows)
            })
            .await
    }

    /// The thread's newest `limit` jobs, newest first.
    pub async fn recent_jobs(
        &self,
        page_id: &str,
        psid: &str,
        limit: i64,
    ) -> Result<Vec<AdminJob>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE thread_key IN ($1, $2, $3) \
             ORDER BY id DESC LIMIT $4"
        );
        let [a, b, c] = lanes(&thread_key(page_id, psid));
        self.engine
            .read(move |conn| {
                conn.query(&sql, params![&a, &b, &c, limit])?
                    .iter()
                    .map(admin_job)
                    .collect()
            })
            .await
    }

    /// Jobs in any of `statuses`, newest first: `limit` of them with an id below `before`.
    pub async fn admin_jobs(
        &self,
        statuses: &[JobStatus],
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AdminJob>, StoreError> {
        let statuses: Vec<&'static str> = statuses.iter().map(|s| s.as_str()).collect();
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ({}) AND id < $1 \
             ORDER BY id DESC LIMIT $2",
            placeholders(3, statuses.len())
        );
        let before = before.unwrap_or(i64::MAX);
        self.engine
            .read(move |conn| {
                let mut values = vec![Value::Int(before), Value::Int(limit)];
                values.extend(statuses.iter().map(|s| Value::Text(s)));
                conn.query(&sql, &values)?.iter().map(admin_job).collect()
            })
            .await
    }

    /// An operator's decision: runs `decide` on the stored thread and stores the decision as
    /// `apply` does, in one transaction synced to disk; the decision is in the audit trail
    /// even when it changed nothing. `None` (and nothing written) for a thread never seen.
    pub async fn apply_admin<F>(
        &self,
        page_id: &str,
        psid: &str,
        now: i64,
        decide: F,
    ) -> Result<Option<Decision>, StoreError>
    where
        F: Fn(&Thread) -> Decision + Send + 'static,
    {
        let shared = self.shared.clone();
        let (page, user) = (page_id.to_owned(), psid.to_owned());
        let result = self
            .engine
            .write(WriteKind::DURABLE, move |conn| {
                if thread_in(conn, &page, &user)?.is_none() {
                    return Ok(None);
                }
                let mut before = None;
                let decision = apply_in(conn, &shared, &page, &user, now, |t| {
                    before = Some((t.state, t.owner_app_id.clone()));
                    decide(t)
                })?;
                let (state, owner) =
                    before.ok_or_else(|| StoreError::Corrupt("no thread decided".into()))?;
                let t = &decision.thread;
                let recorded = t.state != state || t.owner_app_id != owner;
                if let (Some(cause), false) = (&decision.cause, recorded) {
                    record_in(conn, &page, &user, state, cause, now)?;
                }
                Ok(Some(decision))
            })
            .await;
        if result.is_err() {
            self.shared.turns.forget(page_id, psid);
        }
        result
    }

    /// Puts a failed job back in the queue, due `now`, with its attempts reset, and records it
    /// in its thread's audit trail; refuses any other job.
    pub async fn retry_job(&self, id: i64, now: i64) -> Result<Retry, StoreError> {
        self.engine
            .write(WriteKind::DURABLE, move |conn| retry_in(conn, id, now))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_columns_follow_the_threads_own() {
        assert_eq!(THREAD_COLUMNS.split(',').count(), THREAD_WIDTH);
        assert_eq!(JOB_COLUMNS.split(',').count(), 13);
        assert_eq!(placeholders(3, 2), "$3, $4");
    }
}
