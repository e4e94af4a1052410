//! A leader-based pool's brokers found from its own metadata (`--pool-discover metadata`, the
//! default for Apache Kafka pools), on librdkafka's mock cluster: the gateway is given one
//! bootstrap address and learns the others, and a resize waits until the pool names and
//! serves as many brokers as it asked for.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use tollgate_gateway::pool::autoscale::actuator::command::CommandScaler;
use tollgate_gateway::pool::autoscale::actuator::{Discovery, ExternalPool, Scaler};
use tollgate_gateway::pool::autoscale::Actuator;
use tollgate_gateway::pool::{BrokerState, Pool, Timeouts};

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_pools_brokers_come_from_its_metadata() {
    let mock = MockCluster::new(3).expect("creating librdkafka's mock cluster");
    let bootstrap = mock.bootstrap_servers();
    let first = bootstrap.split(',').next().unwrap().to_owned();
    let pool = Pool::new(Timeouts::default());
    pool.add_broker(&first)
        .await
        .expect("the mock broker answers");
    tokio::spawn(
        pool.clone()
            .run_prober(Duration::from_millis(200), std::future::pending()),
    );
    let log = std::env::temp_dir().join(format!(
        "tollgate-metadata-discovery-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log);
    let scaler = CommandScaler::new(
        &format!("echo {{n}} >> {}", log.display()),
        Duration::from_secs(10),
    )
    .unwrap();
    let external = ExternalPool::start(
        pool.clone(),
        Scaler::Command(scaler),
        Discovery::Metadata,
        vec![first.clone()],
        Duration::from_secs(20),
    )
    .await
    .expect("the pool names its brokers");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let live_named = || {
        pool.states()
            .into_iter()
            .filter(|(a, s)| *s == BrokerState::Live && *a != first)
            .count()
    };
    while live_named() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let states = pool.states();
    assert!(
        states
            .iter()
            .filter(|(_, s)| *s == BrokerState::Live)
            .count()
            >= 3,
        "every broker the metadata names is taken in: {states:?}"
    );
    // The pool already has 3: the resize asks the operator's command and returns once 3 are
    // named and serving.
    assert_eq!(external.resize(3).await, Ok(3));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "3\n");
    // Asking for more than the pool comes to fails after the ready timeout, saying how many
    // serve (the mock cluster cannot grow).
    let short = ExternalPool::start(
        pool.clone(),
        Scaler::Command(CommandScaler::new("true {n}", Duration::from_secs(5)).unwrap()),
        Discovery::Metadata,
        vec![first.clone()],
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let e = short.resize(4).await.unwrap_err();
    assert!(e.contains("asked for 4 brokers; 3 serving"), "{e}");
    let _ = std::fs::remove_file(&log);
}
