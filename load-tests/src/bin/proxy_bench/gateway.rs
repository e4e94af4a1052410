//! The gateway under test, started with the library's launcher (`tollgate_load_tests::gateway`)
//! with metering or without it (the hidden `--no-metering` flag).

use std::path::Path;

use anyhow::Result;
use tollgate_load_tests::admin::Tenancy;
use tollgate_load_tests::gateway::{self as launcher, Launch};
use tollgate_load_tests::procs::Child;

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
pub fn start(
    bin: &Path,
    pool_bootstrap: &str,
    metering: bool,
    lanes: usize,
    cpus: Option<String>,
    dir: &Path,
) -> Result<Started> {
    let mut launch = Launch::new(bin, pool_bootstrap, dir);
    launch.lanes = lanes;
    launch.cpus = cpus;
    launch.tenant = "bench".into();
    launch.cluster = "bench".into();
    if !metering {
        launch = launch.args(["--no-metering"]);
    }
    match launch.start() {
        Ok(gw) => {
            let endpoint = Endpoint {
                bootstrap: gw.kafka.to_string(),
                sasl: Some(gw.sasl_plain()),
            };
            Ok(Started::Running(Box::new(Gateway {
                process: gw.process,
                endpoint,
                tenancy: gw.tenancy,
            })))
        }
        Err(e) => {
            let log = launcher::Gateway::log_in(dir);
            match log.lines().find(|l| l.contains("--no-metering")) {
                Some(line) if !metering => Ok(Started::NotSupported(format!(
                    "this gateway build does not accept --no-metering: {}",
                    line.trim()
                ))),
                _ => Err(e),
            }
        }
    }
}
