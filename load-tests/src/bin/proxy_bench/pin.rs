//! `--pin`: the gateway on cores of its own, the client and the pool on others.
//!
//! Deployed, a gateway runs on machines of its own. On the 2-core machine the benchmark runs on,
//! the client, the pool and the gateway otherwise share both cores, and every CPU-second the
//! gateway spends moving bytes is one the client and the pool do not get. With `--pin` the
//! benchmark's process (clients and the mock cluster) and the pool's process (tansu, which it
//! starts) run on CPU 0 on every path, direct included, and the gateway on the rest: what is
//! left of the ratio is what being in the path costs a client, and the gateway's own CPU is
//! reported apart, as seconds per GB.
//!
//! With three CPUs or more the pool gets CPU 1 to itself (tansu's process, or the mock cluster's
//! thread inside this process) and the gateway the rest: then the client's core carries nothing
//! but the client on every path. On two, the client and the pool share CPU 0, and the copies
//! the gateway's path makes cross cores are paid there (load-tests/README.md, "Where the pinned
//! consume gap goes").

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::Args;

/// Set, to the CPU list, in the re-executed (pinned) process.
pub const MARK: &str = "TOLLGATE_BENCH_PINNED";

/// Where the benchmark's own process, and the processes it starts, run.
pub const BENCH_CPUS: &str = "0";

/// Whether this process already runs pinned.
pub fn pinned() -> bool {
    std::env::var_os(MARK).is_some()
}

/// Where each party runs under `--pin` (`taskset -c` lists).
#[derive(Debug, PartialEq, Eq)]
pub struct Placement {
    /// The pool's own CPUs; `None`: it shares [`BENCH_CPUS`] with the clients.
    pub pool: Option<String>,
    pub gateway: String,
}

impl Placement {
    pub fn describe(&self) -> String {
        match &self.pool {
            Some(pool) => format!(
                "client on CPU {BENCH_CPUS}, pool on CPU {pool}, gateway on CPUs {}",
                self.gateway
            ),
            None => format!(
                "client and pool on CPU {BENCH_CPUS}, gateway on CPUs {}",
                self.gateway
            ),
        }
    }
}

/// The placement under `--pin`, from the machine's CPUs (not from this process's affinity,
/// which pinning has narrowed to CPU 0); `None` without `--pin`.
pub fn placement(args: &Args) -> Option<Placement> {
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
    Some(placement_for(last))
}

fn placement_for(last_cpu: usize) -> Placement {
    let (pool, gateway) = match last_cpu {
        // One CPU: nothing to give the gateway apart; it shares it, as without --pin.
        0 => (None, "0".to_owned()),
        1 => (None, "1".to_owned()),
        2 => (Some("1".to_owned()), "2".to_owned()),
        n => (Some("1".to_owned()), format!("2-{n}")),
    };
    Placement { pool, gateway }
}

/// Moves this process's threads whose name starts with `prefix` onto `cpus`; how many moved.
pub fn pin_threads(prefix: &str, cpus: &str) -> Result<usize> {
    let mut moved = 0;
    for task in std::fs::read_dir("/proc/self/task").context("listing this process's threads")? {
        let task = task?;
        let named = std::fs::read_to_string(task.path().join("comm"))
            .is_ok_and(|name| name.starts_with(prefix));
        if !named {
            continue;
        }
        let tid = task.file_name();
        let status = Command::new("taskset")
            .args(["-p", "-c", cpus])
            .arg(&tid)
            .stdout(std::process::Stdio::null())
            .status()
            .context("running taskset")?;
        if !status.success() {
            bail!("taskset -p -c {cpus} {tid:?}: {status}");
        }
        moved += 1;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_gets_a_core_of_its_own_from_three_cpus() {
        assert_eq!(placement_for(0).pool, None);
        assert_eq!(placement_for(0).gateway, "0");
        assert_eq!(placement_for(1).pool, None);
        assert_eq!(placement_for(1).gateway, "1");
        assert_eq!(placement_for(2).pool.as_deref(), Some("1"));
        assert_eq!(placement_for(2).gateway, "2");
        assert_eq!(placement_for(7).gateway, "2-7");
    }

    #[test]
    fn pins_the_named_threads_only() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let named = std::thread::Builder::new()
            .name("tg-pin-test".into())
            .spawn(move || {
                let tid = std::fs::read_link("/proc/thread-self").unwrap();
                tx.send(tid).unwrap();
                let _ = stop_rx.recv();
            })
            .unwrap();
        let tid = rx.recv().unwrap();
        let allowed = |path: &std::path::Path| {
            std::fs::read_to_string(path.join("status"))
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Cpus_allowed_list:")
                        .map(|v| v.trim().to_owned())
                })
                .unwrap()
        };
        let before_self = allowed(std::path::Path::new("/proc/thread-self"));
        assert_eq!(pin_threads("tg-pin-test", "0").unwrap(), 1);
        // /proc/thread-self resolves to "<pid>/task/<tid>" under /proc.
        let theirs = allowed(&std::path::Path::new("/proc").join(&tid));
        assert_eq!(theirs, "0");
        assert_eq!(
            allowed(std::path::Path::new("/proc/thread-self")),
            before_self
        );
        assert_eq!(pin_threads("no-such-thread", "0").unwrap(), 0);
        stop_tx.send(()).unwrap();
        named.join().unwrap();
    }
}
