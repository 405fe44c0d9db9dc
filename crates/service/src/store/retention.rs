//! Bounded storage: what the maintenance job deletes, a small batch at a time.
//!
//! Under a steady load every table reaches a plateau: finished jobs and processed events go
//! after a week, the audit trail and dead letters after `AUDIT_RETENTION_DAYS`, and a
//! conversation nobody has spoken in for `THREAD_RETENTION_DAYS` (with nothing queued for it)
//! is forgotten; if the user writes again, it starts afresh. Each statement deletes at most
//! `BATCH` rows and is its own short transaction, so maintenance never holds the writer long.

use super::db::params;
use super::engine::WriteKind;
use super::{Store, StoreError};
use crate::time::DAY_MS;

/// Rows of one kind deleted per statement.
pub const BATCH: i64 = 500;

/// How long each kind of row is kept, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Finished (done, cancelled) jobs and processed events.
    pub finished_ms: i64,
    /// Quiet conversations.
    pub threads_ms: i64,
    /// The audit trail and dead-letter (failed) jobs.
    pub audit_ms: i64,
}

impl Retention {
    pub fn from_days(thread_days: u64, audit_days: u64) -> Self {
        Self {
            finished_ms: 7 * DAY_MS,
            threads_ms: thread_days as i64 * DAY_MS,
            audit_ms: audit_days as i64 * DAY_MS,
        }
    }
}

/// What one pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub jobs: u64,
    pub events: u64,
    pub dead_letters: u64,
    pub transitions: u64,
    pub threads: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.jobs + self.events + self.dead_letters + self.transitions + self.threads
    }

    /// Some kind filled its batch: more may be waiting.
    pub fn more_waiting(&self) -> bool {
        [
            self.jobs,
            self.events,
            self.dead_letters,
            self.transitions,
            self.threads,
        ]
        .iter()
        .any(|&n| n >= BATCH as u64)
    }

    fn add(&mut self, other: Pruned) {
        self.jobs += other.jobs;
        self.events += other.events;
        self.dead_letters += other.dead_letters;
        self.transitions += other.transitions;
        self.threads += other.threads;
    }
}

/// `run_at` is never later than `finished_at`, so the indexed `run_at` bound narrows the
/// scan to candidates.
const FINISHED_JOBS: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
     WHERE status IN ('done', 'cancelled') AND run_at < $1 AND finished_at < $1 LIMIT $2)";
const DEAD_LETTERS: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
     WHERE status = 'failed' AND run_at < $1 AND finished_at < $1 LIMIT $2)";
/// Oldest first (ids grow with time); an event is kept while a job of its user that may still
/// need it is unfinished or failed.
const EVENTS: &str = "DELETE FROM events WHERE id IN (SELECT e.id FROM events e \
     WHERE e.received_at < $1 AND NOT EXISTS (SELECT 1 FROM jobs j \
       WHERE j.thread_key = e.page_id || '/' || e.psid || '#events' \
       AND j.status IN ('pending', 'running', 'failed') AND j.kind = 'process_event') \
     ORDER BY e.id LIMIT $2)";
const TRANSITIONS: &str = "DELETE FROM transitions WHERE id IN (SELECT id FROM transitions \
     WHERE at < $1 ORDER BY id LIMIT $2)";
/// Quiet: no message of the user or an agent, and no change of state, since the cut-off
/// (`state_since` is indexed); settled (with the bot, idle, or with a human); nothing queued.
/// The reconciler's own checks do not count as activity.
const QUIET_THREADS: &str = concat!(
    "DELETE FROM threads WHERE (page_id, psid) IN ( \
     SELECT t.page_id, t.psid FROM threads t \
     WHERE t.state IN ('BOT', 'IDLE', 'HUMAN') AND t.state_since < $1 \
       AND COALESCE(t.last_user_msg_at, 0) < $1 AND COALESCE(t.last_agent_msg_at, 0) < $1 \
       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.thread_key IN ",
    lanes_of!("t"),
    " AND j.status IN ('pending', 'running')) \
     LIMIT $2)"
);

impl Store {
    /// Deletes at most `BATCH` expired rows of each kind, each kind in a transaction of its
    /// own.
    pub async fn prune_batch(&self, keep: Retention, now: i64) -> Result<Pruned, StoreError> {
        let delete = |sql: &'static str, keep_ms: i64| {
            let before = now - keep_ms;
            self.engine.write(WriteKind::BACKGROUND, move |conn| {
                conn.execute(sql, params![before, BATCH])
            })
        };
        Ok(Pruned {
            jobs: delete(FINISHED_JOBS, keep.finished_ms).await?,
            events: delete(EVENTS, keep.finished_ms).await?,
            dead_letters: delete(DEAD_LETTERS, keep.audit_ms).await?,
            transitions: delete(TRANSITIONS, keep.audit_ms).await?,
            threads: delete(QUIET_THREADS, keep.threads_ms).await?,
        })
    }

    /// `prune_batch` until nothing more is expired or `max_batches` passes ran.
    pub async fn prune(
        &self,
        keep: Retention,
        now: i64,
        max_batches: usize,
    ) -> Result<Pruned, StoreError> {
        let mut total = Pruned::default();
        for _ in 0..max_batches {
            let pruned = self.prune_batch(keep, now).await?;
            total.add(pruned);
            if !pruned.more_waiting() {
                break;
            }
        }
        Ok(total)
    }
}
