//! Tollgate's load-test toolkit, shared by the benchmarks here (`proxy-bench`, `calibrate`)
//! and the gateway's end-to-end tests, which run the real `tollgate` binary as a user would.
//!
//! - `procs`: child processes that are killed when dropped, their logs and CPU time, free
//!   loopback ports, finding programs on PATH.
//! - `admin`: a tiny HTTP/1.1 client for the gateway's admin API and provisioning (tenant,
//!   cluster, token).
//! - `gateway`: `tollgate serve` on free loopback ports with a provisioned tenant cluster.
//! - `dev`: `tollgate dev --brokers N` (its own tansu pool) the same way, with the load the
//!   gateway counts each second.
//! - `calibration`: from stepped load to the capacity file the autoscaling simulator reads
//!   (knee, latency curve, the file's format); no I/O.

pub mod admin;
pub mod calibration;
pub mod dev;
pub mod gateway;
pub mod procs;
