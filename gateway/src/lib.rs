//! Tollgate's gateway: a Kafka-protocol proxy that puts many tenants' clusters on one broker
//! pool, and the admin API that manages them.
//!
//! The data path, from socket to pool:
//! - [`listener`] accepts connections; [`connection`] reads frames ([`frame`]), authenticates
//!   with [`identity`] (SASL, tokens, SCRAM, allowlists), and runs each request through [`api`],
//!   whose handlers authorize with [`identity::authz`] and map names with [`tenancy`];
//!   [`records`] reads record batch headers for limits and metering; [`quotas`] are what one
//!   cluster may take of the pool.
//! - [`pool`] talks to the broker pool: its router picks the pool broker for each partition
//!   (leaders of a leader-based pool, rendezvous hashing over a stateless one), and
//!   [`api::split`] splits requests per broker. It keeps multiplexed connections to the pool's
//!   brokers (a pool of exclusive ones for long-polling fetches), the set of brokers that make
//!   up the pool, and probes which of them are live.
//! - [`state`] is the handle every connection shares; [`metering`] feeds the `meter` crate;
//!   [`closing`] bills closed hours into the `billing` ledger; [`sync`] shares clusters between
//!   gateway instances.
//!
//! Around it: [`telemetry`], the metrics, consumer lag and audit events operators and tenants
//! read; [`admin`], the admin HTTP API; [`pool_admin`], what it asks of the pool;
//! [`http_client`], the outbound HTTP/1.1 client that calls the Kubernetes API, an OTLP
//! receiver and the audit log's object store; [`devpool`], the local tansu pool of
//! `tollgate dev`; [`run`], which assembles it all.

pub mod admin;
pub mod api;
pub mod closing;
pub mod config_file;
pub mod connection;
pub mod devpool;
pub mod frame;
pub mod http_client;
pub mod identity;
pub mod limits;
pub mod listener;
pub mod metering;
pub mod pool;
pub mod pool_admin;
pub mod quotas;
pub mod records;
pub mod run;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod tenancy;
