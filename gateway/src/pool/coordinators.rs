//! Group and transaction coordinators.
//!
//! Group and transaction requests go to the coordinator the pool names for the (physical)
//! key, asked of the broker the key hashes to and cached until a response says NOT_COORDINATOR
//! or the coordinator stops answering.

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::broker::Broker;
use super::error::{is_network, UpstreamError};
use super::routing::Router;

/// FindCoordinator's key type for a group id.
pub const GROUP: i8 = 0;
/// FindCoordinator's key type for a transactional id.
pub const TRANSACTION: i8 = 1;

const COORDINATOR_NOT_AVAILABLE: i16 =
    kafka_protocol::ResponseError::CoordinatorNotAvailable.code();

/// What the pool answered for a coordinator lookup.
#[derive(Clone)]
pub struct CoordinatorAnswer {
    pub error_code: i16,
    pub error_message: Option<StrBytes>,
    /// Set when `error_code` is 0.
    pub broker: Option<Arc<Broker>>,
}

impl Router {
    /// The pool's coordinator for a physical group id or transactional id.
    pub async fn coordinator(
        &self,
        key_type: i8,
        key: &str,
    ) -> Result<CoordinatorAnswer, UpstreamError> {
        let cache_key = (key_type, key.to_owned());
        {
            let mut cache = self.coordinators.lock().expect("poisoned");
            match cache.get(&cache_key) {
                Some(b) if self.pool.is_live(b.addr()) => {
                    return Ok(CoordinatorAnswer {
                        error_code: 0,
                        error_message: None,
                        broker: Some(b.clone()),
                    });
                }
                // Its broker stopped answering: ask where the key lives now.
                Some(_) => {
                    cache.remove(&cache_key);
                }
                None => {}
            }
        }
        // On a stateless pool the broker asked becomes the coordinator, so the key's hash
        // spreads groups over the brokers; a leader-based pool answers the same from any.
        let asked = self.pick(key.as_bytes())?;
        let found = match self.find_coordinator(&asked, key_type, key).await {
            Ok(found) => found,
            // The broker asked is gone: the client's retry will ask another.
            Err(e) if is_network(&e) => {
                self.broker_failed(&asked, &e);
                return Ok(CoordinatorAnswer {
                    error_code: COORDINATOR_NOT_AVAILABLE,
                    error_message: None,
                    broker: None,
                });
            }
            Err(e) => return Err(e),
        };
        let (error_code, error_message, addr) = found;
        if error_code != 0 {
            return Ok(CoordinatorAnswer {
                error_code,
                error_message,
                broker: None,
            });
        }
        let broker = match self.broker_at(&addr).await {
            Ok(b) => b,
            Err(e) if is_network(&e) => {
                return Ok(CoordinatorAnswer {
                    error_code: COORDINATOR_NOT_AVAILABLE,
                    error_message: None,
                    broker: None,
                })
            }
            Err(e) => return Err(e),
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

    /// FindCoordinator for one key: (error code, message, coordinator address).
    async fn find_coordinator(
        &self,
        asked: &Broker,
        key_type: i8,
        key: &str,
    ) -> Result<(i16, Option<StrBytes>, String), UpstreamError> {
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

    /// Forgets a cached coordinator, after the pool said it is not (or no longer) the one.
    pub fn coordinator_moved(&self, key_type: i8, key: &str) {
        self.coordinators
            .lock()
            .expect("poisoned")
            .remove(&(key_type, key.to_owned()));
    }
}
