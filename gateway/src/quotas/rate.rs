//! Rates held to a quota, the arithmetic alone (no clock, no I/O): [`Bucket`] says how long a
//! client must wait after using some of a quota, [`Sampled`] what was used in the last second.
//!
//! Kafka measures a client's rate over a window (11 samples of 1 s by default) and, over its
//! quota, throttles it for `(observed - quota) / quota * window`: the time that brings the
//! windowed rate back to the quota. With the window's bytes `B`, that is `(B - quota * window)
//! / quota`, the bytes in excess of what the window allows divided by the quota. [`Bucket`]
//! computes the same quantity with a token bucket kept as GCRA's theoretical arrival time
//! (one atomic, no lock, no samples to rotate): the bytes used beyond an allowance of
//! [`BURST`] of the quota, divided by the quota. The allowance plays the part of Kafka's
//! window: a client idle for a second may use a second's quota at once without being
//! throttled, and over any longer span it gets the quota and no more than one burst above
//! it. A sampled window would instead forgive a client that paused for 10 s a burst of 10 s
//! of quota, which a shared pool should not have to absorb at once.

use std::sync::atomic::{AtomicU64, Ordering};

/// Nanoseconds in a second.
pub const SECOND_NS: u64 = 1_000_000_000;

/// The allowance of a bucket, in time at the quota: one second, the length of one of Kafka's
/// quota samples (`quota.window.size.seconds`), so a burst of one second's quota passes.
pub const BURST_NS: u64 = SECOND_NS;

/// A quota's use, as the time up to which the quota is spent (GCRA's theoretical arrival
/// time), in nanoseconds since the caller's origin. Lock-free: shared by every connection of a
/// cluster.
#[derive(Debug, Default)]
pub struct Bucket {
    spent_until: AtomicU64,
}

impl Bucket {
    /// Charges `amount` (bytes, requests) against `quota` per second at `now` and returns how
    /// long the client must wait, in nanoseconds, for its rate to be back at the quota: the
    /// time `amount` and what came before take at the quota beyond now and the allowance.
    ///
    /// The use is recorded whatever the answer: Kafka too admits the request and throttles
    /// the client afterwards. A quota change applies from the next charge; what was spent
    /// before is kept in time, so a lowered quota does not retroactively throttle.
    pub fn charge(&self, now_ns: u64, amount: u64, quota: u64) -> u64 {
        let cost = cost_ns(amount, quota);
        let floor = now_ns.saturating_sub(BURST_NS);
        let mut current = self.spent_until.load(Ordering::Relaxed);
        loop {
            let next = current.max(floor).saturating_add(cost);
            match self.spent_until.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next.saturating_sub(now_ns),
                Err(seen) => current = seen,
            }
        }
    }

    /// Whether the bucket has its whole allowance at `now_ns`, as a new one has: it may then
    /// be dropped and made again without changing anything.
    pub fn is_full(&self, now_ns: u64) -> bool {
        self.spent_until.load(Ordering::Relaxed) <= now_ns.saturating_sub(BURST_NS)
    }
}

/// The time `amount` takes at `quota` per second, in nanoseconds.
fn cost_ns(amount: u64, quota: u64) -> u64 {
    let ns = amount as u128 * SECOND_NS as u128 / quota.max(1) as u128;
    ns.min(u64::MAX as u128) as u64
}

/// Bits of a [`Sampled`] slot holding the count; the rest hold the second it counts (modulo).
const COUNT_BITS: u32 = 44;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// What was used per second, for the admin API: two one-second slots, the current second's
/// and the last one's, each an atomic holding its second (modulo 2^20) and its count.
#[derive(Debug, Default)]
pub struct Sampled {
    slots: [AtomicU64; 2],
}

impl Sampled {
    /// Adds `amount` to the second `now_ns` falls in.
    pub fn add(&self, now_ns: u64, amount: u64) {
        let second = now_ns / SECOND_NS;
        let slot = &self.slots[(second % 2) as usize];
        let tag = (second << COUNT_BITS) & !COUNT_MASK;
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let next = if current & !COUNT_MASK == tag {
                tag | ((current & COUNT_MASK) + amount).min(COUNT_MASK)
            } else {
                tag | amount.min(COUNT_MASK)
            };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// What was used in the last whole second before `now_ns`.
    pub fn last_second(&self, now_ns: u64) -> u64 {
        let Some(second) = (now_ns / SECOND_NS).checked_sub(1) else {
            return 0;
        };
        let tag = (second << COUNT_BITS) & !COUNT_MASK;
        let v = self.slots[(second % 2) as usize].load(Ordering::Relaxed);
        if v & !COUNT_MASK == tag {
            v & COUNT_MASK
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_burst_within_one_seconds_quota_is_not_throttled() {
        let b = Bucket::default();
        let now = 100 * SECOND_NS;
        // Idle until now: a whole second's quota may go at once, in pieces or not.
        assert_eq!(b.charge(now, 600, 1_000), 0);
        assert_eq!(b.charge(now, 400, 1_000), 0);
        // One byte more is one millisecond at 1,000 B/s.
        assert_eq!(b.charge(now, 1, 1_000), MS);
    }

    #[test]
    fn throttle_is_the_excess_over_the_quota() {
        // Kafka: observed 3,000 B/s over a 1 s window against 1,000 B/s is
        // (3000 - 1000) / 1000 * 1 s = 2 s.
        let b = Bucket::default();
        let now = 10 * SECOND_NS;
        assert_eq!(b.charge(now, 3_000, 1_000), 2 * SECOND_NS);
        // Waiting it out brings the rate back to the quota, with the allowance spent: the next
        // byte waits its own millisecond. The allowance refills only while the client uses
        // less than the quota.
        assert_eq!(b.charge(now + 2 * SECOND_NS, 1, 1_000), MS);
        let b = Bucket::default();
        assert_eq!(b.charge(now, 3_000, 1_000), 2 * SECOND_NS);
        assert_eq!(b.charge(now + 3 * SECOND_NS, 1_000, 1_000), 0);
        assert_eq!(b.charge(now + 3 * SECOND_NS, 500, 1_000), 500 * MS);
    }

    #[test]
    fn a_steady_rate_at_the_quota_is_never_throttled_and_above_it_is() {
        let b = Bucket::default();
        // 100 B every 100 ms is 1,000 B/s.
        for i in 0..100u64 {
            assert_eq!(b.charge(5 * SECOND_NS + i * 100 * MS, 100, 1_000), 0, "{i}");
        }
        // 110 B every 100 ms (10% over) spends the second of allowance in 10 s, then waits
        // 10 ms for each 100 ms.
        let b = Bucket::default();
        let start = 5 * SECOND_NS;
        let mut waited = 0;
        for i in 0..200u64 {
            waited = b.charge(start + i * 100 * MS, 110, 1_000);
        }
        // After 20 s: 22,000 B sent, 20,000 + 1,000 (allowance) allowed at the last charge's
        // time (19.9 s + 1 s of allowance: 20,900 B): 1,100 B ahead, 1.1 s.
        assert_eq!(waited, 1_100 * MS);
    }

    #[test]
    fn a_quota_change_takes_effect_at_the_next_charge() {
        let b = Bucket::default();
        let now = 10 * SECOND_NS;
        assert_eq!(b.charge(now, 2_000, 1_000), SECOND_NS);
        // Raised tenfold: the next 1,000 B cost 100 ms, on top of the second still owed.
        assert_eq!(b.charge(now, 1_000, 10_000), SECOND_NS + 100 * MS);
        // Lowered: 100 B at 100 B/s is a whole second.
        assert_eq!(b.charge(now, 100, 100), 2 * SECOND_NS + 100 * MS);
    }

    #[test]
    fn a_bucket_is_full_again_a_second_after_its_debt() {
        let b = Bucket::default();
        assert!(b.is_full(5 * SECOND_NS));
        assert_eq!(b.charge(5 * SECOND_NS, 1_500, 1_000), 500 * MS);
        assert!(!b.is_full(6 * SECOND_NS));
        assert!(b.is_full(6 * SECOND_NS + 500 * MS));
    }

    #[test]
    fn huge_charges_saturate_instead_of_overflowing() {
        let b = Bucket::default();
        assert_eq!(b.charge(0, u64::MAX, 1), u64::MAX);
        assert_eq!(b.charge(0, 1, 1), u64::MAX);
    }

    #[test]
    fn sampled_counts_the_last_whole_second() {
        let s = Sampled::default();
        s.add(7 * SECOND_NS, 10);
        s.add(7 * SECOND_NS + 999 * MS, 5);
        assert_eq!(
            s.last_second(7 * SECOND_NS + 500 * MS),
            0,
            "second 6: nothing"
        );
        s.add(8 * SECOND_NS, 1);
        assert_eq!(s.last_second(8 * SECOND_NS + 1), 15);
        assert_eq!(s.last_second(9 * SECOND_NS), 1);
        // Two seconds on, second 7's slot is reused for second 9, and second 8 is stale.
        s.add(9 * SECOND_NS, 4);
        assert_eq!(s.last_second(10 * SECOND_NS), 4);
        assert_eq!(s.last_second(11 * SECOND_NS), 0);
    }
}
