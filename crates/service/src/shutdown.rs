//! A graceful stop within `SHUTDOWN_GRACE_SECS`.
//!
//! On SIGTERM or SIGINT the server stops accepting connections and the worker stops claiming
//! jobs. Requests and jobs in flight get [`drain_time`] to finish; jobs still running then are
//! stopped and their leases ended at once (`jobs::worker`), so another replica or the next
//! start runs them without waiting for the lease. The rest of the grace is kept for that
//! release and for closing the store, so the process exits 0 before an orchestrator that
//! waits exactly the grace (Cloud Run: 10 s) kills it.

use std::time::Duration;

/// What the drain may not use of the grace: a quarter of it, at most 2 s, for releasing the
/// jobs still running and closing the store.
const RESERVE_MAX: Duration = Duration::from_secs(2);

/// How long requests and jobs in flight may keep running after the signal.
pub fn drain_time(grace: Duration) -> Duration {
    grace - reserve(grace)
}

/// What is left of the grace after the drain.
pub fn reserve(grace: Duration) -> Duration {
    (grace / 4).min(RESERVE_MAX)
}

/// Resolves on the first SIGTERM (orchestrators) or SIGINT (Ctrl-C), with its name.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            (Err(e), _) | (_, Err(e)) => {
                // Without handlers the default action (exit at once) still stops the process.
                tracing::error!(error = %e, "cannot listen for SIGTERM/SIGINT");
                std::future::pending().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_leaves_time_to_release_and_close() {
        let s = Duration::from_secs;
        // The default: 6 s to finish, 2 s to release and close.
        assert_eq!(drain_time(s(8)), s(6));
        assert_eq!(reserve(s(8)), s(2));
        // Long graces keep at most 2 s back; short ones a quarter.
        assert_eq!(drain_time(s(30)), s(28));
        assert_eq!(drain_time(s(2)), Duration::from_millis(1500));
        assert_eq!(drain_time(s(1)), Duration::from_millis(750));
        for secs in 1..=3600 {
            assert_eq!(drain_time(s(secs)) + reserve(s(secs)), s(secs));
            assert!(drain_time(s(secs)) > Duration::ZERO);
        }
    }
}
