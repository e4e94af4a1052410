//! The capacity file load-tests' `calibrate` writes is one the simulator reads: the writer
//! (`tollgate_load_tests::calibration`) fed hand-made step figures, and the file of a real
//! calibration run kept in `load-tests/calibration/`, both through `Capacity::from_json`.

use tollgate_gateway::pool::autoscale::simulate::Capacity;
use tollgate_gateway::pool::autoscale::Load;
use tollgate_load_tests::calibration::{
    find_knee, latency_curve, whole, Bound, CapacityFile, PerBroker, Step, DRAIN_SECONDS,
};

/// A real run's file (`cargo run --release -p tollgate-load-tests --bin calibrate`).
const MEASURED: &str = include_str!("../../load-tests/calibration/tollgate-dev-sqlite.json");

fn step(offered: f64, achieved: f64, p99_ms: f64, signal: f64) -> Step {
    Step {
        offered,
        achieved,
        p99_ms,
        signal,
    }
}

#[test]
fn a_file_written_from_steps_reads_back_the_same() {
    // Bytes in: follows up to 12 MB/s, falls behind at 36.
    let bytes = [
        step(4e6, 4e6, 53.2, 4.05e6),
        step(12e6, 12.2e6, 163.1, 13.06e6),
        step(36e6, 28.85e6, 1_301.0, 28.79e6),
    ];
    let knee = find_knee(&bytes).expect("steps");
    assert_eq!((knee.step, knee.bound), (1, Bound::Knee));
    let file = CapacityFile {
        per_broker: PerBroker {
            bytes_in_per_second: whole(knee.capacity).unwrap(),
            bytes_out_per_second: whole(15.89e6).unwrap(),
            requests_per_second: whole(1_197.4).unwrap(),
            connections: whole(101.0).unwrap(),
        },
        start_seconds: 1,
        drain_seconds: DRAIN_SECONDS,
        price_per_broker_hour: "0.21".into(),
        latency_ms: latency_curve(&bytes, &knee),
    };
    let read = Capacity::from_json(&file.to_json()).expect("the gateway reads the file");
    assert_eq!(
        read.per_broker,
        Load {
            bytes_in_per_second: 13_060_000,
            bytes_out_per_second: 15_890_000,
            requests_per_second: 1_197,
            connections: 101,
        }
    );
    assert_eq!((read.start_seconds, read.drain_seconds), (1, 15));
    assert_eq!(read.price_per_broker_hour, "0.21");
    // Offered over the knee step's acked payload (12.2 MB/s), p99 rounded up.
    assert_eq!(
        read.latency_ms,
        vec![(0.0, 54), (0.328, 54), (0.984, 164), (2.951, 1_301)]
    );
}

#[test]
fn the_measured_file_reads_with_sane_figures() {
    let c = Capacity::from_json(MEASURED).expect("the gateway reads the measured file");
    let p = c.per_broker;
    // from_json refuses zeros; these are what the local pool can be expected to carry at
    // least (a broker that took under 100 kB/s or 10 requests/s was not measured right).
    assert!(p.bytes_in_per_second >= 100_000, "{p:?}");
    assert!(p.bytes_out_per_second >= 100_000, "{p:?}");
    assert!(p.requests_per_second >= 10, "{p:?}");
    assert!(p.connections >= 1, "{p:?}");
    assert!(c.start_seconds >= 1 && c.drain_seconds == DRAIN_SECONDS);
    assert!(c.latency_ms.len() >= 2 && c.latency_ms[0].0 == 0.0);
    assert!(c.latency_ms.windows(2).all(|w| w[1].1 >= w[0].1));
    // The same bytes through load-tests' own reading of the format.
    let ours: CapacityFile = serde_json::from_str(MEASURED).expect("load-tests reads it too");
    assert_eq!(ours.per_broker.bytes_in_per_second, p.bytes_in_per_second);
}
