//! The Kafka listener: accepts connections and hands each to [`crate::connection::serve`].
//!
//! A semaphore bounds live connections and [`sources`] the connections and connection
//! attempts of each source address; shutdown is a broadcast that every connection task
//! listens to, and "all connections finished" is observed by waiting for every permit to come
//! back (mini-redis's design), for at most [`DRAIN`]: a client that does not read its last
//! answers cannot hold the gateway's stop (and its final usage flush) hostage.

pub mod proxy_protocol;
pub mod sources;
pub mod tls;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Semaphore};

use proxy_protocol::ProxyProtocol;

use crate::state::Gateway;
use sources::Sources;

/// How long a stopping gateway lets connections finish the answers already dispatched.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Listener {
    /// One per lane (see [`crate::state::GatewayConfig::lanes`]); every one serves everything.
    pub listeners: Vec<TcpListener>,
    pub gateway: Gateway,
    pub max_connections: usize,
    /// TLS on every lane, when configured (the config in use at each handshake).
    pub tls: Option<Arc<tls::Reloading>>,
    /// How client certificates' subjects become principals (mutual TLS).
    pub principal_rules: Arc<crate::identity::certificate::PrincipalRules>,
    /// Whose PROXY protocol headers are believed.
    pub proxy: ProxyProtocol,
}

impl Listener {
    /// Accepts on every listener until `shutdown` resolves, then tells every connection to
    /// finish and waits for them.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let limits = &self.gateway.config().limits;
        let sources = Sources::new(
            limits.connections_per_source,
            limits.connection_attempts_per_source,
        );
        let (notify, _) = broadcast::channel::<()>(1);
        let (stop, stopped) = watch::channel(false);
        let accepting: Vec<_> = self
            .listeners
            .into_iter()
            .map(|listener| {
                let shared = Accepting {
                    gateway: self.gateway.clone(),
                    tls: self.tls.clone(),
                    principal_rules: self.principal_rules.clone(),
                    proxy: self.proxy.clone(),
                    limit: limit.clone(),
                    sources: sources.clone(),
                    notify: notify.clone(),
                };
                tokio::spawn(accept(listener, shared, stopped.clone()))
            })
            .collect();
        shutdown.await;
        let _ = stop.send(true);
        for task in accepting {
            let _ = task.await;
        }
        let _ = notify.send(());
        // Every permit back means every connection task has finished.
        let all = limit.acquire_many(self.max_connections as u32);
        if tokio::time::timeout(DRAIN, all).await.is_err() {
            tracing::warn!(
                open = self.max_connections - limit.available_permits(),
                "connections still open after the drain period; stopping without them"
            );
        }
    }
}

/// What every lane's accept loop shares.
#[derive(Clone)]
struct Accepting {
    gateway: Gateway,
    tls: Option<Arc<tls::Reloading>>,
    principal_rules: Arc<crate::identity::certificate::PrincipalRules>,
    proxy: ProxyProtocol,
    /// Live connections, all lanes together.
    limit: Arc<Semaphore>,
    sources: Sources,
    /// Tells every connection the gateway is stopping.
    notify: broadcast::Sender<()>,
}

/// One listener's accept loop, until `stopped` turns true; the listener closes when it ends.
async fn accept(listener: TcpListener, shared: Accepting, mut stopped: watch::Receiver<bool>) {
    let Accepting {
        gateway,
        tls,
        principal_rules,
        proxy,
        limit,
        sources,
        notify,
    } = shared;
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = until_stopped(&mut stopped) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = until_stopped(&mut stopped) => break,
        };
        // A trusted load balancer's connections are many clients: each is limited as the
        // client its PROXY header names, once that is read.
        let behind_balancer = proxy.believes(peer.ip());
        let source = if behind_balancer {
            None
        } else {
            match sources.admit(peer.ip(), std::time::Instant::now()) {
                Ok(guard) => Some(guard),
                Err(refusal) => {
                    // Closed before a byte is read: the cheapest answer to a flood. Logged at
                    // debug only, since a flood would otherwise flood the log too.
                    tracing::debug!(%peer, %refusal, "connection refused");
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let gw = gateway.clone();
        let rx = notify.subscribe();
        let (tls, proxy, sources) = (tls.clone(), proxy.clone(), sources.clone());
        let rules = principal_rules.clone();
        tokio::spawn(async move {
            // The PROXY header and the TLS handshake count against the time a client has to
            // authenticate.
            let deadline = gw.config().limits.sasl_deadline;
            let (client, stream) =
                match tokio::time::timeout(deadline, proxy.accept(stream, peer)).await {
                    Ok(Ok(accepted)) => accepted,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no PROXY header in time");
                        return;
                    }
                };
            let source = match source {
                Some(guard) => guard,
                None => match sources.admit(client.ip(), std::time::Instant::now()) {
                    Ok(guard) => guard,
                    Err(refusal) => {
                        tracing::debug!(%peer, %client, %refusal, "connection refused");
                        return;
                    }
                },
            };
            let client = client.to_string();
            let seen;
            match tls {
                None => crate::connection::serve(gw, stream, client, None, rx).await,
                Some(tls) => match tokio::time::timeout(deadline, {
                    // Before the handshake: a list loaded during it is looked at once more.
                    seen = crate::identity::mtls::Revocations::generation(tls.as_ref());
                    tls.acceptor().accept(stream)
                })
                .await
                {
                    Ok(Ok(stream)) => {
                        // Verified by the handshake; what it names is the principal's to say.
                        let certified = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| crate::identity::mtls::identify(leaf, &rules));
                        match certified {
                            Some(Err(why)) => {
                                tracing::info!(peer = %client, %why, "client certificate refused");
                            }
                            Some(Ok(identity)) => {
                                let revocations: Arc<dyn crate::identity::mtls::Revocations> =
                                    tls.clone();
                                let certified = crate::identity::mtls::Certified::new(
                                    identity,
                                    revocations,
                                    seen,
                                );
                                crate::connection::serve(gw, stream, client, Some(certified), rx)
                                    .await
                            }
                            None => crate::connection::serve(gw, stream, client, None, rx).await,
                        }
                    }
                    // A client speaking plaintext to a TLS listener, or a scanner: debug only,
                    // as a flood would flood the log.
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %client, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %client, "TLS handshake not finished in time"),
                },
            }
            drop(source);
            drop(permit);
        });
    }
}

async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    while !*stopped.borrow_and_update() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}
