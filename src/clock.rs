//! The daemon's clocks: the only module that reads the time.
//!
//! Two clocks with two jobs. The **wall clock** (unix seconds) dates things users see
//! (`last_success_timestamp`, `state_since`) and is the clock lag is measured on where a remote
//! timestamp meets ours. The **monotonic clock** measures elapsed time: freshness, `breach_after`,
//! stall limits and the SLI time counters. An NTP step or a VM suspend moves the wall clock but
//! not the monotonic one, so it can neither mark probes stale nor add the jump to the time
//! counters.
//!
//! The monotonic clock is tokio's, so tests that pause tokio's clock control it too; pure code
//! never calls this module and takes a [`Now`] from its caller instead.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One reading of both clocks, taken together: what pure code is given as "now".
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Now {
    /// Seconds since the unix epoch on the daemon's wall clock.
    pub unix: f64,
    /// Seconds on the monotonic clock since the process first read it. Only differences mean
    /// anything.
    pub mono: f64,
}

impl Now {
    /// A reading `seconds` later on both clocks, for tests and for callers that already know
    /// how much time passed.
    pub fn plus(self, seconds: f64) -> Self {
        Self {
            unix: self.unix + seconds,
            mono: self.mono + seconds,
        }
    }

    /// Seconds elapsed since `earlier` on the monotonic clock, never negative.
    pub fn since(self, earlier: Now) -> f64 {
        (self.mono - earlier.mono).max(0.0)
    }
}

/// Reads both clocks.
pub fn now() -> Now {
    Now {
        unix: unix_now(),
        mono: mono_seconds(instant()),
    }
}

/// Seconds since the unix epoch on the wall clock.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The wall clock as a `SystemTime`: the signing time of AWS requests.
pub fn system_now() -> SystemTime {
    SystemTime::now()
}

/// Milliseconds since the unix epoch on the wall clock (Kafka record timestamps are in these).
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The monotonic clock as tokio sees it (paused and advanced in tests): for deadlines and
/// timers on async code.
pub fn instant() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// The monotonic clock for blocking code that runs outside tokio (librdkafka threads).
pub fn std_instant() -> std::time::Instant {
    std::time::Instant::now()
}

/// Time passed since `start` on the monotonic clock.
pub fn elapsed(start: tokio::time::Instant) -> Duration {
    instant().saturating_duration_since(start)
}

/// Time passed since `start` on the monotonic clock, for blocking code.
pub fn std_elapsed(start: std::time::Instant) -> Duration {
    std_instant().saturating_duration_since(start)
}

/// Seconds from the process's first reading to `at`.
fn mono_seconds(at: tokio::time::Instant) -> f64 {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| at);
    at.saturating_duration_since(origin).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_monotonic_reading_follows_a_paused_tokio_clock() {
        let before = now();
        tokio::time::advance(Duration::from_secs(42)).await;
        let after = now();
        assert!((after.since(before) - 42.0).abs() < 1e-6);
    }

    #[test]
    fn since_is_never_negative() {
        let a = Now {
            unix: 100.0,
            mono: 5.0,
        };
        let b = Now {
            unix: 90.0,
            mono: 4.0,
        };
        assert_eq!(b.since(a), 0.0);
        assert_eq!(a.since(b), 1.0);
    }
}
