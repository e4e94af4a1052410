//! The Kafka listener: accepts connections and hands each to [`crate::connection::serve`].
//!
//! A semaphore bounds live connections; shutdown is a broadcast that every connection task
//! listens to, and "all connections finished" is observed by waiting for every permit to come
//! back (mini-redis's design).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};

use crate::state::Gateway;

pub struct Listener {
    pub listener: TcpListener,
    pub gateway: Gateway,
    pub max_connections: usize,
}

impl Listener {
    /// Accepts until `shutdown` resolves, then tells every connection to finish and waits for
    /// them.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let (notify, _) = broadcast::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => p.expect("semaphore is never closed"),
                _ = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let gw = self.gateway.clone();
            let rx = notify.subscribe();
            tokio::spawn(async move {
                crate::connection::serve(gw, stream, peer.to_string(), rx).await;
                drop(permit);
            });
        }
        drop(self.listener);
        let _ = notify.send(());
        // Every permit back means every connection task has finished.
        let _ = limit.acquire_many(self.max_connections as u32).await;
    }
}
