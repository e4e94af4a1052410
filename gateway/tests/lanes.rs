//! Lanes: what a client sees of a pool's brokers through the gateway.
//!
//! The gateway presents `--lanes` nodes per address (lane l on its Kafka port + l), and leads
//! every partition from the lane of the pool broker that serves it, so a client's request to
//! one node goes to one pool broker whole. The pool is librdkafka's mock cluster (in this
//! process), the gateway the real `tollgate serve`, the client librdkafka's metadata call
//! through the gateway with SASL PLAIN.
//!
//! Run: `cargo test -p tollgate-gateway --test lanes -- --nocapture`.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use tollgate_load_tests::gateway::{Gateway, Launch};

const PARTITIONS: i32 = 12;

/// Partition -> leader node id, and the node ids listed, as a client sees them.
fn seen(gw: &Gateway, topic: &str) -> (HashMap<i32, i32>, Vec<(i32, String)>) {
    let consumer: BaseConsumer = gw.client_config().create().expect("a client");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata through the gateway");
    let brokers = md
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    let t = &md.topics()[0];
    assert!(t.error().is_none(), "topic error: {:?}", t.error());
    let leaders = t
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect();
    (leaders, brokers)
}

fn start(mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>, name: &str) -> Gateway {
    let dir = support::scratch_dir(name);
    let launch = Launch::new(
        env!("CARGO_BIN_EXE_tollgate"),
        &mock.bootstrap_servers(),
        &dir,
    );
    launch
        .start()
        .unwrap_or_else(|e| panic!("starting the gateway against the mock cluster: {e:#}"))
}

/// Three pool brokers, three lanes: one gateway node per pool broker, partitions led by the
/// same pool broker shown on the same node and different ones on different nodes, and a
/// leader move followed.
#[test]
fn each_pool_broker_gets_a_node_of_its_own() {
    support::watchdog(Duration::from_secs(60));
    let mock = MockCluster::new(3).expect("creating librdkafka's mock cluster");
    let gw = start(&mock, "lanes-three");
    let physical = format!("{}events", gw.tenancy.pool_prefix);
    mock.create_topic(&physical, PARTITIONS, 1).unwrap();
    let lead = |shift: i32| {
        for p in 0..PARTITIONS {
            mock.partition_leader(&physical, p, Some((p + shift) % 3 + 1))
                .unwrap();
        }
    };
    for shift in [0, 1] {
        lead(shift);
        let (leaders, brokers) = seen(&gw, "events");
        // Lane l listens on the Kafka listener's port + l.
        let lane_addrs: Vec<(i32, String)> = (0..3)
            .map(|l| {
                (
                    l + 1,
                    format!("127.0.0.1:{}", i32::from(gw.kafka.port()) + l),
                )
            })
            .collect();
        let mut listed = brokers.clone();
        listed.sort();
        assert_eq!(listed, lane_addrs, "the gateway's three lanes");
        // The pool leader of p is (p + shift) % 3 + 1: the gateway's node must be a function
        // of it, one to one.
        let mut node_of_pool: HashMap<i32, i32> = HashMap::new();
        for (p, node) in &leaders {
            let pool_leader = (p + shift) % 3 + 1;
            let known = *node_of_pool.entry(pool_leader).or_insert(*node);
            assert_eq!(
                known, *node,
                "partition {p} (pool leader {pool_leader}) on node {node}, its broker's other \
                 partitions on {known}: {leaders:?}"
            );
        }
        let distinct: BTreeSet<i32> = node_of_pool.values().copied().collect();
        assert_eq!(
            distinct.len(),
            3,
            "three pool leaders on three nodes: {node_of_pool:?}"
        );
    }
}

/// One pool broker, three lanes: its partitions are spread over all three nodes, so a client
/// still keeps three fetches in flight.
#[test]
fn a_single_broker_is_spread_over_every_lane() {
    support::watchdog(Duration::from_secs(60));
    let mock = MockCluster::new(1).expect("creating librdkafka's mock cluster");
    let gw = start(&mock, "lanes-one");
    let physical = format!("{}events", gw.tenancy.pool_prefix);
    mock.create_topic(&physical, PARTITIONS, 1).unwrap();
    let (leaders, brokers) = seen(&gw, "events");
    assert_eq!(brokers.len(), 3, "three nodes: {brokers:?}");
    let used: BTreeSet<i32> = leaders.values().copied().collect();
    let listed: BTreeSet<i32> = brokers.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        used, listed,
        "every node leads some of the 12 partitions: {leaders:?}"
    );
}
