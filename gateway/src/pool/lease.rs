//! The connection a request travels on, held until its answer arrives ([`Lease`]), and a
//! broker's fetch connections ([`FetchLane`]), lent to one request at a time up to a cap.
//!
//! On a multiplexed lane a lease only names the connection. A fetch connection is lent to one
//! request, and given back once its answer has arrived; one given up on before that is closed
//! rather than lent again, since the next fetch would queue behind the answer still owed.

use std::sync::{Arc, Mutex};

use super::connection::Connection;

/// Fetch connections per broker before fetches start sharing them.
const FETCH_CONNECTIONS: usize = 64;

/// A broker's fetch connections.
#[derive(Default)]
pub(super) struct FetchLane {
    state: Mutex<FetchConns>,
}

#[derive(Default)]
struct FetchConns {
    /// Connections with nothing in flight; the most recently given back is lent first, so the
    /// others can sit idle until the broker closes them.
    idle: Vec<Connection>,
    /// Connections carrying fetches, each with how many (more than one only past the cap).
    lent: Vec<(Connection, usize)>,
    /// Connects in progress, counted against the cap.
    opening: usize,
}

pub(super) enum Borrowed {
    /// A connection, and whether this fetch has it to itself.
    Conn(Connection, bool),
    /// None to lend: open one (a slot is reserved in `opening`).
    Open,
}

impl FetchLane {
    pub(super) fn borrow(&self) -> Borrowed {
        let mut s = self.state.lock().expect("poisoned");
        s.idle.retain(|c| !c.is_closed());
        s.lent.retain(|(c, _)| !c.is_closed());
        if let Some(c) = s.idle.pop() {
            s.lent.push((c.clone(), 1));
            return Borrowed::Conn(c, true);
        }
        if s.lent.len() + s.opening < FETCH_CONNECTIONS || s.lent.is_empty() {
            s.opening += 1;
            return Borrowed::Open;
        }
        let (c, n) = s
            .lent
            .iter_mut()
            .min_by_key(|(_, n)| *n)
            .expect("lent is not empty");
        *n += 1;
        Borrowed::Conn(c.clone(), false)
    }

    pub(super) fn lend_new(&self, c: &Connection) {
        self.state
            .lock()
            .expect("poisoned")
            .lent
            .push((c.clone(), 1));
    }

    pub(super) fn give_back(&self, c: &Connection) {
        let mut s = self.state.lock().expect("poisoned");
        let Some(i) = s.lent.iter().position(|(l, _)| l.same(c)) else {
            return;
        };
        s.lent[i].1 -= 1;
        if s.lent[i].1 == 0 {
            let (c, _) = s.lent.swap_remove(i);
            if !c.is_closed() {
                s.idle.push(c);
            }
        }
    }

    /// How many fetch connections are open (idle, lent).
    #[cfg(test)]
    pub(super) fn open_connections(&self) -> (usize, usize) {
        let mut s = self.state.lock().expect("poisoned");
        s.idle.retain(|c| !c.is_closed());
        s.lent.retain(|(c, _)| !c.is_closed());
        (s.idle.len(), s.lent.len())
    }
}

/// Releases the slot a fetch connection's connect reserved, however the connect ends (the
/// dispatching future may be dropped mid-connect).
pub(super) struct Opening<'a>(pub(super) &'a FetchLane);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("poisoned").opening -= 1;
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
}

impl Lease {
    pub(super) fn shared(conn: Connection) -> Lease {
        Lease {
            conn,
            fetch: None,
            busy: false,
            exclusive: false,
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

    use kafka_protocol::messages::{FetchResponse, MetadataRequest, MetadataResponse};

    use crate::pool::testing::*;

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
