//! The broker pools the benchmark runs against: librdkafka's in-process mock cluster (in
//! memory: fast enough not to hide the gateway's cost) and a tansu broker with its memory
//! engine (a real server in its own process).
//!
//! The gateway still routes each request whole to one pool broker, chosen by a hash of the
//! topic over the brokers it knows. On the mock cluster, whose partitions have real leaders,
//! that only works when one broker leads every partition the benchmark uses and is the only one
//! the gateway is given. So by default the mock cluster has one broker, which leads everything
//! (for the direct runs too, so both paths see the same pool). Moving the leaders of a
//! 3-broker cluster onto one broker instead costs the mock 20-50 ms per partition, 5-16 s per
//! topic of 293 partitions; the mock runs all its brokers on one thread either way. With
//! `--spread-leaders` it has three, leaders spread, for when the gateway splits requests per
//! leader.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tollgate_load_tests::procs::{self, Child};

use crate::workload::{self, Endpoint};

/// librdkafka names the mock cluster's thread so.
pub const MOCK_THREADS: &str = "rdk:mock";

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
    /// Brokers of the mock cluster.
    mock_brokers: i32,
    mock: Option<MockCluster<'static, DefaultProducerContext>>,
    process: Option<Child>,
    /// The Redis the pool's gateways share (`--start-redis`), started and stopped with the pool.
    redis: Option<Child>,
}

impl Pool {
    /// The mock cluster, in this process; `cpus`: where its thread runs (`--pin` on three CPUs
    /// or more), else wherever this process does.
    pub fn mock(spread_leaders: bool, cpus: Option<&str>) -> Result<Pool> {
        let brokers = if spread_leaders { 3 } else { 1 };
        let mock = MockCluster::new(brokers).context("creating librdkafka's mock cluster")?;
        if let Some(cpus) = cpus {
            if crate::pin::pin_threads(MOCK_THREADS, cpus)? == 0 {
                bail!("found no {MOCK_THREADS} thread to move to CPUs {cpus}");
            }
        }
        let bootstrap = mock.bootstrap_servers();
        Ok(Pool {
            kind: PoolKind::Mock,
            gateway_bootstrap: bootstrap.clone(),
            bootstrap,
            mock_brokers: brokers,
            mock: Some(mock),
            process: None,
            redis: None,
        })
    }

    /// One tansu broker with its memory engine; `cpus`: where it runs (`--pin` on three CPUs or
    /// more), else wherever this process does.
    pub fn tansu(program: &str, work: &Path, cpus: Option<&str>) -> Result<Pool> {
        let Some(path) = procs::resolve(program) else {
            bail!(
                "tansu not found ({program}): install it (`cargo install tansu --version 0.6.0 \
                 --locked --features \"dynostore libsql postgres\"`) or pass --tansu PATH"
            );
        };
        let addr = procs::free_addr()?;
        let url = format!("tcp://{addr}");
        let mut cmd = procs::command_on(&path, cpus);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .env("RUST_LOG", "warn");
        let mut child = Child::spawn_command("tansu", cmd, work.join("tansu.log"))?;
        child.wait_listening(addr, Instant::now() + Duration::from_secs(20))?;
        Ok(Pool {
            kind: PoolKind::Tansu,
            bootstrap: addr.to_string(),
            gateway_bootstrap: addr.to_string(),
            mock_brokers: 0,
            mock: None,
            process: Some(child),
            redis: None,
        })
    }

    /// Creates a benchmark topic. `pool_name` is its name on the pool, `client_name` the one
    /// `ep`'s clients use (they differ through the gateway).
    ///
    /// The mock cluster does not implement CreateTopics (neither directly nor through the
    /// gateway), so there the topic is created with the mock's own API under its pool name, as
    /// a pool operator would; tansu gets a CreateTopics request through `ep`.
    pub fn create_topic(
        &self,
        ep: &Endpoint,
        client_name: &str,
        pool_name: &str,
        partitions: i32,
    ) -> Result<()> {
        match &self.mock {
            Some(mock) => mock
                .create_topic(pool_name, partitions, 1)
                .with_context(|| format!("creating {pool_name} on the mock cluster")),
            None => workload::create_topic(ep, client_name, partitions),
        }
    }

    /// Deletes a benchmark topic once measured, so that the pool's store does not grow over
    /// the run (tansu's memory engine slows down as it fills). The mock cluster cannot delete
    /// topics; it keeps at most 5 MiB per partition anyway.
    pub fn delete_topic(&self, ep: &Endpoint, client_name: &str) -> Result<()> {
        match &self.mock {
            Some(_) => Ok(()),
            None => workload::delete_topic(ep, client_name),
        }
    }

    /// Starts a `redis-server` for the pool's gateways on a free loopback port, without
    /// persistence, its log in `work`; `cpus`: where it runs. Returns its URL.
    pub fn start_redis(&mut self, cpus: Option<&str>, work: &Path) -> Result<String> {
        let Some(path) = procs::resolve("redis-server") else {
            bail!("redis-server not found on PATH (--start-redis): apt-get install redis-server");
        };
        let addr = procs::free_addr()?;
        let mut cmd = procs::command_on(&path, cpus);
        cmd.args([
            "--port",
            &addr.port().to_string(),
            "--bind",
            &addr.ip().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .current_dir(work);
        let mut child = Child::spawn_command("redis-server", cmd, work.join("redis.log"))?;
        child.wait_listening(addr, Instant::now() + Duration::from_secs(10))?;
        self.redis = Some(child);
        Ok(format!("redis://{addr}/"))
    }

    /// CPU seconds used by the Redis of `--start-redis`, when there is one.
    pub fn redis_cpu_seconds(&self) -> Option<f64> {
        self.redis.as_ref().and_then(|c| c.cpu_seconds().ok())
    }

    /// CPU seconds used by the pool's own process, when it has one.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.process.as_ref().and_then(|c| c.cpu_seconds().ok())
    }

    /// `Some(reason)` when the pool's process, or its Redis, has died.
    pub fn died(&mut self) -> Option<String> {
        [self.process.as_mut(), self.redis.as_mut()]
            .into_iter()
            .flatten()
            .find_map(|child| {
                let exit = child.exited()?;
                Some(format!("{exit}:\n{}", child.log_tail(20)))
            })
    }

    pub fn describe(&self) -> String {
        let pool = self.describe_pool();
        match &self.redis {
            Some(redis) => format!(
                "{pool}; the gateways' Redis started for it (log {})",
                redis.log_path().display()
            ),
            None => pool,
        }
    }

    fn describe_pool(&self) -> String {
        match self.kind {
            PoolKind::Mock if self.mock_brokers == 1 => format!(
                "mock cluster, 1 broker at {} leading every partition",
                self.bootstrap
            ),
            PoolKind::Mock => format!(
                "mock cluster, {} brokers at {}, leaders spread; the gateway is given all",
                self.mock_brokers, self.bootstrap
            ),
            PoolKind::Tansu => format!(
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
