//! A quota shared by several gateway instances, this instance's side, the arithmetic alone (no
//! clock, no I/O): [`Lease`] is the budget this instance holds of one cluster's quota, taken
//! from Redis in slices by [`super::shared`] and spent by the data path with one atomic.
//!
//! The data path never waits on Redis: a charge takes from the local balance whatever it holds,
//! going into debt past it (Kafka too admits a request and throttles its client afterwards).
//! The debt is paid from the next slices, and a client is throttled for the time its debt takes
//! at this instance's share of the quota (the quota over the instances spending it), so the
//! instances together admit what Redis granted them and no more than a bounded debt beyond.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::rate::SECOND_NS;

/// How often an instance with traffic takes a slice of a shared quota, and how much of the
/// quota one slice is at most (over the instances spending it): 100 ms keeps a slice small
/// against the 10 s over which the quota must hold and one Redis call per interval cheap.
pub const INTERVAL_MS: u64 = 100;

/// One shared rate quota's budget on this instance. Lock-free: shared by every connection of
/// a cluster.
#[derive(Debug)]
pub struct Lease {
    /// Units (bytes, requests) granted and not yet spent; negative: spent ahead of grants.
    balance: AtomicI64,
    /// Units spent since the last slice was asked for.
    used: AtomicU64,
    /// The quota the data path last charged against (0: none), for the next slice.
    quota: AtomicU64,
    /// The instances spending this quota at the last slice, this one included (at least 1).
    peers: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Lease {
            balance: AtomicI64::new(0),
            used: AtomicU64::new(0),
            quota: AtomicU64::new(0),
            peers: AtomicU64::new(1),
        }
    }
}

/// What to ask Redis for at the next interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub quota: u64,
    pub amount: u64,
}

impl Lease {
    /// Notes that the data path charges against `quota` (`None`: no limit, nothing to lease).
    pub fn set_quota(&self, quota: Option<u64>) {
        self.quota.store(quota.unwrap_or(0), Ordering::Relaxed);
    }

    /// Notes a use spent elsewhere (the local bucket, Redis unreachable), so that the next
    /// exchange asks for a slice.
    pub fn note(&self, amount: u64, quota: u64) {
        self.quota.store(quota, Ordering::Relaxed);
        self.used.fetch_add(amount, Ordering::Relaxed);
    }

    /// Spends `amount` against `quota` and returns how long the client must wait, in
    /// nanoseconds: nothing while the balance covers it or the debt is within one interval's
    /// share (it is paid from the next slice), else the debt beyond that at this instance's
    /// share of the quota.
    pub fn charge(&self, amount: u64, quota: u64) -> u64 {
        self.note(amount, quota);
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        let after = self
            .balance
            .fetch_sub(amount, Ordering::Relaxed)
            .saturating_sub(amount);
        let share = (quota / self.peers()).max(1);
        let grace = (share as u128 * INTERVAL_MS as u128 / 1_000) as i64;
        let debt = after.saturating_neg().saturating_sub(grace);
        if debt <= 0 {
            return 0;
        }
        let ns = debt as u128 * SECOND_NS as u128 / share as u128;
        ns.min(u64::MAX as u128) as u64
    }

    /// The instances spending this quota at the last slice (at least 1).
    pub fn peers(&self) -> u64 {
        self.peers.load(Ordering::Relaxed).max(1)
    }

    /// What to ask for now, if anything: what the last interval used (the next will likely use
    /// as much) and the debt, less what is still held. An instance whose clients used nothing
    /// and that owes nothing asks for nothing.
    pub fn want(&self) -> Option<Want> {
        let quota = self.quota.load(Ordering::Relaxed);
        let used = self.used.swap(0, Ordering::Relaxed);
        if quota == 0 {
            return None;
        }
        let balance = self.balance.load(Ordering::Relaxed);
        let amount = (used as i128 - balance as i128).clamp(0, quota as i128) as u64;
        (amount > 0).then_some(Want { quota, amount })
    }

    /// Adds a slice Redis granted, and how many instances spend the quota now.
    pub fn grant(&self, amount: u64, peers: u64) {
        self.balance
            .fetch_add(i64::try_from(amount).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.peers.store(peers.max(1), Ordering::Relaxed);
    }

    /// This instance's share of `quota` when Redis cannot be reached: the quota over the
    /// instances that spent it at the last slice (all of it if there never was one), and at
    /// least one unit a second.
    pub fn fallback(&self, quota: u64) -> u64 {
        (quota / self.peers()).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_charge_within_the_balance_or_one_intervals_share_is_not_throttled() {
        let l = Lease::default();
        l.grant(1_000, 1);
        assert_eq!(l.charge(1_000, 10_000), 0);
        // 100 ms of 10,000/s is 1,000 of grace before the next slice.
        assert_eq!(l.charge(1_000, 10_000), 0);
        // 500 past the grace is 50 ms at 10,000/s.
        assert_eq!(l.charge(500, 10_000), 50 * MS);
    }

    #[test]
    fn the_throttle_is_the_debt_at_this_instances_share() {
        let l = Lease::default();
        // Two instances: this one's share of 10,000/s is 5,000/s, grace 500.
        l.grant(0, 2);
        assert_eq!(l.charge(1_500, 10_000), 200 * MS);
        // Paid: no debt, no throttle.
        l.grant(1_500, 2);
        assert_eq!(l.charge(100, 10_000), 0);
    }

    #[test]
    fn an_instance_asks_for_what_it_used_and_owes_less_what_it_holds() {
        let l = Lease::default();
        assert_eq!(l.want(), None, "no quota charged, nothing to lease");
        l.charge(3_000, 10_000);
        assert_eq!(
            l.want(),
            Some(Want {
                quota: 10_000,
                amount: 6_000
            }),
            "3,000 used and 3,000 owed"
        );
        l.grant(6_000, 1);
        // Used nothing since and owes nothing: asks nothing.
        assert_eq!(l.want(), None);
        l.charge(1_000, 10_000);
        // Used 1,000 and holds 2,000: enough for an interval like the last one.
        assert_eq!(l.want(), None);
        l.charge(2_500, 10_000);
        assert_eq!(l.want().unwrap().amount, 3_000);
        // Never more than a second's quota at once.
        l.charge(1 << 40, 10_000);
        assert_eq!(l.want().unwrap().amount, 10_000);
        // Lifted: nothing to lease.
        l.set_quota(None);
        assert_eq!(l.want(), None);
    }

    #[test]
    fn the_fallback_is_the_quota_over_the_instances_last_seen() {
        let l = Lease::default();
        assert_eq!(l.fallback(9_000), 9_000, "never saw another instance");
        l.grant(0, 3);
        assert_eq!(l.fallback(9_000), 3_000);
        assert_eq!(l.fallback(2), 1, "at least one unit a second");
    }
}
