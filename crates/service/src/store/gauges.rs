//! Reads for `/metrics` gauges beyond the per-state and per-status counts.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// The pending jobs due at `now` (epoch ms) and the due time of the oldest of them: how
    /// far the worker is behind. A job waiting behind another job of its user counts.
    pub async fn due_jobs(&self, now: i64) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(run_at) AS oldest FROM jobs \
             WHERE status = 'pending' AND run_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }
}
