//! Tollgate's load-test toolkit, shared by the benchmarks here (`proxy-bench`, `calibrate`)
//! and the gateway's end-to-end tests, which run the real `tollgate` binary as a user would.
//!
//! - `procs`: child processes that are killed when dropped, their logs and CPU time, free
//!   loopback ports, finding programs on PATH.
//! - `admin`: a tiny HTTP/1.1 client for the gateway's admin API and provisioning (tenant,
//!   cluster, token), and the clusters' quotas for measuring: enforced but never binding
//!   (`admin::QuotaSetting::Unbound`), or off (`QuotaSetting::Off`).
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

static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Starts the clock progress lines are stamped with (else their first line starts it).
pub fn start_clock() {
    STARTED.get_or_init(std::time::Instant::now);
}

/// Writes a benchmark's progress line on stderr, stamped with the seconds since its first
/// line: what the binaries' `progress!` macros call.
pub fn progress(bin: &str, line: std::fmt::Arguments<'_>) {
    let elapsed = STARTED
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64();
    eprintln!("{bin} [{elapsed:6.1} s] {line}");
}
