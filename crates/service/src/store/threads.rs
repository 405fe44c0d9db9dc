//! Threads and their audit trail; applying a state-machine decision in one transaction.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::queue::{self, ClaimedJob, Finish};
use super::writer::{self, Unit};
use super::{Backend, Store, StoreError};
use handover_core::jobs::WelcomeKind;
use handover_core::thread::Ask;
use handover_core::{Decision, ReturnReason, State, Thread};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionRow {
    pub from_state: String,
    pub to_state: String,
    pub cause: String,
    pub at: i64,
}

const THREAD_COLUMNS: &str = "page_id, psid, state, owner_app_id, session, snapshot, \
     last_user_msg_at, last_agent_msg_at, pending_welcome, return_reason, human_since, \
     last_error, state_since, state_at, epoch, notified_epoch, next_check_at, checks, owner_in_doubt, returned_at, asked_in_doubt";

fn thread_from_row(row: &AnyRow) -> Result<Thread, StoreError> {
    let state: String = row.try_get("state")?;
    let snapshot: Option<String> = row.try_get("snapshot")?;
    let pending: Option<String> = row.try_get("pending_welcome")?;
    let reason: Option<String> = row.try_get("return_reason")?;
    Ok(Thread {
        account_id: row.try_get("page_id")?,
        user_id: row.try_get("psid")?,
        state: State::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("thread state {state:?}")))?,
        owner_app_id: row.try_get("owner_app_id")?,
        session: row.try_get("session")?,
        snapshot: snapshot
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("thread snapshot: {e}")))?,
        last_user_msg_at: row.try_get("last_user_msg_at")?,
        last_agent_msg_at: row.try_get("last_agent_msg_at")?,
        pending_welcome: pending.as_deref().and_then(WelcomeKind::parse),
        return_reason: reason.as_deref().and_then(ReturnReason::parse),
        human_since: row.try_get("human_since")?,
        last_error: row.try_get("last_error")?,
        state_since: row.try_get("state_since")?,
        state_at: row.try_get("state_at")?,
        epoch: row.try_get("epoch")?,
        notified_epoch: row.try_get("notified_epoch")?,
        next_check_at: row.try_get("next_check_at")?,
        checks: row.try_get("checks")?,
        owner_in_doubt: row.try_get::<i64, _>("owner_in_doubt")? != 0,
        returned_at: row.try_get("returned_at")?,
        asked_in_doubt: row
            .try_get::<Option<String>, _>("asked_in_doubt")?
            .as_deref()
            .and_then(Ask::parse),
    })
}

impl Store {
    pub async fn thread(&self, page_id: &str, psid: &str) -> Result<Option<Thread>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {THREAD_COLUMNS} FROM threads WHERE page_id = $1 AND psid = $2"
        ));
        let row = sqlx::query(sql)
            .bind(page_id)
            .bind(psid)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(thread_from_row).transpose()
    }

    /// Just the state of a thread, if the service has seen it (a cheap read).
    pub async fn thread_state(
        &self,
        page_id: &str,
        psid: &str,
    ) -> Result<Option<State>, StoreError> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM threads WHERE page_id = $1 AND psid = $2")
                .bind(page_id)
                .bind(psid)
                .fetch_optional(&self.pool)
                .await?;
        Ok(state.as_deref().and_then(State::parse))
    }

    pub async fn transitions(
        &self,
        page_id: &str,
        psid: &str,
    ) -> Result<Vec<TransitionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, cause, at FROM transitions \
             WHERE page_id = $1 AND psid = $2 ORDER BY id",
        )
        .bind(page_id)
        .bind(psid)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TransitionRow {
                    from_state: r.try_get("from_state")?,
                    to_state: r.try_get("to_state")?,
                    cause: r.try_get("cause")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Runs `decide` on the thread's current state and stores its decision: the new thread,
    /// an audit row, cancelled and new jobs, all in one transaction, synced to disk before
    /// this returns. On SQLite through the group-commit writer (`writer`), so `decide` may run
    /// again if the transaction it shared failed.
    pub async fn apply<F>(
        &self,
        page_id: &str,
        psid: &str,
        now: i64,
        decide: F,
    ) -> Result<Decision, StoreError>
    where
        F: Fn(&Thread) -> Decision + Send + Sync + 'static,
    {
        if self.backend == Backend::Sqlite {
            let (page_id, psid) = (page_id.to_owned(), psid.to_owned());
            return self
                .through_writer(|reply| Unit::Apply {
                    page_id,
                    psid,
                    now,
                    decide: Box::new(decide),
                    reply,
                })
                .await;
        }
        let result = writer::caught(async {
            let mut tx = self.begin().await?;
            let decision = self.apply_in(&mut tx, page_id, psid, now, &decide).await?;
            tx.commit().await?;
            Ok(decision)
        })
        .await;
        if result.is_err() {
            self.turns.forget(page_id, psid);
        }
        result
    }

    /// A plain Dialogflow turn of `session` at `now` would change nothing worth a write, as far
    /// as what this process last wrote for the thread shows (`turns`).
    pub fn turn_changes_nothing(&self, page_id: &str, psid: &str, session: &str, now: i64) -> bool {
        self.turns.covers(page_id, psid, session, now)
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
        F: FnOnce(&Thread) -> Decision,
    {
        let (Some(page_id), Some(psid)) = (job.page_id.as_deref(), job.psid.as_deref()) else {
            return Err(StoreError::Corrupt(format!("job {} has no thread", job.id)));
        };
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            // The thread's row lock first, as every other writer of this thread takes it: a
            // job row updated before it could deadlock with an event that inserts this
            // thread's next check (both wait on the per-thread singleton key).
            sqlx::query("SELECT 1 FROM threads WHERE page_id = $1 AND psid = $2 FOR UPDATE")
                .bind(page_id)
                .bind(psid)
                .execute(&mut **tx)
                .await?;
        }
        if !queue::finish_in(&mut tx, job, &finish, now).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let result = async {
            let decision = self.apply_in(&mut tx, page_id, psid, now, decide).await?;
            tx.commit().await?;
            Ok(Some(decision))
        }
        .await;
        if result.is_err() {
            self.turns.forget(page_id, psid);
        }
        result
    }

    pub(super) async fn apply_in<F>(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        page_id: &str,
        psid: &str,
        now: i64,
        decide: F,
    ) -> Result<Decision, StoreError>
    where
        F: FnOnce(&Thread) -> Decision,
    {
        self.thread_writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Read the thread under a row lock (PostgreSQL; SQLite's IMMEDIATE transaction already
        // holds the database's write lock), creating it first if it is new: the common case,
        // a known thread, costs one statement.
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql =
            format!("SELECT {THREAD_COLUMNS} FROM threads WHERE page_id = $1 AND psid = $2{lock}");
        let read = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(page_id)
            .bind(psid)
            .fetch_optional(&mut **tx)
            .await?;
        let row = match read {
            Some(row) => row,
            None => {
                sqlx::query(
                    "INSERT INTO threads (page_id, psid, state, state_since, created_at, updated_at) \
                     VALUES ($1, $2, 'BOT', $3, $3, $3) ON CONFLICT (page_id, psid) DO NOTHING",
                )
                .bind(page_id)
                .bind(psid)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(page_id)
                    .bind(psid)
                    .fetch_one(&mut **tx)
                    .await?
            }
        };
        let before = thread_from_row(&row)?;
        let decision = decide(&before);
        let t = &decision.thread;
        if *t != before {
            let snapshot = t.snapshot.as_ref().map(|v| v.to_string());
            sqlx::query(
                "UPDATE threads SET state = $3, owner_app_id = $4, session = $5, snapshot = $6, \
                 last_user_msg_at = $7, last_agent_msg_at = $8, pending_welcome = $9, \
                 return_reason = $10, human_since = $11, last_error = $12, state_since = $13, \
                 updated_at = $14, state_at = $15, epoch = $16, notified_epoch = $17, \
                 next_check_at = $18, checks = $19, owner_in_doubt = $20, returned_at = $21, \
                 asked_in_doubt = $22 \
                 WHERE page_id = $1 AND psid = $2",
            )
            .bind(page_id)
            .bind(psid)
            .bind(t.state.as_str())
            .bind(t.owner_app_id.clone())
            .bind(t.session.clone())
            .bind(snapshot)
            .bind(t.last_user_msg_at)
            .bind(t.last_agent_msg_at)
            .bind(t.pending_welcome.map(|k| k.as_str()))
            .bind(t.return_reason.map(|r| r.as_str()))
            .bind(t.human_since)
            .bind(t.last_error.clone())
            .bind(t.state_since)
            .bind(now)
            .bind(t.state_at)
            .bind(t.epoch)
            .bind(t.notified_epoch)
            .bind(t.next_check_at)
            .bind(t.checks)
            .bind(i64::from(t.owner_in_doubt))
            .bind(t.returned_at)
            .bind(t.asked_in_doubt.map(Ask::as_str))
            .execute(&mut **tx)
            .await?;
        }
        // Under the thread's lock, so this process's facts follow its commits in order.
        self.turns.written(t);
        let changed = t.state != before.state || t.owner_app_id != before.owner_app_id;
        if let (Some(cause), true) = (&decision.cause, changed) {
            {
                sqlx::query(
                    "INSERT INTO transitions (page_id, psid, from_state, to_state, cause, at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(page_id)
                .bind(psid)
                .bind(before.state.as_str())
                .bind(t.state.as_str())
                .bind(cause.as_str())
                .bind(now)
                .execute(&mut **tx)
                .await?;
            }
        }
        let key = before.key();
        for kind in &decision.cancel {
            queue::cancel_pending_in(tx, &key, *kind, now).await?;
        }
        for job in &decision.jobs {
            queue::insert_in(
                tx,
                Some((page_id, psid)),
                &job.payload,
                now + job.delay_ms,
                now,
                None,
            )
            .await?;
        }
        Ok(decision)
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
        let mut found = Vec::new();
        for states in ["('PASSING', 'RETURNING')", "('HUMAN')"] {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT t.page_id, t.psid FROM threads t \
                 WHERE t.state IN {states} AND t.next_check_at <= $1 \
                   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.page_id = t.page_id \
                       AND j.psid = t.psid AND j.status IN ('pending', 'running') \
                       AND j.kind <> 'idle_check') \
                 ORDER BY t.next_check_at LIMIT $2"
            ));
            let rows = sqlx::query(sql)
                .bind(now)
                .bind(limit_each)
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                found.push((r.try_get("page_id")?, r.try_get("psid")?));
            }
        }
        Ok(found)
    }

    /// Counts of threads per state, for `/metrics`.
    pub async fn thread_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM threads GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}
