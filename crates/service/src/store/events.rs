//! Webhook events: stored with their dedupe key before the delivery is acknowledged.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::writer::Unit;
use super::{Store, StoreError, queue};
use handover_core::event::IncomingEvent;
use handover_core::jobs::JobPayload;

/// Events per `INSERT` (7 parameters each: well inside both backends' limits).
const ROWS_PER_STATEMENT: usize = 500;

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

    /// Stores the events of `deliveries` and their jobs: one `INSERT` per table for up to
    /// `ROWS_PER_STATEMENT` events (the batch's statements are the same few, whatever its
    /// size: SQLite runs them in one step each). One report per delivery; an event whose key
    /// is stored already, or appeared earlier in the batch, is a duplicate. Jobs are inserted in
    /// the events' order, so their ids keep each user's order.
    pub(super) async fn ingest_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        deliveries: &[&[IncomingEvent]],
        now: i64,
    ) -> Result<Vec<IngestReport>, StoreError> {
        let mut reports = vec![IngestReport::default(); deliveries.len()];
        let all: Vec<(usize, &IncomingEvent)> = deliveries
            .iter()
            .enumerate()
            .flat_map(|(i, events)| events.iter().map(move |e| (i, e)))
            .collect();
        let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(all.len());
        for chunk in all.chunks(ROWS_PER_STATEMENT) {
            let inserted = insert_events(tx, chunk, now).await?;
            let mut jobs = Vec::with_capacity(inserted.len());
            for (delivery, event) in chunk {
                let key = (event.account_id.as_str(), event.dedupe_key.as_str());
                match inserted.get(&(key.0.to_owned(), key.1.to_owned())) {
                    Some(&event_id) if seen.insert(key) => {
                        jobs.push((*event, JobPayload::ProcessEvent { event_id }));
                        reports[*delivery].stored += 1;
                    }
                    _ => reports[*delivery].duplicates += 1,
                }
            }
            queue::insert_many_in(tx, &jobs, now).await?;
        }
        Ok(reports)
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

/// Inserts the events not stored yet; returns the ids of those inserted, by (page, key).
async fn insert_events(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    events: &[(usize, &IncomingEvent)],
    now: i64,
) -> Result<HashMap<(String, String), i64>, StoreError> {
    let mut sql = String::from(
        "INSERT INTO events (page_id, dedupe_key, psid, kind, channel, payload, received_at) VALUES ",
    );
    for i in 0..events.len() {
        let p = i * 7;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7
        ));
    }
    sql.push_str(" ON CONFLICT (page_id, dedupe_key) DO NOTHING RETURNING id, page_id, dedupe_key");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (_, event) in events {
        let payload =
            serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        query = query
            .bind(event.account_id.clone())
            .bind(event.dedupe_key.clone())
            .bind(event.user_id.clone())
            .bind(event.kind.name())
            .bind(event.channel.as_str())
            .bind(payload)
            .bind(now);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|r| {
            Ok((
                (r.try_get("page_id")?, r.try_get("dedupe_key")?),
                r.try_get("id")?,
            ))
        })
        .collect()
}
