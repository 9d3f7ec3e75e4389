//! Which shards of a stream a run reads, and from where: pure, from the stream's shards
//! (DescribeStream) and the consumer's leases (the lease table).
//!
//! A shard whose lease is at `SHARD_END` is finished. A lease at a sequence number is read
//! after it; one below its shard's first sequence number was trimmed (data loss) and is read
//! from the shard's first record instead. A lease at `TRIM_HORIZON` has read nothing yet. A
//! lease at `LATEST` (or `AT_TIMESTAMP`) skips what the shard held when the consumer started,
//! and where that was is not recorded anywhere: it is not measured until its first checkpoint.
//!
//! A shard without a lease is pending from its first record, as a KCL worker at TRIM_HORIZON
//! would read it — unless a descendant of it has a lease: KCL deletes the lease of a finished
//! shard once its children's leases exist (KCL 2's lease cleanup), so a shard the consumer is
//! past has no lease left; or unless its parent is still being read: KCL starts a child only
//! once its parent is finished, and the parent's pending records are older than any of the
//! child's, so the child adds nothing to the lag and is not read. A lease whose shard the stream
//! no longer lists, and that is not finished, lost the records retention deleted: data loss.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// One shard as DescribeStream lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamShard {
    pub id: String,
    pub parent: Option<String>,
    /// `SequenceNumberRange.StartingSequenceNumber`.
    pub first_sequence: String,
}

/// A lease's `checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    TrimHorizon,
    Latest,
    AtTimestamp,
    ShardEnd,
    /// The sequence number of the last record the consumer processed, as written.
    Sequence(String),
}

impl Checkpoint {
    /// A `checkpoint` attribute's value; `None` for anything KCL does not write.
    pub fn parse(text: &str) -> Option<Checkpoint> {
        Some(match text {
            "TRIM_HORIZON" => Checkpoint::TrimHorizon,
            "LATEST" => Checkpoint::Latest,
            "AT_TIMESTAMP" => Checkpoint::AtTimestamp,
            "SHARD_END" => Checkpoint::ShardEnd,
            digits if is_sequence_number(digits) => Checkpoint::Sequence(digits.to_owned()),
            _ => return None,
        })
    }
}

/// Whether `text` is a stream sequence number: decimal digits, 21 to 40 of them at AWS (more
/// than a u128 holds, so they are compared as text by [`compare_sequences`]).
pub fn is_sequence_number(text: &str) -> bool {
    (1..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// Orders two sequence numbers by value.
pub fn compare_sequences(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Where a planned read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    /// The first record after this sequence number.
    After(String),
    /// The shard's first record still stored.
    TrimHorizon,
}

/// One shard to read this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRead {
    pub shard: String,
    pub from: ReadFrom,
    /// The lease's checkpoint was below the shard's first record: reading from the trim horizon
    /// instead, and the records in between were deleted unread.
    pub trimmed: bool,
}

/// What a run reads, and what it learnt without reading.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub reads: Vec<ShardRead>,
    /// Shards the stream lists.
    pub shards: usize,
    /// Leases at LATEST or AT_TIMESTAMP: not measured until their first checkpoint.
    pub unmeasured: usize,
    /// Leases of shards the stream no longer lists that were not finished.
    pub expired_unfinished: Vec<String>,
}

/// The reads of one run over `shards` and `leases` (shard ID → checkpoint).
pub fn plan(shards: &[StreamShard], leases: &BTreeMap<String, Checkpoint>) -> Plan {
    let listed: BTreeSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let parents: BTreeMap<&str, &str> = shards
        .iter()
        .filter_map(|s| s.parent.as_deref().map(|p| (s.id.as_str(), p)))
        .collect();
    // Every ancestor of a leased shard: the consumer got past it, whether or not its lease is
    // still there. Bounded by the number of shards, whatever the parent links say.
    let mut superseded: BTreeSet<&str> = BTreeSet::new();
    for leased in leases.keys() {
        let mut at = leased.as_str();
        for _ in 0..shards.len() {
            let Some(parent) = parents.get(at) else { break };
            if !superseded.insert(parent) {
                break;
            }
            at = parent;
        }
    }
    let finished = |id: &str| {
        matches!(leases.get(id), Some(Checkpoint::ShardEnd))
            || (!leases.contains_key(id) && superseded.contains(id))
    };
    let mut plan = Plan {
        shards: shards.len(),
        ..Plan::default()
    };
    for shard in shards {
        let read = |from, trimmed| ShardRead {
            shard: shard.id.clone(),
            from,
            trimmed,
        };
        match leases.get(&shard.id) {
            Some(Checkpoint::ShardEnd) => {}
            Some(Checkpoint::Latest | Checkpoint::AtTimestamp) => plan.unmeasured += 1,
            Some(Checkpoint::TrimHorizon) => plan.reads.push(read(ReadFrom::TrimHorizon, false)),
            Some(Checkpoint::Sequence(text)) => {
                let below_start =
                    compare_sequences(text, &shard.first_sequence) == Ordering::Less;
                plan.reads.push(if below_start {
                    read(ReadFrom::TrimHorizon, true)
                } else {
                    read(ReadFrom::After(text.clone()), false)
                });
            }
            None if superseded.contains(shard.id.as_str()) => {}
            None => {
                let parent_pending = shard
                    .parent
                    .as_deref()
                    .is_some_and(|p| listed.contains(p) && !finished(p));
                if !parent_pending {
                    plan.reads.push(read(ReadFrom::TrimHorizon, false));
                }
            }
        }
    }
    plan.expired_unfinished = leases
        .iter()
        .filter(|(id, checkpoint)| {
            !listed.contains(id.as_str()) && **checkpoint != Checkpoint::ShardEnd
        })
        .map(|(id, _)| id.clone())
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, first: u64) -> StreamShard {
        StreamShard {
            id: id.to_owned(),
            parent: parent.map(str::to_owned),
            first_sequence: first.to_string(),
        }
    }

    fn leases(entries: &[(&str, &str)]) -> BTreeMap<String, Checkpoint> {
        entries
            .iter()
            .map(|(id, c)| ((*id).to_owned(), Checkpoint::parse(c).expect("checkpoint")))
            .collect()
    }

    fn reads(plan: &Plan) -> Vec<(&str, ReadFrom, bool)> {
        plan.reads
            .iter()
            .map(|r| (r.shard.as_str(), r.from.clone(), r.trimmed))
            .collect()
    }

    #[test]
    fn checkpoints_are_sentinels_or_sequence_numbers() {
        assert_eq!(Checkpoint::parse("SHARD_END"), Some(Checkpoint::ShardEnd));
        assert_eq!(Checkpoint::parse("TRIM_HORIZON"), Some(Checkpoint::TrimHorizon));
        assert_eq!(Checkpoint::parse("LATEST"), Some(Checkpoint::Latest));
        assert_eq!(
            Checkpoint::parse("49590338271490256608559692538361571095921575989136588898"),
            None,
            "longer than any stream sequence number"
        );
        assert!(is_sequence_number("1234567890123456789012345678901234567890"));
        assert_eq!(
            Checkpoint::parse("000000000000000000042"),
            Some(Checkpoint::Sequence("000000000000000000042".to_owned()))
        );
        assert_eq!(Checkpoint::parse("42abc"), None);
        assert_eq!(Checkpoint::parse(""), None);
    }

    #[test]
    fn sequence_numbers_compare_by_value_beyond_u128() {
        assert_eq!(compare_sequences("9", "10"), Ordering::Less);
        assert_eq!(compare_sequences("000100", "100"), Ordering::Equal);
        assert_eq!(
            compare_sequences(
                "9999999999999999999999999999999999999999",
                "10000000000000000000000000000000000000000"
            ),
            Ordering::Less
        );
        assert_eq!(compare_sequences("500", "499"), Ordering::Greater);
    }

    #[test]
    fn each_lease_is_read_after_its_checkpoint_and_finished_shards_are_not_read() {
        let shards = [
            shard("s-old", None, 100),
            shard("s-a", Some("s-old"), 200),
            shard("s-b", Some("s-old"), 300),
        ];
        let plan = plan(
            &shards,
            &leases(&[("s-old", "SHARD_END"), ("s-a", "250"), ("s-b", "TRIM_HORIZON")]),
        );
        assert_eq!(
            reads(&plan),
            [
                ("s-a", ReadFrom::After("250".to_owned()), false),
                ("s-b", ReadFrom::TrimHorizon, false),
            ]
        );
        assert_eq!(plan.shards, 3);
        assert_eq!(plan.unmeasured, 0);
        assert!(plan.expired_unfinished.is_empty());
    }

    #[test]
    fn a_checkpoint_below_the_shards_first_record_was_trimmed() {
        let plan = plan(&[shard("s", None, 5000)], &leases(&[("s", "4999")]));
        assert_eq!(reads(&plan), [("s", ReadFrom::TrimHorizon, true)]);
        let plan = super::plan(&[shard("s", None, 5000)], &leases(&[("s", "5000")]));
        assert_eq!(
            reads(&plan),
            [("s", ReadFrom::After("5000".to_owned()), false)]
        );
    }

    #[test]
    fn a_child_without_a_lease_waits_for_its_parent_then_counts_from_its_start() {
        let shards = [shard("p", None, 1), shard("c", Some("p"), 10)];
        // The parent still being read: its records are older than the child's.
        let behind = plan(&shards, &leases(&[("p", "5")]));
        assert_eq!(reads(&behind), [("p", ReadFrom::After("5".to_owned()), false)]);
        // The parent finished, the child not yet leased: everything in it is pending.
        let done = plan(&shards, &leases(&[("p", "SHARD_END")]));
        assert_eq!(reads(&done), [("c", ReadFrom::TrimHorizon, false)]);
        // No consumer at all: every shard whose parent is gone or finished.
        let none = plan(&shards, &BTreeMap::new());
        assert_eq!(reads(&none), [("p", ReadFrom::TrimHorizon, false)]);
        // A parent that expired from the stream does not hold its child back.
        let orphan = plan(&[shard("c", Some("gone"), 10)], &BTreeMap::new());
        assert_eq!(reads(&orphan), [("c", ReadFrom::TrimHorizon, false)]);
    }

    #[test]
    fn a_shard_whose_lease_kcl_deleted_after_finishing_it_is_not_read() {
        // KCL 2 deletes a finished parent's lease once its children's leases exist: the
        // parent, still listed for 24 hours, is behind the consumer, not pending.
        let shards = [
            shard("g", None, 1),
            shard("p", Some("g"), 10),
            shard("c", Some("p"), 20),
        ];
        let plan = plan(&shards, &leases(&[("c", "25")]));
        assert_eq!(reads(&plan), [("c", ReadFrom::After("25".to_owned()), false)]);
        // A sibling without a lease whose parent is superseded is new: pending from its start.
        let shards = [
            shard("p", None, 10),
            shard("c1", Some("p"), 20),
            shard("c2", Some("p"), 30),
        ];
        let plan = super::plan(&shards, &leases(&[("c1", "SHARD_END")]));
        assert_eq!(reads(&plan), [("c2", ReadFrom::TrimHorizon, false)]);
    }

    #[test]
    fn latest_leases_are_not_measured_and_expired_unfinished_leases_are_data_loss() {
        let plan = plan(
            &[shard("s", None, 1)],
            &leases(&[
                ("s", "LATEST"),
                ("expired-done", "SHARD_END"),
                ("expired-behind", "77"),
            ]),
        );
        assert!(plan.reads.is_empty());
        assert_eq!(plan.unmeasured, 1);
        assert_eq!(plan.expired_unfinished, ["expired-behind"]);
    }
}
