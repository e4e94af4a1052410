//! Which pool broker serves a request.
//!
//! - Partition requests go to [`Router::for_topic`]. On a stateless pool (tansu brokers sharing
//!   one store, each claiming every partition) that is a rendezvous hash of the topic over the
//!   live brokers: stable while the set is stable, and adding a broker moves only its share.
//!   Splitting one request over the leaders of a leader-based pool is the next step (issue 4).
//! - Group and transaction requests go to the coordinator the pool names for the (physical)
//!   key, asked of the broker the key hashes to and cached until a response says
//!   NOT_COORDINATOR.
//! - Topic ids are resolved to physical names through a cache filled from every metadata and
//!   create-topics answer that passes through, so a tenant's request by id can be checked
//!   against its namespace before it goes anywhere.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::upstream::{Broker, Pool, UpstreamError};

pub const GROUP: i8 = 0;
pub const TRANSACTION: i8 = 1;

/// What the pool answered for a coordinator lookup.
#[derive(Clone)]
pub struct CoordinatorAnswer {
    pub error_code: i16,
    pub error_message: Option<StrBytes>,
    /// Set when `error_code` is 0.
    pub broker: Option<Arc<Broker>>,
}

pub struct Router {
    pool: Pool,
    coordinators: Mutex<HashMap<(i8, String), Arc<Broker>>>,
    topic_ids: RwLock<HashMap<Uuid, String>>,
}

impl Router {
    pub fn new(pool: Pool) -> Self {
        Router {
            pool,
            coordinators: Mutex::default(),
            topic_ids: RwLock::default(),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The broker that owns `key` among the live ones, by rendezvous (highest random weight)
    /// hashing.
    pub fn pick(&self, key: &[u8]) -> Result<Arc<Broker>, UpstreamError> {
        self.pool
            .brokers()
            .into_iter()
            .max_by_key(|b| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                b.addr().hash(&mut h);
                key.hash(&mut h);
                h.finish()
            })
            .ok_or(UpstreamError::NoBrokers)
    }

    pub fn for_topic(&self, physical_topic: &str) -> Result<Arc<Broker>, UpstreamError> {
        self.pick(physical_topic.as_bytes())
    }

    /// Any broker, for requests that are not about one partition or key.
    pub fn any(&self) -> Result<Arc<Broker>, UpstreamError> {
        self.pick(b"")
    }

    /// The pool's coordinator for a physical group id or transactional id.
    pub async fn coordinator(
        &self,
        key_type: i8,
        key: &str,
    ) -> Result<CoordinatorAnswer, UpstreamError> {
        let cache_key = (key_type, key.to_owned());
        if let Some(b) = self.coordinators.lock().expect("poisoned").get(&cache_key) {
            return Ok(CoordinatorAnswer {
                error_code: 0,
                error_message: None,
                broker: Some(b.clone()),
            });
        }
        let asked = self.pick(key.as_bytes())?;
        let (_, max) = self
            .pool
            .versions(ApiKey::FindCoordinator)
            .ok_or_else(|| UpstreamError::Encode("pool does not support FindCoordinator".into()))?;
        let key_str = StrBytes::from_string(key.to_owned());
        let (error_code, error_message, host, port) = if max >= 4 {
            let version = max.min(6);
            let req = FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_coordinator_keys(vec![key_str]);
            let resp: FindCoordinatorResponse = asked.call(version, &req).await?;
            let c = resp
                .coordinators
                .into_iter()
                .next()
                .ok_or_else(|| UpstreamError::Decode {
                    addr: asked.addr().to_owned(),
                    reason: "FindCoordinator answered no coordinator".into(),
                })?;
            (c.error_code, c.error_message, c.host, c.port)
        } else {
            let version = max;
            let req = FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_key(key_str);
            let resp: FindCoordinatorResponse = asked.call(version, &req).await?;
            (resp.error_code, resp.error_message, resp.host, resp.port)
        };
        if error_code != 0 {
            return Ok(CoordinatorAnswer {
                error_code,
                error_message,
                broker: None,
            });
        }
        let addr = format!("{}:{}", host.as_str(), port);
        let broker = match self.pool.broker(&addr) {
            Some(b) => b,
            None => {
                self.pool.add_broker(&addr).await?;
                self.pool.broker(&addr).ok_or(UpstreamError::NoBrokers)?
            }
        };
        self.coordinators
            .lock()
            .expect("poisoned")
            .insert(cache_key, broker.clone());
        Ok(CoordinatorAnswer {
            error_code: 0,
            error_message: None,
            broker: Some(broker),
        })
    }

    /// Forgets a cached coordinator, after the pool said it is not (or no longer) the one.
    pub fn coordinator_moved(&self, key_type: i8, key: &str) {
        self.coordinators
            .lock()
            .expect("poisoned")
            .remove(&(key_type, key.to_owned()));
    }

    /// Records topic ids seen in a pool answer.
    pub fn learn_topic_ids<'a>(&self, pairs: impl IntoIterator<Item = (Uuid, &'a str)>) {
        let mut ids = self.topic_ids.write().expect("poisoned");
        for (id, name) in pairs {
            if !id.is_nil() {
                ids.insert(id, name.to_owned());
            }
        }
    }

    pub fn forget_topic_id(&self, id: &Uuid) {
        self.topic_ids.write().expect("poisoned").remove(id);
    }

    /// The physical name behind a topic id, asking the pool when the cache does not know it.
    pub async fn topic_name(&self, id: Uuid) -> Result<Option<String>, UpstreamError> {
        if id.is_nil() {
            return Ok(None);
        }
        if let Some(name) = self.topic_ids.read().expect("poisoned").get(&id) {
            return Ok(Some(name.clone()));
        }
        let (_, max) = self
            .pool
            .versions(ApiKey::Metadata)
            .ok_or_else(|| UpstreamError::Encode("pool does not support Metadata".into()))?;
        let version = max.min(12);
        // Every topic: a rare path (an id this gateway has not seen in any answer yet), and
        // not every pool can look topics up by id.
        let req = MetadataRequest::default().with_topics(None);
        let resp: MetadataResponse = self.any()?.call(version, &req).await?;
        self.learn_topic_ids(
            resp.topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| (t.topic_id, n.as_str()))),
        );
        Ok(self.topic_ids.read().expect("poisoned").get(&id).cloned())
    }
}
