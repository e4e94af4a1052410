//! Tollgate's gateway: a Kafka-protocol proxy that puts many tenants' clusters on one broker
//! pool, and the admin API that manages them.
//!
//! The data path, from socket to pool:
//! - [`listener`] accepts connections; [`connection`] reads frames ([`frame`]), authenticates
//!   with [`sasl`] and [`token`], and runs each request through [`api`], whose handlers
//!   authorize with [`authz`] (the [`policy`] of the token) and map names with [`tenancy`].
//! - [`router`] picks the pool broker for each request; [`upstream`] keeps one multiplexed
//!   connection per pool broker.
//! - [`state`] is the handle every connection shares.
//!
//! Around it: [`pool_admin`], what the admin API asks of the pool.
//! [`admin`] is the admin HTTP API, with its store of tenants and clusters.

pub mod admin;
pub mod api;
pub mod authz;
pub mod connection;
pub mod frame;
pub mod listener;
pub mod policy;
pub mod pool_admin;
pub mod router;
pub mod sasl;
pub mod state;
pub mod tenancy;
pub mod token;
pub mod upstream;
