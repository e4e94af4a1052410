//! Per source address: how many connections it has open and how fast it opens new ones.
//!
//! Checked at accept, before a byte is read, so a peer that floods the listener costs one
//! `accept` and a close per attempt. The table holds an entry only while an address has open
//! connections or a bucket still refilling, so its size is bounded by the open connections
//! plus the addresses seen in the last few seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("source has {0} connections open, the most allowed")]
    TooManyOpen(usize),
    #[error("source opens connections faster than {0} per second")]
    TooFast(u32),
}

#[derive(Debug)]
struct Entry {
    open: usize,
    /// Connection attempts left in the bucket, in thousandths (integer arithmetic).
    tokens_milli: u64,
    refilled: Instant,
}

/// The table of sources; cheap to clone.
#[derive(Clone)]
pub struct Sources {
    inner: Arc<Mutex<HashMap<IpAddr, Entry>>>,
    max_open: usize,
    per_second: u32,
}

/// Entries past which idle ones (no connection open, bucket full again) are dropped.
const PRUNE_AT: usize = 4096;

impl Sources {
    /// `max_open` connections per source, `per_second` new ones per second with a burst of
    /// twice that. Zero turns a limit off.
    pub fn new(max_open: usize, per_second: u32) -> Self {
        Sources {
            inner: Arc::default(),
            max_open,
            per_second,
        }
    }

    fn burst_milli(&self) -> u64 {
        u64::from(self.per_second) * 2 * 1000
    }

    /// Admits a new connection from `ip` at `now`; the guard releases its slot when dropped.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<SourceGuard, Refusal> {
        let mut table = self.inner.lock().expect("poisoned");
        if table.len() >= PRUNE_AT {
            let burst = self.burst_milli();
            let per_second = self.per_second;
            table.retain(|_, e| e.open > 0 || refill(e, now, per_second, burst) < burst);
        }
        let burst = self.burst_milli();
        let entry = table.entry(ip).or_insert(Entry {
            open: 0,
            tokens_milli: burst,
            refilled: now,
        });
        if self.max_open > 0 && entry.open >= self.max_open {
            return Err(Refusal::TooManyOpen(entry.open));
        }
        if self.per_second > 0 {
            let tokens = refill(entry, now, self.per_second, burst);
            if tokens < 1000 {
                return Err(Refusal::TooFast(self.per_second));
            }
            entry.tokens_milli = tokens - 1000;
        }
        entry.open += 1;
        Ok(SourceGuard {
            sources: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let table = self.inner.lock().expect("poisoned");
        table.get(&ip).map_or(0, |e| e.open)
    }

    fn release(&self, ip: IpAddr) {
        let mut table = self.inner.lock().expect("poisoned");
        if let Some(e) = table.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
        }
    }
}

/// Brings `e`'s bucket up to `now` and returns its tokens (thousandths).
fn refill(e: &mut Entry, now: Instant, per_second: u32, burst_milli: u64) -> u64 {
    let elapsed = now.saturating_duration_since(e.refilled);
    // per_second tokens a second is per_second thousandths a millisecond.
    let gained = elapsed.as_millis() as u64 * u64::from(per_second);
    if gained > 0 {
        e.tokens_milli = (e.tokens_milli + gained).min(burst_milli);
        e.refilled = now;
    }
    e.tokens_milli
}

/// One admitted connection's slot.
pub struct SourceGuard {
    sources: Sources,
    ip: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        self.sources.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn open_connections_are_bounded_per_source() {
        let sources = Sources::new(2, 0);
        let now = Instant::now();
        let a1 = sources.admit(A, now).unwrap();
        let _a2 = sources.admit(A, now).unwrap();
        assert_eq!(sources.admit(A, now).err(), Some(Refusal::TooManyOpen(2)));
        // Another address is not affected.
        let _b = sources.admit(B, now).unwrap();
        drop(a1);
        assert_eq!(sources.open(A), 1);
        assert!(sources.admit(A, now).is_ok());
    }

    #[test]
    fn attempts_are_rate_limited_with_a_burst() {
        let sources = Sources::new(0, 5);
        let start = Instant::now();
        // A burst of twice the rate, then refused.
        for _ in 0..10 {
            drop(sources.admit(A, start).unwrap());
        }
        assert_eq!(sources.admit(A, start).err(), Some(Refusal::TooFast(5)));
        assert!(sources.admit(B, start).is_ok());
        // 200 ms later one more attempt has accrued (5 a second), and only one.
        let later = start + Duration::from_millis(200);
        assert!(sources.admit(A, later).is_ok());
        assert!(sources.admit(A, later).is_err());
    }

    #[test]
    fn idle_entries_are_pruned() {
        let sources = Sources::new(10, 1);
        let start = Instant::now();
        for i in 0..PRUNE_AT as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            drop(sources.admit(ip, start).unwrap());
        }
        // Each bucket is full again after 2 s (a burst of 2 at 1 a second).
        let later = start + Duration::from_secs(3);
        let held = sources.admit(A, later).unwrap();
        assert_eq!(sources.inner.lock().unwrap().len(), 1);
        drop(held);
    }
}
