//! Counters on the data path.
//!
//! A connection gets its [`Counters`] once, when it authenticates, and then pays one relaxed
//! atomic add per produce or fetch: no lock, no map lookup, no per-record work. The flusher
//! swaps every counter to zero once per interval and hands the deltas to the store, so a
//! counter never holds more than one interval's worth of usage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// One (cluster, principal)'s byte counters.
#[derive(Debug, Default)]
pub struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Counters {
    /// Record batch bytes the pool accepted from this principal.
    pub fn add_in(&self, bytes: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Record batch bytes delivered to this principal.
    pub fn add_out(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    fn take(&self) -> (u64, u64) {
        (
            self.bytes_in.swap(0, Ordering::Relaxed),
            self.bytes_out.swap(0, Ordering::Relaxed),
        )
    }
}

/// Bytes counted for one (cluster, principal) since the last drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub cluster: Uuid,
    pub principal: Arc<str>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

type CounterMap = HashMap<(Uuid, Arc<str>), Arc<Counters>>;

/// Every live counter, by (cluster, principal). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CounterSet {
    inner: Arc<Mutex<CounterMap>>,
}

impl CounterSet {
    /// The counters for a (cluster, principal), made on first use. Called once per
    /// authentication, not per request.
    pub fn counters(&self, cluster: Uuid, principal: &str) -> Arc<Counters> {
        let mut map = self.inner.lock().expect("counter map poisoned");
        if let Some(c) = map.get(&(cluster, Arc::from(principal))) {
            return c.clone();
        }
        let c = Arc::new(Counters::default());
        map.insert((cluster, Arc::from(principal)), c.clone());
        c
    }

    /// Swaps every counter to zero and returns what they held. Counters no connection holds
    /// any more are dropped once drained, so the map does not grow with every principal ever
    /// seen.
    pub fn drain(&self) -> Vec<Delta> {
        let mut map = self.inner.lock().expect("counter map poisoned");
        let mut out = Vec::new();
        map.retain(|(cluster, principal), c| {
            let (bytes_in, bytes_out) = c.take();
            if bytes_in != 0 || bytes_out != 0 {
                out.push(Delta {
                    cluster: *cluster,
                    principal: principal.clone(),
                    bytes_in,
                    bytes_out,
                });
            }
            // The map's own reference is the only one left: nobody can add to it any more.
            Arc::strong_count(c) > 1
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_takes_everything_once() {
        let set = CounterSet::default();
        let c = Uuid::from_u128(1);
        let a = set.counters(c, "svc");
        let same = set.counters(c, "svc");
        a.add_in(10);
        same.add_in(5);
        a.add_out(7);
        let d = set.drain();
        assert_eq!(
            d,
            vec![Delta {
                cluster: c,
                principal: "svc".into(),
                bytes_in: 15,
                bytes_out: 7
            }]
        );
        assert!(set.drain().is_empty());
    }

    #[test]
    fn released_counters_are_drained_then_forgotten() {
        let set = CounterSet::default();
        let c = Uuid::from_u128(2);
        set.counters(c, "gone").add_in(3);
        assert_eq!(set.drain()[0].bytes_in, 3);
        assert!(set.inner.lock().unwrap().is_empty());
    }

    #[test]
    fn concurrent_adds_are_all_counted() {
        let set = CounterSet::default();
        let c = set.counters(Uuid::from_u128(3), "svc");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.add_in(1);
                    }
                })
            })
            .collect();
        let mut total = 0;
        // Drain while writers run: nothing is lost between drains.
        for _ in 0..10 {
            total += set.drain().iter().map(|d| d.bytes_in).sum::<u64>();
        }
        for t in threads {
            t.join().unwrap();
        }
        total += set.drain().iter().map(|d| d.bytes_in).sum::<u64>();
        assert_eq!(total, 40_000);
    }
}
