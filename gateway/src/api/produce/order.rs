//! Each producer's batches for a partition reach the pool in the order it sent them, across
//! leader moves.
//!
//! A Kafka client keeps several produce requests in flight to a partition's leader and relies
//! on the broker never writing a batch that does not follow the last one it wrote: when an
//! idempotent producer's earlier request fails retriably and a later one succeeds, it takes
//! the earlier records as written (librdkafka's implicit acknowledgement in
//! `rd_kafka_handle_idempotent_Produce_success`). A direct client's requests for a partition
//! go to the one broker it believes leads it, so they share one fate. The gateway routes each
//! request by its own, fresher view of the leaders, and a client moving a partition from one
//! gateway node to another still has requests in flight on the first; without these rules a
//! later batch could reach the new leader while an earlier one is still on its way to the old
//! one, which refuses it. Apache Kafka and tansu would refuse the later batch too
//! (OUT_OF_ORDER_SEQUENCE_NUMBER), but a pool that does not check sequences (librdkafka's mock
//! cluster does not, for producers without a transactional id) writes it, and the earlier
//! records are acknowledged without ever being written. Two rules, per pool partition and
//! producer id, give clients a broker's guarantee whatever the pool checks:
//!
//! - Admission: a producer's requests for a partition are routed and queued on their pool
//!   connection one at a time, in the order they reached the gateway, even when they came on
//!   different client connections (a client moving a partition to another gateway node)
//!   ([`Sequences::admit`]).
//! - Pins: while a batch is unanswered, the producer's later batches for the partition go to
//!   the same broker, on the same pool connection, and are never routed elsewhere when it
//!   cannot be reached ([`Sequences::hold`]).
//! - Gaps: once the gateway has answered a batch with a retriable error, the producer's later
//!   batches for the partition (sent before it saw the error) are refused with
//!   NOT_LEADER_OR_FOLLOWER until the failed batch comes again, on any connection
//!   ([`Sequences::behind`]). Clients retry them in order after it. A gap closes by itself
//!   after [`GAP_TTL`]: requests sent before the client saw the failure arrive well within
//!   it, and a retry the gateway never sees (it went to another gateway instance) must not
//!   stall the partition until the producer gives up.
//!
//! Keys hold pool topic names, so one cluster's producers never touch another's entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pool::{Broker, UpstreamError};
use crate::records::ProducerSequence;

/// Pool topic name, partition index, producer id.
type Key = (String, i32, i64);

/// Pins and gaps of every producer's partitions the gateway has batches of in flight or
/// failed.
#[derive(Default)]
pub struct Sequences {
    table: Mutex<HashMap<Key, Entry>>,
}

#[derive(Default)]
struct Entry {
    /// Held by the request of this producer and partition being routed and queued.
    gate: Arc<tokio::sync::Mutex<()>>,
    pin: Option<Pin>,
    gap: Option<Gap>,
}

impl Entry {
    /// Nothing in flight, no gap, no request admitted or waiting: the entry can go.
    fn idle(&self) -> bool {
        self.pin.is_none() && self.gap.is_none() && Arc::strong_count(&self.gate) == 1
    }

    /// The gap, if it is still open.
    fn open_gap(&self) -> Option<&Gap> {
        self.gap.as_ref().filter(|g| g.at.elapsed() < GAP_TTL)
    }
}

/// Where a producer's unanswered batches for a partition went.
struct Pin {
    broker: Arc<Broker>,
    /// The client connection whose pool produce connection they travelled on.
    client: u64,
    unanswered: u32,
}

/// A batch answered with a retriable error and not sent again yet.
struct Gap {
    epoch: i16,
    base_sequence: i32,
    at: Instant,
}

/// Entries kept at most. An entry lives while a batch is unanswered (bounded by the bytes in
/// flight) or from a failure to its retry (usually milliseconds, at most [`GAP_TTL`]), so a
/// gateway holds far fewer.
const MAX_ENTRIES: usize = 65_536;
/// How long a gap stays open without the failed batch failing again. Requests a client sent
/// before it read the failure arrive within a round trip of it; its retry comes after a
/// metadata refresh and `retry.backoff.ms` (100 ms by default in librdkafka and Java).
pub const GAP_TTL: Duration = Duration::from_secs(5);

/// A request's partition as [`Sequences::hold`] takes it: pool topic, partition, and its
/// first batch's producer sequence (none for producers without an id, which are not pinned).
pub type Routed<'a> = (&'a str, i32, Option<ProducerSequence>);

/// Keeps the pins of one request's partitions until it is dropped (its answer is known, or
/// the connection went away with it).
pub struct Held {
    sequences: Arc<Sequences>,
    keys: Vec<Key>,
}

/// What [`Sequences::hold`] decided for a request.
pub struct Holding {
    pub held: Held,
    /// Some partition followed an unanswered batch: the request must not be re-routed.
    pub followed: bool,
    /// The client connection whose pool produce connection the followed batches took.
    pub client: Option<u64>,
}

/// A request's turn to be routed and queued for its producers' partitions; the next request
/// of the same producer and partition waits until this is dropped.
pub struct Admitted {
    sequences: Arc<Sequences>,
    keys: Vec<Key>,
    turns: Vec<tokio::sync::OwnedMutexGuard<()>>,
}

impl Sequences {
    /// Waits for this request's turn on each of its producer partitions, in the order requests
    /// asked: call it before anything else that waits, and drop what it returns once the
    /// request is queued on its pool connections.
    pub async fn admit(self: &Arc<Self>, partitions: &[Routed<'_>]) -> Admitted {
        let mut keys: Vec<Key> = partitions
            .iter()
            .filter_map(|(topic, index, seq)| {
                Some(((*topic).to_owned(), *index, seq.as_ref()?.producer_id))
            })
            .collect();
        // One order for every request, so two requests never wait on each other's turns.
        keys.sort_unstable();
        keys.dedup();
        let gates: Vec<_> = {
            let mut table = self.table.lock().expect("poisoned");
            keys.retain(|k| room(&mut table, k));
            keys.iter()
                .map(|k| table.entry(k.clone()).or_default().gate.clone())
                .collect()
        };
        let mut turns = Vec::with_capacity(gates.len());
        for gate in gates {
            turns.push(gate.lock_owned().await);
        }
        Admitted {
            sequences: self.clone(),
            keys,
            turns,
        }
    }

    /// Replaces the router's choice for each partition of `partitions` whose producer has an
    /// unanswered batch for it with that batch's broker, and pins every routed partition to
    /// its broker until the returned [`Held`] is dropped. `client` is the connection sending
    /// the request.
    pub fn hold(
        self: &Arc<Self>,
        partitions: &[Routed<'_>],
        routes: &mut [Result<Arc<Broker>, UpstreamError>],
        client: u64,
    ) -> Holding {
        let mut table = self.table.lock().expect("poisoned");
        let mut holding = Holding {
            held: Held {
                sequences: self.clone(),
                keys: Vec::new(),
            },
            followed: false,
            client: None,
        };
        let key = |(topic, index, seq): &Routed<'_>| {
            seq.map(|seq| ((*topic).to_owned(), *index, seq.producer_id))
        };
        // The request travels on the pool connection of the batches it follows, if any, and
        // so do the batches that will follow its own.
        let sending = partitions
            .iter()
            .filter_map(key)
            .find_map(|k| table.get(&k)?.pin.as_ref().map(|p| p.client));
        holding.client = sending;
        let sending = sending.unwrap_or(client);
        for (partition, route) in partitions.iter().zip(routes.iter_mut()) {
            let Some(key) = key(partition) else { continue };
            if let Some(pin) = table.get_mut(&key).and_then(|e| e.pin.as_mut()) {
                holding.followed = true;
                *route = Ok(pin.broker.clone());
                pin.unanswered += 1;
            } else {
                let Ok(broker) = route else { continue };
                if !room(&mut table, &key) {
                    continue;
                }
                table.entry(key.clone()).or_default().pin = Some(Pin {
                    broker: broker.clone(),
                    client: sending,
                    unanswered: 1,
                });
            }
            holding.held.keys.push(key);
        }
        holding
    }

    /// For each of `partitions`, whether its batch comes after a batch of its producer that
    /// failed and was not sent again: then the client sent it before it learnt of the failure,
    /// and it must be refused. A batch at or before the failed one (its retry), or of another
    /// epoch, closes the gap. Sequence numbers wrap at `i32::MAX`; a retry across the wrap
    /// closes the gap early, which the pool's own sequence check covers where it has one.
    pub fn behind(&self, partitions: &[Routed<'_>]) -> Vec<bool> {
        let mut table = self.table.lock().expect("poisoned");
        partitions
            .iter()
            .map(|(topic, partition, seq)| {
                let Some(seq) = seq else { return false };
                if table.is_empty() {
                    return false;
                }
                let key = ((*topic).to_owned(), *partition, seq.producer_id);
                let Some(entry) = table.get_mut(&key) else {
                    return false;
                };
                match entry.open_gap() {
                    Some(g) if g.epoch == seq.epoch && seq.base_sequence > g.base_sequence => true,
                    None if entry.gap.is_none() => false,
                    _ => {
                        entry.gap = None;
                        if entry.idle() {
                            table.remove(&key);
                        }
                        false
                    }
                }
            })
            .collect()
    }

    /// Records that the gateway answered the batch at `seq` with a retriable error.
    pub fn failed(&self, topic: &str, partition: i32, seq: ProducerSequence) {
        let mut table = self.table.lock().expect("poisoned");
        let key = (topic.to_owned(), partition, seq.producer_id);
        if !room(&mut table, &key) {
            return;
        }
        let entry = table.entry(key).or_default();
        let open = entry.open_gap().is_some();
        match &mut entry.gap {
            // The earliest failed batch of the epoch is the one the client retries first; the
            // gap stays open while it keeps failing.
            Some(g) if open && g.epoch == seq.epoch && g.base_sequence <= seq.base_sequence => {
                if g.base_sequence == seq.base_sequence {
                    g.at = Instant::now();
                }
            }
            gap => {
                *gap = Some(Gap {
                    epoch: seq.epoch,
                    base_sequence: seq.base_sequence,
                    at: Instant::now(),
                })
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().expect("poisoned").len()
    }
}

/// Whether `key` has or may get an entry: a full table first drops closed gaps, and past that
/// tracks nothing new (the pool's own sequence check is then all there is).
fn room(table: &mut HashMap<Key, Entry>, key: &Key) -> bool {
    if table.len() < MAX_ENTRIES || table.contains_key(key) {
        return true;
    }
    table
        .retain(|_, e| e.pin.is_some() || e.open_gap().is_some() || Arc::strong_count(&e.gate) > 1);
    if table.len() < MAX_ENTRIES {
        return true;
    }
    tracing::warn!("{MAX_ENTRIES} producer sequences tracked; not tracking another until some end");
    false
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut table = self.sequences.table.lock().expect("poisoned");
        for key in &self.keys {
            let Some(entry) = table.get_mut(key) else {
                continue;
            };
            if let Some(pin) = &mut entry.pin {
                pin.unanswered -= 1;
                if pin.unanswered == 0 {
                    entry.pin = None;
                }
            }
            if entry.idle() {
                table.remove(key);
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // The turns first: an entry whose gate is still held is not idle.
        self.turns.clear();
        let mut table = self.sequences.table.lock().expect("poisoned");
        for key in &self.keys {
            if table.get(key).is_some_and(Entry::idle) {
                table.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Timeouts;

    fn seq(producer_id: i64, epoch: i16, base_sequence: i32) -> ProducerSequence {
        ProducerSequence {
            producer_id,
            epoch,
            base_sequence,
        }
    }

    impl Sequences {
        /// [`Sequences::behind`] for one partition.
        fn is_behind(&self, topic: &str, partition: i32, seq: ProducerSequence) -> bool {
            self.behind(&[(topic, partition, Some(seq))])[0]
        }
    }

    #[test]
    fn batches_sent_before_the_client_saw_a_failure_are_refused_until_its_retry() {
        let s = Sequences::default();
        assert!(!s.is_behind("t", 0, seq(7, 0, 10)));
        s.failed("t", 0, seq(7, 0, 10));
        // Later batches of the same producer and epoch, on this partition only.
        assert!(s.is_behind("t", 0, seq(7, 0, 15)));
        assert!(s.is_behind("t", 0, seq(7, 0, 20)));
        assert!(!s.is_behind("t", 1, seq(7, 0, 15)));
        assert!(!s.is_behind("u", 0, seq(7, 0, 15)));
        assert!(!s.is_behind("t", 0, seq(8, 0, 15)));
        // The retry closes the gap; what follows it passes.
        assert!(!s.is_behind("t", 0, seq(7, 0, 10)));
        assert!(!s.is_behind("t", 0, seq(7, 0, 15)));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn the_earliest_failure_holds_and_a_new_epoch_closes_the_gap() {
        let s = Sequences::default();
        s.failed("t", 0, seq(7, 0, 20));
        s.failed("t", 0, seq(7, 0, 10));
        s.failed("t", 0, seq(7, 0, 30));
        assert!(s.is_behind("t", 0, seq(7, 0, 15)));
        // A producer that gave the batch up bumps its epoch and starts again at 0.
        assert!(!s.is_behind("t", 0, seq(7, 1, 0)));
        assert!(!s.is_behind("t", 0, seq(7, 0, 15)));
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sequences::default();
        for pid in 0..(MAX_ENTRIES as i64 + 10) {
            s.failed("t", 0, seq(pid, 0, 5));
        }
        assert_eq!(s.len(), MAX_ENTRIES);
        assert!(s.is_behind("t", 0, seq(0, 0, 6)));
        assert!(!s.is_behind("t", 0, seq(MAX_ENTRIES as i64 + 5, 0, 6)));
    }

    #[test]
    fn a_gap_closes_by_itself_after_its_ttl_unless_the_batch_fails_again() {
        let s = Sequences::default();
        s.failed("t", 0, seq(7, 0, 10));
        let age = |s: &Sequences| {
            let mut table = s.table.lock().unwrap();
            let gap = table.values_mut().next().unwrap().gap.as_mut().unwrap();
            gap.at = Instant::now().checked_sub(GAP_TTL).unwrap();
        };
        // The failed batch failed again: the gap is as young as that.
        age(&s);
        s.failed("t", 0, seq(7, 0, 10));
        assert!(s.is_behind("t", 0, seq(7, 0, 15)));
        // Its retry went where this gateway does not see it: the gap lapses.
        age(&s);
        assert!(!s.is_behind("t", 0, seq(7, 0, 15)));
        assert_eq!(s.len(), 0);
        // A later failure after a lapsed gap opens a new one at its own sequence.
        s.failed("t", 0, seq(7, 0, 10));
        age(&s);
        s.failed("t", 0, seq(7, 0, 20));
        assert!(!s.is_behind("t", 0, seq(7, 0, 15)));
    }

    #[tokio::test]
    async fn a_producers_requests_for_a_partition_are_admitted_one_at_a_time_in_order() {
        let s = Arc::new(Sequences::default());
        let first = s
            .admit(&[("t", 0, Some(seq(7, 0, 0))), ("t", 1, None)])
            .await;
        // Another producer, or another partition, goes at once.
        drop(s.admit(&[("t", 0, Some(seq(8, 0, 0)))]).await);
        drop(s.admit(&[("t", 2, Some(seq(7, 0, 0)))]).await);
        // The same producer and partition waits for the first to be queued, and the requests
        // after it wait in the order they asked.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for n in 0..3 {
            let (mine, tx) = (s.clone(), tx.clone());
            waiting.push(tokio::spawn(async move {
                let turn = mine.admit(&[("t", 0, Some(seq(7, 0, 5 * (n + 1))))]).await;
                tx.send(n).unwrap();
                drop(turn);
            }));
            // Each has asked before the next one asks.
            while Arc::strong_count(&s.table.lock().unwrap()[&("t".to_owned(), 0, 7)].gate)
                < 3 + n as usize
            {
                tokio::task::yield_now().await;
            }
        }
        assert!(
            rx.try_recv().is_err(),
            "none admitted while the first holds its turn"
        );
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        let order: Vec<i32> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(s.len(), 0);
    }

    fn broker(addr: &str) -> Arc<Broker> {
        Arc::new(Broker::new(addr.to_owned(), Timeouts::default()))
    }

    fn addr(route: &Result<Arc<Broker>, UpstreamError>) -> &str {
        route.as_ref().expect("routed").addr()
    }

    #[test]
    fn a_producers_partition_with_an_unanswered_batch_keeps_to_its_broker_and_connection() {
        let s = Arc::new(Sequences::default());
        let (old, new) = (broker("127.0.0.1:1"), broker("127.0.0.1:2"));
        let first = s.hold(&[("t", 0, Some(seq(7, 0, 0)))], &mut [Ok(old.clone())], 1);
        assert!(!first.followed);
        // The leader moved and the client moved the partition to another gateway node
        // (connection 2): the router picks the new broker, but the earlier batch has no
        // answer yet, so the next one follows it, on the first one's pool connection. Another
        // producer, and a partition without a producer id, go where the router says.
        let mut routes = [Ok(new.clone()), Ok(new.clone()), Ok(new.clone())];
        let second = s.hold(
            &[
                ("t", 0, Some(seq(7, 0, 5))),
                ("t", 0, Some(seq(8, 0, 5))),
                ("t", 1, None),
            ],
            &mut routes,
            2,
        );
        assert!(second.followed);
        assert_eq!(second.client, Some(1));
        // Producer 8's batch travelled on connection 1's pool connection: its next one follows.
        let third_of_8 = s.hold(&[("t", 0, Some(seq(8, 0, 10)))], &mut [Ok(old.clone())], 3);
        assert_eq!(third_of_8.client, Some(1));
        drop(third_of_8);
        assert_eq!(addr(&routes[0]), old.addr());
        assert_eq!(addr(&routes[1]), new.addr());
        assert_eq!(addr(&routes[2]), new.addr());
        drop(first);
        let mut routes = [Ok(new.clone())];
        let third = s.hold(&[("t", 0, Some(seq(7, 0, 10)))], &mut routes, 2);
        assert!(third.followed, "the second batch is still unanswered");
        assert_eq!(addr(&routes[0]), old.addr());
        drop((second, third));
        assert_eq!(s.len(), 0);
        // Once every batch is answered, the router decides again.
        let mut routes = [Ok(new.clone())];
        let fourth = s.hold(&[("t", 0, Some(seq(7, 0, 15)))], &mut routes, 2);
        assert!(!fourth.followed);
        assert_eq!(addr(&routes[0]), new.addr());
    }

    #[test]
    fn an_unroutable_partition_is_not_pinned() {
        let s = Arc::new(Sequences::default());
        let mut routes = [Err(UpstreamError::NoBrokers)];
        let h = s.hold(&[("t", 0, Some(seq(7, 0, 0)))], &mut routes, 1);
        assert!(!h.followed && h.held.keys.is_empty());
        assert_eq!(s.len(), 0);
    }
}
