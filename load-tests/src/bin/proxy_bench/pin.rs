//! `--pin`: the gateway on cores of its own, the client and the pool on another.
//!
//! Deployed, a gateway runs on machines of its own. On the 2-core machine the benchmark runs on,
//! the client, the pool and the gateway otherwise share both cores, and every CPU-second the
//! gateway spends moving bytes is one the client and the pool do not get. With `--pin` the
//! benchmark's process (clients and the mock cluster) and the pool's process (tansu, which it
//! starts) run on CPU 0 on every path, direct included, and the gateway on the rest: what is
//! left of the ratio is what being in the path costs a client, and the gateway's own CPU is
//! reported apart, as seconds per GB.

use crate::Args;

/// Set, to the CPU list, in the re-executed (pinned) process.
pub const MARK: &str = "TOLLGATE_BENCH_PINNED";

/// Where the benchmark's own process, and the processes it starts, run.
pub const BENCH_CPUS: &str = "0";

/// Whether this process already runs pinned.
pub fn pinned() -> bool {
    std::env::var_os(MARK).is_some()
}

/// The CPUs for the gateway under `--pin`: all but [`BENCH_CPUS`]. Read from the machine, not
/// from this process's affinity, which pinning has narrowed to CPU 0.
pub fn gateway_cpus(args: &Args) -> Option<String> {
    if !args.pin {
        return None;
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let last = online
        .trim()
        .split([',', '-'])
        .filter_map(|n| n.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    // One CPU: nothing to give the gateway apart; it shares it, as without --pin.
    Some(match last {
        0 => "0".to_owned(),
        1 => "1".to_owned(),
        n => format!("1-{n}"),
    })
}
