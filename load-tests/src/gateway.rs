//! A gateway to measure or test: `tollgate serve` as a child process on free loopback ports,
//! with one tenant, one cluster and one token provisioned through its admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::admin::{Admin, Tenancy};
use crate::procs::{self, Child};

/// The gateway's output (stdout and stderr) goes to this file in its data dir.
pub const LOG_FILE: &str = "gateway.log";

/// How to start a gateway: [`Launch::new`] has the required parts, the rest has defaults.
pub struct Launch {
    /// The `tollgate` binary.
    pub bin: PathBuf,
    /// `--pool-bootstrap`, host:port[,host:port...].
    pub pool_bootstrap: String,
    /// The data dir (created when missing); the log goes to [`LOG_FILE`] in it.
    pub dir: PathBuf,
    /// More arguments for `tollgate serve`, after the ones the launcher sets.
    pub extra_args: Vec<String>,
    /// More environment variables for the process (it always gets `NO_COLOR=1`).
    pub envs: Vec<(String, String)>,
    /// Tenant id and cluster name to provision.
    pub tenant: String,
    pub cluster: String,
    /// How long the gateway may take to answer on both listeners.
    pub startup_timeout: Duration,
    /// `--lanes`: nodes the gateway presents, each on its own port from the Kafka listener's.
    pub lanes: usize,
    /// CPUs the gateway may run on (a `taskset -c` list); `None`: any.
    pub cpus: Option<String>,
    /// How the provisioned cluster's quotas are set; by default the gateway's defaults.
    pub quotas: crate::admin::QuotaSetting,
}

impl Launch {
    pub fn new(bin: impl Into<PathBuf>, pool_bootstrap: &str, dir: impl Into<PathBuf>) -> Self {
        Launch {
            bin: bin.into(),
            pool_bootstrap: pool_bootstrap.to_owned(),
            dir: dir.into(),
            extra_args: Vec::new(),
            envs: Vec::new(),
            tenant: "load".into(),
            cluster: "load".into(),
            startup_timeout: Duration::from_secs(20),
            lanes: 3,
            cpus: None,
            quotas: crate::admin::QuotaSetting::Defaults,
        }
    }

    /// Adds arguments for `tollgate serve`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable for the gateway process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the gateway, waits until its admin API is healthy, provisions the tenant, and
    /// waits until its Kafka listener accepts connections. Errors carry the tail of its log.
    pub fn start(&self) -> Result<Gateway> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // One run of free ports for the lanes and the admin API: picked apart, the admin port
        // could be one a lane is about to take (both come from the same ephemeral range).
        let kafka = procs::free_port_run(self.lanes + 1)?;
        let admin_addr = SocketAddr::new(kafka.ip(), kafka.port() + self.lanes as u16);
        let admin_token = format!(
            "load-tests-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let mut args: Vec<String> = [
            "serve",
            "--pool-bootstrap",
            &self.pool_bootstrap,
            "--kafka-listen",
            &kafka.to_string(),
            "--admin-listen",
            &admin_addr.to_string(),
            "--data-dir",
            &dir.display().to_string(),
            "--admin-token",
            &admin_token,
            "--lanes",
            &self.lanes.to_string(),
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.extra_args.iter().cloned());
        let mut envs = vec![("NO_COLOR", "1")];
        envs.extend(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut cmd = procs::command_on(&self.bin, self.cpus.as_deref());
        cmd.args(&args).envs(envs);
        let mut process = Child::spawn_command("tollgate", cmd, dir.join(LOG_FILE))?;
        let deadline = Instant::now() + self.startup_timeout;
        process
            .wait_listening(admin_addr, deadline)
            .context("starting the gateway")?;
        let admin = Admin::new(admin_addr, &admin_token);
        admin
            .wait_healthy(deadline)
            .with_context(|| format!("gateway log:\n{}", process.log_tail(20)))?;
        let tenancy = admin
            .provision(&self.tenant, &self.cluster, self.quotas)
            .with_context(|| {
                format!(
                    "provisioning through the admin API; gateway log:\n{}",
                    process.log_tail(20)
                )
            })?;
        process.wait_listening(kafka, deadline)?;
        Ok(Gateway {
            process,
            kafka,
            admin,
            tenancy,
        })
    }
}

/// A running gateway with one provisioned tenant cluster; killed when dropped.
pub struct Gateway {
    pub process: Child,
    /// Its Kafka listener (also the address it advertises).
    pub kafka: SocketAddr,
    /// Its admin API.
    pub admin: Admin,
    /// The provisioned cluster and a token for it.
    pub tenancy: Tenancy,
}

impl Gateway {
    /// SASL PLAIN user name and password for the provisioned cluster.
    pub fn sasl_plain(&self) -> (String, String) {
        ("load-tests".into(), self.tenancy.token.clone())
    }

    /// A librdkafka configuration that reaches the provisioned cluster through the gateway
    /// (bootstrap and SASL PLAIN with the token).
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let (user, password) = self.sasl_plain();
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", self.kafka.to_string())
            .set("security.protocol", "SASL_PLAINTEXT")
            .set("sasl.mechanisms", "PLAIN")
            .set("sasl.username", user)
            .set("sasl.password", password);
        c
    }

    /// The last `lines` lines of the gateway's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The log of a gateway started in `dir`, whether or not it is still running.
    pub fn log_in(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default()
    }
}
