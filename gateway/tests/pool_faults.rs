//! A leader-based pool that moves leaders and loses a broker while clients run through the
//! gateway: every acknowledged record is consumed exactly once, no delivery fails, and the
//! consumer sees no non-retriable error.
//!
//! The pool is librdkafka's mock cluster (3 brokers, node ids 1-3, in this process), the
//! gateway the real `tollgate serve` binary, the clients librdkafka through the gateway with
//! SASL PLAIN: an idempotent producer (acks=all) sending 20,000 records at 2,000/s to 6
//! partitions, and a consumer assigned all 6 from the beginning.
//!
//! Mock cluster APIs used (`rdkafka::mocking::MockCluster`):
//! - `create_topic`: the mock does not implement CreateTopics (neither directly nor through the
//!   gateway, which advertises only what the pool supports), so the topic is created on the
//!   pool under its physical name `tg-<cluster uuid hex>-events`, as a pool operator would;
//! - `partition_leader` (`rd_kafka_mock_partition_set_leader`): leaders spread over brokers
//!   1-3 at the start, then all moved to the next broker four times while clients run; each
//!   move bumps the partition's leader epoch, and the old leader answers
//!   NOT_LEADER_OR_FOLLOWER;
//! - `broker_down` / `broker_up` (`rd_kafka_mock_broker_set_down/up`): broker 2 refuses and
//!   drops connections for 2 s. The mock does not move leaders off a down broker, so the
//!   partitions it leads are unavailable meanwhile: produce and fetch must be retried, not
//!   failed;
//! - `bootstrap_servers`, given whole to the gateway as `--pool-bootstrap`, and read directly
//!   afterwards for the ground truth of what the log holds.
//!
//! Run: `cargo test -p tollgate-gateway --test pool_faults -- --nocapture`.

mod support;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use tollgate_load_tests::gateway::Launch;

use support::{stamp, ProduceSpec};

const BROKERS: i32 = 3;
const PARTITIONS: i32 = 6;
const RECORDS: u64 = 20_000;
const RATE: f64 = 2_000.0;

#[test]
fn leader_moves_and_a_broker_down_lose_and_duplicate_nothing() {
    support::watchdog(Duration::from_secs(150));
    let t0 = Instant::now();
    let mock = MockCluster::new(BROKERS).expect("creating librdkafka's mock cluster");
    let bootstrap = mock.bootstrap_servers();
    let dir = support::scratch_dir("pool-faults");
    let mut launch = Launch::new(env!("CARGO_BIN_EXE_tollgate"), &bootstrap, &dir);
    launch.tenant = "acme".into();
    launch.cluster = "faults".into();
    let mut gw = launch
        .start()
        .unwrap_or_else(|e| panic!("starting the gateway against the mock cluster: {e:#}"));
    eprintln!(
        "{} gateway at {} (log {}), mock cluster at {bootstrap}",
        stamp(t0),
        gw.kafka,
        dir.join(tollgate_load_tests::gateway::LOG_FILE).display()
    );

    let topic = "events";
    let physical = format!("{}{topic}", gw.tenancy.pool_prefix);
    mock.create_topic(&physical, PARTITIONS, 1)
        .expect("creating the topic on the mock cluster");
    let lead = |shift: i32| {
        for p in 0..PARTITIONS {
            let broker = (p + shift) % BROKERS + 1;
            mock.partition_leader(&physical, p, Some(broker))
                .unwrap_or_else(|e| panic!("moving the leader of {p} to {broker}: {e}"));
        }
    };
    lead(0);

    let client = gw.client_config();
    let producer = support::spawn_producer(
        &client,
        ProduceSpec {
            topic: topic.into(),
            partitions: PARTITIONS,
            records: RECORDS,
            rate: RATE,
            size: 64,
            stop: Arc::new(AtomicBool::new(false)),
            message_timeout: Duration::from_secs(15),
        },
    );
    let consumer =
        support::spawn_consumer(&client, topic, PARTITIONS, t0 + Duration::from_secs(100));

    // The faults, while the producer sends for RECORDS / RATE = 10 s.
    let started = Instant::now();
    let at = |s: f64| {
        let due = started + Duration::from_secs_f64(s);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    };
    at(1.0);
    lead(1);
    eprintln!("{} leaders moved", stamp(t0));
    at(2.5);
    lead(2);
    eprintln!("{} leaders moved", stamp(t0));
    at(4.0);
    mock.broker_down(2).expect("taking broker 2 down");
    eprintln!("{} broker 2 down", stamp(t0));
    at(6.0);
    mock.broker_up(2).expect("bringing broker 2 up");
    eprintln!("{} broker 2 up", stamp(t0));
    at(7.0);
    lead(3);
    eprintln!("{} leaders moved", stamp(t0));
    at(8.5);
    lead(4);
    eprintln!("{} leaders moved", stamp(t0));

    let (produced, consumed, complete) = support::finish_clients(
        producer,
        consumer,
        t0,
        || gw.log_tail(40),
        Duration::from_secs(50),
        Duration::from_secs(1),
        Duration::from_secs(10),
    );
    let log = support::read_all(&bootstrap, &physical, PARTITIONS, Duration::from_secs(10));
    let gateway_exit = gw.process.exited();

    let verdict = support::verdict(&produced, &consumed, complete, &log);
    eprintln!("{} {}", stamp(t0), verdict.summary);
    let mut failures = verdict.failures;
    if let Some(exit) = gateway_exit {
        failures.push(format!("the gateway died: {exit}"));
    }
    assert!(
        failures.is_empty(),
        "through the gateway, over leader moves and a broker down for 2 s:\n- {}\n\n{}\n\n\
         gateway log (last 40 lines):\n{}",
        failures.join("\n- "),
        verdict.summary,
        gw.log_tail(40)
    );
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
