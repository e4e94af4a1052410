//! Each cluster's per-topic counters, found without a lock on the data path.
//!
//! A request names each topic once, and the produce and fetch paths already walk their answer
//! topic by topic: each topic costs one lookup in an immutable map read through an
//! [`ArcSwap`] (no lock, no contention between cores) and relaxed atomic adds. Only a topic's
//! first appearance takes the writers' lock, to publish a new map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::Bytes;

/// The label value of the series that counts the topics past a cluster's cap. Parentheses
/// cannot appear in a Kafka topic name, so it cannot be mistaken for one.
pub const OVERFLOW_TOPIC: &str = "(overflow)";

/// Partition indexes whose high watermarks a topic keeps: far past MSK Serverless's 2,400
/// partitions per cluster; a larger index is not a partition the pool can have.
const MAX_TRACKED_PARTITIONS: usize = 4_096;

/// One topic's counters.
#[derive(Debug, Default)]
pub struct TopicCounters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    /// The highest high watermark seen per partition (-1: none yet), from produce and fetch
    /// answers, for consumer lag. Grown under the writers' lock, rarely; a grown vector
    /// shares the slots of the one before, so a mark raised on the old one meanwhile is kept.
    high_watermarks: ArcSwap<Vec<Arc<AtomicI64>>>,
    grow: Mutex<()>,
}

impl TopicCounters {
    pub fn produced(&self, bytes: u64, messages: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.messages_in.fetch_add(messages, Ordering::Relaxed);
    }

    pub fn consumed(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Notes a partition's high watermark (the offset after its last record) as an answer
    /// told it; only a higher one than known is kept.
    pub fn high_watermark(&self, partition: i32, offset: i64) {
        let Ok(index) = usize::try_from(partition) else {
            return;
        };
        if index >= MAX_TRACKED_PARTITIONS || offset < 0 {
            return;
        }
        let marks = self.high_watermarks.load();
        if let Some(mark) = marks.get(index) {
            mark.fetch_max(offset, Ordering::Relaxed);
            return;
        }
        drop(marks);
        let _writer = self.grow.lock().expect("poisoned");
        let current = self.high_watermarks.load();
        if index >= current.len() {
            let grown: Vec<Arc<AtomicI64>> = current
                .iter()
                .cloned()
                .chain((current.len()..=index).map(|_| Arc::new(AtomicI64::new(-1))))
                .collect();
            self.high_watermarks.store(Arc::new(grown));
        }
        self.high_watermarks.load()[index].fetch_max(offset, Ordering::Relaxed);
    }

    /// Every partition's known high watermark.
    pub fn high_watermarks(&self) -> Vec<(i32, i64)> {
        self.high_watermarks
            .load()
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let offset = m.load(Ordering::Relaxed);
                (offset >= 0).then_some((i as i32, offset))
            })
            .collect()
    }
}

/// Topics by pool name: the tenant's name for the label, and the counters.
type TopicMap = HashMap<Bytes, (Arc<str>, Arc<TopicCounters>)>;

/// A cluster's topics, by the pool's name for them (the data path holds pool names), each with
/// the tenant's name for its label.
#[derive(Debug)]
pub struct Topics {
    map: ArcSwap<TopicMap>,
    writers: Mutex<()>,
    /// Topics past the cap share this one.
    overflow: Arc<TopicCounters>,
    cap: usize,
}

impl Topics {
    pub fn new(cap: usize) -> Self {
        Topics {
            map: Default::default(),
            writers: Mutex::new(()),
            overflow: Default::default(),
            cap,
        }
    }

    /// The counters of the topic the pool calls `pool_name`, which the tenant calls `tenant`
    /// (asked for only when the topic is new).
    pub fn get(
        &self,
        pool_name: &[u8],
        tenant: impl FnOnce() -> Option<String>,
    ) -> Arc<TopicCounters> {
        let map = self.map.load();
        if let Some((_, counters)) = map.get(pool_name) {
            return counters.clone();
        }
        // Full: a topic past the cap is counted in the overflow without taking the lock.
        if map.len() >= self.cap {
            return self.overflow.clone();
        }
        drop(map);
        let _writer = self.writers.lock().expect("poisoned");
        let current = self.map.load_full();
        if let Some((_, counters)) = current.get(pool_name) {
            return counters.clone();
        }
        let Some(tenant) = tenant() else {
            return self.overflow.clone();
        };
        if current.len() >= self.cap {
            return self.overflow.clone();
        }
        let mut next = HashMap::clone(&current);
        let counters = Arc::new(TopicCounters::default());
        next.insert(
            Bytes::copy_from_slice(pool_name),
            (Arc::from(tenant), counters.clone()),
        );
        self.map.store(Arc::new(next));
        counters
    }

    /// Drops the series of topics `keep` denies (deleted topics).
    pub fn retain(&self, mut keep: impl FnMut(&[u8]) -> bool) {
        let _writer = self.writers.lock().expect("poisoned");
        let current = self.map.load_full();
        if current.keys().all(|k| keep(k)) {
            return;
        }
        let next = current
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.map.store(Arc::new(next));
    }

    /// Every topic by its tenant name, then the overflow's counters when any topic went there.
    pub fn each(&self) -> Vec<(Arc<str>, Arc<TopicCounters>)> {
        let mut out: Vec<_> = self.map.load().values().cloned().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let o = &self.overflow;
        let used = o.bytes_in.load(Ordering::Relaxed) != 0
            || o.bytes_out.load(Ordering::Relaxed) != 0
            || o.messages_in.load(Ordering::Relaxed) != 0;
        if used {
            out.push((Arc::from(OVERFLOW_TOPIC), o.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_past_the_cap_share_the_overflow_series_and_deleted_ones_go() {
        let topics = Topics::new(2);
        let name = |n: &str| Some(n.to_owned());
        topics.get(b"p-a", || name("a")).produced(10, 1);
        topics.get(b"p-b", || name("b")).produced(20, 2);
        // Past the cap: counted, under the overflow.
        topics.get(b"p-c", || name("c")).produced(30, 3);
        topics.get(b"p-d", || name("d")).consumed(5);
        // Known topics are found again, not made anew.
        topics.get(b"p-a", || panic!("known")).produced(1, 1);
        let seen: Vec<(String, u64, u64, u64)> = topics
            .each()
            .iter()
            .map(|(n, c)| {
                (
                    n.to_string(),
                    c.bytes_in.load(Ordering::Relaxed),
                    c.messages_in.load(Ordering::Relaxed),
                    c.bytes_out.load(Ordering::Relaxed),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("a".into(), 11, 2, 0),
                ("b".into(), 20, 2, 0),
                (OVERFLOW_TOPIC.into(), 30, 3, 5)
            ]
        );
        topics.retain(|k| k != b"p-a");
        assert_eq!(topics.each().len(), 2);
        // Room again under the cap.
        topics.get(b"p-e", || name("e")).produced(1, 1);
        assert!(topics.each().iter().any(|(n, _)| &**n == "e"));
    }

    #[test]
    fn high_watermarks_only_rise_and_bogus_partitions_are_ignored() {
        let t = TopicCounters::default();
        t.high_watermark(2, 10);
        t.high_watermark(0, 5);
        t.high_watermark(2, 7);
        t.high_watermark(-1, 9);
        t.high_watermark(i32::MAX, 9);
        t.high_watermark(1, -1);
        assert_eq!(t.high_watermarks(), vec![(0, 5), (2, 10)]);
        // A mark raised on the slots of before a growth is not lost by it.
        let before = t.high_watermarks.load_full();
        t.high_watermark(40, 1);
        before[0].fetch_max(99, Ordering::Relaxed);
        assert_eq!(t.high_watermarks(), vec![(0, 99), (2, 10), (40, 1)]);
    }
}
