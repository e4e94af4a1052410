//! Holding back repeats: the same event (one connection refused the same action on the same
//! resource, one cluster over the same quota) is emitted at most once per window, so a client
//! retrying in a loop cannot flood the audit log.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// When each key last had an event, for at most `capacity` keys.
#[derive(Debug)]
pub(super) struct Repeats<K> {
    window: Duration,
    capacity: usize,
    last: HashMap<K, Instant>,
}

impl<K: Hash + Eq> Repeats<K> {
    pub(super) fn new(window: Duration, capacity: usize) -> Self {
        Repeats {
            window,
            capacity: capacity.max(1),
            last: HashMap::new(),
        }
    }

    /// Whether an event for `key` is due at `now` (none within the window); a due one is
    /// noted. When every tracked key is recent and there is no room, the oldest is forgotten:
    /// memory stays bounded, and a key comes back only after `capacity` others, which a
    /// client can only do by refusals that are each an event.
    pub(super) fn due(&mut self, key: K, now: Instant) -> bool {
        if let Some(at) = self.last.get_mut(&key) {
            if now.saturating_duration_since(*at) < self.window {
                return false;
            }
            *at = now;
            return true;
        }
        if self.last.len() >= self.capacity {
            let window = self.window;
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < window);
        }
        if self.last.len() >= self.capacity {
            let oldest = self
                .last
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(_, at)| *at);
            if let Some(oldest) = oldest {
                self.last.retain(|_, at| *at != oldest);
            }
        }
        self.last.insert(key, now);
        true
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_once_per_window() {
        let mut r = Repeats::new(Duration::from_secs(60), 8);
        let t0 = Instant::now();
        assert!(r.due("a", t0));
        assert!(!r.due("a", t0 + Duration::from_secs(59)));
        assert!(
            r.due("b", t0 + Duration::from_secs(1)),
            "another key is not held"
        );
        assert!(r.due("a", t0 + Duration::from_secs(60)));
        assert!(
            !r.due("a", t0 + Duration::from_secs(61)),
            "the window restarts"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut r = Repeats::new(Duration::from_secs(60), 4);
        let t0 = Instant::now();
        for i in 0..100u32 {
            assert!(r.due(i, t0 + Duration::from_millis(u64::from(i))));
            assert!(r.len() <= 4);
        }
        // The newest are remembered, the oldest forgotten.
        assert!(!r.due(99, t0 + Duration::from_secs(1)));
        assert!(r.due(0, t0 + Duration::from_secs(1)));
        // Expired keys make room before any recent one is dropped.
        let later = t0 + Duration::from_secs(120);
        assert!(r.due(1000, later));
        assert_eq!(r.len(), 1);
    }
}
