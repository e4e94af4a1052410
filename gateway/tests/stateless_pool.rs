//! A stateless pool that grows and shrinks while clients run through the gateway: nothing
//! acknowledged is lost, no delivery fails, the consumer sees no non-retriable error, and
//! (idempotent producer) nothing is consumed twice.
//!
//! The pool is three tansu brokers A, B, C sharing one SQLite file (`sqlite://tansu.db`, each
//! run in the same directory; every one reports node id 111 and claims every partition). Only
//! A runs when the gateway starts, as `tollgate serve --pool-kind stateless --pool-bootstrap
//! A,B,C`: the gateway probes B and C every second and takes each into the pool once it
//! answers. While an idempotent producer (acks=all, 200-byte records at 250/s, 6 partitions;
//! tansu's SQLite engine writes only a few MB/s) and a consumer (all partitions assigned from
//! the beginning) run through the gateway, B starts, then C, then A is killed (SIGKILL);
//! producing goes on for a few seconds, then stops, and the consumer drains.
//!
//! tansu comes from `TOLLGATE_TANSU` or `tansu` on PATH (`scripts/install-deps.sh`).
//!
//! Run: `cargo test -p tollgate-gateway --test stateless_pool -- --nocapture`.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_load_tests::gateway::Launch;
use tollgate_load_tests::procs::{self, Child};

use support::{stamp, ProduceSpec};

const PARTITIONS: i32 = 6;
const RATE: f64 = 250.0;
const SIZE: usize = 200;

/// Three distinct loopback addresses nothing listens on right now (held open together while
/// chosen, so they differ).
fn three_free_addrs() -> [SocketAddr; 3] {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let held = [bind(), bind(), bind()];
    held.map(|l| l.local_addr().expect("local address"))
}

/// A tansu broker on `addr` in `pool_dir`, over the pool's shared SQLite file.
fn tansu_broker(tansu: &Path, pool_dir: &Path, name: &str, addr: SocketAddr) -> Child {
    let url = format!("tcp://{addr}");
    let mut cmd = Command::new(tansu);
    cmd.arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        // Relative to the working directory: `sqlite:///abs/path` is misread.
        .args(["--storage-engine", "sqlite://tansu.db"])
        .args(["--cluster-id", "tollgate-test"])
        // tansu also reads these from the environment; the test's must not leak in.
        .env_remove("LISTENER_URL")
        .env_remove("ADVERTISED_LISTENER_URL")
        .env_remove("STORAGE_ENGINE")
        .env_remove("CLUSTER_ID")
        .env("RUST_LOG", "warn")
        .current_dir(pool_dir);
    let mut child = Child::spawn_command(
        &format!("tansu {name}"),
        cmd,
        pool_dir.join(format!("broker-{name}.log")),
    )
    .unwrap_or_else(|e| panic!("starting tansu {name}: {e:#}"));
    child
        .wait_listening(addr, Instant::now() + Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("tansu {name} on {addr}: {e:#}"));
    child
}

/// What a tansu log says about the two storage failures seen with several brokers on one
/// SQLite file: "database is locked" (a write colliding with another process's; tansu 0.6.0
/// sets no busy timeout, so it fails at once and the producer gets UNKNOWN_SERVER_ERROR), and
/// `QueryReturnedNoRows` in produce (an idempotent producer epoch tansu did not hand out:
/// librdkafka bumps the epoch itself after such an error, and tansu 0.6.0 knows only epochs
/// from InitProducerId, so every later produce of that producer fails the same way).
fn storage_trouble(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    format!(
        "{} x \"database is locked\", {} x QueryReturnedNoRows",
        text.matches("database is locked").count(),
        text.matches("QueryReturnedNoRows").count()
    )
}

fn tansu_program() -> PathBuf {
    let program = std::env::var("TOLLGATE_TANSU").unwrap_or_else(|_| "tansu".into());
    procs::resolve(&program).unwrap_or_else(|| {
        panic!(
            "tansu not found ({program}): run scripts/install-deps.sh, or set TOLLGATE_TANSU \
             to its path"
        )
    })
}

#[test]
fn brokers_join_and_leave_a_stateless_pool_without_losing_records() {
    support::watchdog(Duration::from_secs(150));
    let t0 = Instant::now();
    let tansu = tansu_program();
    let dir = support::scratch_dir("stateless-pool");
    let pool_dir = dir.join("pool");
    std::fs::create_dir_all(&pool_dir).expect("creating the pool dir");
    let [a, b, c] = three_free_addrs();

    let mut broker_a = tansu_broker(&tansu, &pool_dir, "a", a);
    eprintln!("{} tansu A on {a} (B will be {b}, C {c})", stamp(t0));
    let mut launch = Launch::new(
        env!("CARGO_BIN_EXE_tollgate"),
        &format!("{a},{b},{c}"),
        dir.join("gateway"),
    )
    .args(["--pool-kind", "stateless"]);
    launch.tenant = "acme".into();
    launch.cluster = "stateless".into();
    let mut gw = launch
        .start()
        .unwrap_or_else(|e| panic!("starting the gateway with only A of A,B,C running: {e:#}"));
    eprintln!("{} gateway at {}", stamp(t0), gw.kafka);

    let topic = "events";
    let physical = format!("{}{topic}", gw.tenancy.pool_prefix);
    let client = gw.client_config();
    support::create_topic(&client, topic, PARTITIONS).unwrap_or_else(|e| {
        panic!(
            "creating the topic through the gateway: {e}\ngateway log:\n{}",
            gw.log_tail(30)
        )
    });
    eprintln!(
        "{} topic {topic} created ({physical} on the pool)",
        stamp(t0)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let producer = support::spawn_producer(
        &client,
        ProduceSpec {
            topic: topic.into(),
            partitions: PARTITIONS,
            records: 100_000,
            rate: RATE,
            size: SIZE,
            stop: stop.clone(),
            message_timeout: Duration::from_secs(15),
        },
    );
    let consumer =
        support::spawn_consumer(&client, topic, PARTITIONS, t0 + Duration::from_secs(110));

    let started = Instant::now();
    let at = |s: f64| {
        let due = started + Duration::from_secs_f64(s);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    };
    at(4.0);
    let broker_b = tansu_broker(&tansu, &pool_dir, "b", b);
    eprintln!("{} tansu B up", stamp(t0));
    at(9.0);
    let broker_c = tansu_broker(&tansu, &pool_dir, "c", c);
    eprintln!("{} tansu C up", stamp(t0));
    at(14.0);
    broker_a.kill();
    eprintln!("{} tansu A killed", stamp(t0));
    at(20.0);
    stop.store(true, Ordering::Relaxed);
    eprintln!("{} producing stopped", stamp(t0));

    let (produced, consumed, complete) = support::finish_clients(
        producer,
        consumer,
        t0,
        || gw.log_tail(40),
        Duration::from_secs(40),
        Duration::from_secs(2),
        Duration::from_secs(15),
    );
    let log = support::read_all(
        &b.to_string(),
        &physical,
        PARTITIONS,
        Duration::from_secs(15),
    );
    let gateway_exit = gw.process.exited();

    let verdict = support::verdict(&produced, &consumed, complete, &log);
    eprintln!("{} {}", stamp(t0), verdict.summary);
    let mut failures = verdict.failures;
    if let Some(exit) = gateway_exit {
        failures.push(format!("the gateway died: {exit}"));
    }
    let mut brokers = vec![("B", broker_b), ("C", broker_c)];
    for (name, broker) in &mut brokers {
        if let Some(exit) = broker.exited() {
            failures.push(format!("tansu {name} died: {exit}"));
        }
    }
    let all_brokers: Vec<(&str, &Child)> = [("A", &broker_a)]
        .into_iter()
        .chain(brokers.iter().map(|(n, b)| (*n, b)))
        .collect();
    let broker_logs: String = all_brokers
        .iter()
        .map(|(name, broker)| {
            format!(
                "tansu {name}: {}; last 10 lines:\n{}\n",
                storage_trouble(broker.log_path()),
                broker.log_tail(10)
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "through the gateway, while B and C joined the pool and A left it:\n- {}\n\n{}\n\n\
         gateway log (last 40 lines):\n{}\n\n{broker_logs}",
        failures.join("\n- "),
        verdict.summary,
        gw.log_tail(40)
    );
    drop((gw, brokers, broker_a));
    let _ = std::fs::remove_dir_all(&dir);
}
