//! Topic ids resolved to the pool's (physical) topic names.
//!
//! Topic ids are resolved to physical names through a cache filled from every metadata and
//! create-topics answer that passes through, so a tenant's request by id can be checked
//! against its namespace before it goes anywhere.
//!
//! An id the cache does not know costs a Metadata request for every topic of the pool (not
//! every pool can look topics up by id), and a tenant chooses the ids it sends, so:
//!
//! - both caches are bounded ([`BoundedCache`]): the names ([`TOPIC_IDS_CAPACITY`]), and the
//!   ids the pool just said it does not know ([`MISSING_TOPIC_IDS_CAPACITY`]), which are
//!   answered without asking again for [`MISSING_TOPIC_ID_TTL`];
//! - a request's ids are looked up together
//!   ([`Router::topic_names`](super::Router::topic_names));
//! - one such Metadata request at a time is in flight, and it answers every id that was
//!   waiting when it was sent ([`Rounds`]): a thousand unknown ids, in one request or in a
//!   thousand at once, cost the pool one or two Metadata requests, not a thousand.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kafka_protocol::messages::MetadataResponse;
use tokio::time::Instant;
use uuid::Uuid;

use super::cache::BoundedCache;
use super::error::UpstreamError;

/// Topic names kept by id. An entry is one pool topic, learned from answers that name the
/// pool's topics (other tenants' included): room for every topic of 27 clusters at the 2,400
/// partitions each may have (`api::topic_policy`, MSK Serverless's limit), in about 20 MiB
/// if every name had the 249 bytes Kafka allows, a few MiB for real names.
pub const TOPIC_IDS_CAPACITY: usize = 65_536;
/// Ids the pool did not know, kept so that asking again is answered at once. An entry takes
/// under 100 bytes (under 2 MiB in all); more than the 10,000 elements one request may carry
/// (`Limits::max_request_elements`), so one request's made-up ids fit.
pub const MISSING_TOPIC_IDS_CAPACITY: usize = 16_384;
/// How long an id the pool did not know is answered as unknown without asking again. Short:
/// a topic just created through another gateway is unknown here until this passes (clients
/// retry UNKNOWN_TOPIC_ID, after a backoff of 100 ms in librdkafka and the Java client), and a
/// client naming the same unknown id over and over costs one Metadata request per interval.
pub const MISSING_TOPIC_ID_TTL: Duration = Duration::from_secs(2);

/// What a resolution round learned: every topic of the pool, by id.
type Answer = Result<Arc<HashMap<Uuid, String>>, UpstreamError>;

/// The router's state about topic ids.
pub(super) struct TopicIds {
    names: RwLock<BoundedCache<Uuid, String>>,
    /// When the pool last said it does not know each id.
    missing: Mutex<BoundedCache<Uuid, Instant>>,
    rounds: Rounds,
}

/// Resolution rounds, one at a time: each is one Metadata request for every topic of the
/// pool, and answers every caller that was waiting when it started.
///
/// A caller notes the number of the next round, then queues for its turn (`turn`, a fair
/// lock held for the length of a round). When its turn comes, either a round numbered at
/// least that far has finished meanwhile, whose answer is the caller's too, or the caller runs
/// the next round itself. A caller dropped mid-round passes the turn on, and the next caller
/// in the queue runs a round of its own: nobody waits for a round nobody runs.
#[derive(Default)]
struct Rounds {
    turn: tokio::sync::Mutex<()>,
    state: Mutex<RoundState>,
}

#[derive(Default)]
struct RoundState {
    /// Rounds started so far; the number of the latest.
    started: u64,
    /// The latest round to finish: its number, and its answer (the pool's topic list, kept
    /// once, until the next round replaces it).
    last: Option<(u64, Answer)>,
}

impl TopicIds {
    pub(super) fn new(names: usize, missing: usize) -> Self {
        TopicIds {
            names: RwLock::new(BoundedCache::new(names)),
            missing: Mutex::new(BoundedCache::new(missing)),
            rounds: Rounds::default(),
        }
    }

    /// What the caches say about `id`: `Some(name)`, `Some(None)` for an id the pool recently
    /// did not know, `None` when only the pool can say.
    fn cached(&self, id: &Uuid, now: Instant) -> Option<Option<String>> {
        if let Some(name) = self.names.read().expect("poisoned").get(id) {
            return Some(Some(name.clone()));
        }
        let mut missing = self.missing.lock().expect("poisoned");
        let since = *missing.get(id)?;
        if now.saturating_duration_since(since) < MISSING_TOPIC_ID_TTL {
            return Some(None);
        }
        missing.remove(id);
        None
    }

    pub(super) fn learn<'a>(&self, pairs: impl IntoIterator<Item = (Uuid, &'a str)>) {
        let mut names = self.names.write().expect("poisoned");
        let mut missing = self.missing.lock().expect("poisoned");
        for (id, name) in pairs {
            if !id.is_nil() {
                names.insert(id, name.to_owned());
                missing.remove(&id);
            }
        }
    }

    pub(super) fn forget(&self, id: &Uuid) {
        self.names.write().expect("poisoned").remove(id);
    }

    fn not_found(&self, ids: impl IntoIterator<Item = Uuid>, at: Instant) {
        let mut missing = self.missing.lock().expect("poisoned");
        for id in ids {
            missing.insert(id, at);
        }
    }

    /// The physical names behind `ids` (`None` for one the pool does not know, and for the
    /// nil id). The ids the caches cannot answer wait for a resolution round, which runs
    /// `every_topic`, a Metadata request for every topic of the pool.
    pub(super) async fn names<F>(
        &self,
        ids: impl IntoIterator<Item = Uuid>,
        every_topic: impl FnOnce() -> F,
    ) -> Result<HashMap<Uuid, Option<String>>, UpstreamError>
    where
        F: Future<Output = Result<MetadataResponse, UpstreamError>>,
    {
        let now = Instant::now();
        let mut found = HashMap::new();
        let mut unknown = Vec::new();
        for id in ids {
            if found.contains_key(&id) {
                continue;
            }
            let cached = if id.is_nil() {
                Some(None)
            } else {
                self.cached(&id, now)
            };
            if cached.is_none() {
                unknown.push(id);
            }
            found.insert(id, cached.flatten());
        }
        if unknown.is_empty() {
            return Ok(found);
        }
        let all = self
            .rounds
            .answer(|| async {
                let resp = every_topic().await?;
                let all: HashMap<Uuid, String> = resp
                    .topics
                    .iter()
                    .filter(|t| !t.topic_id.is_nil())
                    .filter_map(|t| Some((t.topic_id, t.name.as_ref()?.to_string())))
                    .collect();
                self.learn(all.iter().map(|(id, name)| (*id, name.as_str())));
                Ok(Arc::new(all))
            })
            .await?;
        let mut missing = Vec::new();
        for id in unknown {
            match all.get(&id) {
                Some(name) => {
                    found.insert(id, Some(name.clone()));
                }
                None => missing.push(id),
            }
        }
        self.not_found(missing, Instant::now());
        Ok(found)
    }
}

impl Rounds {
    /// The answer of a round started after this call, run by whichever caller's turn comes
    /// first.
    async fn answer<F: Future<Output = Answer>>(&self, run: impl FnOnce() -> F) -> Answer {
        let wanted = self.state.lock().expect("poisoned").started + 1;
        let _turn = self.turn.lock().await;
        let number = {
            let mut state = self.state.lock().expect("poisoned");
            if let Some((n, answer)) = &state.last {
                if *n >= wanted {
                    return answer.clone();
                }
            }
            state.started += 1;
            state.started
        };
        let answer = run().await;
        self.state.lock().expect("poisoned").last = Some((number, answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    //! The resolution rounds against a stand-in for the pool's Metadata request that counts
    //! how often it is sent and how many are in flight at once; the router's own test sends
    //! them to a broker.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    /// The pool's Metadata answer, every time it is asked: these topics.
    #[derive(Default)]
    struct Pool {
        topics: Vec<(Uuid, String)>,
        asked: AtomicUsize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        /// Fails every request when set.
        down: bool,
    }

    impl Pool {
        async fn every_topic(&self) -> Result<MetadataResponse, UpstreamError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            // Long enough for every caller spawned meanwhile to queue behind this one.
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.down {
                return Err(UpstreamError::NoBrokers);
            }
            let topic = |(id, name): &(Uuid, String)| {
                MetadataResponseTopic::default()
                    .with_topic_id(*id)
                    .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
            };
            Ok(MetadataResponse::default().with_topics(self.topics.iter().map(topic).collect()))
        }

        fn asked(&self) -> usize {
            self.asked.load(Ordering::SeqCst)
        }
    }

    fn random_ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    #[tokio::test]
    async fn unknown_ids_asked_at_once_share_one_metadata_request_at_a_time() {
        let ids = Arc::new(TopicIds::new(
            TOPIC_IDS_CAPACITY,
            MISSING_TOPIC_IDS_CAPACITY,
        ));
        let pool = Arc::new(Pool::default());
        let mut lookups = tokio::task::JoinSet::new();
        for id in random_ids(100) {
            let (ids, pool) = (ids.clone(), pool.clone());
            lookups.spawn(async move { ids.names([id], || pool.every_topic()).await });
        }
        while let Some(answer) = lookups.join_next().await {
            let names = answer.unwrap().expect("the pool answered");
            assert_eq!(names.values().collect::<Vec<_>>(), [&None]);
        }
        // The first caller's round, and one more for every caller that came during it.
        assert!(pool.asked() <= 2, "{} Metadata requests", pool.asked());
        assert_eq!(pool.most_in_flight.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_ids_of_one_request_cost_one_metadata_request_and_misses_are_remembered() {
        let known = random_ids(3);
        let pool = Pool {
            topics: known.iter().map(|id| (*id, format!("tg-t-{id}"))).collect(),
            ..Pool::default()
        };
        let ids = TopicIds::new(TOPIC_IDS_CAPACITY, MISSING_TOPIC_IDS_CAPACITY);
        let unknown = random_ids(1000);
        let asked: Vec<Uuid> = unknown.iter().chain(&known).copied().collect();

        let names = ids
            .names(asked.clone(), || pool.every_topic())
            .await
            .unwrap();
        assert_eq!(pool.asked(), 1);
        assert!(unknown.iter().all(|id| names[id].is_none()));
        assert!(known
            .iter()
            .all(|id| names[id] == Some(format!("tg-t-{id}"))));

        // Known ids and recent misses alike come from the caches; so does the nil id.
        let again = ids.names(asked, || pool.every_topic()).await.unwrap();
        assert_eq!(again, names);
        assert_eq!(
            ids.names([Uuid::nil()], || pool.every_topic())
                .await
                .unwrap()[&Uuid::nil()],
            None
        );
        assert_eq!(pool.asked(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_miss_is_remembered_for_its_ttl_and_forgotten_once_the_id_is_learned() {
        let pool = Pool::default();
        let ids = TopicIds::new(TOPIC_IDS_CAPACITY, MISSING_TOPIC_IDS_CAPACITY);
        let [gone, created] = [Uuid::new_v4(), Uuid::new_v4()];
        ids.names([gone, created], || pool.every_topic())
            .await
            .unwrap();
        assert_eq!(pool.asked(), 1);

        tokio::time::advance(MISSING_TOPIC_ID_TTL / 2).await;
        ids.learn([(created, "tg-t-new")]);
        let names = ids
            .names([gone, created], || pool.every_topic())
            .await
            .unwrap();
        assert_eq!(names[&created].as_deref(), Some("tg-t-new"));
        assert_eq!(names[&gone], None);
        assert_eq!(pool.asked(), 1, "both answered from the caches");

        tokio::time::advance(MISSING_TOPIC_ID_TTL / 2).await;
        ids.names([gone], || pool.every_topic()).await.unwrap();
        assert_eq!(pool.asked(), 2, "the miss expired: the pool is asked again");
    }

    #[tokio::test]
    async fn both_caches_stay_within_their_bounds() {
        let many: Vec<(Uuid, String)> = (0..500)
            .map(|i| (Uuid::new_v4(), format!("t{i}")))
            .collect();
        let pool = Pool {
            topics: many.clone(),
            ..Pool::default()
        };
        let ids = TopicIds::new(10, 20);
        let unknown = random_ids(500);
        let names = ids
            .names(unknown.clone(), || pool.every_topic())
            .await
            .unwrap();
        assert!(names.values().all(Option::is_none));
        assert_eq!(ids.names.read().unwrap().len(), 10);
        assert_eq!(ids.missing.lock().unwrap().len(), 20);
        ids.learn(many.iter().map(|(id, name)| (*id, name.as_str())));
        assert_eq!(ids.names.read().unwrap().len(), 10);
    }

    #[tokio::test]
    async fn a_failed_round_fails_its_callers_and_is_not_remembered_as_a_miss() {
        let ids = TopicIds::new(TOPIC_IDS_CAPACITY, MISSING_TOPIC_IDS_CAPACITY);
        let down = Pool {
            down: true,
            ..Pool::default()
        };
        let id = Uuid::new_v4();
        let failed = ids.names([id], || down.every_topic()).await.unwrap_err();
        assert!(matches!(failed, UpstreamError::NoBrokers), "{failed}");
        let up = Pool::default();
        assert_eq!(
            ids.names([id], || up.every_topic()).await.unwrap()[&id],
            None
        );
        assert_eq!(up.asked(), 1, "asked again once the pool answers");
    }
}
