//! Threads and their audit trail; applying a state-machine decision in one transaction.

use super::db::{Conn, Row, params};
use super::engine::WriteKind;
use super::queue::{self, ClaimedJob, Finish, Finished, Then};
use super::{Backend, Shared, Store, StoreError};
use handover_core::jobs::WelcomeKind;
use handover_core::thread::{Ask, Snapshot};
use handover_core::{Decision, ReturnReason, State, Thread};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionRow {
    pub from_state: String,
    pub to_state: String,
    pub cause: String,
    pub at: i64,
}

/// The columns `thread_from_row` reads, in its order.
macro_rules! thread_columns {
    () => {
        "page_id, psid, state, owner_app_id, session, snapshot, last_user_msg_at, \
         last_agent_msg_at, pending_welcome, return_reason, human_since, last_error, \
         state_since, state_at, epoch, notified_epoch, next_check_at, checks, owner_in_doubt, \
         returned_at, asked_in_doubt, waiting_since"
    };
}

/// The rest of a stuck-thread query: no job of the thread under way (but its idle timer).
macro_rules! stuck_no_job {
    () => {
        concat!(
            "AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.thread_key IN ",
            lanes_of!("t"),
            " AND j.status IN ('pending', 'running') \
             AND j.kind NOT IN ('idle_check', 'waiting_check', 'notify')) \
             ORDER BY t.next_check_at LIMIT $2"
        )
    };
}

/// The same, for queries elsewhere in the store (`admin`).
pub(super) const THREAD_COLUMNS: &str = thread_columns!();

const SELECT_THREAD: &str = concat!(
    "SELECT ",
    thread_columns!(),
    " FROM threads WHERE page_id = $1 AND psid = $2"
);
/// PostgreSQL: under the row lock (SQLite's `BEGIN IMMEDIATE` holds the database's).
const SELECT_THREAD_FOR_UPDATE: &str = concat!(
    "SELECT ",
    thread_columns!(),
    " FROM threads WHERE page_id = $1 AND psid = $2 FOR UPDATE"
);

/// PostgreSQL: a new thread, as the schema's defaults make it; one round trip.
const INSERT_THREAD: &str = concat!(
    "INSERT INTO threads (page_id, psid, state, state_since, created_at, updated_at) \
     VALUES ($1, $2, 'BOT', $3, $3, $3) ON CONFLICT (page_id, psid) DO NOTHING RETURNING ",
    thread_columns!()
);

/// A thread as decided: `UPDATE_THREAD` writes a stored one, `INSERT_DECIDED` (SQLite, whose
/// one writer holds the database's lock) a new one that started as `Thread::new`, in one
/// statement instead of an insert, a read and an update. The same parameters for both.
const UPDATE_THREAD: &str = "UPDATE threads SET state = $3, owner_app_id = $4, session = $5, \
     snapshot = $6, last_user_msg_at = $7, last_agent_msg_at = $8, pending_welcome = $9, \
     return_reason = $10, human_since = $11, last_error = $12, state_since = $13, \
     updated_at = $14, state_at = $15, epoch = $16, notified_epoch = $17, \
     next_check_at = $18, checks = $19, owner_in_doubt = $20, returned_at = $21, \
     asked_in_doubt = $22, waiting_since = $23 WHERE page_id = $1 AND psid = $2";
const INSERT_DECIDED: &str = "INSERT INTO threads (page_id, psid, state, owner_app_id, session, \
     snapshot, last_user_msg_at, last_agent_msg_at, pending_welcome, return_reason, \
     human_since, last_error, state_since, updated_at, state_at, epoch, notified_epoch, \
     next_check_at, checks, owner_in_doubt, returned_at, asked_in_doubt, waiting_since, \
     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
     $16, $17, $18, $19, $20, $21, $22, $23, $14)";

pub(super) fn thread_from_row(row: &Row) -> Result<Thread, StoreError> {
    let state = row.text(2)?;
    Ok(Thread {
        account_id: row.text(0)?,
        user_id: row.text(1)?,
        state: State::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("thread state {state:?}")))?,
        owner_app_id: row.opt_text(3)?,
        session: row.opt_text(4)?,
        snapshot: row.opt_text(5)?.map(Snapshot::from_json),
        last_user_msg_at: row.opt_int(6)?,
        last_agent_msg_at: row.opt_int(7)?,
        pending_welcome: row.opt_text(8)?.as_deref().and_then(WelcomeKind::parse),
        return_reason: row.opt_text(9)?.as_deref().and_then(ReturnReason::parse),
        human_since: row.opt_int(10)?,
        last_error: row.opt_text(11)?,
        state_since: row.int(12)?,
        state_at: row.int(13)?,
        epoch: row.int(14)?,
        notified_epoch: row.int(15)?,
        next_check_at: row.opt_int(16)?,
        checks: row.int(17)?,
        owner_in_doubt: row.int(18)? != 0,
        returned_at: row.opt_int(19)?,
        asked_in_doubt: row.opt_text(20)?.as_deref().and_then(Ask::parse),
        waiting_since: row.opt_int(21)?,
    })
}

pub(super) fn thread_in(
    conn: &mut dyn Conn,
    page_id: &str,
    psid: &str,
) -> Result<Option<Thread>, StoreError> {
    conn.query_opt(SELECT_THREAD, params![page_id, psid])?
        .as_ref()
        .map(thread_from_row)
        .transpose()
}

/// Runs `decide` on the thread as stored (created first if new) and stores its decision: the
/// new thread, an audit row when the state or owner changed, cancelled and new jobs. The
/// caller's transaction holds the thread's lock (PostgreSQL's row lock; SQLite's write lock).
pub(super) fn apply_in(
    conn: &mut dyn Conn,
    shared: &Shared,
    page_id: &str,
    psid: &str,
    now: i64,
    decide: impl FnOnce(&Thread) -> Decision,
) -> Result<Decision, StoreError> {
    shared
        .thread_writes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let select = match conn.backend() {
        Backend::Postgres => SELECT_THREAD_FOR_UPDATE,
        Backend::Sqlite => SELECT_THREAD,
    };
    // The common case, a known thread, costs one statement and its update; a new one, two
    // on SQLite, and on PostgreSQL three at most (the insert finds the row taken only when
    // another replica created it meanwhile).
    let (before, stored) = match conn.query_opt(select, params![page_id, psid])? {
        Some(row) => (thread_from_row(&row)?, true),
        None if conn.backend() == Backend::Sqlite => (Thread::new(page_id, psid, now), false),
        None => {
            let row = match conn.query_opt(INSERT_THREAD, params![page_id, psid, now])? {
                Some(row) => row,
                None => conn.query_one(select, params![page_id, psid])?,
            };
            (thread_from_row(&row)?, true)
        }
    };
    let decision = decide(&before);
    let t = &decision.thread;
    if *t != before || !stored {
        conn.execute(
            if stored {
                UPDATE_THREAD
            } else {
                INSERT_DECIDED
            },
            params![
                page_id,
                psid,
                t.state.as_str(),
                t.owner_app_id.as_deref(),
                t.session.as_deref(),
                t.snapshot.as_ref().map(Snapshot::as_json),
                t.last_user_msg_at,
                t.last_agent_msg_at,
                t.pending_welcome.map(|k| k.as_str()),
                t.return_reason.map(|r| r.as_str()),
                t.human_since,
                t.last_error.as_deref(),
                t.state_since,
                now,
                t.state_at,
                t.epoch,
                t.notified_epoch,
                t.next_check_at,
                t.checks,
                t.owner_in_doubt,
                t.returned_at,
                t.asked_in_doubt.map(Ask::as_str),
                t.waiting_since,
            ],
        )?;
    }
    // Under the thread's lock, so this process's facts follow its commits in order.
    shared.turns.written(t);
    let changed = t.state != before.state || t.owner_app_id != before.owner_app_id;
    if let (Some(cause), true) = (&decision.cause, changed) {
        conn.execute(
            "INSERT INTO transitions (page_id, psid, from_state, to_state, cause, at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![
                page_id,
                psid,
                before.state.as_str(),
                t.state.as_str(),
                cause.as_str(),
                now
            ],
        )?;
    }
    queue::cancel_pending_in(conn, &before.key(), &decision.cancel, now)?;
    for job in &decision.jobs {
        queue::insert_in(
            conn,
            Some((page_id, psid)),
            &job.payload,
            now + job.delay_ms,
            now,
            None,
        )?;
    }
    Ok(decision)
}

impl Store {
    pub async fn thread(&self, page_id: &str, psid: &str) -> Result<Option<Thread>, StoreError> {
        let (page_id, psid) = (page_id.to_owned(), psid.to_owned());
        self.engine
            .read(move |conn| thread_in(conn, &page_id, &psid))
            .await
    }

    /// Just the state of a thread, if the service has seen it (a cheap read).
    pub async fn thread_state(
        &self,
        page_id: &str,
        psid: &str,
    ) -> Result<Option<State>, StoreError> {
        let (page_id, psid) = (page_id.to_owned(), psid.to_owned());
        self.engine
            .read(move |conn| {
                let row = conn.query_opt(
                    "SELECT state FROM threads WHERE page_id = $1 AND psid = $2",
                    params![&page_id, &psid],
                )?;
                Ok(match row {
                    Some(row) => State::parse(&row.text(0)?),
                    None => None,
                })
            })
            .await
    }

    pub async fn transitions(
        &self,
        page_id: &str,
        psid: &str,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let (page_id, psid) = (page_id.to_owned(), psid.to_owned());
        self.engine
            .read(move |conn| {
                conn.query(
                    "SELECT from_state, to_state, cause, at FROM transitions \
                     WHERE page_id = $1 AND psid = $2 ORDER BY id",
                    params![&page_id, &psid],
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
                .collect()
            })
            .await
    }

    /// Runs `decide` on the thread's current state and stores its decision: the new thread,
    /// an audit row, cancelled and new jobs, all in one transaction, synced to disk before
    /// this returns (shared with other writes: group commit, so `decide` may run again if the
    /// shared transaction fails).
    pub async fn apply<F>(
        &self,
        page_id: &str,
        psid: &str,
        now: i64,
        decide: F,
    ) -> Result<Decision, StoreError>
    where
        F: Fn(&Thread) -> Decision + Send + 'static,
    {
        let shared = self.shared.clone();
        let (page, user) = (page_id.to_owned(), psid.to_owned());
        let result = self
            .engine
            .write(WriteKind::DURABLE, move |conn| {
                apply_in(conn, &shared, &page, &user, now, &decide)
            })
            .await;
        if result.is_err() {
            self.shared.turns.forget(page_id, psid);
        }
        result
    }

    /// A plain Dialogflow turn of `session` at `now` would change nothing worth a write, as far
    /// as what this process last wrote for the thread shows (`turns`).
    pub fn turn_changes_nothing(&self, page_id: &str, psid: &str, session: &str, now: i64) -> bool {
        self.shared.turns.covers(page_id, psid, session, now)
    }

    /// Finishes a claimed job and applies the decision its outcome leads to, atomically.
    /// Returns `None` (and changes nothing) when this worker no longer holds the job's lease.
    pub async fn finish_and_apply<F>(
        &self,
        job: &ClaimedJob,
        finish: Finish,
        now: i64,
        decide: F,
    ) -> Result<Option<Decision>, StoreError>
    where
        F: Fn(&Thread) -> Decision + Send + 'static,
    {
        Ok(
            match self
                .finish_apply_then(job, finish, Then::Stop, now, decide)
                .await?
            {
                Finished::Held { result, .. } => Some(result),
                Finished::LostLease => None,
            },
        )
    }

    /// `finish_and_apply`, then the claim `then` asks for, in the same transaction.
    pub async fn finish_apply_then<F>(
        &self,
        job: &ClaimedJob,
        finish: Finish,
        then: Then,
        now: i64,
        decide: F,
    ) -> Result<Finished<Decision>, StoreError>
    where
        F: Fn(&Thread) -> Decision + Send + 'static,
    {
        let (Some(page_id), Some(psid)) = (job.page_id.clone(), job.psid.clone()) else {
            return Err(StoreError::Corrupt(format!("job {} has no thread", job.id)));
        };
        let shared = self.shared.clone();
        let job = job.clone();
        let (page, user) = (page_id.clone(), psid.clone());
        let result = self
            .engine
            .write(WriteKind::BACKGROUND, move |conn| {
                if conn.backend() == Backend::Postgres {
                    // The thread's row lock first, as every other writer of this thread takes
                    // it: a job row updated before it could deadlock with an event that
                    // inserts this thread's next check (both wait on the singleton key).
                    conn.execute(
                        "SELECT 1 FROM threads WHERE page_id = $1 AND psid = $2 FOR UPDATE",
                        params![&page, &user],
                    )?;
                }
                // A pass or take handed on here still makes its in-doubt mark in a transaction
                // of its own: that mark must be synced before the call, and this one is not.
                queue::finish_then_in(conn, &job, &finish, then, now, |conn| {
                    apply_in(conn, &shared, &page, &user, now, &decide)
                })
            })
            .await;
        if result.is_err() {
            self.shared.turns.forget(&page_id, &psid);
        }
        result
    }

    /// Threads whose reconciler check is due (`next_check_at`, which backs off per thread)
    /// and that have no job under way: the reconciler asks `thread_owner` about them. Threads
    /// stuck in `PASSING`/`RETURNING` have their own budget, so long inbox conversations in
    /// `HUMAN` never starve them.
    pub async fn stuck_threads(
        &self,
        now: i64,
        limit_each: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        const STUCK: [&str; 2] = [
            concat!(
                "SELECT t.page_id, t.psid FROM threads t ",
                "WHERE t.state IN ('PASSING', 'RETURNING') AND t.next_check_at <= $1 ",
                stuck_no_job!(),
            ),
            concat!(
                "SELECT t.page_id, t.psid FROM threads t ",
                "WHERE t.state = 'HUMAN' AND t.next_check_at <= $1 ",
                stuck_no_job!(),
            ),
        ];
        self.engine
            .read(move |conn| {
                let mut found = Vec::new();
                for sql in STUCK {
                    for r in conn.query(sql, params![now, limit_each])? {
                        found.push((r.text(0)?, r.text(1)?));
                    }
                }
                Ok(found)
            })
            .await
    }

    /// Counts of threads per state, for `/metrics`.
    pub async fn thread_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.engine
            .read(|conn| {
                conn.query(
                    "SELECT state, COUNT(*) FROM threads GROUP BY state",
                    params![],
                )?
                .iter()
                .map(|r| Ok((r.text(0)?, r.int(1)?)))
                .collect()
            })
            .await
    }
}
