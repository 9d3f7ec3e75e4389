//! What only a PostgreSQL streaming standby probe knows: how long its WAL receiver has been
//! silent, liveness that "caught up" alone cannot show; and the metric family it exports. Shown,
//! like lag, only while the probe is fresh; the API shows none of it.

use crate::families::{Exposition, FamilyBuilder, Labels, gauge};

pub const RECEIVER_LAST_MESSAGE_AGE: &str = "lagbudget_replica_receiver_last_message_age_seconds";

/// A standby's WAL receiver, as of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StandbyDetail {
    /// Seconds since the standby's WAL receiver last heard from its primary, on the standby's
    /// own clock; `None` when no receiver runs or it reports no time.
    pub receiver_last_message_age_seconds: Option<f64>,
}

/// The family only `postgres_replica` probes fill, from fresh probes' details.
pub struct Families {
    receiver_age: FamilyBuilder,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    pub fn new() -> Self {
        Self {
            receiver_age: gauge(
                RECEIVER_LAST_MESSAGE_AGE,
                "Seconds since the standby's WAL receiver last heard from its primary (standby clock); \
                 absent while stale.",
            ),
        }
    }

    /// Adds the series of one fresh probe, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &StandbyDetail) {
        if let Some(age) = detail.receiver_last_message_age_seconds {
            self.receiver_age.push(labels, age);
        }
    }

    pub fn finish(self, out: &mut Exposition) {
        self.receiver_age.finish(out);
    }
}
