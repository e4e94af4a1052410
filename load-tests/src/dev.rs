//! `tollgate dev --brokers N` as a child process: the gateway and its own pool of tansu brokers
//! on one SQLite file in a fresh data dir, on free loopback ports, with one tenant cluster
//! provisioned (by default with its quotas enforced but never binding) and the autoscaler
//! sampling the load every second in shadow mode (it decides and records, and never resizes),
//! so that `GET /v1/pool/history` gives the load per second as the gateway itself counts it.
//!
//! Stopping it is SIGTERM (the gateway stops its brokers, after flushing usage), then SIGKILL
//! for whatever of the process tree is left: SIGKILL alone would orphan the brokers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::admin::Admin;
use crate::gateway::Gateway;
use crate::procs::{self, Child};

/// The stack's output (stdout and stderr) goes to this file in its data dir.
pub const LOG_FILE: &str = "dev.log";

/// How long `tollgate dev` has to stop its brokers on SIGTERM before the rest is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// How to start `tollgate dev`.
pub struct DevLaunch {
    /// The `tollgate` binary.
    pub bin: PathBuf,
    /// The tansu binary (`--tansu`).
    pub tansu: String,
    /// Pool brokers (`--brokers`); the gateway presents one lane per broker.
    pub brokers: usize,
    /// The data dir: created, and expected to be empty (the pool's SQLite file goes there).
    pub dir: PathBuf,
    /// How long the stack may take to start its brokers and answer on both listeners.
    pub startup_timeout: Duration,
    /// How the provisioned cluster's quotas are set; by default unbound (enforced, never
    /// binding), so the load measures the pool, not the quotas (the defaults would hold it to
    /// 15,000 requests/s, 5 MiB/s per partition and 100 new connections a second).
    pub quotas: crate::admin::QuotaSetting,
}

impl DevLaunch {
    pub fn new(bin: impl Into<PathBuf>, tansu: &str, brokers: usize, dir: PathBuf) -> Self {
        DevLaunch {
            bin: bin.into(),
            tansu: tansu.to_owned(),
            brokers: brokers.max(1),
            dir,
            startup_timeout: Duration::from_secs(60),
            quotas: crate::admin::QuotaSetting::Unbound,
        }
    }

    /// Starts the stack, waits for its admin API, provisions a tenant cluster and waits for
    /// its Kafka listener. Errors carry the tail of its log.
    pub fn start(&self) -> Result<DevStack> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Interval 1 s, pool fixed at its size, shadow mode: the history gets a sample per
        // second and nothing is resized. A target is required; it drives no change here.
        let policy = serde_json::json!({
            "min_brokers": self.brokers, "max_brokers": self.brokers,
            "interval_seconds": 1, "mode": "shadow",
            "target_per_broker": {"bytes_in_per_second": 1_048_576},
        });
        let policy_file = dir.join("shadow-policy.json");
        std::fs::write(&policy_file, policy.to_string())
            .with_context(|| format!("writing {}", policy_file.display()))?;
        let lanes = self.brokers;
        let kafka = procs::free_port_run(lanes + 1)?;
        let admin_addr = SocketAddr::new(kafka.ip(), kafka.port() + lanes as u16);
        let admin_token = format!("load-tests-dev-{}", std::process::id());
        let args: Vec<String> = vec![
            "dev".into(),
            "--tansu".into(),
            self.tansu.clone(),
            "--brokers".into(),
            self.brokers.to_string(),
            "--kafka-listen".into(),
            kafka.to_string(),
            "--admin-listen".into(),
            admin_addr.to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--admin-token".into(),
            admin_token.clone(),
            "--autoscale-policy".into(),
            policy_file.display().to_string(),
            // Every client here comes from 127.0.0.1: the per-source limits (3,000 open, 100
            // new a second) would measure the limits, not the pool.
            "--max-connections-per-source".into(),
            "0".into(),
            "--connection-attempts-per-source".into(),
            "0".into(),
        ];
        let started = Instant::now();
        let envs = [("NO_COLOR", "1"), ("RUST_LOG", "warn")];
        let mut process =
            Child::spawn("tollgate dev", &self.bin, &args, &envs, dir.join(LOG_FILE))?;
        let deadline = started + self.startup_timeout;
        process
            .wait_listening(admin_addr, deadline)
            .context("starting tollgate dev")?;
        let admin = Admin::new(admin_addr, &admin_token);
        admin
            .wait_healthy(deadline)
            .with_context(|| format!("tollgate dev log:\n{}", process.log_tail(20)))?;
        let tenancy = admin
            .provision("calibrate", "calibrate", self.quotas)
            .with_context(|| {
                format!(
                    "provisioning through the admin API; tollgate dev log:\n{}",
                    process.log_tail(20)
                )
            })?;
        process.wait_listening(kafka, deadline)?;
        Ok(DevStack {
            gateway: Gateway {
                process,
                kafka,
                admin,
                tenancy,
            },
            brokers: self.brokers,
            dir: dir.clone(),
            startup: started.elapsed(),
        })
    }
}

/// A running `tollgate dev`; stopped (politely first) when dropped.
pub struct DevStack {
    /// The gateway: its process (`tollgate dev`; the brokers are its children), listeners,
    /// admin client and provisioned cluster.
    pub gateway: Gateway,
    pub brokers: usize,
    pub dir: PathBuf,
    /// From starting the process to the Kafka listener accepting, brokers started.
    pub startup: Duration,
}

/// One second of load as the gateway counted it (`GET /v1/pool/history`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LoadSample {
    /// Seconds since the Unix epoch at the end of the second it covers.
    pub time: u64,
    pub bytes_in_per_second: u64,
    pub bytes_out_per_second: u64,
    pub requests_per_second: u64,
    pub connections: u64,
}

impl DevStack {
    /// The pool's directory, where every broker runs with `sqlite://tansu.db`.
    pub fn pool_dir(&self) -> PathBuf {
        self.dir.join("pool")
    }

    /// The gateway's load samples so far, oldest first.
    pub fn history(&self) -> Result<Vec<LoadSample>> {
        #[derive(Deserialize)]
        struct History {
            samples: Vec<LoadSample>,
        }
        let (status, body) = self.gateway.admin.call("GET", "/v1/pool/history", None)?;
        anyhow::ensure!(
            status == 200,
            "GET /v1/pool/history answered {status}: {body}"
        );
        let history: History =
            serde_json::from_str(&body).context("GET /v1/pool/history: unexpected body")?;
        Ok(history.samples)
    }

    /// CPU seconds so far of the gateway process and, apart, of the brokers it started.
    pub fn cpu_seconds(&self) -> (f64, f64) {
        procs::tree_cpu_seconds(self.gateway.process.pid())
    }

    /// The stack's log so far.
    pub fn log_in(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default()
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        let left_behind = procs::descendants(self.gateway.process.pid());
        self.gateway.process.terminate(STOP_GRACE);
        // Brokers the gateway did not stop in time, by pid (still tansu: not a reused pid).
        for pid in left_behind {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "tansu" {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}
