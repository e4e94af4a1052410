//! What the OffsetCommit and TxnOffsetCommit handlers note: the offsets a request asks the
//! pool to store, kept until its answer says which it stored.

use std::collections::HashMap;

use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use uuid::Uuid;

use super::Lag;
use crate::tenancy::Namespace;

/// A commit request's (pool topic, partition, offset) triples.
pub trait AskedOffsets {
    fn asked(&self) -> impl Iterator<Item = (&str, i32, i64)>;
}

/// A commit answer's (pool topic, partition, error code) triples.
pub trait AnsweredOffsets {
    fn answered(&self) -> impl Iterator<Item = (&str, i32, i16)>;
}

/// Implements both for a request and answer pair whose topics have `name` and `partitions`.
macro_rules! commit_offsets {
    ($req:ty, $resp:ty) => {
        impl AskedOffsets for $req {
            fn asked(&self) -> impl Iterator<Item = (&str, i32, i64)> {
                self.topics.iter().flat_map(|t| {
                    let name = t.name.0.as_str();
                    t.partitions
                        .iter()
                        .map(move |p| (name, p.partition_index, p.committed_offset))
                })
            }
        }

        impl AnsweredOffsets for $resp {
            fn answered(&self) -> impl Iterator<Item = (&str, i32, i16)> {
                self.topics.iter().flat_map(|t| {
                    let name = t.name.0.as_str();
                    t.partitions
                        .iter()
                        .map(move |p| (name, p.partition_index, p.error_code))
                })
            }
        }
    };
}

commit_offsets!(OffsetCommitRequest, OffsetCommitResponse);
commit_offsets!(TxnOffsetCommitRequest, TxnOffsetCommitResponse);

/// The offsets an OffsetCommit or TxnOffsetCommit asks the pool to store. The handlers make
/// one as they forward the request (pool names) and hand it the answer before giving the
/// answer's names back.
///
/// A TxnOffsetCommit's offsets count only once its transaction commits; they are noted when
/// the pool accepts them, and an aborted transaction's are replaced by what the pool kept at
/// the next reconciliation.
pub struct Commit {
    namespace: Namespace,
    /// The tenant's name for the group.
    group: String,
    /// Offset asked for, by pool topic name and partition.
    asked: HashMap<String, HashMap<i32, i64>>,
}

impl Commit {
    /// `group` is the pool's id, as the request is forwarded; `None` when the group is not
    /// the namespace's (nothing to note).
    pub fn asked(namespace: &Namespace, group: &str, req: &impl AskedOffsets) -> Option<Commit> {
        Commit::of(namespace, group, req.asked())
    }

    fn of<'a>(
        namespace: &Namespace,
        group: &str,
        offsets: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) -> Option<Commit> {
        let tenant_group = namespace.strip(group)?.to_owned();
        let mut asked: HashMap<String, HashMap<i32, i64>> = HashMap::new();
        for (topic, partition, offset) in offsets {
            asked
                .entry(topic.to_owned())
                .or_default()
                .insert(partition, offset);
        }
        Some(Commit {
            namespace: namespace.clone(),
            group: tenant_group,
            asked,
        })
    }

    /// Notes in `lag` the offsets the pool's answer (pool names) stored: the partitions it
    /// answered with error code 0.
    pub fn stored(&self, lag: &Lag, cluster: Uuid, resp: &impl AnsweredOffsets) {
        self.stored_of(lag, cluster, resp.answered());
    }

    fn stored_of<'a>(
        &self,
        lag: &Lag,
        cluster: Uuid,
        answered: impl IntoIterator<Item = (&'a str, i32, i16)>,
    ) {
        let stored = answered
            .into_iter()
            .filter(|(_, _, code)| *code == 0)
            .filter_map(|(topic, partition, _)| {
                let offset = *self.asked.get(topic)?.get(&partition)?;
                Some((self.namespace.strip(topic)?, partition, offset))
            });
        lag.note(cluster, &self.group, stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Metrics;
    use crate::tenancy::Registry;

    #[test]
    fn a_commit_notes_only_what_the_pool_stored_under_the_tenants_names() {
        let lag = Lag::new(Registry::default(), Metrics::default());
        let cluster = Uuid::from_u128(0xa);
        let ns = Namespace::of(cluster);
        let pool = |n: &str| ns.topic(n).unwrap();
        let (orders, audit) = (pool("orders"), pool("audit"));
        let commit = Commit::of(
            &ns,
            &ns.id("billing").unwrap(),
            [
                (orders.as_str(), 0, 10),
                (orders.as_str(), 1, 20),
                (audit.as_str(), 0, 5),
            ],
        )
        .expect("the namespace's group");
        commit.stored_of(
            &lag,
            cluster,
            [
                (orders.as_str(), 0, 0),
                // Refused by the pool: not noted.
                (orders.as_str(), 1, 25),
                // Not asked for: not noted.
                (orders.as_str(), 2, 0),
                (audit.as_str(), 0, 0),
            ],
        );
        let state = lag.existing(&cluster).expect("noted");
        let state = state.lock().unwrap();
        assert_eq!(
            state.offsets(),
            vec![
                ("billing".into(), "audit".into(), 0, 5),
                ("billing".into(), "orders".into(), 0, 10),
            ]
        );
        // Another cluster's group is nothing of this namespace's.
        let other = Namespace::of(Uuid::from_u128(0xb));
        assert!(Commit::of(&ns, &other.id("billing").unwrap(), []).is_none());
    }
}
