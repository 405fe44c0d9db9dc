//! The durable job queue.
//!
//! A job is claimed with a lease; a job whose holder died is claimed again once the lease
//! runs out. Jobs of one lane (the ordering key: a thread's events, or its calls) run one at
//! a time, in the order they were due when queued (`ord`; a retry keeps its place, so it
//! still blocks the jobs queued after it). Failed jobs stay in the table with their last
//! error: the dead letters.

use super::db::{Conn, Row, Value, params};
use super::engine::WriteKind;
use super::{Backend, Store, StoreError};
use handover_core::State;
use handover_core::event::IncomingEvent;
use handover_core::jobs::{JobKind, JobPayload, events_lane, lanes};
use handover_core::thread::thread_key;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
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

/// What `mark_in_doubt` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Marked: make the call.
    Marked,
    /// The thread moved on since the job read it: the call is moot.
    Moot,
    /// This worker no longer holds the job.
    LostLease,
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

/// What the transaction that finishes a job does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Nothing more (tests and tools, which claim for themselves).
    Stop,
    /// Claim the first job of the same thread that may run now, for the same worker, with this
    /// lease: the worker runs it at once, without a claim transaction of its own or a wait
    /// for its next round (a return's take, sync and welcome follow each other so).
    ClaimNext { lease_ms: i64 },
}

/// The end of a run as the store took it.
#[derive(Debug)]
pub enum Finished<T> {
    /// This worker no longer held the job: nothing was changed.
    LostLease,
    /// Finished; `next` is the job claimed after it (`Then::ClaimNext`).
    Held { result: T, next: Option<ClaimedJob> },
}

/// Finishes `job` and, if it was held, runs `and` and the claim `then` asks for, in the
/// caller's transaction.
pub(super) fn finish_then_in<T>(
    conn: &mut dyn Conn,
    job: &ClaimedJob,
    finish: &Finish,
    then: Then,
    now: i64,
    and: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
) -> Result<Finished<T>, StoreError> {
    if !finish_in(conn, job, finish, now)? {
        return Ok(Finished::LostLease);
    }
    let result = and(conn)?;
    let next = match then {
        Then::Stop => None,
        Then::ClaimNext { lease_ms } => claim_next_in(conn, job, lease_ms, now)?,
    };
    Ok(Finished::Held { result, next })
}

fn payload_json(payload: &JobPayload) -> Result<String, StoreError> {
    serde_json::to_string(payload).map_err(|e| StoreError::Corrupt(e.to_string()))
}

const INSERT_JOB: &str = "INSERT INTO jobs (thread_key, page_id, psid, kind, payload, status, \
     ord, run_at, attempts, singleton, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, 0, $7, $8, $8) \
     ON CONFLICT (singleton) DO NOTHING";

/// Queues a job; `false` if an unfinished job with its singleton name exists.
pub(super) fn insert_in(
    conn: &mut dyn Conn,
    thread: Option<(&str, &str)>,
    payload: &JobPayload,
    run_at: i64,
    now: i64,
    singleton: Option<&str>,
) -> Result<bool, StoreError> {
    let json = payload_json(payload)?;
    let thread_key = thread.map(|(page, psid)| thread_key(page, psid));
    let lane = thread_key.as_deref().map(|k| payload.lane(k));
    let singleton = match singleton {
        Some(name) => Some(name.to_owned()),
        None => thread_key.as_deref().and_then(|k| payload.singleton(k)),
    };
    let (page, psid) = thread.unzip();
    let inserted = conn.execute(
        INSERT_JOB,
        params![
            lane.as_deref(),
            page,
            psid,
            payload.kind().as_str(),
            json.as_str(),
            run_at,
            singleton.as_deref(),
            now
        ],
    )?;
    Ok(inserted == 1)
}

/// Queues the jobs of webhook events, due `now`, in order (so their ids keep each user's
/// order).
pub(super) fn insert_events_jobs_in(
    conn: &mut dyn Conn,
    jobs: &[(&IncomingEvent, JobPayload)],
    now: i64,
) -> Result<(), StoreError> {
    for (event, payload) in jobs {
        let key = thread_key(&event.account_id, &event.user_id);
        let json = payload_json(payload)?;
        conn.execute(
            INSERT_JOB,
            params![
                payload.lane(&key).as_str(),
                event.account_id.as_str(),
                event.user_id.as_str(),
                payload.kind().as_str(),
                json.as_str(),
                now,
                payload.singleton(&key).as_deref(),
                now
            ],
        )?;
    }
    Ok(())
}

/// Cancels the thread's pending jobs of these kinds, in one statement. A pass in doubt is
/// kept: its call may have landed after all, and only its next run asks Meta whether it did
/// (the state machine takes the thread back if so).
pub(super) fn cancel_pending_in(
    conn: &mut dyn Conn,
    thread_key: &str,
    kinds: &[JobKind],
    now: i64,
) -> Result<u64, StoreError> {
    if kinds.is_empty() {
        return Ok(0);
    }
    // `$4, $5, …`: one text per number of kinds, each prepared once.
    let list = (0..kinds.len())
        .map(|i| format!("${}", i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE jobs SET status = 'cancelled', finished_at = $2, updated_at = $2, \
         singleton = NULL WHERE thread_key = $1 AND status = 'pending' AND kind IN ({list}) \
         AND (in_doubt = 0 OR kind <> $3)"
    );
    let mut values = vec![
        Value::Text(thread_key),
        Value::Int(now),
        Value::Text(JobKind::Pass.as_str()),
    ];
    values.extend(kinds.iter().map(|k| Value::Text(k.as_str())));
    conn.execute(&sql, &values)
}

/// Marks a job finished, if `job.worker_id` still holds it.
fn finish_in(
    conn: &mut dyn Conn,
    job: &ClaimedJob,
    finish: &Finish,
    now: i64,
) -> Result<bool, StoreError> {
    let worker = job.worker_id.as_str();
    let changed = match finish {
        Finish::Done => conn.execute(
            "UPDATE jobs SET status = 'done', finished_at = $3, updated_at = $3, \
             lease_until = NULL, singleton = NULL WHERE id = $1 AND locked_by = $2 \
             AND status = 'running'",
            params![job.id, worker, now],
        )?,
        Finish::Retry {
            run_at,
            error,
            in_doubt,
        } => conn.execute(
            "UPDATE jobs SET status = 'pending', run_at = $4, last_error = $5, updated_at = $3, \
             lease_until = NULL, locked_by = NULL, in_doubt = $6 WHERE id = $1 AND locked_by = $2 \
             AND status = 'running'",
            params![job.id, worker, now, *run_at, error.as_str(), *in_doubt],
        )?,
        Finish::Failed { error } => conn.execute(
            "UPDATE jobs SET status = 'failed', finished_at = $3, updated_at = $3, \
             last_error = $4, lease_until = NULL, singleton = NULL WHERE id = $1 \
             AND locked_by = $2 AND status = 'running'",
            params![job.id, worker, now, error.as_str()],
        )?,
    };
    Ok(changed == 1)
}

/// The columns `job_row` reads, in its order.
macro_rules! job_columns {
    () => {
        "id, kind, payload, status, attempts, last_error, run_at, created_at"
    };
}

fn job_row(row: &Row) -> Result<JobRow, StoreError> {
    let status = row.text(3)?;
    Ok(JobRow {
        id: row.int(0)?,
        kind: row.text(1)?,
        payload: serde_json::from_str(&row.text(2)?).ok(),
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("job status {status:?}")))?,
        attempts: row.int(4)?,
        last_error: row.opt_text(5)?,
        run_at: row.int(6)?,
        created_at: row.int(7)?,
    })
}

/// Due jobs that may run now: pending and due, or running with an expired lease; and no
/// other unfinished job of the same lane comes before it or is running. Written so that
/// both the scan and the per-lane probe stay on unfinished rows (`status IN ...` first):
/// finished jobs, kept for days, are never visited. A running job was due when claimed, so
/// `run_at <= $1` holds for it too.
macro_rules! eligible {
    () => {
        eligible!("j.status IN ('pending', 'running')", "j.run_at")
    };
    // How the query says "unfinished" and "due" (see `CLAIM_NEXT_POSTGRES`).
    ($unfinished:literal, $run_at:literal) => {
        concat!(
            "WHERE ",
            $unfinished,
            " AND ",
            $run_at,
            " <= $1 \
           AND (j.status = 'pending' OR j.lease_until <= $1) \
           AND (j.thread_key IS NULL OR NOT EXISTS ( \
             SELECT 1 FROM jobs o WHERE o.thread_key = j.thread_key \
               AND o.status IN ('pending', 'running') AND o.id <> j.id \
               AND ((o.status = 'running' AND o.lease_until > $1) \
                 OR o.ord < j.ord OR (o.ord = j.ord AND o.id < j.id))))"
        )
    };
}

macro_rules! claim {
    ($from:literal, $select_tail:literal) => {
        concat!(
            "UPDATE jobs SET status = 'running', lease_until = $3, locked_by = $4, \
             attempts = attempts + 1, updated_at = $1 WHERE id IN (SELECT j.id ",
            $from,
            eligible!(),
            $select_tail,
            ") RETURNING id, page_id, psid, payload, attempts, created_at, in_doubt"
        )
    };
}

/// Run before the claim in its transaction on PostgreSQL.
#[doc(hidden)]
pub const CLAIM_PLAN_POSTGRES: &str = "SET LOCAL enable_sort = off";

/// SQLite reads the jobs it claims, then takes each (`CLAIM_ONE_SQLITE`), under the write lock
/// its transaction holds: one `UPDATE … RETURNING` of several rows would get a statement
/// journal (a copy of each page it changes, made and thrown away), which cost more than the
/// single-row updates. Without statistics SQLite would rather search `jobs_due` (two columns
/// match) and sort: hence `INDEXED BY`.
const CLAIM_SQLITE: &str = concat!(
    "SELECT j.id, j.page_id, j.psid, j.payload, j.attempts + 1, j.created_at, j.in_doubt \
     FROM jobs j INDEXED BY jobs_claimable ",
    eligible!(),
    " ORDER BY j.run_at, j.id LIMIT $2"
);
/// The same parameters as the claim's, and the job's id.
const CLAIM_ONE_SQLITE: &str = "UPDATE jobs SET status = 'running', lease_until = $3, \
     locked_by = $4, attempts = attempts + 1, updated_at = $1 WHERE id = $5";
/// Several replicas: skip rows another replica is claiming right now.
const CLAIM_POSTGRES: &str = claim!(
    "FROM jobs j ",
    " ORDER BY j.run_at, j.id LIMIT $2 FOR UPDATE OF j SKIP LOCKED"
);

/// The successor claim (`Then::ClaimNext`): the first job of the finished job's thread that
/// may run now, in any of its lanes (`$5`, `$6`, `$7`), by the thread's index.
const CLAIM_NEXT_SQLITE: &str = concat!(
    "SELECT j.id, j.page_id, j.psid, j.payload, j.attempts + 1, j.created_at, j.in_doubt \
     FROM jobs j INDEXED BY jobs_thread ",
    eligible!(),
    " AND j.thread_key IN ($5, $6, $7) ORDER BY j.run_at, j.id LIMIT $2"
);
/// Written so that PostgreSQL can only take the thread's index. It has no index hints, and
/// its generic plan, made while the queue was short (a new deployment, a burst), walked the
/// whole of `jobs_claimable` instead: 4 ms and more per finished job under the end-to-end
/// load, against 0.2 ms by `jobs_thread`. That partial index is usable only where the query
/// says `status IN ('pending', 'running')`, and `jobs_due` only where `status` or `run_at`
/// is compared as such: here they are not (the three other statuses of `JobStatus` are named
/// instead, and `run_at + 0` holds no index).
const CLAIM_NEXT_POSTGRES: &str = concat!(
    "UPDATE jobs SET status = 'running', lease_until = $3, locked_by = $4, \
     attempts = attempts + 1, updated_at = $1 WHERE id IN (SELECT j.id FROM jobs j ",
    eligible!(
        "j.status NOT IN ('done', 'failed', 'cancelled')",
        "j.run_at + 0"
    ),
    " AND j.thread_key IN ($5, $6, $7) ORDER BY j.run_at, j.id LIMIT $2 \
     FOR UPDATE OF j SKIP LOCKED) RETURNING id, page_id, psid, payload, attempts, created_at, \
     in_doubt"
);

/// The claim's query on `backend` (for tests of its plan): on SQLite the one that finds the
/// jobs, on PostgreSQL the update that finds and takes them.
#[doc(hidden)]
pub fn claim_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => CLAIM_SQLITE,
        Backend::Postgres => CLAIM_POSTGRES,
    }
}

/// The same for the successor claim (`Then::ClaimNext`), whose `$5` to `$7` are the lanes.
#[doc(hidden)]
pub fn claim_next_statement(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => CLAIM_NEXT_SQLITE,
        Backend::Postgres => CLAIM_NEXT_POSTGRES,
    }
}

fn claim_in(
    conn: &mut dyn Conn,
    worker_id: &str,
    limit: i64,
    lease_ms: i64,
    now: i64,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let claim = params![now, limit, now + lease_ms, worker_id];
    let rows = match conn.backend() {
        Backend::Postgres => {
            // Walk `jobs_claimable` in order and stop at the limit. With statistics from when
            // the queue was short (a burst after a quiet spell), the planner would rather
            // gather every due job and sort them: the claim then grows with the queue.
            conn.execute(CLAIM_PLAN_POSTGRES, params![])?;
            conn.query(CLAIM_POSTGRES, claim)?
        }
        Backend::Sqlite => {
            let rows = conn.query(CLAIM_SQLITE, &claim[..2])?;
            take_sqlite(conn, &rows, claim)?;
            rows
        }
    };
    claimed_from(conn, &rows, worker_id, now)
}

/// SQLite: takes each job `rows` found, with the claim's parameters.
fn take_sqlite(conn: &mut dyn Conn, rows: &[Row], claim: &[Value]) -> Result<(), StoreError> {
    let mut one = claim[..4].to_vec();
    one.push(Value::Null); // the job's id, set per row
    for row in rows {
        one[4] = Value::Int(row.int(0)?);
        conn.execute(CLAIM_ONE_SQLITE, &one)?;
    }
    Ok(())
}

/// Claims, in the transaction that finished `job`, the first job of its thread that may run
/// now, for the same worker.
fn claim_next_in(
    conn: &mut dyn Conn,
    job: &ClaimedJob,
    lease_ms: i64,
    now: i64,
) -> Result<Option<ClaimedJob>, StoreError> {
    let (Some(page), Some(psid)) = (job.page_id.as_deref(), job.psid.as_deref()) else {
        return Ok(None);
    };
    let [a, b, c] = lanes(&thread_key(page, psid));
    let worker = job.worker_id.as_str();
    let claim = params![now, 1i64, now + lease_ms, worker, &a, &b, &c];
    let rows = match conn.backend() {
        Backend::Postgres => conn.query(CLAIM_NEXT_POSTGRES, claim)?,
        Backend::Sqlite => {
            let rows = conn.query(CLAIM_NEXT_SQLITE, claim)?;
            take_sqlite(conn, &rows, claim)?;
            rows
        }
    };
    Ok(claimed_from(conn, &rows, worker, now)?.pop())
}

/// The claimed jobs of `rows`, by id; a job whose payload cannot be decoded fails at once.
fn claimed_from(
    conn: &mut dyn Conn,
    rows: &[Row],
    worker_id: &str,
    now: i64,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.int(0)?;
        match serde_json::from_str(&row.text(3)?) {
            Ok(payload) => jobs.push(ClaimedJob {
                id,
                page_id: row.opt_text(1)?,
                psid: row.opt_text(2)?,
                payload,
                attempts: row.int(4)?,
                worker_id: worker_id.to_owned(),
                created_at: row.int(5)?,
                in_doubt: row.int(6)? != 0,
            }),
            Err(e) => {
                // E.g. written by a newer version during a rolling deploy: this job fails
                // alone, in the dead letters with the reason; the others run.
                tracing::error!(job = id, error = %e, "job payload cannot be decoded");
                let error = format!("the job's payload cannot be decoded: {e}");
                conn.execute(
                    "UPDATE jobs SET status = 'failed', finished_at = $2, updated_at = $2, \
                     last_error = $3, lease_until = NULL, singleton = NULL WHERE id = $1",
                    params![id, now, error.as_str()],
                )?;
            }
        }
    }
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

impl Store {
    /// Queues a job outside any state change (tests, the reconciler).
    pub async fn enqueue(
        &self,
        thread: Option<(&str, &str)>,
        payload: &JobPayload,
        run_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let thread = thread.map(|(p, u)| (p.to_owned(), u.to_owned()));
        let payload = payload.clone();
        self.engine
            .write(WriteKind::BACKGROUND, move |conn| {
                let thread = thread.as_ref().map(|(p, u)| (p.as_str(), u.as_str()));
                insert_in(conn, thread, &payload, run_at, now, None).map(drop)
            })
            .await
    }

    /// Queues a job unless an unfinished one with the same singleton name exists.
    pub async fn enqueue_singleton(
        &self,
        name: &str,
        payload: &JobPayload,
        run_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (name, payload) = (name.to_owned(), payload.clone());
        self.engine
            .write(WriteKind::BACKGROUND, move |conn| {
                insert_in(conn, None, &payload, run_at, now, Some(&name))
            })
            .await
    }

    /// Claims up to `limit` jobs for `worker_id` with a lease of `lease_ms`.
    pub async fn claim(
        &self,
        worker_id: &str,
        limit: i64,
        lease_ms: i64,
        now: i64,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let worker_id = worker_id.to_owned();
        self.engine
            .write(WriteKind::BACKGROUND, move |conn| {
                claim_in(conn, &worker_id, limit, lease_ms, now)
            })
            .await
    }

    /// Finishes a job that needs no state change. `false` if the lease was lost.
    pub async fn finish(
        &self,
        job: &ClaimedJob,
        finish: Finish,
        now: i64,
    ) -> Result<bool, StoreError> {
        let finished = self.finish_then(job, finish, Then::Stop, now).await?;
        Ok(matches!(finished, Finished::Held { .. }))
    }

    /// Finishes a job that needs no state change, then claims what `then` asks for, in one
    /// transaction.
    pub async fn finish_then(
        &self,
        job: &ClaimedJob,
        finish: Finish,
        then: Then,
        now: i64,
    ) -> Result<Finished<()>, StoreError> {
        let job = job.clone();
        self.engine
            .write(WriteKind::BACKGROUND, move |conn| {
                finish_then_in(conn, &job, &finish, then, now, |_| Ok(()))
            })
            .await
    }

    /// Records, before a call whose effect is not idempotent, that its outcome is in doubt
    /// until the run finishes: a crash during the call, even of the machine, leaves the mark
    /// for the next run. Marked only while the thread is still as the call expects it (`state`
    /// and `epoch`, read before): a decision that moved it on since (a new handover or return)
    /// makes the call moot, and it is not made.
    pub async fn mark_in_doubt(
        &self,
        job: &ClaimedJob,
        state: State,
        epoch: i64,
    ) -> Result<Mark, StoreError> {
        let (id, worker) = (job.id, job.worker_id.clone());
        let (page, psid) = (job.page_id.clone(), job.psid.clone());
        self.engine
            .write(WriteKind::DURABLE, move |conn| {
                let marked = conn.execute(
                    "UPDATE jobs SET in_doubt = 1 WHERE id = $1 AND locked_by = $2 \
                     AND status = 'running' AND EXISTS (SELECT 1 FROM threads t \
                       WHERE t.page_id = $3 AND t.psid = $4 AND t.state = $5 AND t.epoch = $6)",
                    params![
                        id,
                        worker.as_str(),
                        page.as_deref(),
                        psid.as_deref(),
                        state.as_str(),
                        epoch
                    ],
                )?;
                if marked == 1 {
                    return Ok(Mark::Marked);
                }
                let held = conn.query_opt(
                    "SELECT 1 FROM jobs WHERE id = $1 AND locked_by = $2 AND status = 'running'",
                    params![id, worker.as_str()],
                )?;
                Ok(if held.is_some() {
                    Mark::Moot
                } else {
                    Mark::LostLease
                })
            })
            .await
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
        self.engine
            .read(move |conn| {
                let waiting = conn.query_opt(
                    "SELECT id FROM jobs WHERE thread_key = $1 \
                     AND status IN ('pending', 'running') AND run_at <= $2 LIMIT 1",
                    params![lane.as_str(), now],
                )?;
                Ok(waiting.is_some())
            })
            .await
    }

    /// Lengthens the lease of a job that is still running.
    pub async fn extend_lease(&self, job: &ClaimedJob, until: i64) -> Result<bool, StoreError> {
        let (id, worker) = (job.id, job.worker_id.clone());
        self.engine
            .write(WriteKind::BACKGROUND, move |conn| {
                let changed = conn.execute(
                    "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND locked_by = $2 \
                     AND status = 'running'",
                    params![id, worker.as_str(), until],
                )?;
                Ok(changed == 1)
            })
            .await
    }

    /// With the embedded store only one process runs: whatever was running when it died is
    /// claimable at once instead of after its lease.
    pub async fn release_all_leases(&self, now: i64) -> Result<u64, StoreError> {
        self.engine
            .write(WriteKind::BACKGROUND, move |conn| {
                conn.execute(
                    "UPDATE jobs SET lease_until = $1 WHERE status = 'running' \
                     AND lease_until > $1",
                    params![now],
                )
            })
            .await
    }

    pub async fn jobs_for(&self, page_id: &str, psid: &str) -> Result<Vec<JobRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE thread_key IN ($1, $2, $3) ORDER BY id"
        );
        let [a, b, c] = lanes(&thread_key(page_id, psid));
        self.engine
            .read(move |conn| {
                conn.query(SQL, params![&a, &b, &c])?
                    .iter()
                    .map(job_row)
                    .collect()
            })
            .await
    }

    pub async fn failed_jobs(&self, limit: i64) -> Result<Vec<JobRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE status = 'failed' ORDER BY id DESC LIMIT $1"
        );
        self.engine
            .read(move |conn| {
                conn.query(SQL, params![limit])?
                    .iter()
                    .map(job_row)
                    .collect()
            })
            .await
    }

    /// Counts of jobs per (kind, status), for `/metrics`.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.engine
            .read(|conn| {
                conn.query(
                    "SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status \
                     ORDER BY kind, status",
                    params![],
                )?
                .iter()
                .map(|r| Ok((r.text(0)?, r.text(1)?, r.int(2)?)))
                .collect()
            })
            .await
    }

    /// Earliest time a pending job is due, to sleep until then.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.engine
            .read(|conn| {
                conn.scalar(
                    "SELECT MIN(run_at) FROM jobs WHERE status = 'pending'",
                    params![],
                )
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    /// `CLAIM_NEXT_POSTGRES` says "unfinished" by naming the other statuses: it must name
    /// every one, and only those.
    #[test]
    fn the_successor_claim_names_every_finished_status() {
        let finished: Vec<_> = JobStatus::iter()
            .filter(|s| !matches!(s, JobStatus::Pending | JobStatus::Running))
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let list = format!("j.status NOT IN ({})", finished.join(", "));
        assert!(CLAIM_NEXT_POSTGRES.contains(&list), "{list}");
    }
}
