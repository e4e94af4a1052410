//! The actuator of a pool someone else runs (`tollgate serve`): a [`Scaler`] asks for a number
//! of brokers (an operator's command, or the Kubernetes API), a [`Discovery`] says where they
//! are, and the gateway's [`Pool`] takes them into and out of the routing.
//!
//! A resize, as the [`Actuator`] contract asks:
//!
//! 1. Scale-in with an ordered discovery: the leaving brokers (the last ones) are drained first:
//!    out of the routing, their requests in flight finished ([`Pool::drain`]).
//! 2. The scaler is asked for `n` brokers.
//! 3. Ordered discovery: brokers joining are registered as starting, and routed to once they
//!    answer. Observed discovery: the discovery loop ([`ExternalPool::run`]) registers the
//!    brokers that appear and drains the ones that disappear.
//! 4. It returns once `n` brokers are live, or fails after the ready timeout saying how many are.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest};

use super::command::CommandScaler;
use super::discovery::Discovery;
use super::kubernetes::KubernetesScaler;
use super::Actuator;
use crate::pool::{BrokerState, Pool, DRAIN_TIMEOUT};
use crate::pool_admin::BoxFuture;

/// What asks for a number of brokers.
pub enum Scaler {
    Command(CommandScaler),
    Kubernetes(KubernetesScaler),
}

impl Scaler {
    async fn scale(&self, n: u32) -> Result<(), String> {
        match self {
            Scaler::Command(c) => c.scale(n).await,
            Scaler::Kubernetes(k) => k.scale(n).await,
        }
    }

    /// The size asked for now, if the scaler can say.
    async fn replicas(&self) -> Result<Option<u32>, String> {
        match self {
            Scaler::Command(_) => Ok(None),
            Scaler::Kubernetes(k) => k.replicas().await.map(Some),
        }
    }
}

/// How often an observed discovery looks again.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// The pool of a `tollgate serve`, resized by a [`Scaler`].
pub struct ExternalPool {
    pool: Pool,
    scaler: Scaler,
    discovery: Discovery,
    /// Addresses given with `--pool-bootstrap`: never taken out because discovery does not
    /// name them (a leader-based pool's bootstrap Service is no broker of its metadata).
    configured: HashSet<String>,
    /// The size last asked for; held through a resize, so resizes do not interleave.
    asked: tokio::sync::Mutex<u32>,
    /// How long a resize waits for the brokers it asked for.
    ready_timeout: Duration,
    /// What an observed discovery found last.
    found: std::sync::Mutex<HashSet<String>>,
}

impl ExternalPool {
    /// Takes over `pool` (with `configured` already in it): learns the size asked for now
    /// (from the scaler, else from what the discovery finds) and registers the brokers an
    /// ordered discovery names for it.
    pub async fn start(
        pool: Pool,
        scaler: Scaler,
        discovery: Discovery,
        configured: Vec<String>,
        ready_timeout: Duration,
    ) -> Result<ExternalPool, String> {
        let external = ExternalPool {
            pool,
            scaler,
            discovery,
            configured: configured.into_iter().collect(),
            asked: tokio::sync::Mutex::new(0),
            ready_timeout,
            found: Default::default(),
        };
        let size = match external.scaler.replicas().await? {
            Some(n) => n,
            None => external.found().await,
        };
        if let Some(bound) = external.discovery.bound() {
            if size > bound {
                return Err(format!(
                    "the pool has {size} brokers but --pool-discover lists {bound}"
                ));
            }
        }
        if let Some(addrs) = external.discovery.first(size) {
            for addr in addrs {
                if external.pool.add_broker(&addr).await.is_err() {
                    external.pool.add_starting(&addr);
                }
            }
        }
        external.sync().await;
        *external.asked.lock().await = size.max(1);
        tracing::info!(
            brokers = size,
            discovery = %external.discovery,
            "pool actuator ready"
        );
        Ok(external)
    }

    /// How many brokers there are without asking the scaler: an ordered discovery's leading
    /// brokers that answer, or what an observed one finds.
    async fn found(&self) -> u32 {
        match &self.discovery {
            Discovery::List(_) | Discovery::Ordinal(_) => {
                let mut n = 0;
                let bound = self.discovery.bound().unwrap_or(u32::MAX).min(1_000);
                while n < bound {
                    let addr = self.discovery.first(n + 1).and_then(|mut a| a.pop());
                    match addr {
                        Some(addr) if self.pool.add_broker(&addr).await.is_ok() => n += 1,
                        _ => break,
                    }
                }
                n
            }
            Discovery::Dns { .. } => self
                .discovery
                .resolve()
                .await
                .map_or(0, |a| u32::try_from(a.len()).unwrap_or(u32::MAX)),
            Discovery::Metadata => self.named().await.map_or(0, |a| a.len() as u32),
        }
    }

    /// The brokers the pool's metadata names.
    async fn named(&self) -> Result<HashSet<String>, String> {
        let (_, max) = self
            .pool
            .versions(ApiKey::Metadata)
            .ok_or("the pool does not answer Metadata")?;
        let req = MetadataRequest::default().with_topics(Some(Vec::new()));
        let mut last = "the pool has no live broker".to_owned();
        for broker in self.pool.brokers() {
            match broker.call(max.min(12), &req).await {
                Ok(resp) => {
                    return Ok(resp
                        .brokers
                        .iter()
                        .map(|b| format!("{}:{}", b.host.as_str(), b.port))
                        .collect())
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// For an observed discovery: registers brokers that appeared, drains ones that are gone.
    async fn sync(&self) {
        let found: HashSet<String> = match &self.discovery {
            Discovery::Dns { .. } => match self.discovery.resolve().await {
                // An empty answer is a DNS hiccup more often than a pool of none: keep what is.
                Ok(a) if !a.is_empty() => a.into_iter().collect(),
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "pool discovery failed; keeping the brokers known");
                    return;
                }
            },
            Discovery::Metadata => match self.named().await {
                Ok(named) if !named.is_empty() => named,
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "pool metadata unavailable; keeping the brokers known");
                    return;
                }
            },
            Discovery::List(_) | Discovery::Ordinal(_) => return,
        };
        found.clone_into(&mut self.found.lock().expect("poisoned"));
        let states = self.pool.states();
        let mut changes = tokio::task::JoinSet::new();
        for addr in &found {
            if !states.iter().any(|(a, _)| a == addr) {
                // Live at once if it answers; else starting until the prober hears from it.
                let (pool, addr) = (self.pool.clone(), addr.clone());
                changes.spawn(async move {
                    if pool.add_broker(&addr).await.is_err() {
                        pool.add_starting(&addr);
                    }
                    true
                });
            }
        }
        for (addr, state) in states {
            if found.contains(&addr)
                || self.configured.contains(&addr)
                || state == BrokerState::Draining
            {
                continue;
            }
            tracing::info!(broker = %addr, discovery = %self.discovery, "pool broker no longer discovered");
            let pool = self.pool.clone();
            changes.spawn(async move { pool.drain(&addr, DRAIN_TIMEOUT).await });
        }
        while changes.join_next().await.is_some() {}
    }

    /// Keeps an observed discovery's brokers in the pool until `stop`.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        if !self.discovery.observed() {
            return;
        }
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(DISCOVERY_INTERVAL) => {}
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.sync() => {}
            }
        }
    }

    /// The live brokers that count towards the size: an ordered discovery's first `n`, or
    /// the live ones an observed discovery found.
    fn serving(&self, n: u32) -> u32 {
        let live = self.pool.brokers();
        let count = match self.discovery.first(n) {
            Some(wanted) => live
                .iter()
                .filter(|b| wanted.iter().any(|w| w == b.addr()))
                .count(),
            None => {
                let found = self.found.lock().expect("poisoned");
                live.iter().filter(|b| found.contains(b.addr())).count()
            }
        };
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Drains an ordered discovery's brokers from `n` up to `before`, all at once.
    async fn drain_leaving(&self, n: u32, before: u32) {
        if let (Some(keep), Some(all)) = (self.discovery.first(n), self.discovery.first(before)) {
            let leaving: Vec<String> = all.into_iter().filter(|a| !keep.contains(a)).collect();
            let mut drains = tokio::task::JoinSet::new();
            for addr in leaving {
                let pool = self.pool.clone();
                drains.spawn(async move { pool.drain(&addr, DRAIN_TIMEOUT).await });
            }
            while drains.join_next().await.is_some() {}
        }
    }

    /// Registers an ordered discovery's first `n` brokers not yet in the pool, as starting.
    fn take_in(&self, n: u32) {
        if let Some(addrs) = self.discovery.first(n) {
            for addr in addrs {
                if self.pool.state(&addr).is_none() {
                    self.pool.add_starting(&addr);
                }
            }
        }
    }

    async fn follow_to(&self, n: u32) {
        let mut asked = self.asked.lock().await;
        let n = n.max(1).min(self.discovery.bound().unwrap_or(u32::MAX));
        if n < *asked {
            tracing::info!(brokers = n, "following the deciding instance's scale-in");
            self.drain_leaving(n, *asked).await;
        }
        self.take_in(n);
        *asked = n;
    }

    async fn resize_to(&self, n: u32) -> Result<u32, String> {
        let mut asked = self.asked.lock().await;
        let n = n.max(1);
        if let Some(bound) = self.discovery.bound() {
            if n > bound {
                return Err(format!(
                    "asked for {n} brokers but --pool-discover lists only {bound}"
                ));
            }
        }
        let before = *asked;
        if n < before {
            if let (Some(keep), Some(all)) = (self.discovery.first(n), self.discovery.first(before))
            {
                let leaving: Vec<String> = all.into_iter().filter(|a| !keep.contains(a)).collect();
                let mut drains = tokio::task::JoinSet::new();
                for addr in leaving {
                    let pool = self.pool.clone();
                    drains.spawn(async move { pool.drain(&addr, DRAIN_TIMEOUT).await });
                }
                while drains.join_next().await.is_some() {}
            }
        }
        self.scaler.scale(n).await?;
        *asked = n;
        if let Some(addrs) = self.discovery.first(n) {
            for addr in addrs {
                if self.pool.state(&addr).is_none() {
                    self.pool.add_starting(&addr);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        loop {
            self.sync().await;
            let serving = self.serving(n);
            if serving == n || (n > before && serving > n) {
                return Ok(n);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "asked for {n} brokers; {serving} serving after {:?}",
                    self.ready_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Actuator for ExternalPool {
    fn resize(&self, brokers: u32) -> BoxFuture<'_, Result<u32, String>> {
        Box::pin(self.resize_to(brokers))
    }

    fn follow(&self, brokers: u32) -> BoxFuture<'_, ()> {
        Box::pin(self.follow_to(brokers))
    }
}

#[cfg(test)]
mod tests {
    //! The actuator against a **stub** Kubernetes API server (no real API server can run
    //! here): it answers the scale subresource as the API server does, records every request
    //! exactly, and plays the StatefulSet controller by starting and stopping real tansu
    //! brokers on the ports the discovery list names.

    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::pool::autoscale::actuator::kubernetes::{ApiConfig, KubernetesScaler, Target};
    use crate::pool::testing::{free_port, Tansu};
    use crate::pool::Timeouts;

    /// One request the stub saw, and which brokers the gateway had registered at that moment.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        authorization: Option<String>,
        content_type: Option<String>,
        body: String,
        registered: Vec<String>,
    }

    struct Stub {
        ports: Vec<u16>,
        replicas: u32,
        brokers: Vec<Option<Tansu>>,
        seen: Vec<Seen>,
        pool: Pool,
    }

    async fn answer(
        stub: Arc<tokio::sync::Mutex<Stub>>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
        let (authorization, content_type) = (header("authorization"), header("content-type"));
        let body = String::from_utf8(req.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        let mut stub = stub.lock().await;
        let registered = stub.pool.states().into_iter().map(|(a, _)| a).collect();
        stub.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization,
            content_type,
            body: body.clone(),
            registered,
        });
        if path != "/apis/apps/v1/namespaces/pool/statefulsets/tansu/scale" {
            let status = serde_json::json!({"kind": "Status", "status": "Failure",
                "message": format!("the server could not find {path}"), "code": 404});
            return Ok(Response::builder()
                .status(404)
                .body(Full::new(Bytes::from(status.to_string())))
                .unwrap());
        }
        if method == "PATCH" {
            let patch: serde_json::Value = serde_json::from_str(&body).unwrap();
            let n = patch["spec"]["replicas"].as_u64().unwrap() as usize;
            // The controller: pods below n run, the rest stop.
            for i in 0..stub.ports.len() {
                if i < n && stub.brokers[i].is_none() {
                    stub.brokers[i] = Some(Tansu::start_on(stub.ports[i]).await);
                } else if i >= n {
                    if let Some(t) = stub.brokers[i].take() {
                        t.kill().await;
                    }
                }
            }
            stub.replicas = n as u32;
        }
        let scale = serde_json::json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "tansu", "namespace": "pool"},
            "spec": {"replicas": stub.replicas}, "status": {"replicas": stub.replicas}});
        Ok(Response::new(Full::new(Bytes::from(scale.to_string()))))
    }

    async fn serve_stub(stub: Arc<tokio::sync::Mutex<Stub>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let stub = stub.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(stub.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn kubernetes_scale_grows_the_pool_and_drains_before_shrinking_it() {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let pool = Pool::new(Timeouts::default());
        tokio::spawn(
            pool.clone()
                .run_prober(Duration::from_millis(200), std::future::pending()),
        );
        let first = Tansu::start_on(ports[0]).await;
        let stub = Arc::new(tokio::sync::Mutex::new(Stub {
            ports: ports.clone(),
            replicas: 1,
            brokers: vec![Some(first), None, None],
            seen: Vec::new(),
            pool: pool.clone(),
        }));
        let url = serve_stub(stub.clone()).await;
        let dir = std::env::temp_dir().join(format!("tollgate-k8s-{}", ports[0]));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "sa-token-1\n").unwrap();
        let scaler = KubernetesScaler::new(
            Target::parse("statefulset/tansu").unwrap(),
            ApiConfig {
                url: Some(url.clone()),
                token_file: Some(token.clone()),
                ca_file: None,
                namespace: Some("pool".into()),
            },
        )
        .unwrap();
        let external = ExternalPool::start(
            pool.clone(),
            Scaler::Kubernetes(scaler),
            Discovery::List(addrs.clone()),
            Vec::new(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let live = |pool: &Pool| -> Vec<String> {
            let mut l: Vec<String> = pool.brokers().iter().map(|b| b.addr().to_owned()).collect();
            l.sort();
            l
        };
        assert_eq!(live(&pool), [addrs[0].clone()], "the size read at start: 1");

        assert_eq!(external.resize(3).await, Ok(3));
        let mut all = addrs.clone();
        all.sort();
        assert_eq!(live(&pool), all, "every broker asked for is routed to");

        // Kubernetes rotates projected tokens: each request reads the file again.
        std::fs::write(&token, "sa-token-2\n").unwrap();
        assert_eq!(external.resize(1).await, Ok(1));
        assert_eq!(live(&pool), [addrs[0].clone()]);
        assert_eq!(pool.states().len(), 1, "the leaving brokers are forgotten");
        for addr in &addrs[1..] {
            assert!(
                std::net::TcpStream::connect(addr).is_err(),
                "{addr} still runs"
            );
        }

        let seen = stub.lock().await.seen.clone();
        let path = "/apis/apps/v1/namespaces/pool/statefulsets/tansu/scale";
        // Method, path, authorization, content type, body.
        type Line<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a str);
        let summary: Vec<Line> = seen
            .iter()
            .map(|s| {
                (
                    s.method.as_str(),
                    s.path.as_str(),
                    s.authorization.as_deref(),
                    s.content_type.as_deref(),
                    s.body.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("GET", path, Some("Bearer sa-token-1"), None, ""),
                (
                    "PATCH",
                    path,
                    Some("Bearer sa-token-1"),
                    Some("application/merge-patch+json"),
                    r#"{"spec":{"replicas":3}}"#
                ),
                (
                    "PATCH",
                    path,
                    Some("Bearer sa-token-2"),
                    Some("application/merge-patch+json"),
                    r#"{"spec":{"replicas":1}}"#
                ),
            ]
        );
        // Drained before the pool was asked to stop them: by the scale-in PATCH, the leaving
        // brokers were already out of the gateway's pool.
        assert_eq!(seen[2].registered, [addrs[0].clone()], "{:?}", seen[2]);

        // Refusals come back with the API server's message.
        let missing = KubernetesScaler::new(
            Target::parse("deployment/nope").unwrap(),
            ApiConfig {
                url: Some(url),
                token_file: Some(token),
                ca_file: None,
                namespace: Some("pool".into()),
            },
        )
        .unwrap();
        let e = missing.scale(2).await.unwrap_err();
        assert!(
            e.contains("404") && e.contains("could not find") && e.contains("no such object"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_command_scales_and_the_pool_waits_for_the_brokers_it_asked_for() {
        // The operator's command here only records what it was asked; the brokers are real
        // tansu, all running, so the pool of n is the first n of the list.
        let brokers = [Tansu::start().await, Tansu::start().await];
        let addrs: Vec<String> = brokers.iter().map(|t| t.addr.clone()).collect();
        let dir = std::env::temp_dir().join(format!("tollgate-cmdpool-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("asked");
        let pool = Pool::new(Timeouts::default());
        tokio::spawn(
            pool.clone()
                .run_prober(Duration::from_millis(200), std::future::pending()),
        );
        let scaler = CommandScaler::new(
            &format!("echo {{n}} >> {}", log.display()),
            Duration::from_secs(10),
        )
        .unwrap();
        let external = ExternalPool::start(
            pool.clone(),
            Scaler::Command(scaler),
            Discovery::List(addrs.clone()),
            Vec::new(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        // Without a scaler to ask, the size is the list's leading brokers that answer.
        assert_eq!(pool.brokers().len(), 2);
        assert_eq!(external.resize(1).await, Ok(1));
        assert_eq!(
            pool.states()
                .into_iter()
                .map(|(a, s)| (a, s.name()))
                .collect::<Vec<_>>(),
            [(addrs[0].clone(), "live")]
        );
        assert_eq!(external.resize(2).await, Ok(2));
        assert_eq!(pool.brokers().len(), 2);
        let e = external.resize(3).await.unwrap_err();
        assert!(e.contains("lists only 2"), "{e}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n2\n");

        // Another instance decided: this one follows its routing without running the command.
        external.follow(1).await;
        assert_eq!(
            pool.states()
                .into_iter()
                .map(|(a, _)| a)
                .collect::<Vec<_>>(),
            [addrs[0].clone()],
            "the leaving broker drained"
        );
        external.follow(2).await;
        crate::pool::testing::eventually("the joining broker is routed to", || async {
            pool.brokers().len() == 2
        })
        .await;
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "1\n2\n",
            "following runs no command"
        );

        // A failing command fails the resize and says why.
        let failing = ExternalPool::start(
            pool.clone(),
            Scaler::Command(CommandScaler::new("exit 7 # {n}", Duration::from_secs(5)).unwrap()),
            Discovery::List(addrs.clone()),
            Vec::new(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let e = failing.resize(1).await.unwrap_err();
        assert!(e.contains("exit status: 7"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
