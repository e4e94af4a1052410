//! What the gateway tells operators and tenants about itself.
//!
//! - [`metrics`]: counters and gauges per cluster and topic, held as atomics by the data path,
//!   collected into one snapshot model ([`metrics::Family`]) that the Prometheus endpoint
//!   (all clusters for the operator, one for its tenant) and the OTLP exporter both read.
//! - [`audit`]: structured events (authentication, authorization denials, admin changes, quota
//!   breaches, pool scaling) delivered to a file, a pool topic and an object store.

pub mod audit;
pub mod metrics;
