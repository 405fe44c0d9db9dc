//! Retry schedule: exponential from `JOB_RETRY_BASE_MS`, capped, with jitter.

use rand::Rng;

pub const MAX_DELAY_MS: u64 = 15 * 60 * 1000;

/// The delay before retry number `attempt` (1 = the first retry), without jitter.
pub fn ceiling_ms(base_ms: u64, attempt: u32) -> u64 {
    let exp = attempt.saturating_sub(1).min(30);
    base_ms.saturating_mul(1u64 << exp).min(MAX_DELAY_MS)
}

/// "Equal jitter": half the ceiling plus a random part of the other half, so retries from
/// many threads spread out but never come back sooner than half the schedule.
pub fn delay_ms(base_ms: u64, attempt: u32, rng: &mut impl Rng) -> u64 {
    let ceiling = ceiling_ms(base_ms, attempt);
    let half = ceiling / 2;
    half + rng.random_range(0..=ceiling - half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_bounds() {
        let mut rng = rand::rng();
        assert_eq!(ceiling_ms(1000, 1), 1000);
        assert_eq!(ceiling_ms(1000, 2), 2000);
        assert_eq!(ceiling_ms(1000, 4), 8000);
        assert_eq!(ceiling_ms(1000, 40), MAX_DELAY_MS);
        for attempt in 1..12 {
            for _ in 0..50 {
                let d = delay_ms(1000, attempt, &mut rng);
                let c = ceiling_ms(1000, attempt);
                assert!(
                    d >= c / 2 && d <= c,
                    "attempt {attempt}: {d} not in [{}, {c}]",
                    c / 2
                );
            }
        }
    }
}
