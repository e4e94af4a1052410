//! The gateway under test: `tollgate serve` as a child process on loopback ports, with one
//! tenant, one cluster and one token provisioned through its admin API.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::admin::{Admin, Tenancy};
use crate::procs::{self, Child};
use crate::workload::Endpoint;

pub struct Gateway {
    pub process: Child,
    pub endpoint: Endpoint,
    pub tenancy: Tenancy,
}

pub enum Started {
    Running(Box<Gateway>),
    /// This gateway build lacks something the run needs (the hidden `--no-metering` flag).
    NotSupported(String),
}

/// Starts `tollgate serve` against `pool_bootstrap`, with metering or without, its data in
/// `dir`.
pub fn start(bin: &Path, pool_bootstrap: &str, metering: bool, dir: &Path) -> Result<Started> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let kafka = procs::free_addr()?;
    let admin_addr = procs::free_addr()?;
    let admin_token = format!(
        "proxy-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let mut args: Vec<String> = [
        "serve",
        "--pool-bootstrap",
        pool_bootstrap,
        "--kafka-listen",
        &kafka.to_string(),
        "--admin-listen",
        &admin_addr.to_string(),
        "--data-dir",
        &dir.display().to_string(),
        "--admin-token",
        &admin_token,
    ]
    .map(String::from)
    .to_vec();
    if !metering {
        args.push("--no-metering".into());
    }
    let mut process = Child::spawn(
        "tollgate",
        bin,
        &args,
        &[("NO_COLOR", "1")],
        dir.join("gateway.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    if let Err(e) = process.wait_listening(admin_addr, deadline) {
        let log = process.log_tail(20);
        if !metering && log.contains("--no-metering") {
            return Ok(Started::NotSupported(format!(
                "this gateway build does not accept --no-metering: {}",
                log.lines()
                    .find(|l| l.contains("--no-metering"))
                    .unwrap_or_default()
                    .trim()
            )));
        }
        return Err(e.context("starting the gateway"));
    }
    let admin = Admin::new(admin_addr, &admin_token);
    admin.wait_healthy(deadline)?;
    let tenancy = admin
        .provision("bench", "bench")
        .context("provisioning through the admin API")?;
    process.wait_listening(kafka, deadline)?;
    let endpoint = Endpoint {
        bootstrap: kafka.to_string(),
        sasl: Some(("bench".into(), tenancy.token.clone())),
    };
    Ok(Started::Running(Box::new(Gateway {
        process,
        endpoint,
        tenancy,
    })))
}
