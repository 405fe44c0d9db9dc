//! Webhook events: stored with their dedupe key before the delivery is acknowledged.

use std::collections::HashSet;

use super::db::{Conn, params};
use super::engine::WriteKind;
use super::{Store, StoreError, queue};
use handover_core::event::IncomingEvent;
use handover_core::jobs::JobPayload;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub stored: usize,
    pub duplicates: usize,
}

impl Store {
    /// Stores every new event and queues its processing; returns once the transaction that
    /// holds them has committed, synced to disk (shared with other deliveries: group commit).
    /// An event whose dedupe key is already stored (a retried delivery, or the same delivery
    /// at another replica) is dropped.
    pub async fn ingest(
        &self,
        events: Vec<IncomingEvent>,
        now: i64,
    ) -> Result<IngestReport, StoreError> {
        if events.is_empty() {
            return Ok(IngestReport::default());
        }
        self.engine
            .write(WriteKind::DELIVERY, move |conn| {
                ingest_in(conn, &events, now)
            })
            .await
    }

    pub async fn event(&self, id: i64) -> Result<Option<IncomingEvent>, StoreError> {
        self.engine
            .read(move |conn| {
                let Some(row) =
                    conn.query_opt("SELECT payload FROM events WHERE id = $1", params![id])?
                else {
                    return Ok(None);
                };
                serde_json::from_str(&row.text(0)?)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))
            })
            .await
    }
}

/// Stores the events of one delivery and their jobs, in order, so the jobs' ids keep each
/// user's order. An event whose key is stored already, or appeared earlier in the delivery,
/// is a duplicate.
fn ingest_in(
    conn: &mut dyn Conn,
    events: &[IncomingEvent],
    now: i64,
) -> Result<IngestReport, StoreError> {
    let mut report = IngestReport::default();
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(events.len());
    let mut jobs = Vec::with_capacity(events.len());
    for event in events {
        let key = (event.account_id.as_str(), event.dedupe_key.as_str());
        if !seen.insert(key) {
            report.duplicates += 1;
            continue;
        }
        let payload =
            serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let inserted = conn.insert_id(
            "INSERT INTO events (page_id, dedupe_key, psid, kind, channel, payload, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (page_id, dedupe_key) DO NOTHING",
            params![
                event.account_id.as_str(),
                event.dedupe_key.as_str(),
                event.user_id.as_str(),
                event.kind.name(),
                event.channel.as_str(),
                payload.as_str(),
                now
            ],
        )?;
        match inserted {
            Some(event_id) => {
                jobs.push((event, JobPayload::ProcessEvent { event_id }));
                report.stored += 1;
            }
            None => report.duplicates += 1,
        }
    }
    queue::insert_events_jobs_in(conn, &jobs, now)?;
    Ok(report)
}
