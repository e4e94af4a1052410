//! `tollgate autoscale trace` and `tollgate autoscale simulate`, run as a user runs them: a
//! synthetic trace written, two policies replayed against it, the reports read back.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tollgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("running tollgate")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-autoscale-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_synthetic_trace_replayed_against_two_policies_gives_a_report_of_both() {
    let dir = scratch();
    let trace = dir.join("bursts.csv").display().to_string();
    let made = tollgate(&[
        "autoscale",
        "trace",
        "--synthetic",
        "bursts",
        "--days",
        "1",
        "--peak-bytes-in-per-second",
        "300",
        "--out",
        &trace,
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let csv = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 8_640,
        "a header and a sample every 10 s"
    );

    let capacity = write(
        &dir,
        "capacity.json",
        r#"{"per_broker": {"bytes_in_per_second": 100, "bytes_out_per_second": 1073741824,
                           "requests_per_second": 1000000, "connections": 100000},
            "start_seconds": 30, "drain_seconds": 60, "price_per_broker_hour": "0.25",
            "latency_ms": [[0.0, 2], [0.7, 4], [1.0, 40]]}"#,
    );
    let calm = write(
        &dir,
        "calm.json",
        r#"{"min_brokers": 1, "max_brokers": 8, "target_per_broker": {"bytes_in_per_second": 70}}"#,
    );
    let hasty = write(
        &dir,
        "hasty.json",
        r#"{"min_brokers": 1, "max_brokers": 8, "target_per_broker": {"bytes_in_per_second": 70},
            "tolerance": 0.0, "scale_down": {"stabilization_seconds": 0, "period_seconds": 0, "max_step": 8}}"#,
    );
    let out = dir.join("report");
    let ran = tollgate(&[
        "autoscale",
        "simulate",
        "--trace",
        &trace,
        "--capacity",
        &capacity,
        "--policy",
        &calm,
        "--policy",
        &hasty,
        "--out",
        &out.display().to_string(),
    ]);
    let said = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{said}");
    assert!(
        said.contains("calm.json: cost") && said.contains("hasty.json: cost"),
        "{said}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["trace"]["samples"], 8_640);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let figure = |run: usize, key: &str| runs[run]["outcome"][key].as_u64().unwrap();
    // The diurnal load needs more than one broker at its peak: both policies scale.
    assert!(figure(0, "broker_seconds") > 86_400, "{report}");
    // Without tolerance or a scale-down window, every turn of the load resizes the pool.
    assert!(
        figure(1, "reversals") > figure(0, "reversals"),
        "hasty {} vs calm {} reversals",
        figure(1, "reversals"),
        figure(0, "reversals")
    );
    // Money is a decimal string, exact.
    let cost = runs[0]["outcome"]["cost"].as_str().unwrap();
    assert!(cost.parse::<f64>().is_ok_and(|c| c > 0.0), "{cost}");
    let first = &runs[0]["outcome"]["decisions"][0];
    assert!(
        first["reason"].as_str().unwrap().contains("recommended"),
        "{first}"
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("calm.json") && html.contains("hasty.json"));
    assert_eq!(html.matches("<svg").count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_policy_or_trace_is_refused_with_a_message_and_no_report() {
    let dir = scratch();
    let trace = write(&dir, "trace.csv", "time,load\n1,2\n");
    let policy = write(
        &dir,
        "policy.json",
        r#"{"min_brokers": 3, "max_brokers": 2}"#,
    );
    let capacity = write(
        &dir,
        "capacity.json",
        r#"{"per_broker": {"bytes_in_per_second": 1, "bytes_out_per_second": 1,
                           "requests_per_second": 1, "connections": 1},
            "start_seconds": 1, "drain_seconds": 1, "price_per_broker_hour": "1",
            "latency_ms": [[0.0, 1]]}"#,
    );
    let out = dir.join("report");
    let simulate = |trace: &str| {
        tollgate(&[
            "autoscale",
            "simulate",
            "--trace",
            trace,
            "--capacity",
            &capacity,
            "--policy",
            &policy,
            "--out",
            &out.display().to_string(),
        ])
    };
    let bad_trace = simulate(&trace);
    assert!(!bad_trace.status.success());
    assert!(String::from_utf8_lossy(&bad_trace.stderr).contains("the first line must be"));
    let good_trace = dir.join("flat.csv").display().to_string();
    assert!(tollgate(&[
        "autoscale",
        "trace",
        "--synthetic",
        "flat",
        "--out",
        &good_trace
    ])
    .status
    .success());
    let bad_policy = simulate(&good_trace);
    assert!(!bad_policy.status.success());
    assert!(
        String::from_utf8_lossy(&bad_policy.stderr)
            .contains("max_brokers (2) must be at least min_brokers (3)"),
        "{}",
        String::from_utf8_lossy(&bad_policy.stderr)
    );
    assert!(!out.join("report.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tune_recommends_a_policy_that_simulate_and_the_policy_reader_accept() {
    let dir = scratch();
    let trace = dir.join("day.csv").display().to_string();
    assert!(tollgate(&[
        "autoscale",
        "trace",
        "--synthetic",
        "diurnal",
        "--step-seconds",
        "60",
        "--peak-bytes-in-per-second",
        "400",
        "--out",
        &trace,
    ])
    .status
    .success());
    let capacity = write(
        &dir,
        "capacity.json",
        r#"{"per_broker": {"bytes_in_per_second": 100, "bytes_out_per_second": 1073741824,
                           "requests_per_second": 1000000, "connections": 100000},
            "start_seconds": 60, "drain_seconds": 60, "price_per_broker_hour": "1",
            "latency_ms": [[0.0, 2], [1.0, 20]]}"#,
    );
    let grid = write(
        &dir,
        "grid.json",
        r#"{"target_utilization": [0.6, 0.95], "tolerance": [0.1],
            "scale_up_stabilization_seconds": [0], "scale_up_max_step": [2],
            "scale_down_stabilization_seconds": [300], "scale_down_max_step": [1],
            "scale_down_period_seconds": [60]}"#,
    );
    let out = dir.join("tuned");
    let ran = tollgate(&[
        "autoscale",
        "tune",
        "--trace",
        &trace,
        "--capacity",
        &capacity,
        "--grid",
        &grid,
        "--out",
        &out.display().to_string(),
    ]);
    let said = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{said}");
    assert!(said.contains("2 candidates over 1440 samples"), "{said}");
    let recommended = std::fs::read_to_string(out.join("recommended-policy.json")).unwrap();
    let policy = tollgate_gateway::pool::autoscale::Policy::from_json(&recommended).unwrap();
    // The 95% target is short of capacity while each new broker starts; 60% is not.
    assert_eq!(policy.target_per_broker.bytes_in_per_second, Some(60));
    let candidates: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("candidates.json")).unwrap())
            .unwrap();
    assert_eq!(candidates["met"], true);
    assert_eq!(candidates["candidates"][1]["meets_objectives"], false);
    assert!(out.join("report.html").exists() && out.join("report.json").exists());
    let again = tollgate(&[
        "autoscale",
        "simulate",
        "--trace",
        &trace,
        "--capacity",
        &capacity,
        "--policy",
        &out.join("recommended-policy.json").display().to_string(),
        "--out",
        &dir.join("check").display().to_string(),
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
