//! The human-readable tables (Markdown, so a run pastes into the README as it is): every step
//! of every series per pool size with the CPU time beside it, then each signal's capacity per
//! pool size side by side with what the capacity file says.

use std::fmt::Write;

use tollgate_load_tests::calibration::{Bound, CapacityFile, Knee, Over, FOLLOW_SHARE};

use crate::measure::{
    Cpu, Measured, Run, BYTES_SHAPE, PROBE_RATE, READERS, READER_FETCH_WAIT_MS, REQUESTS_SHAPE,
};

/// A rate: payload bytes as MB/s (10^6 bytes), or a count per second.
pub fn rate(bytes: bool, v: f64) -> String {
    if bytes {
        format!("{:.2} MB/s", v / 1e6)
    } else {
        format!("{v:.0}/s")
    }
}

fn mb(v: f64) -> String {
    if v.is_finite() {
        format!("{:.2}", v / 1e6)
    } else {
        "-".into()
    }
}

fn count(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "-".into()
    }
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

fn cpu(c: &Cpu) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2}",
        c.gateway, c.pool, c.clients, c.others
    )
}

fn verdict(m: &Measured) -> String {
    let errors = match (&m.first_error, m.client_errors) {
        (Some(first), n) => format!(" ({n} client errors, first: {first})"),
        (None, 0) => String::new(),
        (None, n) => format!(" ({n} client errors)"),
    };
    let why = match m.over {
        None => "",
        Some(Over::Behind) => "**over**: behind",
        Some(Over::Slow) => "**over**: p99 past the knee",
    };
    format!("{why}{errors}")
}

fn capacity(knee: Option<&Knee>, bytes: bool) -> String {
    let Some(k) = knee else {
        return "-".into();
    };
    let figure = if bytes {
        format!("{} MB/s", mb(k.capacity))
    } else {
        count(k.capacity)
    };
    match k.bound {
        Bound::Knee => figure,
        Bound::NotReached => format!("≥ {figure} (no knee)"),
        Bound::FirstStepOver => format!("≤ {figure} (first step over)"),
    }
}

/// Everything, as Markdown.
pub fn tables(runs: &[Run], file: &CapacityFile, base: &Run, settings: &str) -> String {
    let mut t = String::new();
    let w = &mut t;
    let _ = writeln!(
        w,
        "Calibration of the local pool: `tollgate dev --brokers N`, tansu brokers on one SQLite \
         file, loaded through the gateway by librdkafka clients.\n{settings}\nCPU s: user + \
         system seconds in each step's window, `gw / pool / clients / others`: tollgate dev, its \
         tansu brokers, this process's clients, and everything else on the machine (a shared \
         2-core machine: others' builds show there).\n"
    );

    let _ = writeln!(
        w,
        "Bytes in: one producer, {}-byte records, linger {} ms, acks=all, idempotent, at a \
         rising payload rate; a consumer group follows the topic. Acked: payload acknowledged \
         in the window; gateway: the bytes in it counted (record batches, as the autoscaler \
         sees them).\n",
        BYTES_SHAPE.record_bytes, BYTES_SHAPE.linger_ms
    );
    let _ = writeln!(
        w,
        "| brokers | offered MB/s | acked MB/s | gateway in MB/s | read MB/s | gateway req/s | p50 ms | p99 ms | CPU s gw / pool / clients / others | |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        for m in &r.bytes.steps {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.brokers,
                mb(m.step.offered),
                mb(m.step.achieved),
                mb(m.gateway.bytes_in),
                mb(m.read_per_second),
                count(m.gateway.requests),
                ms(m.p50_ms),
                ms(m.step.p99_ms),
                cpu(&m.cpu),
                verdict(m)
            );
        }
    }

    let _ = writeln!(
        w,
        "\nBytes out: {READERS} readers (partitions assigned, no group; fetch.wait.max.ms \
         {READER_FETCH_WAIT_MS}) go through the bytes-in topic from its start as fast as they \
         can, over and over.\n"
    );
    let _ = writeln!(
        w,
        "| brokers | read MB/s | gateway out MB/s | first record after s | CPU s gw / pool / clients / others |\n|---|---|---|---|---|"
    );
    for r in runs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.1} | {} |",
            r.brokers,
            mb(r.read.per_second),
            mb(r.read.gateway.bytes_out),
            r.read.first_record_after,
            cpu(&r.read.cpu),
        );
    }

    let _ = writeln!(
        w,
        "\nRequests: one producer, {}-byte records, one per request (`batch.num.messages=1`, \
         linger 0), acks=all, idempotent, at a rising record rate.\n",
        REQUESTS_SHAPE.record_bytes
    );
    let _ = writeln!(
        w,
        "| brokers | offered records/s | acked records/s | gateway req/s | gateway in MB/s | p50 ms | p99 ms | CPU s gw / pool / clients / others | |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        for m in &r.requests.steps {
            let _ = writeln!(
                w,
                "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
                r.brokers,
                m.step.offered,
                m.step.achieved,
                count(m.gateway.requests),
                mb(m.gateway.bytes_in),
                ms(m.p50_ms),
                ms(m.step.p99_ms),
                cpu(&m.cpu),
                verdict(m)
            );
        }
    }

    let _ = writeln!(
        w,
        "\nConnections: connections authenticated (SASL PLAIN) and left idle, held in rising \
         numbers, while a producer sends {PROBE_RATE:.0} records/s, one per request, for the \
         latency.\n"
    );
    let _ = writeln!(
        w,
        "| brokers | wanted | held | gateway counts | probe p50 ms | probe p99 ms | CPU s gw / pool / clients / others | |\n|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        for m in &r.connections.steps {
            let _ = writeln!(
                w,
                "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                r.brokers,
                m.step.offered,
                m.step.achieved,
                count(m.gateway.connections),
                ms(m.p50_ms),
                ms(m.step.p99_ms),
                cpu(&m.cpu),
                verdict(m)
            );
        }
    }

    let _ = writeln!(
        w,
        "\nCapacity per pool size (the whole pool's; a step is over when under {:.0}% of its \
         load came through or its p99 passed the knee; the capacity is the gateway's figure at \
         the last step before), and what the file says per broker (from the {}-broker pool{}):\n",
        FOLLOW_SHARE * 100.0,
        base.brokers,
        if base.brokers > 1 {
            ", divided by its size"
        } else {
            ""
        }
    );
    let mut header = String::from("| signal |");
    let mut rule = String::from("|---|");
    for r in runs {
        let _ = write!(
            header,
            " {} broker{} |",
            r.brokers,
            if r.brokers == 1 { "" } else { "s" }
        );
        rule.push_str("---|");
    }
    let _ = writeln!(w, "{header} file, per broker |\n{rule}---|");
    let row = |w: &mut String, name: &str, cell: &dyn Fn(&Run) -> String, file: String| {
        let _ = write!(w, "| {name} |");
        for r in runs {
            let _ = write!(w, " {} |", cell(r));
        }
        let _ = writeln!(w, " {file} |");
    };
    let p = &file.per_broker;
    row(
        w,
        "bytes in/s",
        &|r: &Run| capacity(r.bytes.knee.as_ref(), true),
        format!("{} MB/s", mb(p.bytes_in_per_second as f64)),
    );
    row(
        w,
        "bytes out/s",
        &|r: &Run| format!("{} MB/s", mb(r.read.gateway.bytes_out)),
        format!("{} MB/s", mb(p.bytes_out_per_second as f64)),
    );
    row(
        w,
        "requests/s",
        &|r: &Run| capacity(r.requests.knee.as_ref(), false),
        p.requests_per_second.to_string(),
    );
    row(
        w,
        "connections",
        &|r: &Run| capacity(r.connections.knee.as_ref(), false),
        p.connections.to_string(),
    );
    row(
        w,
        "`tollgate dev` up in",
        &|r: &Run| format!("{:.1} s", r.startup.as_secs_f64()),
        String::new(),
    );
    row(
        w,
        "other processes, cores",
        &|r: &Run| format!("{:.2}", others_cores(std::slice::from_ref(r)).0),
        String::new(),
    );

    let starts: Vec<String> = base.starts.iter().map(|s| format!("{s:.2} s")).collect();
    let _ = writeln!(
        w,
        "\nBroker start (a tansu broker on the pool's store, with the pool's command line, to \
         its first ApiVersions answer): {} -> start_seconds {}. Drain: the gateway's bound, \
         drain_seconds {}. Price per broker-hour: {}.",
        if starts.is_empty() {
            "not measured".into()
        } else {
            starts.join(", ")
        },
        file.start_seconds,
        file.drain_seconds,
        file.price_per_broker_hour
    );
    let curve: Vec<String> = file
        .latency_ms
        .iter()
        .map(|(u, l)| format!("{u:.2} -> {l} ms"))
        .collect();
    let _ = writeln!(
        w,
        "Latency curve (bytes-in series of the {}-broker pool; utilization = offered / the \
         capacity step's acked payload; p99, never falling): {}.",
        base.brokers,
        curve.join(", ")
    );
    let _ = writeln!(w, "{}", scaling(runs, base));
    let _ = writeln!(w, "{}", others(runs));
    t
}

/// Cores other processes used on average over the measured windows of `runs`, and at most in
/// one window.
fn others_cores(runs: &[Run]) -> (f64, f64) {
    let windows: Vec<&Cpu> = runs
        .iter()
        .flat_map(|r| {
            let steps = r.bytes.steps.iter().chain(&r.requests.steps);
            steps
                .chain(&r.connections.steps)
                .map(|m| &m.cpu)
                .chain([&r.read.cpu])
        })
        .filter(|c| c.seconds > 0.0)
        .collect();
    let seconds: f64 = windows.iter().map(|c| c.seconds).sum();
    let mean = windows.iter().map(|c| c.others).sum::<f64>() / seconds;
    let most = windows
        .iter()
        .map(|c| c.others / c.seconds)
        .fold(0.0, f64::max);
    (mean, most)
}

/// How much of the machine other processes took while the windows were measured.
fn others(runs: &[Run]) -> String {
    let (mean, most) = others_cores(runs);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "Other processes on the machine used {mean:.2} cores on average (of {cores}) while the \
         windows were measured, {most:.2} at most in one window: figures from a window where \
         they used much measured a pool with fewer cores than it had."
    )
}

/// What more brokers on the one SQLite file added, in words: each larger pool's capacity per
/// signal against the base pool's, and which signals grew in proportion at every size.
fn scaling(runs: &[Run], base: &Run) -> String {
    const NAMES: [&str; 3] = ["bytes in", "bytes out", "requests"];
    let figures = |r: &Run| {
        [
            r.bytes.knee.map_or(f64::NAN, |k| k.capacity),
            r.read.gateway.bytes_out,
            r.requests.knee.map_or(f64::NAN, |k| k.capacity),
        ]
    };
    let larger: Vec<&Run> = runs.iter().filter(|r| r.brokers > base.brokers).collect();
    if larger.is_empty() {
        return String::new();
    }
    let mut proportional = [true; 3];
    let mut said = Vec::new();
    for r in &larger {
        let (of, to) = (figures(r), figures(base));
        // N brokers in proportion carry N / base times as much; within 20% of that counts.
        let expected = r.brokers as f64 / base.brokers as f64;
        let ratios: Vec<String> = (0..3)
            .map(|i| {
                let ratio = of[i] / to[i];
                proportional[i] &= ratio >= 0.8 * expected;
                format!("{} {ratio:.2}x", NAMES[i])
            })
            .collect();
        said.push(format!("{} brokers {}", r.brokers, ratios.join(", ")));
    }
    let (held, not): (Vec<usize>, Vec<usize>) = (0..3).partition(|i| proportional[*i]);
    let names = |which: &[usize]| {
        which
            .iter()
            .map(|i| NAMES[*i])
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let mut text = format!(
        "Scaling, the pool's capacity against the {}-broker pool's: {}.",
        base.brokers,
        said.join("; ")
    );
    if !not.is_empty() {
        text.push_str(&format!(
            " The file gives the {}-broker pool's figures per broker, and the simulator counts \
             N brokers as N times those: on this pool that {}overstates {} (the brokers share \
             one SQLite file, written by one writer at a time, and two cores; the others' cores \
             above say which sizes were measured with fewer). A pool whose brokers have storage \
             of their own (Kafka, tansu on separate stores) scales differently and wants its own \
             calibration.",
            base.brokers,
            if held.is_empty() {
                String::new()
            } else {
                format!("holds for {} and ", names(&held))
            },
            names(&not)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_load_tests::calibration::Knee;

    fn run(brokers: usize, bytes_in: f64, bytes_out: f64, requests: f64) -> Run {
        let knee = |capacity| Knee {
            capacity,
            achieved: capacity,
            step: 0,
            first_over: None,
            bound: Bound::Knee,
        };
        let mut r = Run {
            brokers,
            ..Run::default()
        };
        r.bytes.knee = Some(knee(bytes_in));
        r.requests.knee = Some(knee(requests));
        r.read.gateway.bytes_out = bytes_out;
        r
    }

    #[test]
    fn scaling_is_told_for_every_larger_pool() {
        let runs = [
            run(1, 10e6, 30e6, 1_400.0),
            run(2, 16e6, 60e6, 1_400.0),
            run(3, 8e6, 75e6, 2_000.0),
        ];
        let text = scaling(&runs, &runs[0]);
        assert!(
            text.starts_with(
                "Scaling, the pool's capacity against the 1-broker pool's: 2 brokers bytes in \
                 1.60x, bytes out 2.00x, requests 1.00x; 3 brokers bytes in 0.80x, bytes out \
                 2.50x, requests 1.43x."
            ),
            "{text}"
        );
        assert!(
            text.contains("that holds for bytes out and overstates bytes in and requests"),
            "{text}"
        );
        let even = [run(1, 10e6, 30e6, 1_000.0), run(2, 20e6, 60e6, 1_900.0)];
        assert!(!scaling(&even, &even[0]).contains("overstates"));
        assert_eq!(scaling(&runs[..1], &runs[0]), "");
    }
}
