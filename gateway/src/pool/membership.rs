//! The pool's changeable set of brokers ([`Pool`]), which of them are live, and what they all
//! support. Brokers join and leave the pool here and nowhere else, so whatever scales the pool
//! calls these:
//!
//! - [`Pool::add_broker`] registers a broker that must answer now; [`Pool::add_configured`] one
//!   that may come later, as down; [`Pool::add_starting`] one an actuator is starting.
//!   [`Pool::drain`] takes one out of the routing, lets its requests finish and forgets it;
//!   [`Pool::remove_broker`] forgets one at once.
//! - [`Pool::brokers`] lists the live ones (what routing uses), [`Pool::all_brokers`] every
//!   registered one, [`Pool::states`] each one's [`BrokerState`], [`Pool::broker`] finds one
//!   by address, live or not.
//! - [`Pool::mark_down`] is for a caller that found a broker unreachable; [`Pool::run_prober`]
//!   ([`super::health`]) brings down brokers back when they answer, and notices live ones that
//!   stopped answering.
//! - [`Pool::generation`] changes with every change of membership or liveness, so callers can
//!   drop what they cached about the pool.
//! - [`Pool::versions`] is what every broker that ever answered supports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;

use super::broker::{Broker, Timeouts};
use super::error::UpstreamError;

/// The pool's brokers, which of them are live, and what they all support. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    members: RwLock<Vec<Member>>,
    /// The intersection over every broker that ever answered, per API key: a request version
    /// we forward must be understood by whichever broker ends up serving it. `None` until one
    /// answers.
    versions: RwLock<Option<HashMap<i16, (i16, i16)>>>,
    generation: AtomicU64,
    timeouts: Timeouts,
    /// TLS and SASL towards every broker.
    security: Arc<super::security::PoolSecurity>,
}

struct Member {
    broker: Arc<Broker>,
    state: BrokerState,
    /// Its versions are in the intersection.
    answered: bool,
}

/// Where a registered broker is in its life (`GET /v1/pool`'s `state`). Only live brokers are
/// routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Started by an actuator, not answering yet.
    Starting,
    Live,
    /// Leaving: out of the routing, its requests in flight finishing. Nothing brings it back.
    Draining,
    /// Known, but not answering; the prober takes it back when it answers.
    Down,
}

impl BrokerState {
    pub fn name(self) -> &'static str {
        match self {
            BrokerState::Starting => "starting",
            BrokerState::Live => "live",
            BrokerState::Draining => "draining",
            BrokerState::Down => "down",
        }
    }
}

/// How long a leaving broker's requests may take to finish once it is out of the routing: the
/// longest a request is held at the pool (a fetch's capped `max_wait_ms`, 5 s) and the margin
/// every answer gets (10 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

impl Pool {
    pub fn new(timeouts: Timeouts) -> Self {
        Self::secured(timeouts, Default::default())
    }

    /// A pool whose brokers are reached with `security` (TLS, SASL).
    pub fn secured(timeouts: Timeouts, security: Arc<super::security::PoolSecurity>) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                members: RwLock::default(),
                versions: RwLock::default(),
                generation: AtomicU64::new(0),
                timeouts,
                security,
            }),
        }
    }

    /// Counts a change of membership or liveness; called with `members` locked for writing.
    fn changed(&self) {
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// Adds a broker after learning its API versions, live. Adding a live address again is a
    /// no-op; a registered but down or starting one is asked again, and is live if it answers.
    /// A draining one stays out: whoever names it (stale metadata, say) is told there is no
    /// broker to use, which callers treat as retriable.
    pub async fn add_broker(&self, addr: &str) -> Result<(), UpstreamError> {
        let broker = match self.state(addr) {
            Some(BrokerState::Live) => return Ok(()),
            Some(BrokerState::Draining) => return Err(UpstreamError::NoBrokers),
            Some(_) => self.broker(addr).ok_or(UpstreamError::NoBrokers)?,
            None => Arc::new(Broker::secured(
                addr,
                self.inner.timeouts,
                self.inner.security.clone(),
            )),
        };
        let versions = broker.api_versions().await?;
        self.answered(&broker, &versions, true);
        Ok(())
    }

    /// Registers a broker that may not be reachable yet, down, without asking it anything: no
    /// request is routed to it until the prober ([`Pool::run_prober`]) hears from it.
    /// Registering an address twice is a no-op.
    pub fn add_configured(&self, addr: &str) {
        self.register(addr, BrokerState::Down);
    }

    /// Registers a broker an actuator is starting: shown as starting, and live (routed to)
    /// once it answers the prober or [`Pool::add_broker`]. Registering an address twice is a
    /// no-op.
    pub fn add_starting(&self, addr: &str) {
        self.register(addr, BrokerState::Starting);
    }

    fn register(&self, addr: &str, state: BrokerState) {
        let mut members = self.inner.members.write().expect("poisoned");
        if members.iter().any(|m| m.broker.addr == addr) {
            return;
        }
        members.push(Member {
            broker: Arc::new(Broker::secured(
                addr,
                self.inner.timeouts,
                self.inner.security.clone(),
            )),
            state,
            answered: false,
        });
        self.changed();
        tracing::info!(
            broker = addr,
            state = state.name(),
            "pool broker registered, not routed to until it answers"
        );
    }

    /// Records that `broker` answered ApiVersions: its versions join the intersection the first
    /// time, and it is live. `register` adds it if missing (`add_broker`); otherwise a broker
    /// removed while it was being probed stays removed.
    pub(super) fn answered(
        &self,
        broker: &Arc<Broker>,
        versions: &HashMap<i16, (i16, i16)>,
        register: bool,
    ) {
        let mut members = self.inner.members.write().expect("poisoned");
        let i = match members.iter().position(|m| m.broker.addr == broker.addr) {
            Some(i) => i,
            None if register => {
                members.push(Member {
                    broker: broker.clone(),
                    state: BrokerState::Down,
                    answered: false,
                });
                members.len() - 1
            }
            None => return,
        };
        let member = &mut members[i];
        if member.state == BrokerState::Draining {
            return;
        }
        if !member.answered {
            member.answered = true;
            let mut all = self.inner.versions.write().expect("poisoned");
            match &mut *all {
                None => *all = Some(versions.clone()),
                Some(all) => {
                    all.retain(|k, _| versions.contains_key(k));
                    for (k, (min, max)) in all.iter_mut() {
                        let (bmin, bmax) = versions[k];
                        *min = (*min).max(bmin);
                        *max = (*max).min(bmax);
                    }
                }
            }
        }
        if member.state != BrokerState::Live {
            member.state = BrokerState::Live;
            self.changed();
            tracing::info!(broker = %broker.addr, "pool broker is live");
        }
    }

    /// Records that a request found `addr` unreachable (a connect failed, a connection
    /// dropped): no request is routed to it until the prober hears from it again.
    pub fn mark_down(&self, addr: &str, reason: &str) {
        let mut members = self.inner.members.write().expect("poisoned");
        if let Some(m) = members
            .iter_mut()
            .find(|m| m.broker.addr == addr && m.state == BrokerState::Live)
        {
            m.state = BrokerState::Down;
            self.changed();
            tracing::warn!(broker = addr, reason, "pool broker is down");
        }
    }

    /// Forgets the broker at `addr`, live or down.
    pub fn remove_broker(&self, addr: &str) {
        let mut members = self.inner.members.write().expect("poisoned");
        let before = members.len();
        members.retain(|m| m.broker.addr != addr);
        if members.len() != before {
            self.changed();
            tracing::info!(broker = addr, "pool broker removed");
        }
    }

    /// Takes the broker at `addr` out of the routing (draining), waits until the requests
    /// that hold it finish, at most `timeout`, and forgets it. Returns false if requests were
    /// still in flight when the time ran out (they then fail, retriably, when the broker
    /// stops).
    pub async fn drain(&self, addr: &str, timeout: Duration) -> bool {
        let broker = {
            let mut members = self.inner.members.write().expect("poisoned");
            let Some(m) = members.iter_mut().find(|m| m.broker.addr == addr) else {
                return true;
            };
            if m.state != BrokerState::Draining {
                m.state = BrokerState::Draining;
                self.changed();
            }
            m.broker.clone()
        };
        tracing::info!(broker = addr, "draining pool broker");
        // Requests in flight hold the broker; the routing no longer hands it out. Held here
        // and by the member: two.
        let deadline = tokio::time::Instant::now() + timeout;
        while Arc::strong_count(&broker) > 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let finished = Arc::strong_count(&broker) <= 2;
        if !finished {
            tracing::warn!(
                broker = addr,
                ?timeout,
                "requests to a draining pool broker did not finish in time"
            );
        }
        self.remove_broker(addr);
        finished
    }

    /// The live brokers: the ones to route requests to.
    pub fn brokers(&self) -> Vec<Arc<Broker>> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .filter(|m| m.state == BrokerState::Live)
            .map(|m| m.broker.clone())
            .collect()
    }

    /// The registered brokers the prober watches (all but draining ones), and whether each is
    /// live.
    pub(super) fn members(&self) -> Vec<(Arc<Broker>, bool)> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .filter(|m| m.state != BrokerState::Draining)
            .map(|m| (m.broker.clone(), m.state == BrokerState::Live))
            .collect()
    }

    /// Every registered broker's address and state, in the order they were registered.
    pub fn states(&self) -> Vec<(String, BrokerState)> {
        self.members_with_state()
            .into_iter()
            .map(|(b, state)| (b.addr.clone(), state))
            .collect()
    }

    /// Every registered broker with its state, in the order they were registered.
    pub fn members_with_state(&self) -> Vec<(Arc<Broker>, BrokerState)> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .map(|m| (m.broker.clone(), m.state))
            .collect()
    }

    /// The state of the broker at `addr`, if registered.
    pub fn state(&self, addr: &str) -> Option<BrokerState> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .find(|m| m.broker.addr == addr)
            .map(|m| m.state)
    }

    /// Every registered broker, live or down.
    pub fn all_brokers(&self) -> Vec<Arc<Broker>> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .map(|m| m.broker.clone())
            .collect()
    }

    /// The registered broker at `addr`, live or down.
    pub fn broker(&self, addr: &str) -> Option<Arc<Broker>> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .find(|m| m.broker.addr == addr)
            .map(|m| m.broker.clone())
    }

    pub fn is_live(&self, addr: &str) -> bool {
        self.state(addr) == Some(BrokerState::Live)
    }

    /// Changes whenever a broker is added, removed, goes down or comes back: a caller that
    /// cached something about the pool (coordinators, a topic's broker) drops it when this is
    /// not the value it cached under.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The versions of `api` every pool broker that ever answered supports.
    pub fn versions(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.inner
            .versions
            .read()
            .expect("poisoned")
            .as_ref()?
            .get(&(api as i16))
            .copied()
            .filter(|(min, max)| min <= max)
    }
}
