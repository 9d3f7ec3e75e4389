//! What a reconciliation knows between runs, and how each pass updates it: pure, no I/O.
//!
//! - **Followed records**: source records not yet visible in the derived view, each with its
//!   version and change time on the source's clock. The recent pass adds and clears them;
//!   records that leave the window are still looked up on every run until they become visible
//!   or a sweep finds them gone from the source, so a record that never arrives keeps its lag
//!   growing instead of dropping out of sight.
//! - **Extra records**: derived keys a sweep found without a source record, with the time
//!   lagbudget first saw each (a lower bound of their age: a delete leaves no timestamp).
//! - **The sweep**: its cursor, the chunks it covered and the mismatches it could not follow
//!   (beyond [`FOLLOW_LIMIT`]) per chunk.
//!
//! Ages of source records are taken on the source's clock (its `now` read in the same
//! transaction as the records); ages of extra records on the daemon's.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::config::{Collation, Compare, KeyType, VersionType};
use crate::probe::{ErrorReason, ProbeError};

/// Records followed, and extra records remembered, at most: a bound on memory when a view is
/// empty or a source is wiped. Mismatches beyond it are counted per sweep chunk instead.
pub const FOLLOW_LIMIT: usize = 100_000;

/// A value as a driver read it, before the config says what it means.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Null,
    Int(i64),
    Text(String),
    /// Microseconds since 1970-01-01 on the source's clock (naive times as if UTC).
    Time(i64),
}

/// A record's key, compared as the config says. Text keys keep how the source wrote them, for
/// the lookups, beside the form they are compared in.
#[derive(Debug, Clone)]
pub enum Key {
    Int(i64),
    Text {
        compared: String,
        written: String,
    },
}

impl Key {
    /// The key as the sweep's cursor and the API show it: the compared form.
    pub fn compared(&self) -> String {
        match self {
            Key::Int(n) => n.to_string(),
            Key::Text { compared, .. } => compared.clone(),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Text { compared: a, .. }, Key::Text { compared: b, .. }) => {
                a.as_bytes().cmp(b.as_bytes())
            }
            (Key::Int(_), Key::Text { .. }) => Ordering::Less,
            (Key::Text { .. }, Key::Int(_)) => Ordering::Greater,
        }
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Key::Int(n) => n.hash(state),
            Key::Text { compared, .. } => compared.hash(state),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(n) => write!(f, "{n}"),
            Key::Text { compared, .. } => f.write_str(compared),
        }
    }
}

/// A record's version, compared as the config says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Int(i64),
    /// Microseconds, truncated to the configured precision.
    Time(i64),
    Text(String),
}

/// A source record: its key, version and change time (microseconds on the source's clock).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub key: Key,
    pub version: Version,
    pub changed_at: i64,
}

/// A derived record: its key and version (`None`: NULL, never visible).
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedRecord {
    pub key: Key,
    pub version: Option<Version>,
}

/// Reads raw columns as keys and versions, the way the config compares them.
#[derive(Debug, Clone, Copy)]
pub struct Normalise {
    pub compare: Compare,
}

impl Normalise {
    pub fn key(&self, raw: Raw, side: &str) -> Result<Key, ProbeError> {
        let wrong = |what: String| {
            ProbeError::new(
                ErrorReason::Decode,
                format!("the {side} query returned {what} as a key"),
            )
        };
        match (self.compare.keys, raw) {
            (_, Raw::Null) => Err(wrong("NULL".into())),
            (KeyType::Integer, Raw::Int(n)) => Ok(Key::Int(n)),
            (KeyType::Integer, Raw::Text(text)) => text.trim().parse().map(Key::Int).map_err(|_| {
                wrong("text that is not an integer (set `key_type: text` for text keys)".into())
            }),
            (KeyType::Text, Raw::Int(n)) => Ok(self.text_key(n.to_string())),
            (KeyType::Text, Raw::Text(text)) => Ok(self.text_key(text)),
            (_, Raw::Time(_)) => Err(wrong("a timestamp".into())),
        }
    }

    fn text_key(&self, written: String) -> Key {
        let compared = match self.compare.collation {
            Collation::Exact => written.clone(),
            Collation::CaseFolded => written.to_lowercase(),
        };
        Key::Text { compared, written }
    }

    /// A version; NULL is `None`.
    pub fn version(&self, raw: Raw, side: &str) -> Result<Option<Version>, ProbeError> {
        let wrong = |what: &str| {
            ProbeError::new(
                ErrorReason::Decode,
                format!(
                    "the {side} query returned {what} as a version, and `version_type: {}` \
                     was configured",
                    version_key(self.compare.versions)
                ),
            )
        };
        let version = match (self.compare.versions, raw) {
            (_, Raw::Null) => return Ok(None),
            (VersionType::Integer, Raw::Int(n)) => Version::Int(n),
            (VersionType::Integer, Raw::Text(text)) => Version::Int(
                text.trim()
                    .parse()
                    .map_err(|_| wrong("text that is not an integer"))?,
            ),
            (VersionType::Integer, Raw::Time(_)) => return Err(wrong("a timestamp")),
            (VersionType::Timestamp, Raw::Time(micros)) => Version::Time(self.truncate(micros)),
            (VersionType::Timestamp, Raw::Text(text)) => {
                let at = crate::probe::oldest_pending::parse_timestamp(&text)
                    .map_err(|_| wrong("text that is not a time"))?;
                Version::Time(self.truncate(micros_since_epoch(at)))
            }
            (VersionType::Timestamp, Raw::Int(_)) => return Err(wrong("an integer")),
            (VersionType::Text, Raw::Text(text)) => Version::Text(text),
            (VersionType::Text, Raw::Int(n)) => Version::Text(n.to_string()),
            (VersionType::Text, Raw::Time(_)) => return Err(wrong("a timestamp")),
        };
        Ok(Some(version))
    }

    fn truncate(&self, micros: i64) -> i64 {
        let step = i64::try_from(self.compare.precision.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        micros.div_euclid(step) * step
    }

    /// A source row of (key, version, changed_at).
    pub fn source(&self, [key, version, changed_at]: [Raw; 3]) -> Result<SourceRecord, ProbeError> {
        let version = self.version(version, "source")?.ok_or_else(|| {
            ProbeError::new(ErrorReason::Decode, "the source query returned a NULL version")
        })?;
        let changed_at = match changed_at {
            Raw::Time(micros) => micros,
            Raw::Null => {
                return Err(ProbeError::new(
                    ErrorReason::Decode,
                    "the source query returned a NULL changed_at",
                ));
            }
            _ => {
                return Err(ProbeError::new(
                    ErrorReason::Decode,
                    "the source query's third column (changed_at) must be a timestamp",
                ));
            }
        };
        Ok(SourceRecord {
            key: self.key(key, "source")?,
            version,
            changed_at,
        })
    }

    /// A derived row of (key, version).
    pub fn derived(&self, [key, version]: [Raw; 2]) -> Result<DerivedRecord, ProbeError> {
        Ok(DerivedRecord {
            key: self.key(key, "derived")?,
            version: self.version(version, "derived")?,
        })
    }
}

fn version_key(versions: VersionType) -> &'static str {
    use crate::config::value::Choice;
    versions.key()
}

/// Microseconds since the Unix epoch (negative before it).
pub fn micros_since_epoch(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// Whether a derived version shows the source's: integers and times at or above it, text
/// equal to it. NULL shows nothing.
pub fn visible(derived: Option<&Version>, source: &Version) -> bool {
    match (derived, source) {
        (Some(Version::Int(d)), Version::Int(s)) => d >= s,
        (Some(Version::Time(d)), Version::Time(s)) => d >= s,
        (Some(Version::Text(d)), Version::Text(s)) => d == s,
        _ => false,
    }
}

/// Checks that a page of keys is strictly ascending and after `cursor`, in the order lagbudget
/// compares keys: keyset pagination skips or repeats records otherwise.
pub fn check_ascending<'a>(
    keys: impl Iterator<Item = &'a Key>,
    cursor: Option<&Key>,
    query: &str,
) -> Result<(), ProbeError> {
    let mut previous = cursor;
    for key in keys {
        if let Some(previous) = previous {
            if key <= previous {
                return Err(ProbeError::new(
                    ErrorReason::Decode,
                    format!(
                        "the {query} returned keys out of order: it must return keys above $1 \
                         in ascending order, compared as lagbudget compares them (integers; \
                         text byte for byte, after lower-casing with case_folded), such as \
                         ORDER BY id with a binary collation"
                    ),
                ));
            }
        }
        previous = Some(key);
    }
    Ok(())
}

/// A mismatch kind, as the `kind` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MismatchKind {
    Missing,
    Stale,
    Extra,
}

impl MismatchKind {
    pub const ALL: [MismatchKind; 3] = [
        MismatchKind::Missing,
        MismatchKind::Stale,
        MismatchKind::Extra,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MismatchKind::Missing => "missing",
            MismatchKind::Stale => "stale",
            MismatchKind::Extra => "extra",
        }
    }
}

/// A source record not yet visible.
#[derive(Debug, Clone)]
struct Followed {
    version: Version,
    changed_at: i64,
    /// The derived side has the record, at an older version.
    stale: bool,
}

/// Mismatches a sweep chunk found but could not follow, with the oldest of their times.
#[derive(Debug, Clone, Default)]
struct Overflow {
    missing: u64,
    stale: u64,
    extra: u64,
    /// The oldest change time of the missing and stale ones, on the source's clock.
    oldest_change: Option<i64>,
    /// The oldest first sighting of the extra ones, on the daemon's clock.
    oldest_sighting: Option<SystemTime>,
}

/// One chunk of a sweep: the keys up to `end` (`None`: to the last key) after the previous
/// chunk's end, and what it could not follow.
#[derive(Debug, Clone)]
struct Chunk {
    end: Option<Key>,
    overflow: Overflow,
}

/// The sweep's progress.
#[derive(Debug, Default)]
struct SweepState {
    /// Running: the last key covered so far, `None` before the first chunk.
    in_progress: Option<Option<Key>>,
    started: Option<Instant>,
    /// Chunks of the running sweep, and of the last completed one.
    current: Vec<Chunk>,
    previous: Vec<Chunk>,
    rows: u64,
    last_rows: Option<u64>,
    completed_at: Option<SystemTime>,
    completed: u64,
}

/// What the derived side showed for one sweep chunk.
pub enum DerivedPage {
    /// The derived records of the chunk's source keys (looked up by key).
    Lookup(Vec<DerivedRecord>),
    /// A page of the derived side's own sweep: its records after the cursor in key order, and
    /// whether the page was full (more may follow).
    Swept {
        records: Vec<DerivedRecord>,
        full: bool,
    },
}

/// Everything a run reports from the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Age of the oldest record not visible (source records on the source's clock, extra
    /// records since first seen), 0 when there is none.
    pub lag_seconds: f64,
    pub negative_lag_clamped: bool,
    /// Source records not yet visible that lagbudget knows of (in flight and mismatched).
    pub not_visible: u64,
    pub missing: u64,
    pub stale: u64,
    /// `None` when nothing looks for extra records (no `derived_query`).
    pub extra: Option<u64>,
    /// Keys of current mismatches, oldest first, up to the configured sample.
    pub sample: Vec<(MismatchKind, String)>,
    pub sweep: Option<SweepSummary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepSummary {
    pub running: bool,
    /// Source rows the running sweep has covered.
    pub rows: u64,
    /// Source rows of the last completed sweep.
    pub last_rows: Option<u64>,
    pub last_completed: Option<SystemTime>,
    pub completed: u64,
}

/// The reconciliation's memory between runs.
#[derive(Debug)]
pub struct Ledger {
    in_flight_micros: i64,
    in_flight: Duration,
    finds_extra: bool,
    followed: BTreeMap<Key, Followed>,
    extras: BTreeMap<Key, SystemTime>,
    sweep: SweepState,
    has_sweep: bool,
}

impl Ledger {
    /// `in_flight`: records younger than this are not mismatches; `finds_extra`: a derived
    /// sweep looks for extra records; `has_sweep`: a sweep is configured.
    pub fn new(in_flight: Duration, has_sweep: bool, finds_extra: bool) -> Self {
        Self {
            in_flight_micros: i64::try_from(in_flight.as_micros()).unwrap_or(i64::MAX),
            in_flight,
            finds_extra,
            followed: BTreeMap::new(),
            extras: BTreeMap::new(),
            sweep: SweepState::default(),
            has_sweep,
        }
    }

    /// The keys the derived side is asked for after the recent pass read `records`: theirs and
    /// those of followed records outside it, each once.
    pub fn lookup_keys(&self, records: &[SourceRecord]) -> Vec<Key> {
        let mut keys: Vec<Key> = Vec::with_capacity(records.len() + self.followed.len());
        let mut seen: HashSet<&Key> = HashSet::with_capacity(records.len());
        for record in records {
            if seen.insert(&record.key) {
                keys.push(record.key.clone());
            }
        }
        for key in self.followed.keys() {
            if !seen.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// The recent pass: `records` are the source records changed within the window, `derived`
    /// the derived records of every key of [`Ledger::lookup_keys`], read after them.
    pub fn apply_recent(&mut self, records: &[SourceRecord], derived: &[DerivedRecord]) {
        let derived: HashMap<&Key, Option<&Version>> = derived
            .iter()
            .map(|d| (&d.key, d.version.as_ref()))
            .collect();
        // A query over a change log may return a key several times: the record is visible when
        // every version is, and its oldest change not visible is what counts.
        let mut pass: HashMap<&Key, Option<Followed>> = HashMap::with_capacity(records.len());
        for record in records {
            let shown = derived.get(&record.key).copied();
            let entry = pass.entry(&record.key).or_insert(None);
            if visible(shown.flatten(), &record.version) {
                continue;
            }
            let stale = shown.is_some();
            match entry {
                Some(followed) => {
                    followed.changed_at = followed.changed_at.min(record.changed_at);
                    if newer(&record.version, &followed.version) {
                        followed.version = record.version.clone();
                    }
                    followed.stale = stale;
                }
                None => {
                    *entry = Some(Followed {
                        version: record.version.clone(),
                        changed_at: record.changed_at,
                        stale,
                    });
                }
            }
        }
        // Followed records the window no longer holds: checked against what the derived side
        // shows now.
        self.followed.retain(|key, followed| {
            if pass.contains_key(key) {
                return true;
            }
            let shown = derived.get(key).copied();
            followed.stale = shown.is_some();
            !visible(shown.flatten(), &followed.version)
        });
        for (key, outcome) in pass {
            match outcome {
                Some(followed) => {
                    self.followed.insert(key.clone(), followed);
                }
                None => {
                    self.followed.remove(key);
                }
            }
        }
        // A derived record whose source record the pass just read is not extra: the sweep
        // reads its source page before its derived page, so a record written and copied
        // between the two shows on the derived side only until the next sweep.
        for record in records {
            self.extras.remove(&record.key);
        }
        self.enforce_follow_limit();
    }

    /// Drops the youngest followed records beyond the limit; sweeps count them again.
    fn enforce_follow_limit(&mut self) {
        if self.followed.len() <= FOLLOW_LIMIT {
            return;
        }
        let mut by_age: Vec<(i64, Key)> = self
            .followed
            .iter()
            .map(|(key, f)| (f.changed_at, key.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(changed_at, _)| *changed_at);
        for (_, key) in by_age.into_iter().skip(FOLLOW_LIMIT) {
            self.followed.remove(&key);
        }
    }

    /// Whether a sweep is running, or is due `every` after the last one started; starts one
    /// when due.
    pub fn sweep_due(&mut self, now: Instant, every: Duration) -> bool {
        if self.sweep.in_progress.is_some() {
            return true;
        }
        let due = self
            .sweep
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= every);
        if due {
            self.sweep.in_progress = Some(None);
            self.sweep.started = Some(now);
            self.sweep.current.clear();
            self.sweep.rows = 0;
        }
        due
    }

    /// The last key the running sweep covered (`None`: start from the first key).
    pub fn sweep_cursor(&self) -> Option<&Key> {
        self.sweep.in_progress.as_ref().and_then(|c| c.as_ref())
    }

    /// One chunk of the running sweep: `source` the source page after the cursor (its records
    /// in key order, `source_full` when the page was full), `derived` what the derived side
    /// showed for it, `now_source` the source's clock when the page was read (microseconds),
    /// `now` the daemon's. Returns whether the sweep completed.
    pub fn apply_sweep_chunk(
        &mut self,
        source: &[SourceRecord],
        source_full: bool,
        derived: DerivedPage,
        now_source: i64,
        now: SystemTime,
    ) -> Result<bool, ProbeError> {
        let Some(cursor) = self.sweep.in_progress.clone() else {
            return Ok(true);
        };
        check_ascending(source.iter().map(|r| &r.key), cursor.as_ref(), "sweep query")?;
        // The chunk ends where the first side to stop early says: beyond it, one side has not
        // been read yet.
        let mut end: Option<Key> = if source_full {
            source.last().map(|r| r.key.clone())
        } else {
            None
        };
        let (derived_records, swept) = match derived {
            DerivedPage::Lookup(records) => (records, false),
            DerivedPage::Swept { records, full } => {
                check_ascending(
                    records.iter().map(|r| &r.key),
                    cursor.as_ref(),
                    "sweep derived_query",
                )?;
                if full {
                    let last = records.last().map(|r| r.key.clone());
                    end = match (end, last) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (None, b) => b,
                        (a, None) => a,
                    };
                }
                (records, true)
            }
        };
        let covers = |key: &Key| {
            cursor.as_ref().is_none_or(|c| key > c) && end.as_ref().is_none_or(|e| key <= e)
        };
        let shown: HashMap<&Key, Option<&Version>> = derived_records
            .iter()
            .map(|d| (&d.key, d.version.as_ref()))
            .collect();
        let mut overflow = Overflow::default();
        let mut in_source: HashSet<&Key> = HashSet::new();
        let mut rows = 0u64;
        for record in source.iter().filter(|r| covers(&r.key)) {
            rows += 1;
            in_source.insert(&record.key);
            let derived = shown.get(&record.key).copied();
            if visible(derived.flatten(), &record.version) {
                self.followed.remove(&record.key);
                continue;
            }
            if now_source - record.changed_at <= self.in_flight_micros {
                // In flight: the recent pass follows it.
                continue;
            }
            let stale = derived.is_some();
            let followed = Followed {
                version: record.version.clone(),
                changed_at: record.changed_at,
                stale,
            };
            if self.followed.contains_key(&record.key) || self.followed.len() < FOLLOW_LIMIT {
                self.followed.insert(record.key.clone(), followed);
            } else {
                if stale {
                    overflow.stale += 1;
                } else {
                    overflow.missing += 1;
                }
                overflow.oldest_change = Some(
                    overflow
                        .oldest_change
                        .map_or(record.changed_at, |o| o.min(record.changed_at)),
                );
            }
        }
        // Followed records the source no longer has in this range were deleted there.
        self.followed
            .retain(|key, _| !covers(key) || in_source.contains(key));
        if swept {
            let extra: HashSet<&Key> = derived_records
                .iter()
                .map(|d| &d.key)
                .filter(|key| covers(key) && !in_source.contains(key))
                .collect();
            self.extras
                .retain(|key, _| !covers(key) || extra.contains(key));
            for key in extra {
                if self.extras.contains_key(key) {
                    continue;
                }
                if self.extras.len() < FOLLOW_LIMIT {
                    self.extras.insert(key.clone(), now);
                } else {
                    overflow.extra += 1;
                    overflow.oldest_sighting =
                        Some(overflow.oldest_sighting.map_or(now, |o| o.min(now)));
                }
            }
        }
        self.sweep.rows += rows;
        let done = end.is_none();
        self.sweep.current.push(Chunk {
            end: end.clone(),
            overflow,
        });
        if done {
            self.sweep.previous = std::mem::take(&mut self.sweep.current);
            self.sweep.in_progress = None;
            self.sweep.last_rows = Some(self.sweep.rows);
            self.sweep.completed_at = Some(now);
            self.sweep.completed += 1;
        } else {
            self.sweep.in_progress = Some(end);
        }
        Ok(done)
    }

    /// The chunks whose overflow counts now: those of the running sweep, and those of the last
    /// completed one the running sweep has not passed yet.
    fn chunks_in_force(&self) -> impl Iterator<Item = &Chunk> {
        let cursor = self.sweep_cursor();
        let running = self.sweep.in_progress.is_some();
        self.sweep.current.iter().chain(
            self.sweep
                .previous
                .iter()
                .filter(move |chunk| match (running, cursor, &chunk.end) {
                    (false, _, _) => true,
                    (true, None, _) => true,
                    (true, Some(_), None) => true,
                    (true, Some(cursor), Some(end)) => end > cursor,
                }),
        )
    }

    /// What the ledger says now: `now_source` on the source's clock (microseconds), `now` on
    /// the daemon's; `sample` keys of mismatches at most.
    pub fn summary(&self, now_source: i64, now: SystemTime, sample: usize) -> Summary {
        let mut oldest_micros: Option<i64> = None;
        let mut clamped = false;
        let mut missing = 0u64;
        let mut stale = 0u64;
        let mut mismatched: Vec<(i64, MismatchKind, &Key)> = Vec::new();
        for (key, followed) in &self.followed {
            let age = now_source - followed.changed_at;
            clamped |= age < 0;
            oldest_micros = Some(oldest_micros.map_or(age, |o| o.max(age)));
            if age > self.in_flight_micros {
                let kind = if followed.stale {
                    stale += 1;
                    MismatchKind::Stale
                } else {
                    missing += 1;
                    MismatchKind::Missing
                };
                if sample > 0 {
                    mismatched.push((age, kind, key));
                }
            }
        }
        let mut lag = oldest_micros.map_or(0.0, |m| m.max(0) as f64 / 1e6);
        let mut extra = 0u64;
        for (key, first_seen) in &self.extras {
            let age = now.duration_since(*first_seen).unwrap_or_default();
            if age > self.in_flight {
                extra += 1;
                lag = lag.max(age.as_secs_f64());
                if sample > 0 {
                    let micros = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
                    mismatched.push((micros, MismatchKind::Extra, key));
                }
            }
        }
        for chunk in self.chunks_in_force() {
            let o = &chunk.overflow;
            missing += o.missing;
            stale += o.stale;
            if let Some(at) = o.oldest_change {
                lag = lag.max((now_source - at).max(0) as f64 / 1e6);
            }
            // Extra records beyond the limit are not remembered one by one: those of a chunk
            // count once the chunk's sighting is older than the budget.
            if let Some(at) = o.oldest_sighting {
                let age = now.duration_since(at).unwrap_or_default();
                if age > self.in_flight {
                    extra += o.extra;
                    lag = lag.max(age.as_secs_f64());
                }
            }
        }
        mismatched.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        Summary {
            lag_seconds: lag,
            negative_lag_clamped: clamped,
            not_visible: self.followed.len() as u64,
            missing,
            stale,
            extra: self.finds_extra.then_some(extra),
            sample: mismatched
                .into_iter()
                .take(sample)
                .map(|(_, kind, key)| (kind, key.to_string()))
                .collect(),
            sweep: self.has_sweep.then(|| SweepSummary {
                running: self.sweep.in_progress.is_some(),
                rows: self.sweep.rows,
                last_rows: self.sweep.last_rows,
                last_completed: self.sweep.completed_at,
                completed: self.sweep.completed,
            }),
        }
    }
}

/// Whether `a` is a newer version than `b` (text versions have no order: the later read wins).
fn newer(a: &Version, b: &Version) -> bool {
    match (a, b) {
        (Version::Int(a), Version::Int(b)) => a > b,
        (Version::Time(a), Version::Time(b)) => a > b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const BUDGET: Duration = Duration::from_secs(5);

    fn int_compare() -> Normalise {
        Normalise {
            compare: Compare {
                keys: KeyType::Integer,
                collation: Collation::Exact,
                versions: VersionType::Integer,
                precision: Duration::from_micros(1),
            },
        }
    }

    fn src(key: i64, version: i64, changed_at: i64) -> SourceRecord {
        SourceRecord {
            key: Key::Int(key),
            version: Version::Int(version),
            changed_at,
        }
    }

    fn der(key: i64, version: i64) -> DerivedRecord {
        DerivedRecord {
            key: Key::Int(key),
            version: Some(Version::Int(version)),
        }
    }

    fn epoch(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_record_not_visible_and_zero_when_all_match() {
        let mut ledger = Ledger::new(BUDGET, false, false);
        let records = [src(1, 1, 100 * S), src(2, 1, 103 * S), src(3, 1, 104 * S)];
        ledger.apply_recent(&records, &[der(1, 1)]);
        let summary = ledger.summary(106 * S, epoch(106), 0);
        assert_eq!(summary.lag_seconds, 3.0, "record 2 changed at 103, now 106");
        assert_eq!(summary.not_visible, 2);
        assert_eq!((summary.missing, summary.stale), (0, 0), "all in flight");

        ledger.apply_recent(&records, &[der(1, 1), der(2, 1), der(3, 2)]);
        let summary = ledger.summary(107 * S, epoch(107), 0);
        assert_eq!(summary.lag_seconds, 0.0);
        assert_eq!(summary.not_visible, 0);
    }

    #[test]
    fn a_skipped_record_keeps_its_lag_after_leaving_the_window_and_becomes_missing() {
        let mut ledger = Ledger::new(BUDGET, false, false);
        ledger.apply_recent(&[src(7, 1, 100 * S), src(8, 1, 100 * S)], &[der(8, 1)]);
        assert_eq!(ledger.lookup_keys(&[]), vec![Key::Int(7)], "followed");
        // Out of the window now: the recent pass no longer returns it, the derived side still
        // does not have it.
        ledger.apply_recent(&[src(9, 1, 200 * S)], &[der(9, 1)]);
        let summary = ledger.summary(200 * S, epoch(200), 5);
        assert_eq!(summary.lag_seconds, 100.0);
        assert_eq!(summary.missing, 1);
        assert_eq!(summary.sample, vec![(MismatchKind::Missing, "7".to_owned())]);
        // It finally arrives.
        ledger.apply_recent(&[], &[der(7, 1)]);
        assert_eq!(ledger.summary(201 * S, epoch(201), 5).lag_seconds, 0.0);
    }

    #[test]
    fn an_older_derived_version_is_stale_once_older_than_the_budget() {
        let mut ledger = Ledger::new(BUDGET, false, false);
        ledger.apply_recent(&[src(1, 3, 100 * S)], &[der(1, 2)]);
        let young = ledger.summary(104 * S, epoch(104), 0);
        assert_eq!((young.missing, young.stale), (0, 0));
        let old = ledger.summary(106 * S, epoch(106), 0);
        assert_eq!((old.missing, old.stale), (0, 1));
    }

    #[test]
    fn sweeps_page_through_keys_find_mismatches_and_extras_and_resume_from_their_cursor() {
        let mut ledger = Ledger::new(BUDGET, true, true);
        let now = Instant::now();
        assert!(ledger.sweep_due(now, Duration::from_secs(3600)));
        // First chunk: keys 1..=2 of the source; the derived page reaches 3.
        let done = ledger
            .apply_sweep_chunk(
                &[src(1, 1, 10 * S), src(2, 1, 10 * S)],
                true,
                DerivedPage::Swept {
                    records: vec![der(1, 1), der(3, 1)],
                    full: true,
                },
                100 * S,
                epoch(100),
            )
            .expect("chunk");
        assert!(!done);
        assert_eq!(ledger.sweep_cursor(), Some(&Key::Int(2)));
        let summary = ledger.summary(100 * S, epoch(100), 0);
        assert_eq!(summary.missing, 1, "key 2");
        assert_eq!(summary.extra, Some(0), "key 3 is beyond the chunk");
        // Second, last chunk: source key 4 stale; derived 3 has no source record; first seen
        // now, so not yet older than the budget.
        let done = ledger
            .apply_sweep_chunk(
                &[src(4, 2, 10 * S)],
                false,
                DerivedPage::Swept {
                    records: vec![der(3, 1), der(4, 1)],
                    full: false,
                },
                100 * S,
                epoch(100),
            )
            .expect("chunk");
        assert!(done);
        let summary = ledger.summary(100 * S, epoch(100), 0);
        assert_eq!((summary.missing, summary.stale, summary.extra), (1, 1, Some(0)));
        let later = ledger.summary(110 * S, epoch(110), 10);
        assert_eq!(later.extra, Some(1), "seen 10 s ago, budget 5 s");
        assert_eq!(later.lag_seconds, 100.0, "records 2 and 4 changed at 10");
        assert_eq!(later.sample.len(), 3);
        assert_eq!(later.sweep.as_ref().map(|s| s.last_rows), Some(Some(3)));
        // Not due again for an hour.
        assert!(!ledger.sweep_due(now + Duration::from_secs(60), Duration::from_secs(3600)));
    }

    #[test]
    fn a_sweep_drops_followed_records_the_source_deleted_and_never_counts_young_ones() {
        let mut ledger = Ledger::new(BUDGET, true, false);
        ledger.apply_recent(&[src(5, 1, 10 * S)], &[]);
        assert!(ledger.sweep_due(Instant::now(), Duration::from_secs(60)));
        ledger
            .apply_sweep_chunk(
                &[src(6, 1, 99 * S)],
                false,
                DerivedPage::Lookup(vec![]),
                100 * S,
                epoch(100),
            )
            .expect("chunk");
        let summary = ledger.summary(100 * S, epoch(100), 0);
        assert_eq!(summary.missing, 0, "5 is gone from the source, 6 is in flight");
        assert_eq!(summary.extra, None, "nothing looks for extras");
    }

    #[test]
    fn a_derived_record_whose_source_record_the_recent_pass_reads_is_no_longer_extra() {
        // The sweep reads the source page before the derived page: a record written to the
        // source and copied between the two reads shows on the derived side only.
        let mut ledger = Ledger::new(BUDGET, true, true);
        assert!(ledger.sweep_due(Instant::now(), Duration::from_secs(3600)));
        ledger
            .apply_sweep_chunk(
                &[src(1, 1, 10 * S)],
                false,
                DerivedPage::Swept {
                    records: vec![der(1, 1), der(2, 1)],
                    full: false,
                },
                100 * S,
                epoch(100),
            )
            .expect("chunk");
        // The next recent pass reads it from the source, visible.
        ledger.apply_recent(&[src(2, 1, 100 * S)], &[der(2, 1)]);
        let later = ledger.summary(110 * S, epoch(110), 5);
        assert_eq!(later.extra, Some(0), "the source has record 2");
        assert_eq!(later.lag_seconds, 0.0);
        assert!(later.sample.is_empty());
    }

    #[test]
    fn pages_out_of_order_fail_instead_of_skipping_records() {
        let mut ledger = Ledger::new(BUDGET, true, false);
        assert!(ledger.sweep_due(Instant::now(), Duration::from_secs(60)));
        let error = ledger
            .apply_sweep_chunk(
                &[src(2, 1, 0), src(1, 1, 0)],
                true,
                DerivedPage::Lookup(vec![]),
                0,
                epoch(0),
            )
            .expect_err("descending");
        assert_eq!(error.reason, ErrorReason::Decode);
        assert_eq!(ledger.sweep_cursor(), None, "the cursor did not move");
    }

    #[test]
    fn keys_and_versions_are_normalised_as_configured() {
        let ints = int_compare();
        assert_eq!(ints.key(Raw::Text(" 42".into()), "source").ok(), Some(Key::Int(42)));
        assert!(ints.key(Raw::Text("ab".into()), "source").is_err());
        let folded = Normalise {
            compare: Compare {
                keys: KeyType::Text,
                collation: Collation::CaseFolded,
                versions: VersionType::Timestamp,
                precision: Duration::from_secs(1),
            },
        };
        let a = folded.key(Raw::Text("Order-A".into()), "source").expect("key");
        let b = folded.key(Raw::Text("order-a".into()), "derived").expect("key");
        assert_eq!(a, b);
        let Key::Text { written, .. } = &a else {
            panic!("text key");
        };
        assert_eq!(written, "Order-A", "lookups use the source's spelling");
        let exact = Normalise {
            compare: Compare {
                collation: Collation::Exact,
                ..folded.compare
            },
        };
        assert_ne!(
            exact.key(Raw::Text("Order-A".into()), "s").expect("key"),
            exact.key(Raw::Text("order-a".into()), "d").expect("key")
        );
        // Whole seconds on one side, microseconds on the other.
        let source = folded.version(Raw::Time(10 * S + 700_000), "source").expect("v");
        let derived = folded.version(Raw::Time(10 * S), "derived").expect("v");
        assert!(visible(derived.as_ref(), &source.expect("some")));
    }
}
