//! The mock cluster's memory, which the benchmark's own process holds.
//!
//! librdkafka's mock cluster keeps every record it is sent in memory it mallocs, in this
//! process. With glibc's defaults, blocks of its size are mmapped and unmapped one by one, so
//! the mock keeps touching pages it has never touched; on this machine (a VM) a first touch
//! costs many times a normal page fault, and more as the run goes on: perf showed the mock's
//! thread spending 72% of its time in the kernel's `clear_page_erms` during one produce run
//! and 24% in the same run's first, so whichever path ran later looked slower, by up to 2x.
//! That is the pool's cost, not the gateway's, so the benchmark runs itself with glibc keeping
//! what is freed for reuse (one arena, no mmap below 32 MiB, no trimming), and touches the
//! memory its throughput runs will keep once before the first run ([`warm`]). Every path
//! sees the same pool; the processes it starts (gateway, tansu) run with glibc's defaults.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// What `GLIBC_TUNABLES` says while the benchmark runs.
pub const TUNABLES: &str = "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=33554432:\
                            glibc.malloc.trim_threshold=68719476736";

/// Set in the re-executed process, so it does not re-execute again.
const MARK: &str = "TOLLGATE_BENCH_MALLOC_TUNED";

/// Whether this process runs with [`TUNABLES`].
pub fn tuned() -> bool {
    std::env::var_os(MARK).is_some()
}

/// Runs this benchmark again, with the same arguments: under [`TUNABLES`] if `tune`, and on
/// `cpus` only (a `taskset -c` list) if given. Returns only if that could not be done, with
/// why.
pub fn reexec(tune: bool, cpus: Option<&str>) -> std::io::Error {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut cmd = tollgate_load_tests::procs::command_on(&exe, cpus);
    if let Some(cpus) = cpus {
        cmd.env(crate::pin::MARK, cpus);
    }
    cmd.args(args);
    if tune {
        cmd.env("GLIBC_TUNABLES", TUNABLES).env(MARK, "1");
    }
    cmd.exec()
}

/// Allocates `bytes` in 16 MiB blocks, touches every page, and frees them: with
/// [`TUNABLES`] they stay in this process for the mock cluster to reuse. Capped at half the
/// machine's available memory.
pub fn warm(bytes: u64) -> u64 {
    const BLOCK: usize = 16 << 20;
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    let bytes = bytes.min(available / 2);
    let blocks: Vec<Vec<u8>> = (0..bytes.div_ceil(BLOCK as u64))
        .map(|_| {
            let mut b = vec![0u8; BLOCK];
            // calloc may hand back untouched zero pages: write one byte per page.
            for page in b.chunks_mut(4096) {
                page[0] = 1;
            }
            std::hint::black_box(b)
        })
        .collect();
    let warmed = blocks.len() as u64 * BLOCK as u64;
    drop(blocks);
    warmed
}
