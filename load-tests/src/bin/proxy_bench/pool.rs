//! The broker pools the benchmark runs against: librdkafka's in-process mock cluster (3
//! brokers, in memory: fast enough not to hide the gateway's cost) and a tansu broker with its
//! memory engine (a real server in its own process).
//!
//! The gateway still routes each request whole to one pool broker, chosen by a hash of the
//! topic over the brokers it knows. On the mock cluster, whose partitions have real leaders,
//! that only works when one broker leads every partition the benchmark uses and is the only one
//! the gateway is given; [`Pool::create_topic`] arranges that (for the direct runs too, so both paths
//! see the same pool) unless leaders are spread on purpose.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::DefaultProducerContext;

use crate::procs::{self, Child};
use crate::workload::{self, Endpoint};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// librdkafka's mock cluster, in this process.
    Mock,
    /// One tansu broker with the memory engine, as a child process.
    Tansu,
}

impl PoolKind {
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Mock => "mock",
            PoolKind::Tansu => "tansu",
        }
    }
}

pub struct Pool {
    pub kind: PoolKind,
    /// Bootstrap servers for direct clients.
    pub bootstrap: String,
    /// What the gateway is given as `--pool-bootstrap`.
    pub gateway_bootstrap: String,
    /// The broker every partition and coordinator is pinned to (mock, leaders not spread).
    pinned: Option<i32>,
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    process: Option<Child>,
}

impl Pool {
    pub fn mock(spread_leaders: bool) -> Result<Pool> {
        let mock = MockCluster::new(3).context("creating librdkafka's mock cluster")?;
        let bootstrap = mock.bootstrap_servers();
        let (pinned, gateway_bootstrap) = if spread_leaders {
            (None, bootstrap.clone())
        } else {
            let (id, addr) = lowest_broker(&bootstrap)?;
            (Some(id), addr)
        };
        Ok(Pool {
            kind: PoolKind::Mock,
            bootstrap,
            gateway_bootstrap,
            pinned,
            mock: Some(mock),
            process: None,
        })
    }

    pub fn tansu(program: &str, work: &Path) -> Result<Pool> {
        let Some(path) = procs::resolve(program) else {
            bail!(
                "tansu not found ({program}): install it (`cargo install tansu --version 0.6.0 \
                 --locked --features \"dynostore libsql postgres\"`) or pass --tansu PATH"
            );
        };
        let addr = procs::free_addr()?;
        let url = format!("tcp://{addr}");
        let args = [
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ]
        .map(String::from);
        let mut child = Child::spawn(
            "tansu",
            &path,
            &args,
            &[("RUST_LOG", "warn")],
            work.join("tansu.log"),
        )?;
        child.wait_listening(addr, Instant::now() + Duration::from_secs(20))?;
        Ok(Pool {
            kind: PoolKind::Tansu,
            bootstrap: addr.to_string(),
            gateway_bootstrap: addr.to_string(),
            pinned: None,
            mock: None,
            process: Some(child),
        })
    }

    /// Creates a benchmark topic and places it. `pool_name` is its name on the pool,
    /// `client_name` the one `ep`'s clients use (they differ through the gateway).
    ///
    /// The mock cluster does not implement CreateTopics (neither directly nor through the
    /// gateway), so there the topic is created with the mock's own API under its pool name, as
    /// a pool operator would; tansu gets a CreateTopics request through `ep`. Then, when leaders
    /// are pinned, the leaders of its partitions and the coordinator of `pool_group` move to
    /// the pinned broker.
    pub fn create_topic(
        &self,
        ep: &Endpoint,
        client_name: &str,
        pool_name: &str,
        partitions: i32,
        pool_group: &str,
    ) -> Result<()> {
        let Some(mock) = &self.mock else {
            return workload::create_topic(ep, client_name, partitions);
        };
        mock.create_topic(pool_name, partitions, 1)
            .with_context(|| format!("creating {pool_name} on the mock cluster"))?;
        let Some(id) = self.pinned else {
            return Ok(());
        };
        for p in 0..partitions {
            mock.partition_leader(pool_name, p, Some(id))
                .with_context(|| format!("moving the leader of {pool_name}/{p} to broker {id}"))?;
        }
        mock.coordinator(MockCoordinator::Group(pool_group.to_owned()), id)
            .with_context(|| format!("pinning the coordinator of group {pool_group}"))?;
        Ok(())
    }

    /// CPU seconds used by the pool's own process, when it has one.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.process.as_ref().and_then(|c| c.cpu_seconds().ok())
    }

    /// `Some(reason)` when the pool's process has died.
    pub fn died(&mut self) -> Option<String> {
        let child = self.process.as_mut()?;
        let exit = child.exited()?;
        Some(format!("{exit}:\n{}", child.log_tail(20)))
    }

    pub fn describe(&self) -> String {
        match (self.kind, self.pinned) {
            (PoolKind::Mock, Some(id)) => format!(
                "mock cluster, 3 brokers at {}; every benchmark partition and group pinned to \
                 broker {id} ({}), the only one the gateway is given",
                self.bootstrap, self.gateway_bootstrap
            ),
            (PoolKind::Mock, None) => format!(
                "mock cluster, 3 brokers at {}, leaders spread; the gateway is given all three",
                self.bootstrap
            ),
            (PoolKind::Tansu, _) => format!(
                "tansu, memory engine, at {} (log {})",
                self.bootstrap,
                self.process
                    .as_ref()
                    .map(|c| c.log_path().display().to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// The id and address of the mock broker with the lowest id, from the cluster's metadata.
fn lowest_broker(bootstrap: &str) -> Result<(i32, String)> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating a metadata client for the mock cluster")?;
    let md = client
        .fetch_metadata(None, Duration::from_secs(10))
        .context("reading the mock cluster's metadata")?;
    let b = md
        .brokers()
        .iter()
        .min_by_key(|b| b.id())
        .context("the mock cluster lists no brokers")?;
    Ok((b.id(), format!("{}:{}", b.host(), b.port())))
}
