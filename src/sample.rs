//! What one probe run yields: a `Sample` or a `ProbeError` with a bounded reason. A leaf: the
//! probe kinds produce these, and evaluation, state and outputs read them, so it imports nothing
//! of the crate but the secret scrubber. What only one kind knows (a Kafka group's members, a
//! MySQL replica's threads) is not here: it travels beside the sample as that kind's detail
//! (`probe::Detail`, in `probe/<kind>/detail.rs`).

use crate::secret::SecretSet;

/// One successful measurement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Age of the oldest change not yet visible, in seconds, clamped at 0. `None` when the
    /// probe can only count (a queue whose messages carry no timestamp): unknown is never 0,
    /// so no lag is exported for that sample, only its backlog. A probe with a `max_lag` never
    /// returns `None`: it fails instead.
    pub lag_seconds: Option<f64>,
    pub backlog: Option<Backlog>,
    /// The view's position (watermark, offset, LSN…) as text, to detect progress.
    pub position: Option<String>,
    /// A short human detail for the API and `lagbudget probe`.
    pub detail: Option<String>,
    /// The raw result was below zero and was clamped (counted in `negative_lag_total`).
    pub negative_lag_clamped: bool,
    /// The position went backwards since the previous run (counted as a regression).
    pub position_regressed: bool,
    /// Seconds since the view last made progress, when the probe knows better than "the
    /// position text changed" (a consumer group tracks each partition: one stuck partition is a
    /// stall). An age rather than a timestamp, so evaluation places it on its own clocks.
    pub progress_age_seconds: Option<f64>,
    /// Source clock − daemon clock, where a probe compares the two (estimated from the
    /// midpoint of a query's round trip). Exported as `lagbudget_clock_skew_seconds`. A common
    /// field, not a kind's detail: any probe where a remote clock meets ours can measure it
    /// (replica probes do; canaries never compare clocks).
    pub clock_skew_seconds: Option<f64>,
    /// Set when this run read at a replica a set delay after a write at the primary. A common
    /// field, not a kind's detail: the read-your-writes counters apply to any kind that reads
    /// after it writes (replica probes with `ryw_delay` and canaries with `read_your_writes` do).
    pub read_your_writes: Option<ReadYourWrites>,
    /// Set when this run read a view several times through the same route (canaries with
    /// `monotonic`). A common field, like read-your-writes: its counters live in the history.
    pub monotonic_reads: Option<MonotonicReads>,
}

/// One run's monotonic-read check: reads through one route, and how many of them showed an
/// older marker than one already seen through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonotonicReads {
    pub reads: u32,
    pub violations: u32,
}

/// One read-your-writes check: a read at a replica `ryw_delay` after a write at the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadYourWrites {
    /// The read did not see the write.
    pub missed: bool,
}

/// Positions behind, with the unit that names the exported metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub unit: BacklogUnit,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacklogUnit {
    Messages,
    Bytes,
    Events,
    Rows,
}

impl BacklogUnit {
    pub const ALL: [BacklogUnit; 4] = [
        BacklogUnit::Messages,
        BacklogUnit::Bytes,
        BacklogUnit::Events,
        BacklogUnit::Rows,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BacklogUnit::Messages => "messages",
            BacklogUnit::Bytes => "bytes",
            BacklogUnit::Events => "events",
            BacklogUnit::Rows => "rows",
        }
    }
}

/// Why a run failed. A closed set, so that `lagbudget_probe_errors_total{reason}` stays bounded
/// and every series can exist at 0 from config load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The source could not be reached or refused us (network, authentication).
    Connect,
    /// The run did not finish within its timeout (including a statement timeout).
    Timeout,
    /// Every connection of the source was busy until the run's deadline.
    PoolTimeout,
    /// The source rejected a query (syntax, missing table, permission).
    Query,
    /// The source answered something we cannot interpret.
    Decode,
    /// The source answered, but with nothing to measure (no row, NULL watermark).
    NoData,
    /// The server is not what the probe measures: a standby that is not in recovery (promoted),
    /// belongs to another system, is on another timeline, or a DSN that points at a primary.
    Topology,
    /// An HTTP source answered with a status outside 2xx (the status is in the message).
    HttpStatus,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 8] = [
        ErrorReason::Connect,
        ErrorReason::Timeout,
        ErrorReason::PoolTimeout,
        ErrorReason::Query,
        ErrorReason::Decode,
        ErrorReason::NoData,
        ErrorReason::Topology,
        ErrorReason::HttpStatus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::Connect => "connect",
            ErrorReason::Timeout => "timeout",
            ErrorReason::PoolTimeout => "pool_timeout",
            ErrorReason::Query => "query",
            ErrorReason::Decode => "decode",
            ErrorReason::NoData => "no_data",
            ErrorReason::Topology => "topology",
            ErrorReason::HttpStatus => "http_status",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A failed run: a bounded reason for metrics and a short message for humans.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {message}", reason = reason.as_str())]
pub struct ProbeError {
    pub reason: ErrorReason,
    pub message: String,
    /// The last successful sample no longer describes the source, so it must not be shown
    /// while the probe is down (a canary whose writer stopped: its last 0 meant "shows all
    /// that was written", and nothing is being written). Evaluation makes the probe stale at
    /// once, as for `topology`.
    pub voids_last_sample: bool,
}

/// Messages come from remote servers; keep them short enough for a label-free log line and the
/// API, whatever the server sends.
const MAX_MESSAGE_CHARS: usize = 300;
/// What ends a message cut at [`MAX_MESSAGE_CHARS`].
const CUT_MARK: &str = "…";

impl ProbeError {
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        let message: String = message.into();
        let message = if message.chars().count() > MAX_MESSAGE_CHARS {
            let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
            cut.push_str(CUT_MARK);
            cut
        } else {
            message
        };
        Self {
            reason,
            message,
            voids_last_sample: false,
        }
    }

    /// The same error, marking the last success as no longer true (`voids_last_sample`).
    pub fn voiding_last_sample(mut self) -> Self {
        self.voids_last_sample = true;
        self
    }

    /// The same error with every known secret replaced by `***`, including the start of one
    /// that the message's truncation (in `new`) cut.
    pub fn scrubbed(self, secrets: &SecretSet) -> Self {
        Self {
            reason: self.reason,
            message: secrets.scrub_cut(&self.message, CUT_MARK),
            voids_last_sample: self.voids_last_sample,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_cut_by_the_message_bound_is_scrubbed_all_the_same() {
        let mut secrets = SecretSet::default();
        secrets.insert("s3cr3t-password-value");
        // The server echoes the password where the 300-character bound cuts it.
        let message = format!("{}s3cr3t-password-value and more", "x".repeat(290));
        let error = ProbeError::new(ErrorReason::Connect, message).scrubbed(&secrets);
        assert!(!error.message.contains("s3cr3t-pa"), "{}", error.message);
        assert!(error.message.ends_with("x***…"), "{}", error.message);
    }
}
