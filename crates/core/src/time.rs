//! Times are epoch milliseconds everywhere; the caller reads the clock and passes `now`.

pub const HOUR_MS: i64 = 60 * 60 * 1000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
