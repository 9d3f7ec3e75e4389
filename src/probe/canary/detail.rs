//! What only a `canary` view knows beyond lag: the newest marker it shows, how many written
//! markers it does not show yet, and the distribution of its markers' time to visible; the
//! metric family it exports and the `canary` object the API shows for it.

use serde::Serialize;

use crate::families::{Exposition, FamilyBuilder, Kind, Labels, LabelSet};

pub const CANARY_VISIBILITY: &str = "lagbudget_canary_visibility_seconds";

/// Upper bounds (seconds) of the time-to-visible buckets: from a fast replica to a batch job.
pub const VISIBILITY_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The markers a view showed for the first time, by time to visible, since its runner started.
/// Each observation is an upper bound: the time of the read that first saw the marker minus the
/// time it was written, so it is within one read interval of the truth.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VisibilityHistogram {
    /// Non-cumulative counts per bucket of `VISIBILITY_BUCKETS`, then one for `+Inf`.
    counts: [u64; VISIBILITY_BUCKETS.len() + 1],
    sum: f64,
}

impl VisibilityHistogram {
    pub fn observe(&mut self, seconds: f64) {
        let bucket = VISIBILITY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(VISIBILITY_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(le, cumulative count)` per bucket, `+Inf` last, as the text format writes them.
    pub fn cumulative(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        let bounds = VISIBILITY_BUCKETS
            .iter()
            .map(|le| le.to_string())
            .chain(std::iter::once("+Inf".to_owned()));
        bounds.zip(self.counts.iter().scan(0u64, |total, &n| {
            *total += n;
            Some(*total)
        }))
    }
}

/// A canary view's state at its last successful run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CanaryDetail {
    /// The highest marker seq the view showed (the oldest answer of a monotonic run).
    pub visible_seq: Option<i64>,
    /// Markers written and not yet visible at the view.
    pub unseen_markers: u64,
    pub visibility: VisibilityHistogram,
}

impl CanaryDetail {
    /// The `canary` object of the probe in the API.
    pub fn status(&self) -> CanaryStatus {
        CanaryStatus {
            visible_seq: self.visible_seq,
            unseen_markers: self.unseen_markers,
            markers_seen: self.visibility.count(),
        }
    }
}

/// The `canary` object of a `canary` probe in `/api/v1/budgets`.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryStatus {
    pub visible_seq: Option<i64>,
    pub unseen_markers: u64,
    /// Markers this view has shown for the first time since the daemon started.
    pub markers_seen: u64,
}

/// The histogram only `canary` probes fill, from fresh probes' details.
pub struct Families {
    buckets: FamilyBuilder,
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    pub fn new() -> Self {
        Self {
            buckets: FamilyBuilder::new(
                CANARY_VISIBILITY,
                "Time from writing a canary marker to the first read that found it visible at \
                 a view (an upper bound, within one read interval), since the probe's runner \
                 started.",
                Kind::Histogram,
            ),
        }
    }

    /// Adds the series of one fresh probe, labelled `labels`.
    pub fn push(&mut self, labels: &Labels, detail: &CanaryDetail) {
        let set = LabelSet::new(labels);
        let histogram = &detail.visibility;
        for (le, count) in histogram.cumulative() {
            self.buckets
                .push_suffixed("_bucket", &set, &[("le", le.as_str())], count as f64);
        }
        self.buckets.push_suffixed("_sum", &set, &[], histogram.sum());
        self.buckets
            .push_suffixed("_count", &set, &[], histogram.count() as f64);
    }

    pub fn finish(self, out: &mut Exposition) {
        self.buckets.finish(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let mut histogram = VisibilityHistogram::default();
        for seconds in [0.05, 0.1, 0.7, 4000.0] {
            histogram.observe(seconds);
        }
        let buckets: Vec<(String, u64)> = histogram.cumulative().collect();
        assert_eq!(buckets[0], ("0.1".to_owned(), 2));
        assert_eq!(buckets[3], ("1".to_owned(), 3));
        assert_eq!(buckets.last(), Some(&("+Inf".to_owned(), 4)));
        assert_eq!(histogram.count(), 4);
    }
}
