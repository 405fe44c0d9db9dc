//! Webhook events: stored with their dedupe key before the delivery is acknowledged.

use sqlx::Row;

use super::writer::Unit;
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
    /// holds them has committed (shared with other deliveries: `writer`). An event whose
    /// dedupe key is already stored (a retried delivery, or the same delivery at another
    /// replica) is dropped.
    pub async fn ingest(
        &self,
        events: Vec<IncomingEvent>,
        now: i64,
    ) -> Result<IngestReport, StoreError> {
        if events.is_empty() {
            return Ok(IngestReport::default());
        }
        self.through_writer(|reply| Unit::Ingest { events, now, reply })
            .await
    }

    pub(super) async fn ingest_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        events: &[IncomingEvent],
        now: i64,
    ) -> Result<IngestReport, StoreError> {
        let mut report = IngestReport::default();
        for event in events {
            let payload =
                serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO events (page_id, dedupe_key, psid, kind, channel, payload, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (page_id, dedupe_key) DO NOTHING RETURNING id",
            )
            .bind(event.account_id.as_str())
            .bind(event.dedupe_key.as_str())
            .bind(event.user_id.as_str())
            .bind(event.kind.name())
            .bind(event.channel.as_str())
            .bind(payload)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
            match id {
                Some(event_id) => {
                    queue::insert_in(
                        tx,
                        Some((&event.account_id, &event.user_id)),
                        &JobPayload::ProcessEvent { event_id },
                        now,
                        now,
                        None,
                    )
                    .await?;
                    report.stored += 1;
                }
                None => report.duplicates += 1,
            }
        }
        Ok(report)
    }

    pub async fn event(&self, id: i64) -> Result<Option<IncomingEvent>, StoreError> {
        let row = sqlx::query("SELECT payload FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let payload: String = row.try_get("payload")?;
        serde_json::from_str(&payload)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("event {id}: {e}")))
    }
}
