//! The Redis store against a real `redis-server` (Debian's), started on a free port per test.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tollgate_meter::counters::CounterSet;
use tollgate_meter::flusher::{ClusterSource, ClusterState, Flusher};
use tollgate_meter::redis_store::RedisStore;
use tollgate_meter::store::{BoxFuture, Counts, UsageStore};
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

/// One cluster, created at `created_at`, with 2 partitions.
struct OneCluster {
    cluster: Uuid,
    created_at: i64,
}

impl ClusterSource for OneCluster {
    fn clusters(&self) -> BoxFuture<'_, Vec<ClusterState>> {
        let state = ClusterState {
            cluster: self.cluster,
            created_at: self.created_at,
            deleted_at: None,
            counts: Some(Counts {
                partitions: 2,
                stored_bytes: 0,
            }),
        };
        Box::pin(async move { vec![state] })
    }
}

async fn cluster_seconds(store: &RedisStore, c: Uuid) -> u64 {
    let rows = store.hourly(c, 0, i64::MAX).await.unwrap();
    rows.iter().map(|r| r.cluster_seconds).sum()
}

/// Issue 13: with its clock key gone (evicted, deleted, a partial restore), a cluster's accrual
/// restarted from its creation and billed its whole lifetime again.
#[tokio::test]
async fn a_lost_accrual_clock_accrues_no_second_twice() {
    let server = Server::start();
    let store = store(&server);
    let c = Uuid::new_v4();
    let created_at = 1_704_067_200;
    let source = OneCluster {
        cluster: c,
        created_at,
    };
    let mut flusher = Flusher::new("gw-a", CounterSet::default(), store.clone());
    // Two hours and a bit, over several flushes.
    for now in [created_at + 100, created_at + 3_000, created_at + 7_300] {
        flusher.tick(&source, now).await.unwrap();
    }
    assert_eq!(cluster_seconds(&store, c).await, 7_300);

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let clock_key = format!("tg:clock:{}", c.as_hyphenated());
    let deleted: u64 = redis::cmd("DEL")
        .arg(&clock_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    // A later hour holding bytes only (no accrual ended there) must not confuse the healing.
    let bytes_only = tollgate_meter::store::Flush {
        instance: "gw-bytes".into(),
        seq: 1,
        bytes: vec![tollgate_meter::HourlyUsage {
            bytes_in: 5,
            ..tollgate_meter::HourlyUsage::zero(c, created_at + 5 * 3_600)
        }],
        principals: Vec::new(),
        accruals: Vec::new(),
    };
    store.apply(&bytes_only).await.unwrap();

    // The clock reads where accrual stopped, for this instance and for a fresh one.
    assert_eq!(
        store.clocks(&[c]).await.unwrap(),
        vec![Some(created_at + 7_300)]
    );
    flusher.tick(&source, created_at + 7_400).await.unwrap();
    let mut fresh = Flusher::new("gw-b", CounterSet::default(), store.clone());
    fresh.tick(&source, created_at + 7_500).await.unwrap();
    assert_eq!(cluster_seconds(&store, c).await, 7_500);
    let rows = store.hourly(c, 0, i64::MAX).await.unwrap();
    let partition_seconds: u64 = rows.iter().map(|r| r.partition_seconds).sum();
    assert_eq!(partition_seconds, 2 * 7_500);
    assert!(rows.iter().all(|r| r.cluster_seconds <= 3_600));
}
