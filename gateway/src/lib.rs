//! Tollgate's gateway: a Kafka-protocol proxy that puts many tenants' clusters on one broker
//! pool, and the admin API that manages them.
//!
//! - [`policy`]: IAM-style policy documents and their evaluation.
//! - [`token`]: the JWTs that carry a principal, a cluster and a policy.
//! - [`tenancy`]: tenants, clusters, and how their names map onto the pool.

pub mod policy;
pub mod pool_admin;
pub mod tenancy;
pub mod token;
