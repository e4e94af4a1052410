//! Group and transaction coordinators.
//!
//! Group and transaction requests go to the coordinator the pool names for the (physical)
//! key, asked of the broker the key hashes to and cached until a response says NOT_COORDINATOR
//! or the coordinator stops answering. Tenants choose the keys, so the cache holds at most
//! [`COORDINATORS_CAPACITY`] of them, the least recently used going first
//! ([`super::cache`]).

use std::sync::{Arc, Mutex};

use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::broker::Broker;
use super::cache::BoundedCache;
use super::error::UpstreamError;
use super::membership::Pool;

/// FindCoordinator's key type for a group id.
pub const GROUP: i8 = 0;
/// FindCoordinator's key type for a transactional id.
pub const TRANSACTION: i8 = 1;

/// Coordinators kept, by (key type, physical group or transactional id). Every group request
/// (a member's heartbeat every few seconds) looks its coordinator up, and a miss costs one
/// FindCoordinator; ids are chosen by tenants, up to `tenancy::MAX_TENANT_ID_NAME` (1,024
/// bytes): about 18 MiB if every id were that long, well under 1 MiB for real ids (tens of
/// bytes), for the active groups and transactional ids of hundreds of clusters.
pub const COORDINATORS_CAPACITY: usize = 16_384;

pub(super) const COORDINATOR_NOT_AVAILABLE: i16 =
    kafka_protocol::ResponseError::CoordinatorNotAvailable.code();

/// What the pool answered for a coordinator lookup.
#[derive(Clone)]
pub struct CoordinatorAnswer {
    pub error_code: i16,
    pub error_message: Option<StrBytes>,
    /// Set when `error_code` is 0.
    pub broker: Option<Arc<Broker>>,
}

/// The coordinators found so far, by (key type, physical key).
pub(super) struct Coordinators {
    cache: Mutex<BoundedCache<(i8, String), Arc<Broker>>>,
}

impl Coordinators {
    pub(super) fn new(capacity: usize) -> Self {
        Coordinators {
            cache: Mutex::new(BoundedCache::new(capacity)),
        }
    }

    /// The coordinator found for the key, if its broker is still live. One that stopped
    /// answering is forgotten: where the key lives now must be asked.
    pub(super) fn cached(&self, key_type: i8, key: &str, pool: &Pool) -> Option<Arc<Broker>> {
        let cache_key = (key_type, key.to_owned());
        let mut cache = self.cache.lock().expect("poisoned");
        match cache.get(&cache_key) {
            Some(b) if pool.is_live(b.addr()) => Some(b.clone()),
            Some(_) => {
                cache.remove(&cache_key);
                None
            }
            None => None,
        }
    }

    pub(super) fn remember(&self, key_type: i8, key: &str, broker: Arc<Broker>) {
        self.cache
            .lock()
            .expect("poisoned")
            .insert((key_type, key.to_owned()), broker);
    }

    pub(super) fn forget(&self, key_type: i8, key: &str) {
        self.cache
            .lock()
            .expect("poisoned")
            .remove(&(key_type, key.to_owned()));
    }

    /// Forgets every key whose coordinator is the broker at `addr`.
    pub(super) fn forget_broker(&self, addr: &str) {
        self.cache
            .lock()
            .expect("poisoned")
            .retain(|_, b| b.addr() != addr);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.cache.lock().expect("poisoned").len()
    }

    /// FindCoordinator for one key: (error code, message, coordinator address).
    pub(super) async fn find(
        pool: &Pool,
        asked: &Broker,
        key_type: i8,
        key: &str,
    ) -> Result<(i16, Option<StrBytes>, String), UpstreamError> {
        let (_, max) = pool
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
            let req = FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_key(key_str);
            let resp: FindCoordinatorResponse = asked.call(max, &req).await?;
            (resp.error_code, resp.error_message, resp.host, resp.port)
        };
        Ok((
            error_code,
            error_message,
            format!("{}:{}", host.as_str(), port),
        ))
    }
}
