//! Reads for `/metrics` gauges beyond the per-state and per-status counts.

use super::db::params;
use super::{Store, StoreError};

impl Store {
    /// The pending jobs due at `now` (epoch ms) and the due time of the oldest of them: how
    /// far the worker is behind. A job waiting behind another job of its user counts.
    pub async fn due_jobs(&self, now: i64) -> Result<(i64, Option<i64>), StoreError> {
        self.engine
            .read(move |conn| {
                let row = conn.query_one(
                    "SELECT COUNT(*), MIN(run_at) FROM jobs \
                     WHERE status = 'pending' AND run_at <= $1",
                    params![now],
                )?;
                Ok((row.int(0)?, row.opt_int(1)?))
            })
            .await
    }
}
