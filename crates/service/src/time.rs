//! Wall-clock time as epoch milliseconds, the unit stored everywhere.

pub use handover_core::time::{DAY_MS, HOUR_MS};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
