//! Child processes (the gateway, tansu) and what can be read about them: CPU time from
//! `/proc/<pid>/stat`, liveness, the tail of their logs.
//!
//! Every child is registered so that a watchdog can kill it ([`kill_all_children`]) when a run
//! overstays its hard limit; otherwise a [`Child`] is killed and reaped when dropped.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Pids of the children still running, for the watchdog.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A child process that is killed when dropped.
pub struct Child {
    name: String,
    inner: std::process::Child,
    log: PathBuf,
}

impl Child {
    /// Starts `program args` with stdout and stderr sent to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Child> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Child::spawn_command(name, cmd, log)
    }

    /// Starts `cmd` (for settings [`Child::spawn`] lacks, such as the working directory) with
    /// stdin closed and stdout and stderr sent to `log`.
    pub fn spawn_command(name: &str, mut cmd: Command, log: PathBuf) -> Result<Child> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // The benchmark may run itself with malloc settings of its own; what it measures runs
        // with the defaults.
        cmd.env_remove("GLIBC_TUNABLES");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let inner = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(inner.id());
        Ok(Child {
            name: name.to_owned(),
            inner,
            log,
        })
    }

    /// Kills the process (SIGKILL) and reaps it; its log stays readable.
    pub fn kill(&mut self) {
        let _ = self.inner.kill();
        let _ = self.inner.wait();
        let pid = self.inner.id();
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != pid);
    }

    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Asks the process to stop (SIGTERM, through `kill(1)`), waits up to `grace` for it to
    /// exit, and kills it if it has not. For programs that stop their own children on SIGTERM
    /// (`tollgate dev` and its tansu brokers), which SIGKILL would orphan.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            let deadline = Instant::now() + grace;
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }

    /// `Some(description)` when the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.inner.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: {e}", self.name)),
        }
    }

    /// The last `lines` lines of the process's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        strip_ansi(&all[all.len().saturating_sub(lines)..].join("\n"))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// User plus system CPU seconds the process (all its threads) has used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    /// Waits until something accepts TCP connections on `addr`, failing early if the process
    /// exits.
    pub fn wait_listening(&mut self, addr: SocketAddr, deadline: Instant) -> Result<()> {
        while Instant::now() < deadline {
            if let Some(exit) = self.exited() {
                bail!("{exit} before listening on {addr}:\n{}", self.log_tail(20));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not listen on {addr} in time:\n{}",
            self.name,
            self.log_tail(20)
        )
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `text` without terminal colour sequences (ESC [ ... letter).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Kills the children still registered (SIGKILL through `kill(1)`, by pid), for the watchdog.
pub fn kill_all_children() {
    let pids = RUNNING.lock().map(|p| p.clone()).unwrap_or_default();
    for pid in pids {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

/// Pids of the children still registered (running, or not yet reaped).
pub fn running_children() -> Vec<u32> {
    RUNNING.lock().map(|p| p.clone()).unwrap_or_default()
}

/// CPU seconds of the children still running (gateways, tansu).
pub fn children_cpu_seconds() -> f64 {
    let pids = RUNNING.lock().map(|p| p.clone()).unwrap_or_default();
    pids.iter()
        .filter_map(|pid| cpu_seconds(&format!("/proc/{pid}/stat")).ok())
        .sum()
}

/// Pids of the live descendants of `pid` (children, their children, ...), from the parent
/// pid in every `/proc/<pid>/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the name: state, then the parent pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((child, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// User plus system CPU seconds of `pid` and of its live descendants, apart: the process's own
/// and its descendants' together (e.g. `tollgate dev`, and the tansu brokers it started).
pub fn tree_cpu_seconds(pid: u32) -> (f64, f64) {
    let own = cpu_seconds(&format!("/proc/{pid}/stat")).unwrap_or(f64::NAN);
    let below = descendants(pid)
        .iter()
        .filter_map(|d| cpu_seconds(&format!("/proc/{d}/stat")).ok())
        .sum();
    (own, below)
}

/// Kernel clock ticks per second, as `/proc/<pid>/stat` counts them.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
pub fn cpu_seconds(stat_path: &str) -> Result<f64> {
    let stat =
        std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("field {i} of {stat_path}"))
    };
    Ok((ticks(14)? + ticks(15)?) / clock_ticks())
}

/// Busy CPU seconds of the whole machine (all cores) since boot, from `/proc/stat`: user, nice,
/// system, irq, softirq and steal time.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    Some(busy / clock_ticks())
}

/// CPU seconds of this process (in the benchmark: its clients and, for the mock pool, the pool).
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat").unwrap_or(f64::NAN)
}

/// CPU seconds of this process's live threads whose name starts with `prefix` (e.g. `rdk:mock`,
/// the threads of librdkafka's mock cluster, to tell the in-process pool from the clients).
pub fn own_threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with(prefix))
        })
        .filter_map(|t| cpu_seconds(&t.path().join("stat").to_string_lossy()).ok())
        .sum()
}

/// A command for `program`, to run on `cpus` (a `taskset -c` list) when given. taskset execs
/// the program: the pid, and its CPU time, are the program's.
pub fn command_on(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpus]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A loopback address nothing listens on right now.
pub fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// A loopback address whose port and the `n - 1` ports after it are free (for a gateway's
/// lanes, which listen on consecutive ports).
pub fn free_port_run(n: usize) -> Result<SocketAddr> {
    for _ in 0..100 {
        let first = free_addr()?;
        let held: Vec<TcpListener> = (0..n)
            .map_while(|i| {
                let port = u16::try_from(usize::from(first.port()) + i).ok()?;
                TcpListener::bind(("127.0.0.1", port)).ok()
            })
            .collect();
        if held.len() == n {
            return Ok(first);
        }
    }
    bail!("found no {n} consecutive free ports")
}

/// Finds `program` as given (a path) or on PATH.
pub fn resolve(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|c| c.is_file())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_colours() {
        assert_eq!(super::strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }

    #[test]
    fn finds_descendants() {
        let mut sleeper = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = super::descendants(std::process::id());
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(found.contains(&sleeper.id()), "{found:?}");
    }

    #[test]
    fn reads_own_cpu() {
        assert!(super::own_cpu_seconds() >= 0.0);
    }

    #[test]
    fn counts_only_the_named_threads() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let busy = std::thread::Builder::new()
            .name("tg-test-busy".into())
            .spawn(move || {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(300) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                }
                tx.send(()).unwrap();
                let _ = stop_rx.recv();
            })
            .unwrap();
        rx.recv().unwrap();
        let named = super::own_threads_cpu_seconds("tg-test-busy");
        let none = super::own_threads_cpu_seconds("no-such-thread");
        stop_tx.send(()).unwrap();
        busy.join().unwrap();
        // 0.3 s of spinning, counted in clock ticks (10 ms).
        assert!(named >= 0.1, "named thread: {named} s");
        assert_eq!(none, 0.0);
    }
}
