//! A map with a size bound, for what the gateway caches about the pool under keys a tenant
//! chooses (group ids, topic ids, topic names): however many keys a tenant makes up, the cache
//! holds at most its capacity.
//!
//! Eviction is CLOCK (second chance): every entry has a "used" bit, set by each lookup; when a
//! new key needs room, a hand sweeps the entries in a circle, clearing set bits, and the new
//! key takes the place of the first entry whose bit was clear. It approximates
//! least-recently-used at O(1) per operation (amortized) without a linked list, and a lookup
//! only sets an atomic bit, so it works under a shared (read) lock. An entry looked up at least
//! once per sweep is never evicted: a flood of keys a tenant makes up pushes out only entries
//! nobody used for a whole sweep (as many insertions as the capacity).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};

/// A map holding at most `capacity` entries; see the module docs for which one goes.
pub struct BoundedCache<K, V> {
    capacity: usize,
    /// Where each key's entry is in `slots`.
    index: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    /// The CLOCK hand: the next slot eviction looks at.
    hand: usize,
}

struct Slot<K, V> {
    key: K,
    value: V,
    /// Looked up since the hand last passed.
    used: AtomicBool,
}

impl<K: Hash + Eq + Clone, V> BoundedCache<K, V> {
    /// An empty cache for up to `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        BoundedCache {
            capacity: capacity.max(1),
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value under `key`, marking it used.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = &self.slots[*self.index.get(key)?];
        slot.used.store(true, Ordering::Relaxed);
        Some(&slot.value)
    }

    /// The value under `key`, marking it used.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = &mut self.slots[*self.index.get(key)?];
        *slot.used.get_mut() = true;
        Some(&mut slot.value)
    }

    /// Puts `value` under `key`, replacing the value of an entry already there (which is not
    /// a use: a refresh of everything must not make everything look in use). A new key in a
    /// full cache takes the place of an evicted entry, which is returned.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(&i) = self.index.get(&key) {
            self.slots[i].value = value;
            return None;
        }
        let slot = Slot {
            key: key.clone(),
            value,
            used: AtomicBool::new(false),
        };
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return None;
        }
        let i = self.victim();
        let old = std::mem::replace(&mut self.slots[i], slot);
        self.index.remove(&old.key);
        self.index.insert(key, i);
        // The newcomer is looked at last, a whole sweep from now.
        self.hand = i + 1;
        Some((old.key, old.value))
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.index.get(key)?;
        Some(self.remove_at(i).1)
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let mut i = 0;
        while i < self.slots.len() {
            let slot = &mut self.slots[i];
            if keep(&slot.key, &mut slot.value) {
                i += 1;
            } else {
                // The last entry moves into `i`: look at it next.
                self.remove_at(i);
            }
        }
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots.iter_mut().map(|s| &mut s.value)
    }

    /// The slot of the first entry the hand finds unused since it last passed (it stops there);
    /// the entries it passes lose their mark. The cache is not empty.
    fn victim(&mut self) -> usize {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let used = self.slots[self.hand].used.get_mut();
            if !*used {
                return self.hand;
            }
            *used = false;
            self.hand += 1;
        }
    }

    /// Removes the entry in slot `i`; the last slot's entry takes its place.
    fn remove_at(&mut self, i: usize) -> (K, V) {
        let slot = self.slots.swap_remove(i);
        self.index.remove(&slot.key);
        if let Some(moved) = self.slots.get(i) {
            *self
                .index
                .get_mut(&moved.key)
                .expect("every slot is indexed") = i;
        }
        (slot.key, slot.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_however_many_keys_are_inserted() {
        let mut cache = BoundedCache::new(100);
        for i in 0..10_000u32 {
            cache.insert(i, i);
            assert!(cache.len() <= 100, "{} entries after {i}", cache.len());
        }
        assert_eq!(cache.len(), 100);
        // Whatever is left is intact: each key still maps to its own value.
        let left = (0..10_000u32).filter(|i| cache.get(i) == Some(i)).count();
        assert_eq!(left, 100);
    }

    #[test]
    fn entries_in_use_outlive_keys_inserted_once() {
        let mut cache = BoundedCache::new(10);
        for i in 0..10u32 {
            cache.insert(i, ());
        }
        // A flood of new keys, none looked up again, while 3 and 7 stay in use.
        for i in 100..1_000u32 {
            assert!(cache.get(&3).is_some() && cache.get(&7).is_some(), "at {i}");
            cache.insert(i, ());
        }
        assert!(cache.get(&3).is_some() && cache.get(&7).is_some());
        assert!((0..10u32).filter(|i| cache.get(i).is_some()).count() == 2);
    }

    #[test]
    fn a_full_cache_evicts_one_entry_per_new_key_and_says_which() {
        let mut cache = BoundedCache::new(3);
        assert_eq!(cache.insert("a", 1), None);
        assert_eq!(cache.insert("b", 2), None);
        assert_eq!(cache.insert("c", 3), None);
        assert_eq!(cache.insert("b", 20), None, "replacing evicts nothing");
        cache.get("a");
        cache.get("b");
        // Looked up since the hand last passed, "a" and "b" get a second chance: "c" goes.
        assert_eq!(cache.insert("d", 4), Some(("c", 3)));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("b"), Some(&20));
        assert_eq!(cache.get("c"), None);
        // The hand cleared their marks on the way round, and "d" is newer: "a" goes next.
        assert_eq!(cache.insert("e", 5), Some(("a", 1)));
    }

    #[test]
    fn remove_and_retain_keep_every_other_entry_reachable() {
        let mut cache = BoundedCache::new(64);
        for i in 0..64u32 {
            cache.insert(i, i * 10);
        }
        assert_eq!(cache.remove(&5), Some(50));
        assert_eq!(cache.remove(&5), None);
        cache.retain(|k, _| k % 3 != 0);
        *cache.get_mut(&1).unwrap() += 1;
        for i in 0..64u32 {
            let expected = match i {
                5 => None,
                _ if i % 3 == 0 => None,
                1 => Some(11),
                _ => Some(i * 10),
            };
            assert_eq!(cache.get(&i).copied(), expected, "key {i}");
        }
        assert_eq!(
            cache.len(),
            (0..64).filter(|i| i % 3 != 0 && *i != 5).count()
        );
        // Room again, up to the bound and no further.
        for i in 100..200u32 {
            cache.insert(i, i);
        }
        assert_eq!(cache.len(), 64);
    }
}
