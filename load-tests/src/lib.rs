//! Tollgate's load-test toolkit, shared by the benchmarks here (`proxy-bench`) and the
//! gateway's end-to-end tests, which run the real `tollgate` binary as a user would.
//!
//! - `procs`: child processes that are killed when dropped, their logs and CPU time, free
//!   loopback ports, finding programs on PATH.
//! - `admin`: a tiny HTTP/1.1 client for the gateway's admin API and provisioning (tenant,
//!   cluster, token).
//! - `gateway`: `tollgate serve` on free loopback ports with a provisioned tenant cluster.

pub mod admin;
pub mod gateway;
pub mod procs;
