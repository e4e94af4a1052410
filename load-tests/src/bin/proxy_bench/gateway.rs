//! The gateways under test, started with the library's launcher (`tollgate_load_tests::gateway`)
//! with all they do or less one thing (a hidden flag: `--no-metering`, `--no-metrics`), over
//! TLS or in plaintext
//! (`--tls-cert`, `--tls-key`), their cluster's quotas, and Redis when the run has one;
//! afterwards, what their clusters used of their quotas.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use tollgate_load_tests::admin::{Admin, Tenancy};
use tollgate_load_tests::gateway::{self as launcher, Launch};
use tollgate_load_tests::procs::Child;

use crate::workload::Endpoint;

pub struct Gateway {
    pub process: Child,
    pub endpoint: Endpoint,
    pub tenancy: Tenancy,
    pub admin: Admin,
}

pub enum Started {
    Running(Box<Gateway>),
    /// This gateway build lacks something the run needs (a hidden flag such as `--no-metering`,
    /// `--tls-cert`).
    NotSupported(String),
}

/// How to start one gateway path's `tollgate serve`.
pub struct Setup<'a> {
    pub bin: &'a Path,
    pub pool_bootstrap: &'a str,
    /// The hidden flag that turns one thing off (`crate::Without::flag`); `None`: all on.
    pub without: Option<&'a str>,
    /// Serve TLS with these files (`--tls-cert`, `--tls-key`); clients then use SASL_SSL
    /// trusting their CA. `None`: plaintext.
    pub tls: Option<&'a crate::tls::Files>,
    /// How the cluster's quotas are set.
    pub quotas: tollgate_load_tests::admin::QuotaSetting,
    /// `--redis-url` for the gateway.
    pub redis_url: Option<&'a str>,
    pub lanes: usize,
    pub cpus: Option<String>,
    /// The cluster's name (a path's own, so that gateways sharing a Redis, which syncs
    /// clusters, never hold two of one name).
    pub cluster: &'a str,
}

/// Starts `tollgate serve` as `setup` says, its data in `dir`.
pub fn start(setup: Setup<'_>, dir: &Path) -> Result<Started> {
    let mut launch = Launch::new(setup.bin, setup.pool_bootstrap, dir);
    launch.lanes = setup.lanes;
    launch.cpus = setup.cpus;
    launch.tenant = "bench".into();
    launch.cluster = setup.cluster.into();
    launch.quotas = setup.quotas;
    if let Some(flag) = setup.without {
        launch = launch.args([flag]);
    }
    if let Some(url) = setup.redis_url {
        launch = launch.args(["--redis-url", url]);
    }
    if let Some(tls) = setup.tls {
        launch = launch.args([
            "--tls-cert".to_owned(),
            tls.cert.display().to_string(),
            "--tls-key".to_owned(),
            tls.key.display().to_string(),
        ]);
    }
    match launch.start() {
        Ok(gw) => {
            let endpoint = Endpoint {
                bootstrap: gw.kafka.to_string(),
                sasl: Some(gw.sasl_plain()),
                ca: setup.tls.map(|t| t.ca.clone()),
            };
            Ok(Started::Running(Box::new(Gateway {
                process: gw.process,
                endpoint,
                tenancy: gw.tenancy,
                admin: gw.admin,
            })))
        }
        Err(e) => {
            let log = launcher::Gateway::log_in(dir);
            // A build without the flag: clap's "unexpected argument '--no-metrics' found". A
            // TLS gateway's own errors name `--tls-cert` too (a file that does not load), so
            // that flag counts as refused only in clap's words.
            let refused = |flag: &str, clap_only: bool| {
                log.lines()
                    .find(|l| {
                        l.contains(flag)
                            && (!clap_only
                                || l.contains("unexpected argument")
                                || l.contains("wasn't expected"))
                    })
                    .map(|l| format!("this gateway build does not accept {flag}: {}", l.trim()))
            };
            let missing = setup
                .without
                .and_then(|flag| refused(flag, false))
                .or_else(|| setup.tls.and_then(|_| refused("--tls-cert", true)));
            match missing {
                Some(why) => Ok(Started::NotSupported(why)),
                None => Err(e),
            }
        }
    }
}

/// A cluster's quotas and what it used of them on its gateway (`GET /v1/clusters/{id}`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaUse {
    /// The cluster's quotas as the gateway holds them.
    pub quotas: Value,
    /// `quota_use` as the gateway shows it; `None` from a build without it.
    pub quota_use: Option<Value>,
}

impl QuotaUse {
    /// Responses throttled for a rate quota (`quota_use.throttles`, every quota summed).
    pub fn throttles(&self) -> Option<u64> {
        self.sum("throttles")
    }

    /// Things refused for a count quota (`quota_use.refused`, every quota summed).
    pub fn refusals(&self) -> Option<u64> {
        self.sum("refused")
    }

    fn sum(&self, field: &str) -> Option<u64> {
        let counts = self.quota_use.as_ref()?.get(field)?.as_object()?;
        Some(counts.values().filter_map(Value::as_u64).sum())
    }

    /// The quotas that throttled or refused anything, with how often: "partition_ingress
    /// throttled 12".
    pub fn bound(&self) -> Vec<String> {
        let Some(use_) = &self.quota_use else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (field, verb) in [("throttles", "throttled"), ("refused", "refused")] {
            let Some(counts) = use_.get(field).and_then(Value::as_object) else {
                continue;
            };
            for (quota, n) in counts {
                if let Some(n) = n.as_u64().filter(|n| *n > 0) {
                    out.push(format!("{quota} {verb} {n}"));
                }
            }
        }
        out
    }
}

impl Gateway {
    /// The provisioned cluster's quotas and use of them so far.
    pub fn quota_use(&self) -> Result<QuotaUse> {
        let path = format!("/v1/clusters/{}", self.tenancy.cluster_id);
        let (status, body) = self.admin.call("GET", &path, None)?;
        ensure!(status == 200, "GET {path} answered {status}: {body}");
        let mut cluster: Value =
            serde_json::from_str(&body).with_context(|| format!("GET {path}: body {body:?}"))?;
        Ok(QuotaUse {
            quotas: cluster
                .get_mut("quotas")
                .map(Value::take)
                .unwrap_or_default(),
            quota_use: cluster.get_mut("quota_use").map(Value::take),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn throttles_and_refusals_are_summed_and_named() {
        let q = QuotaUse {
            quotas: json!({}),
            quota_use: Some(json!({
                "ingress_bytes_per_second": 5,
                "throttles": {"ingress": 0, "egress": 0, "requests": 0,
                              "partition_ingress": 12, "partition_egress": 3},
                "connections": 2,
                "refused": {"partition_mutations": 0, "connections": 1, "connection_rate": 0,
                            "consumer_groups": 0, "storage": 0},
            })),
        };
        assert_eq!(q.throttles(), Some(15));
        assert_eq!(q.refusals(), Some(1));
        let mut bound = q.bound();
        bound.sort();
        assert_eq!(
            bound,
            [
                "connections refused 1",
                "partition_egress throttled 3",
                "partition_ingress throttled 12",
            ]
        );
        let old = QuotaUse {
            quotas: Value::Null,
            quota_use: None,
        };
        assert_eq!((old.throttles(), old.refusals()), (None, None));
        assert!(old.bound().is_empty());
    }
}
