//! One cluster's committed offsets by group, topic and partition (the tenant's names), and the
//! high watermark history of the partitions they are in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use super::history::History;

/// Committed offsets kept per cluster (group, topic and partition each). MSK Serverless allows
/// 500 groups and 2,400 partitions per cluster, so real groups stay far below; this bounds
/// what a tenant committing to ever new partitions or groups can make an instance hold (some
/// 100 bytes each: about 5 MB per cluster at the cap). Commits of new entries past it are not
/// noted.
pub const OFFSETS_PER_CLUSTER: usize = 50_000;

/// Partitions per cluster with a high watermark history: MSK Serverless's 2,400 partitions
/// per cluster, so every partition a cluster may have; each history is at most
/// [`super::history::HISTORY_SAMPLES`] samples (1 KiB). Partitions past it get no time lag
/// estimate.
pub const HISTORIES_PER_CLUSTER: usize = 2_400;

#[derive(Debug, Clone, Copy)]
struct Committed {
    offset: i64,
    /// When this value became known: noted from a commit answer, or the start of the
    /// reconciliation that fetched it.
    at: Instant,
}

/// A group's offsets by (topic, partition).
type Offsets = BTreeMap<(String, i32), Committed>;

#[derive(Debug, Default)]
pub struct ClusterLag {
    groups: BTreeMap<String, Offsets>,
    /// Entries in `groups`, against [`OFFSETS_PER_CLUSTER`].
    entries: usize,
    histories: HashMap<(String, i32), History>,
}

impl ClusterLag {
    /// Notes a committed offset. A negative offset (none) is not an offset to lag behind.
    pub fn note(&mut self, group: &str, topic: &str, partition: i32, offset: i64, at: Instant) {
        if offset < 0 {
            return;
        }
        let key = (topic.to_owned(), partition);
        let value = Committed { offset, at };
        if let Some(existing) = self.groups.get_mut(group).and_then(|g| g.get_mut(&key)) {
            *existing = value;
            return;
        }
        if self.entries >= OFFSETS_PER_CLUSTER {
            return;
        }
        self.groups
            .entry(group.to_owned())
            .or_default()
            .insert(key, value);
        self.entries += 1;
    }

    /// Replaces offsets with the pool's, fetched by a reconciliation that started at
    /// `started`: each group of `fetched` gets exactly the offsets the pool has for it (none:
    /// the group goes), and when `listed` is the pool's whole list of the cluster's groups,
    /// every group not in it goes. Offsets noted from commit answers since `started` stand:
    /// they are newer than anything the round could have read.
    pub fn replace(
        &mut self,
        started: Instant,
        fetched: HashMap<String, Vec<(String, i32, i64)>>,
        listed: Option<&HashSet<String>>,
    ) {
        let newer = |c: &Committed| c.at > started;
        for (group, offsets) in fetched {
            let mut next: Offsets = offsets
                .into_iter()
                .filter(|(_, _, offset)| *offset >= 0)
                .map(|(topic, partition, offset)| {
                    let at = started;
                    ((topic, partition), Committed { offset, at })
                })
                .collect();
            if let Some(old) = self.groups.remove(&group) {
                next.extend(old.into_iter().filter(|(_, c)| newer(c)));
            }
            if !next.is_empty() {
                self.groups.insert(group, next);
            }
        }
        if let Some(listed) = listed {
            self.groups
                .retain(|group, offsets| listed.contains(group) || offsets.values().any(newer));
        }
        self.enforce_cap();
        let tracked = self.partitions();
        self.histories.retain(|key, _| tracked.contains(key));
    }

    /// Keeps the first [`OFFSETS_PER_CLUSTER`] entries (in group, topic, partition order)
    /// after a replacement brought in more.
    fn enforce_cap(&mut self) {
        let mut room = OFFSETS_PER_CLUSTER;
        self.groups.retain(|_, offsets| {
            if offsets.len() > room {
                let cut = offsets.keys().nth(room).cloned();
                if let Some(cut) = cut {
                    offsets.split_off(&cut);
                }
            }
            room -= offsets.len();
            !offsets.is_empty()
        });
        self.entries = OFFSETS_PER_CLUSTER - room;
    }

    /// Every (topic, partition) some group has an offset in.
    fn partitions(&self) -> BTreeSet<(String, i32)> {
        self.groups
            .values()
            .flat_map(|offsets| offsets.keys().cloned())
            .collect()
    }

    /// Records each tracked partition's high watermark (`mark`, when known) in its history.
    pub fn sample(&mut self, at: Instant, mark: impl Fn(&str, i32) -> Option<i64>) {
        let tracked = self.partitions();
        self.histories.retain(|key, _| tracked.contains(key));
        for key in tracked {
            let Some(hwm) = mark(&key.0, key.1) else {
                continue;
            };
            let room = self.histories.len() < HISTORIES_PER_CLUSTER;
            match self.histories.get_mut(&key) {
                Some(history) => history.record(at, hwm),
                None if room => self.histories.entry(key).or_default().record(at, hwm),
                None => {}
            }
        }
    }

    /// Each group's offsets: (group, [(topic, partition, offset)]), in name order.
    pub fn groups(&self) -> impl Iterator<Item = (&str, Vec<(&str, i32, i64)>)> {
        self.groups.iter().map(|(group, offsets)| {
            let offsets = offsets
                .iter()
                .map(|((topic, partition), c)| (topic.as_str(), *partition, c.offset))
                .collect();
            (group.as_str(), offsets)
        })
    }

    pub fn history(&self, topic: &str, partition: i32) -> Option<&History> {
        self.histories.get(&(topic.to_owned(), partition))
    }

    #[cfg(test)]
    pub fn offsets(&self) -> Vec<(String, String, i32, i64)> {
        self.groups()
            .flat_map(|(g, offsets)| {
                offsets
                    .into_iter()
                    .map(move |(t, p, o)| (g.to_owned(), t.to_owned(), p, o))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fetched(entries: &[(&str, &str, i32, i64)]) -> HashMap<String, Vec<(String, i32, i64)>> {
        let mut out: HashMap<String, Vec<(String, i32, i64)>> = HashMap::new();
        for (g, t, p, o) in entries {
            out.entry(g.to_string())
                .or_default()
                .push((t.to_string(), *p, *o));
        }
        out
    }

    fn set(groups: &[&str]) -> HashSet<String> {
        groups.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn the_pools_answer_replaces_what_was_noted_but_not_what_came_after_it_started() {
        let t0 = Instant::now();
        let mut lag = ClusterLag::default();
        lag.note("a", "orders", 0, 10, t0);
        lag.note("a", "orders", 1, 11, t0);
        lag.note("gone", "orders", 0, 3, t0);
        let started = t0 + Duration::from_secs(1);
        // Committed on this instance while the round was fetching: newer than its answer.
        lag.note("a", "orders", 1, 15, started + Duration::from_millis(5));
        lag.note("new", "orders", 0, 1, started + Duration::from_millis(5));
        lag.replace(
            started,
            fetched(&[
                ("a", "orders", 0, 12),
                ("a", "orders", 1, 13),
                ("a", "audit", 0, 7),
                // -1: the pool has no offset there.
                ("a", "audit", 1, -1),
                ("b", "orders", 0, 4),
            ]),
            Some(&set(&["a", "b"])),
        );
        assert_eq!(
            lag.offsets(),
            vec![
                ("a".into(), "audit".into(), 0, 7),
                ("a".into(), "orders".into(), 0, 12),
                ("a".into(), "orders".into(), 1, 15),
                ("b".into(), "orders".into(), 0, 4),
                ("new".into(), "orders".into(), 0, 1),
            ]
        );
    }

    #[test]
    fn groups_the_pool_no_longer_has_are_dropped_unless_the_list_was_partial() {
        let t0 = Instant::now();
        let mut lag = ClusterLag::default();
        lag.note("kept", "t", 0, 1, t0);
        lag.note("deleted", "t", 0, 1, t0);
        lag.note("expired", "t", 0, 1, t0);
        let started = t0 + Duration::from_secs(1);
        // A partial list (a broker did not answer) drops nothing it lacks.
        lag.replace(started, fetched(&[("kept", "t", 0, 2)]), None);
        assert_eq!(lag.offsets().len(), 3);
        // The whole list: "deleted" is gone from the pool; "expired" is listed but the pool
        // answered no offsets for it.
        let mut answer = fetched(&[("kept", "t", 0, 2)]);
        answer.insert("expired".into(), vec![]);
        lag.replace(started, answer, Some(&set(&["kept", "expired"])));
        assert_eq!(lag.offsets(), vec![("kept".into(), "t".into(), 0, 2)]);
        assert_eq!(lag.entries, 1);
    }

    #[test]
    fn offsets_past_the_cap_are_not_kept_and_histories_follow_the_offsets() {
        let t0 = Instant::now();
        let mut lag = ClusterLag::default();
        for p in 0..OFFSETS_PER_CLUSTER as i32 {
            lag.note("g", "t", p, 1, t0);
        }
        lag.note("g", "t", -5, 1, t0);
        lag.note("h", "t", 0, 1, t0);
        assert_eq!(lag.entries, OFFSETS_PER_CLUSTER);
        assert!(lag.offsets().iter().all(|(g, ..)| g == "g"));
        // Known entries still move at the cap.
        lag.note("g", "t", 0, 9, t0);
        assert_eq!(lag.offsets()[0].3, 9);
        // A replacement bringing more keeps the first ones.
        let more: Vec<_> = (0..OFFSETS_PER_CLUSTER as i32 + 10)
            .map(|p| ("t".to_string(), p, 2))
            .collect();
        let mut answer = HashMap::new();
        answer.insert("a".to_string(), more);
        lag.replace(t0 + Duration::from_secs(1), answer, None);
        assert_eq!(lag.entries, OFFSETS_PER_CLUSTER);
        assert_eq!(lag.offsets().len(), OFFSETS_PER_CLUSTER);
        assert!(lag.offsets().iter().all(|(g, ..)| g == "a"));

        // Histories: only for tracked partitions, at most HISTORIES_PER_CLUSTER.
        lag.sample(t0, |_, _| Some(100));
        assert_eq!(lag.histories.len(), HISTORIES_PER_CLUSTER);
        lag.replace(
            t0 + Duration::from_secs(2),
            fetched(&[("a", "t", 0, 1)]),
            Some(&set(&["a"])),
        );
        assert_eq!(lag.histories.len(), 1);
        assert!(lag.history("t", 0).is_some());
    }
}
