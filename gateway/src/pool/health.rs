//! Which brokers answer: the prober ([`Pool::run_prober`]) and the check after a failed
//! request ([`Pool::suspect`]).
//!
//! Both ask for ApiVersions, never on a lane a tenant's request could be queued on, so a
//! broker busy with long polls or held JoinGroups still answers in time: a live broker on its
//! probe connection (kept open between rounds), a down or suspect one on a connection of its
//! own, with short timeouts.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::broker::Broker;
use super::connection::Connection;
use super::error::UpstreamError;
use super::membership::Pool;

/// The prober's connect timeout: a broker on the same network accepts well within it.
const PROBE_CONNECT: Duration = Duration::from_secs(1);
/// How long the prober waits for ApiVersions on a connection of its own.
const PROBE_ANSWER: Duration = Duration::from_secs(2);

impl Pool {
    /// A request to `addr` failed on an open connection (dropped, or no answer in time): asks
    /// the broker at once on a fresh connection, and marks it down only if that fails too.
    /// One check per broker at a time, however many requests failed.
    pub fn suspect(&self, addr: &str) {
        let Some(broker) = self.broker(addr) else {
            return;
        };
        if broker.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            broker.checking.store(false, Ordering::Release);
            return;
        };
        let pool = self.clone();
        runtime.spawn(async move {
            match broker.probe().await {
                Ok(versions) => pool.answered(&broker, &versions, false),
                Err(e) => pool.mark_down(&broker.addr, &e.to_string()),
            }
            broker.checking.store(false, Ordering::Release);
        });
    }

    /// Watches every registered broker until `stop` completes. Every `interval`:
    ///
    /// - a down broker is asked for ApiVersions on a connection of its own (1 s to connect);
    ///   when it answers it is live again.
    /// - a live broker is asked for ApiVersions on its probe connection, which carries nothing
    ///   else, so no tenant's request can delay it. If that answer does not come, a fresh
    ///   connection decides, and the broker is down if that fails too. A broker that died
    ///   while no request touched it is noticed within about one interval.
    pub async fn run_prober(self, interval: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = self.probe_all(interval) => {}
            }
        }
    }

    async fn probe_all(&self, interval: Duration) {
        let members = self.members();
        // Dropping the set (when `stop` completes mid-round) aborts the probes.
        let mut probes = tokio::task::JoinSet::new();
        for (broker, live) in members {
            let pool = self.clone();
            probes.spawn(async move { pool.probe(&broker, live, interval).await });
        }
        while probes.join_next().await.is_some() {}
    }

    async fn probe(&self, broker: &Arc<Broker>, live: bool, interval: Duration) {
        if live {
            // On the broker's probe connection, which carries nothing but probes: tenants'
            // requests (long polls, held JoinGroups) can never queue a probe behind them.
            let wait = interval.max(PROBE_ANSWER);
            if let Ok(Ok(_)) = tokio::time::timeout(wait, broker.probe_kept()).await {
                return;
            }
            broker.drop_probe_connection();
        }
        match broker.probe().await {
            Ok(versions) => self.answered(broker, &versions, false),
            Err(e) => self.mark_down(&broker.addr, &e.to_string()),
        }
    }
}

impl Broker {
    /// Asks for ApiVersions on the broker's probe connection (opened if needed), which no
    /// other request uses.
    async fn probe_kept(&self) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        let kept = self.probe_conn.lock().expect("poisoned").clone();
        let conn = match kept.filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.addr, PROBE_CONNECT, &self.security).await?;
                *self.probe_conn.lock().expect("poisoned") = Some(c.clone());
                c
            }
        };
        self.api_versions_on(Some(&conn)).await
    }

    fn drop_probe_connection(&self) {
        if let Some(c) = self.probe_conn.lock().expect("poisoned").take() {
            c.abandon("probe unanswered");
        }
    }

    /// Asks for ApiVersions on a connection of its own, with short timeouts: whether the broker
    /// answers at all, whatever its lanes are busy with, and however recently a connect failed.
    async fn probe(&self) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        let conn = Connection::open(&self.addr, PROBE_CONNECT, &self.security).await;
        self.record_connect(&conn);
        let conn = conn?;
        let answer = tokio::time::timeout(PROBE_ANSWER, self.api_versions_on(Some(&conn))).await;
        conn.close("probe done");
        answer.unwrap_or_else(|_| {
            Err(UpstreamError::Timeout {
                addr: self.addr.clone(),
                timeout: PROBE_ANSWER,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    //! Against real tansu brokers (memory engine), as the integration tests are: the pool is
    //! never mocked. tansu comes from `TOLLGATE_TANSU` or `tansu` on PATH.

    use super::*;
    use crate::pool::testing::*;
    use crate::pool::Timeouts;
    use kafka_protocol::messages::ApiKey;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn the_prober_follows_a_broker_up_and_down() {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let pool = Pool::new(Timeouts::default());
        pool.add_configured(&addr);
        assert!(!pool.is_live(&addr));
        assert!(pool.brokers().is_empty());
        assert_eq!(pool.all_brokers().len(), 1);

        let (stop, stopped) = oneshot::channel::<()>();
        let prober = tokio::spawn(pool.clone().run_prober(Duration::from_millis(200), async {
            let _ = stopped.await;
        }));
        // A few rounds find nothing listening.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!pool.is_live(&addr));
        assert_eq!(pool.versions(ApiKey::Fetch), None, "nobody answered yet");

        let before = pool.generation();
        let tansu = Tansu::start_on(port).await;
        eventually("the prober finds the broker", || async {
            pool.is_live(&addr)
        })
        .await;
        assert!(pool.generation() > before);
        assert_eq!(pool.brokers().len(), 1);
        assert!(pool.versions(ApiKey::Fetch).is_some());

        // Nothing but the prober talks to it: the prober alone notices it is gone.
        let before = pool.generation();
        tansu.kill().await;
        eventually("the prober finds the broker gone", || async {
            !pool.is_live(&addr)
        })
        .await;
        assert!(pool.generation() > before);
        assert!(pool.brokers().is_empty());
        assert_eq!(pool.all_brokers().len(), 1);

        stop.send(()).unwrap();
        prober.await.unwrap();
    }
}
