//! The connection a request travels on, held until its answer arrives ([`Lease`]), and a
//! broker's fetch connections ([`FetchLane`]), lent to one request at a time up to a cap.
//!
//! On a multiplexed lane a lease only names the connection. A fetch connection is lent to one
//! request, and given back once its answer has arrived; one given up on before that is closed
//! rather than lent again, since the next fetch would queue behind the answer still owed.
//!
//! Fetch connections carry what a broker may hold (long polls, JoinGroup and SyncGroup during
//! a rebalance), so a request that shares one waits for whatever is ahead of it. They are
//! shared only within a cluster: each cluster may hold [`FetchCaps::per_cluster`] of a
//! broker's connections, and past that its requests share its own, least loaded ones; a
//! cluster holding fewer than [`FetchCaps::reserved`] always gets one more, even past the
//! broker's cap. One tenant's long polls or held rebalances therefore delay only that tenant.

use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::connection::Connection;

/// How many fetch connections a broker gets, and how they are shared out.
#[derive(Debug, Clone, Copy)]
pub(super) struct FetchCaps {
    /// Connections per broker before clusters start sharing their own: bounds what one
    /// gateway asks of a broker (Kafka's `max.connections` is unlimited by default, but every
    /// connection costs the broker a socket and buffers).
    pub(super) total: usize,
    /// At most this many per cluster, so one tenant's held requests can never take the rest.
    pub(super) per_cluster: usize,
    /// At least this many per cluster with requests in flight, whatever the others hold: the
    /// total may exceed [`FetchCaps::total`] by this much per such cluster.
    pub(super) reserved: usize,
}

impl Default for FetchCaps {
    fn default() -> Self {
        FetchCaps {
            total: 64,
            // Half: two busy tenants can fill a broker's share, one never can.
            per_cluster: 32,
            // A consumer group's members fetch concurrently (one fetch in flight per client
            // and broker); four keeps a small group's members apart.
            reserved: 4,
        }
    }
}

/// A broker's fetch connections.
#[derive(Default)]
pub(super) struct FetchLane {
    state: Mutex<FetchConns>,
}

#[derive(Default)]
struct FetchConns {
    caps: FetchCaps,
    /// Connections with nothing in flight; the most recently given back is lent first, so the
    /// others can sit idle until the broker closes them.
    idle: Vec<Connection>,
    /// Connections carrying requests: the cluster they are lent to (`None`: the gateway's
    /// own), and how many requests (more than one only past the cluster's share).
    lent: Vec<Lent>,
    /// Connects in progress, by the cluster they are for, counted against the caps.
    opening: Vec<Option<Uuid>>,
}

struct Lent {
    conn: Connection,
    owner: Option<Uuid>,
    requests: usize,
}

pub(super) enum Borrowed {
    /// A connection, and how many requests are ahead of this one on it (none: it has the
    /// connection to itself).
    Conn(Connection, u32),
    /// None to lend: open one (a slot is reserved in `opening`).
    Open,
}

impl FetchLane {
    /// A connection for a request of `owner` (a cluster, or the gateway's own with `None`).
    pub(super) fn borrow(&self, owner: Option<Uuid>) -> Borrowed {
        let mut s = self.state.lock().expect("poisoned");
        s.idle.retain(|c| !c.is_closed());
        s.lent.retain(|l| !l.conn.is_closed());
        if let Some(conn) = s.idle.pop() {
            s.lent.push(Lent {
                conn: conn.clone(),
                owner,
                requests: 1,
            });
            return Borrowed::Conn(conn, 0);
        }
        let caps = s.caps;
        let total = s.lent.len() + s.opening.len();
        let own = s.lent.iter().filter(|l| l.owner == owner).count()
            + s.opening.iter().filter(|o| **o == owner).count();
        let shared = s
            .lent
            .iter_mut()
            .filter(|l| l.owner == owner)
            .min_by_key(|l| l.requests);
        match shared {
            Some(l) if own >= caps.reserved && (own >= caps.per_cluster || total >= caps.total) => {
                let ahead = u32::try_from(l.requests).unwrap_or(u32::MAX);
                l.requests += 1;
                Borrowed::Conn(l.conn.clone(), ahead)
            }
            // Under its share, or nothing of its own to share yet.
            _ => {
                s.opening.push(owner);
                Borrowed::Open
            }
        }
    }

    /// Lends `c`, just opened for `owner` after [`Borrowed::Open`].
    pub(super) fn lend_new(&self, c: &Connection, owner: Option<Uuid>) {
        self.state.lock().expect("poisoned").lent.push(Lent {
            conn: c.clone(),
            owner,
            requests: 1,
        });
    }

    pub(super) fn give_back(&self, c: &Connection) {
        let mut s = self.state.lock().expect("poisoned");
        let Some(i) = s.lent.iter().position(|l| l.conn.same(c)) else {
            return;
        };
        s.lent[i].requests -= 1;
        if s.lent[i].requests == 0 {
            let l = s.lent.swap_remove(i);
            if !l.conn.is_closed() {
                s.idle.push(l.conn);
            }
        }
    }

    /// How many fetch connections are open (idle, lent).
    #[cfg(test)]
    pub(super) fn open_connections(&self) -> (usize, usize) {
        let mut s = self.state.lock().expect("poisoned");
        s.idle.retain(|c| !c.is_closed());
        s.lent.retain(|l| !l.conn.is_closed());
        (s.idle.len(), s.lent.len())
    }

    #[cfg(test)]
    pub(super) fn set_caps(&self, caps: FetchCaps) {
        self.state.lock().expect("poisoned").caps = caps;
    }
}

/// Releases the slot a fetch connection's connect reserved for its owner, however the
/// connect ends (the dispatching future may be dropped mid-connect).
pub(super) struct Opening<'a>(pub(super) &'a FetchLane, pub(super) Option<Uuid>);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().expect("poisoned");
        if let Some(i) = s.opening.iter().position(|o| *o == self.1) {
            s.opening.swap_remove(i);
        }
    }
}

/// The connection a request was sent on, held until its answer arrives.
pub(super) struct Lease {
    pub(super) conn: Connection,
    /// Set for fetch connections, which go back to their lane when the lease ends.
    pub(super) fetch: Option<Arc<FetchLane>>,
    /// A fetch connection with a request in flight: if the lease ends before the answer came,
    /// the connection is closed rather than lent to a fetch that would queue behind it.
    pub(super) busy: bool,
    /// No other request shares the connection while this one is in flight: its answer may be
    /// streamed, at the pace of whoever reads it, without holding up anyone else's.
    pub(super) exclusive: bool,
    /// Requests the broker holds on this connection before it reads this one (a cluster's
    /// fetch connection shared past its share): each may take its own whole wait, so the
    /// request's timeout is as many times longer ([`super::PendingReply`]).
    pub(super) ahead: u32,
}

impl Lease {
    pub(super) fn shared(conn: Connection) -> Lease {
        Lease {
            conn,
            fetch: None,
            busy: false,
            exclusive: false,
            // Multiplexed lanes carry requests a broker answers at once.
            ahead: 0,
        }
    }

    /// The request's answer has arrived, or its connection is closed: the lease may end
    /// without closing anything.
    pub(super) fn settle(&mut self) {
        self.busy = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(lane) = &self.fetch {
            if self.busy {
                self.conn
                    .abandon("a fetch was given up on before its answer arrived");
            }
            lane.give_back(&self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against real tansu brokers (memory engine), as the integration tests are: the pool is
    //! never mocked. tansu comes from `TOLLGATE_TANSU` or `tansu` on PATH.

    use kafka_protocol::messages::{ApiKey, FetchResponse, MetadataRequest, MetadataResponse};
    use uuid::Uuid;

    use super::FetchCaps;
    use crate::pool::testing::*;
    use crate::pool::{Broker, Caller, PendingReply};

    async fn fetch_of(broker: &Broker, cluster: Uuid, max_wait_ms: i32) -> PendingReply {
        let req = fetch_request("quiet", max_wait_ms);
        broker
            .dispatch_for(Caller::tenant(1, cluster), ApiKey::Fetch, FETCH, &req, true)
            .await
            .expect("fetch sent")
            .expect("a reply")
    }

    #[tokio::test]
    async fn a_request_queued_behind_another_waits_for_both_before_timing_out() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "quiet").await;
        broker.set_fetch_caps(FetchCaps {
            total: 1,
            per_cluster: 1,
            reserved: 1,
        });
        let a = Uuid::new_v4();
        // Each long poll gets its wait and a margin; the second shares the first's connection
        // and is read by the broker only once the first is answered.
        let timeout = std::time::Duration::from_millis(1500);
        let first = fetch_of(&broker, a, 1000).await.with_timeout(timeout);
        let second = fetch_of(&broker, a, 1000).await.with_timeout(timeout);
        assert_eq!(broker.fetch_connections(), (0, 1), "one connection, shared");
        let (first, second) = tokio::join!(
            first.decode::<FetchResponse>(FETCH),
            second.decode::<FetchResponse>(FETCH)
        );
        assert_eq!(
            fetched(&first.expect("the first long poll ends empty")),
            (0, false)
        );
        assert_eq!(
            fetched(&second.expect("the second is not timed out")),
            (0, false)
        );
    }

    #[tokio::test]
    async fn one_clusters_held_requests_never_share_another_clusters_connection() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "quiet").await;
        broker.set_fetch_caps(FetchCaps {
            total: 4,
            per_cluster: 2,
            reserved: 1,
        });
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

        // Cluster A parks three long polls: two connections (its share), the third shares one
        // of A's own.
        let mut parked = Vec::new();
        for _ in 0..3 {
            let long = fetch_of(&broker, a, 3000).await;
            parked.push(tokio::spawn(long.decode::<FetchResponse>(FETCH)));
        }
        assert_eq!(broker.fetch_connections(), (0, 2));
        // Cluster B takes the last two under the broker's cap; its second long poll then
        // shares B's first (B holds its reserve, and the broker is at its cap).
        for _ in 0..2 {
            let long = fetch_of(&broker, b, 3000).await;
            parked.push(tokio::spawn(long.decode::<FetchResponse>(FETCH)));
        }
        let long = fetch_of(&broker, b, 3000).await;
        parked.push(tokio::spawn(long.decode::<FetchResponse>(FETCH)));
        assert_eq!(broker.fetch_connections(), (0, 4));
        // Cluster C holds nothing: it gets a connection of its own past the cap, and is
        // answered while every long poll of A and B still waits.
        let quick: FetchResponse = fetch_of(&broker, c, 0).await.decode(FETCH).await.unwrap();
        assert_eq!(fetched(&quick), (0, false));
        assert!(
            parked.iter().all(|p| !p.is_finished()),
            "the long polls are still waiting"
        );
        assert_eq!(broker.fetch_connections(), (1, 4));
        for long in parked {
            let resp = long.await.unwrap().expect("the long poll ends empty");
            assert_eq!(fetched(&resp), (0, false));
        }
    }

    #[tokio::test]
    async fn long_polling_fetches_hold_up_no_other_request() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "quiet").await;
        create_topic(&broker, "busy").await;

        let first = fetch(&broker, "quiet", 2000).await;
        let second = fetch(&broker, "quiet", 2000).await;
        assert_eq!(
            broker.fetch_connections(),
            (0, 2),
            "a connection per long poll"
        );
        let first = tokio::spawn(first.decode::<FetchResponse>(FETCH));
        let second = tokio::spawn(second.decode::<FetchResponse>(FETCH));

        // Sharing a connection with either long poll, these would wait for it to end.
        let quick: FetchResponse = fetch(&broker, "quiet", 0)
            .await
            .decode(FETCH)
            .await
            .unwrap();
        assert_eq!(produce(&broker, "busy").await, 0);
        let metadata: MetadataResponse = broker
            .call(METADATA, &MetadataRequest::default())
            .await
            .unwrap();
        assert!(
            !first.is_finished() && !second.is_finished(),
            "the long polls are still waiting"
        );
        assert_eq!(fetched(&quick), (0, false));
        assert_eq!(metadata.brokers.len(), 1);

        for long in [first, second] {
            let resp = long.await.unwrap().expect("the long poll ends empty");
            assert_eq!(fetched(&resp), (0, false));
        }
        // Given back, not closed: the next fetches reuse them.
        assert_eq!(broker.fetch_connections(), (3, 0));
        let again: FetchResponse = fetch(&broker, "busy", 0).await.decode(FETCH).await.unwrap();
        assert_eq!(fetched(&again), (0, true));
        assert_eq!(broker.fetch_connections(), (3, 0));
    }

    #[tokio::test]
    async fn a_dropped_fetch_gives_its_connection_back_once_answered() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "quiet").await;

        drop(fetch(&broker, "quiet", 500).await);
        // Not idle while the broker still owes the answer: a fetch lent it would queue.
        assert_eq!(broker.fetch_connections(), (0, 1));
        eventually("the connection is idle again", || async {
            broker.fetch_connections() == (1, 0)
        })
        .await;
    }
}
