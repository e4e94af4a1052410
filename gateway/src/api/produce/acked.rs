//! Each acknowledged batch is metered once.
//!
//! When an idempotent producer's request reaches the pool but its answer does not reach the
//! producer (a dropped connection, a timeout), the producer sends the same batches again, and
//! the pool, which keeps each producer's recent sequences, acknowledges them again without
//! writing them twice. Metering each acknowledgement would bill the bytes twice. The producer
//! id, epoch and sequence say a batch was acknowledged before: per pool partition and producer
//! the gateway keeps the last sequence acknowledged, and an acknowledged batch whose records
//! all sit at or before it is a repeat, not metered.
//!
//! Kept per instance: a retry that reaches another gateway instance than the first attempt is
//! metered again there (the pool does not say it was a duplicate).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::records::ProducerSequence;

/// Pool topic name, partition index, producer id.
type Key = (String, i32, i64);

/// How long a partition's last acknowledged sequence is kept after its last acknowledgement:
/// a retry comes within the producer's delivery timeout (librdkafka's `message.timeout.ms`
/// and Java's `delivery.timeout.ms` default to 300 s and 120 s).
pub const KEEP: Duration = Duration::from_secs(600);
/// Partitions of producers tracked at most; when full, entries past [`KEEP`] are dropped,
/// and if none are, the oldest.
pub const MAX_ENTRIES: usize = 262_144;

#[derive(Default)]
pub struct Acked {
    table: Mutex<HashMap<Key, Last>>,
}

#[derive(Clone, Copy)]
struct Last {
    epoch: i16,
    sequence: i32,
    at: Instant,
}

impl Acked {
    /// Records that the pool acknowledged the batch of `topic`'s `partition` starting at
    /// `first` and ending at sequence `last`; returns whether it had been acknowledged before
    /// (and so must not be metered again).
    pub fn repeat(&self, topic: &str, partition: i32, first: ProducerSequence, last: i32) -> bool {
        let now = Instant::now();
        let mut table = self.table.lock().expect("poisoned");
        let key = (topic.to_owned(), partition, first.producer_id);
        if let Some(known) = table.get_mut(&key) {
            if known.epoch == first.epoch && !after(last, known.sequence) {
                known.at = now;
                return true;
            }
            // A new epoch starts the sequence again.
            if known.epoch != first.epoch || after(last, known.sequence) {
                *known = Last {
                    epoch: first.epoch,
                    sequence: last,
                    at: now,
                };
            }
            return false;
        }
        if table.len() >= MAX_ENTRIES {
            table.retain(|_, l| now.duration_since(l.at) < KEEP);
            if table.len() >= MAX_ENTRIES {
                if let Some(oldest) = table
                    .iter()
                    .min_by_key(|(_, l)| l.at)
                    .map(|(k, _)| k.clone())
                {
                    table.remove(&oldest);
                }
            }
        }
        table.insert(
            key,
            Last {
                epoch: first.epoch,
                sequence: last,
                at: now,
            },
        );
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().expect("poisoned").len()
    }
}

/// Whether sequence `a` comes after `b`. Sequences run from 0 to `i32::MAX` and then start at
/// 0 again, and a producer has at most a few batches in flight, so `a` is after `b` when it is
/// less than half that range ahead.
fn after(a: i32, b: i32) -> bool {
    const RANGE: i64 = 1 << 31;
    let ahead = (i64::from(a) - i64::from(b)).rem_euclid(RANGE);
    ahead > 0 && ahead < RANGE / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(producer_id: i64, epoch: i16, base_sequence: i32) -> ProducerSequence {
        ProducerSequence {
            producer_id,
            epoch,
            base_sequence,
        }
    }

    #[test]
    fn a_batch_acknowledged_again_is_a_repeat() {
        let a = Acked::default();
        assert!(!a.repeat("t", 0, seq(7, 0, 0), 9));
        assert!(!a.repeat("t", 0, seq(7, 0, 10), 19));
        // The answer to 10..19 was lost; the producer sends both again.
        assert!(a.repeat("t", 0, seq(7, 0, 0), 9));
        assert!(a.repeat("t", 0, seq(7, 0, 10), 19));
        assert!(!a.repeat("t", 0, seq(7, 0, 20), 29));
        // Other partitions, producers and topics are their own.
        assert!(!a.repeat("t", 1, seq(7, 0, 0), 9));
        assert!(!a.repeat("t", 0, seq(8, 0, 0), 9));
        assert!(!a.repeat("u", 0, seq(7, 0, 0), 9));
        // A new epoch starts again at 0.
        assert!(!a.repeat("t", 0, seq(7, 1, 0), 4));
        assert!(a.repeat("t", 0, seq(7, 1, 0), 4));
    }

    #[test]
    fn sequences_wrap() {
        let a = Acked::default();
        assert!(!a.repeat("t", 0, seq(7, 0, i32::MAX - 4), i32::MAX));
        assert!(!a.repeat("t", 0, seq(7, 0, 0), 9), "0 follows i32::MAX");
        assert!(a.repeat("t", 0, seq(7, 0, i32::MAX - 4), i32::MAX));
    }

    #[test]
    fn the_table_is_bounded() {
        let a = Acked::default();
        for pid in 0..(MAX_ENTRIES as i64 + 10) {
            a.repeat("t", 0, seq(pid, 0, 0), 0);
        }
        assert_eq!(a.len(), MAX_ENTRIES);
    }
}
