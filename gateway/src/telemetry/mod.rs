//! What the gateway tells operators and tenants about itself.
//!
//! - [`metrics`]: counters and gauges per cluster and topic, held as atomics by the data path,
//!   collected into one snapshot model ([`metrics::Family`]) that the Prometheus endpoint
//!   (all clusters for the operator, one for its tenant) and the OTLP exporter both read.
//! - [`lag`]: consumer lag per group, topic and partition, from the commits and answers that
//!   pass through and the pool's own offsets.
//! - [`audit`]: structured events (authentication, authorization denials, admin changes, quota
//!   breaches, pool scaling) delivered to a file, a pool topic and an object store.
//! - [`otlp`]: OpenTelemetry export of the metrics and of sampled request traces.

pub mod audit;
pub mod lag;
pub mod metrics;
pub mod otlp;

/// What the command line asks of telemetry.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Serve `/metrics` alone here, without authentication (`--metrics-listen`); it is always
    /// on the admin listener too, behind the admin token.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// False only in benchmarks measuring what metrics cost (`--no-metrics`).
    pub metrics: bool,
    /// Topics with series of their own per cluster (`--metrics-topics-per-cluster`).
    pub topics_per_cluster: usize,
    /// OTLP export (`--otlp-endpoint` and its settings).
    pub otlp: Option<otlp::OtlpConfig>,
    /// Where audit events go (`--audit-log`, `--audit-topic`, `--audit-s3-*`).
    pub audit: audit::AuditConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics_listen: None,
            metrics: true,
            topics_per_cluster: metrics::DEFAULT_TOPICS_PER_CLUSTER,
            otlp: None,
            audit: Default::default(),
        }
    }
}
