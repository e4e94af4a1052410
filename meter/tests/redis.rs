//! The Redis store against a real `redis-server` (Debian's), started on a free port per test.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tollgate_meter::counters::CounterSet;
use tollgate_meter::flusher::{ClusterSource, ClusterState, Flusher};
use tollgate_meter::redis_store::RedisStore;
use tollgate_meter::store::{BoxFuture, UsageStore};
use uuid::Uuid;

/// A redis-server of our own, with an append-only file so a restart keeps its data.
struct Server {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tollgate-redis-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Server {
            port,
            dir,
            child: None,
        };
        s.restart();
        s
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is required (apt-get install redis-server, or scripts/install-deps.sh)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// SIGTERM: Redis finishes its append-only file and exits.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct NoClusters;

impl ClusterSource for NoClusters {
    fn clusters(&self) -> BoxFuture<'_, Vec<ClusterState>> {
        Box::pin(async { Vec::new() })
    }
}

fn store(server: &Server) -> Arc<RedisStore> {
    Arc::new(RedisStore::connect(&server.url(), Duration::from_secs(2)).unwrap())
}

async fn bytes_in(store: &RedisStore, c: Uuid) -> u64 {
    store
        .hourly(c, 0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.bytes_in)
        .sum()
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let server = Server::start();
    support::check(store(&server).as_ref()).await;
}

#[tokio::test]
async fn two_instances_counting_at_once_add_up_exactly() {
    let server = Server::start();
    let c = Uuid::new_v4();
    let mut tasks = Vec::new();
    for instance in ["gw-a", "gw-b"] {
        let store = store(&server);
        tasks.push(tokio::spawn(async move {
            let counters = CounterSet::default();
            let svc = counters.counters(c, instance);
            let mut flusher = Flusher::new(instance, counters.clone(), store);
            for i in 0..200u64 {
                svc.add_in(i);
                flusher.tick(&NoClusters, 1_000 + i as i64).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected = 2 * (0..200u64).sum::<u64>();
    assert_eq!(bytes_in(&store(&server), c).await, expected);
}

#[tokio::test]
async fn redis_down_for_a_while_loses_nothing() {
    let mut server = Server::start();
    let c = Uuid::new_v4();
    let store = store(&server);
    let counters = CounterSet::default();
    let svc = counters.counters(c, "svc");
    let mut flusher = Flusher::new("gw", counters.clone(), store.clone());
    let mut expected = 0;
    for i in 0..10u64 {
        svc.add_in(i + 1);
        expected += i + 1;
        flusher.tick(&NoClusters, 5_000).await.unwrap();
    }
    server.stop();
    // Counting goes on; flushes fail and queue up.
    let mut failures = 0;
    for i in 0..10u64 {
        svc.add_in(100 + i);
        expected += 100 + i;
        if flusher.tick(&NoClusters, 5_000).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 10, "every flush should fail while Redis is down");
    assert!(flusher.backlog() > 0);
    server.restart();
    let mut drained = false;
    for _ in 0..50 {
        if flusher.tick(&NoClusters, 5_000).await.is_ok() {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained, "backlog never drained after Redis came back");
    assert_eq!(flusher.backlog(), 0);
    assert_eq!(bytes_in(&store, c).await, expected);
}
