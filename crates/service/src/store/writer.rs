//! Group commit: the writes that precede an acknowledgement share transactions.
//!
//! Webhook deliveries (both backends) and fulfillment decisions (SQLite) are sent to one
//! writer task. It takes whatever is waiting (up to `MAX_BATCH` units), applies it in one
//! transaction with one disk sync, and only then answers each caller; while it commits, the
//! next batch gathers. An error in the batch rolls it back and each unit is retried in a
//! transaction of its own, so one bad unit fails alone. On PostgreSQL a fulfillment decision
//! takes its thread's row lock and runs in its own transaction beside the others (the server
//! shares disk syncs between concurrent commits itself).

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{IngestReport, Store, StoreError};
use handover_core::event::IncomingEvent;
use handover_core::{Decision, Thread};

/// Units in one transaction at most.
const MAX_BATCH: usize = 256;
/// Units waiting at most; beyond that callers wait to hand theirs over (back-pressure).
const QUEUE: usize = 4096;

pub type Decide = Box<dyn Fn(&Thread) -> Decision + Send + Sync>;

pub(super) enum Unit {
    Ingest {
        events: Vec<IncomingEvent>,
        now: i64,
        reply: oneshot::Sender<Result<IngestReport, StoreError>>,
    },
    Apply {
        page_id: String,
        psid: String,
        now: i64,
        decide: Decide,
        reply: oneshot::Sender<Result<Decision, StoreError>>,
    },
}

/// What a unit did inside the batch's transaction, answered once it commits.
enum Done {
    Ingest(IngestReport),
    Apply(Box<Decision>),
}

impl Unit {
    fn thread(&self) -> Option<(&str, &str)> {
        match self {
            Unit::Apply { page_id, psid, .. } => Some((page_id, psid)),
            Unit::Ingest { .. } => None,
        }
    }

    fn answer(self, result: Result<Done, StoreError>) {
        // A caller that gave up (its request was cancelled) no longer listens: nothing to do.
        match (self, result) {
            (Unit::Ingest { reply, .. }, Ok(Done::Ingest(report))) => {
                let _ = reply.send(Ok(report));
            }
            (Unit::Apply { reply, .. }, Ok(Done::Apply(decision))) => {
                let _ = reply.send(Ok(*decision));
            }
            (Unit::Ingest { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (Unit::Apply { reply, .. }, Err(e)) => {
                let _ = reply.send(Err(e));
            }
            _ => unreachable!("a unit's outcome is of its own kind"),
        }
    }
}

/// Runs `write`, turning a panic (a bug in a decision) into an error for its caller.
pub(super) async fn caught<T>(
    write: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    AssertUnwindSafe(write)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(StoreError::Panicked(what))
        })
}

/// The time the batch's deliveries are stored at: the latest of theirs.
fn now_of(batch: &[Unit]) -> i64 {
    batch
        .iter()
        .filter_map(|unit| match unit {
            Unit::Ingest { now, .. } => Some(*now),
            Unit::Apply { .. } => None,
        })
        .max()
        .unwrap_or_default()
}

/// Starts `writers` writer tasks for `store` (whose own `writer` is `None`): one for SQLite,
/// which has one writer anyway; several for PostgreSQL, whose batches can commit side by side.
/// They stop when every sender, i.e. every clone of the store that uses them, is gone.
pub(super) fn spawn(store: Store, writers: usize) -> mpsc::Sender<Unit> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..writers {
        let (store, rx) = (store.clone(), rx.clone());
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            loop {
                // One writer gathers at a time; it lets go before it writes.
                let got = rx.lock().await.recv_many(&mut batch, MAX_BATCH).await;
                if got == 0 {
                    break;
                }
                store.write_batch(std::mem::take(&mut batch)).await;
            }
        });
    }
    tx
}

impl Store {
    async fn write_batch(&self, mut batch: Vec<Unit>) {
        if batch.len() == 1 {
            return self.write_alone(batch.pop().expect("one unit")).await;
        }
        match self.write_together(&batch).await {
            Ok(done) => {
                for (unit, done) in batch.into_iter().zip(done) {
                    unit.answer(Ok(done));
                }
            }
            Err(e) => {
                warn!(error = %e, units = batch.len(), "a shared write failed; each unit retried alone");
                for unit in batch {
                    self.write_alone(unit).await;
                }
            }
        }
    }

    async fn write_alone(&self, unit: Unit) {
        let result = self
            .write_together(std::slice::from_ref(&unit))
            .await
            .map(|mut done| done.pop().expect("one outcome"));
        unit.answer(result);
    }

    /// One transaction for the batch; nothing is answered here. A panic in a decision rolls
    /// the batch back like an error (the writer must outlive any one unit).
    async fn write_together(&self, batch: &[Unit]) -> Result<Vec<Done>, StoreError> {
        let write = async {
            let mut tx = self.begin_durable().await?;
            // Every delivery of the batch in one statement per table (`ingest_in`), then the
            // decisions one by one.
            let deliveries: Vec<&[IncomingEvent]> = batch
                .iter()
                .filter_map(|unit| match unit {
                    Unit::Ingest { events, .. } => Some(events.as_slice()),
                    Unit::Apply { .. } => None,
                })
                .collect();
            let mut reports = self
                .ingest_in(&mut tx, &deliveries, now_of(batch))
                .await?
                .into_iter();
            let mut done = Vec::with_capacity(batch.len());
            for unit in batch {
                done.push(match unit {
                    Unit::Ingest { .. } => Done::Ingest(reports.next().expect("one report each")),
                    Unit::Apply {
                        page_id,
                        psid,
                        now,
                        decide,
                        ..
                    } => Done::Apply(Box::new(
                        self.apply_in(&mut tx, page_id, psid, *now, decide).await?,
                    )),
                });
            }
            tx.commit().await?;
            Ok(done)
        };
        let result = caught(write).await;
        if result.is_err() {
            for (page_id, psid) in batch.iter().filter_map(Unit::thread) {
                self.turns.forget(page_id, psid);
            }
        }
        result
    }

    /// Hands `unit` to the writer and waits for its answer.
    pub(super) async fn through_writer<T>(
        &self,
        unit: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Unit,
    ) -> Result<T, StoreError> {
        let Some(writer) = &self.writer else {
            return Err(StoreError::Writer);
        };
        let (reply, answer) = oneshot::channel();
        writer
            .send(unit(reply))
            .await
            .map_err(|_| StoreError::Writer)?;
        answer.await.map_err(|_| StoreError::Writer)?
    }
}
