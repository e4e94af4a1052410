//! The operator's view of the pool and the meter: brokers by state, the autoscaler's
//! desired size, bounds, utilization and scale events, and how far behind the meter's flush
//! is. None of it is a tenant's: collected for [`Scope::All`] only.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use super::model::{Collect, Family, Kind, Scope, Value};
use crate::pool::autoscale::Autoscaler;
use crate::pool::Pool;

pub struct PoolCollector {
    pub pool: Pool,
    pub autoscaler: Option<Autoscaler>,
    /// Unix seconds of the meter's last successful flush (0: none yet), set by the flusher.
    pub last_flush: Arc<AtomicI64>,
    /// Flushes that failed, counted by the flusher.
    pub flush_failures: Arc<AtomicU64>,
    /// Unix seconds the gateway started: the flush lag counts from it until the first flush.
    pub started: i64,
}

impl Collect for PoolCollector {
    fn collect(&self, scope: Scope, out: &mut Vec<Family>) {
        if !scope.operator() {
            return;
        }
        let mut brokers = Family::new(
            "tollgate_pool_brokers",
            "Pool brokers by state (starting, live, draining, down).",
            Kind::Gauge,
        );
        let members = self.pool.members_with_state();
        for state in ["starting", "live", "draining", "down"] {
            let n = members.iter().filter(|(_, s)| s.name() == state).count();
            brokers.push(vec![("state", state.to_owned())], Value::Int(n as u64));
        }
        out.push(brokers);

        let mut desired = Family::new(
            "tollgate_pool_desired_brokers",
            "Brokers the autoscaler wants (the pool's size without one).",
            Kind::Gauge,
        );
        let (wanted, latest) = self
            .autoscaler
            .as_ref()
            .map(Autoscaler::latest)
            .unwrap_or((None, None));
        desired.push(
            vec![],
            Value::Int(u64::from(wanted.unwrap_or(members.len() as u32))),
        );
        out.push(desired);

        out.extend(self.meter());
        let Some(autoscaler) = &self.autoscaler else {
            return;
        };
        let policy = autoscaler.policy();
        let mut min = Family::new(
            "tollgate_pool_min_brokers",
            "The autoscaling policy's least pool size.",
            Kind::Gauge,
        );
        min.push(vec![], Value::Int(u64::from(policy.min_brokers)));
        let mut max = Family::new(
            "tollgate_pool_max_brokers",
            "The autoscaling policy's largest pool size.",
            Kind::Gauge,
        );
        max.push(vec![], Value::Int(u64::from(policy.max_brokers)));
        let mut utilization = Family::new(
            "tollgate_pool_utilization",
            "The load per broker over its target at the last decision, per signal (1: at target).",
            Kind::Gauge,
        );
        for (signal, u) in latest.iter().flat_map(|d| &d.utilization) {
            utilization.push(vec![("signal", signal.name().to_owned())], Value::Float(*u));
        }
        let mut scaled = Family::new(
            "tollgate_pool_scale_events_total",
            "Scale decisions the autoscaler made since start, by direction.",
            Kind::Counter,
        );
        let (up, down) = autoscaler.scale_events();
        scaled.push(vec![("direction", "up".to_owned())], Value::Int(up));
        scaled.push(vec![("direction", "down".to_owned())], Value::Int(down));
        out.extend([min, max, utilization, scaled]);
    }
}

impl PoolCollector {
    fn meter(&self) -> [Family; 2] {
        let mut failures = Family::new(
            "tollgate_meter_flush_failures_total",
            "Meter flushes that could not store usage (it is kept and retried).",
            Kind::Counter,
        );
        failures.push(
            vec![],
            Value::Int(self.flush_failures.load(Ordering::Relaxed)),
        );
        [self.flush_lag(), failures]
    }

    fn flush_lag(&self) -> Family {
        let mut lag = Family::new(
            "tollgate_meter_flush_lag_seconds",
            "Seconds since the meter last flushed usage to its store (since start before the first).",
            Kind::Gauge,
        );
        let now = tollgate_meter::flusher::unix_now();
        let last = match self.last_flush.load(Ordering::Relaxed) {
            0 => self.started,
            t => t,
        };
        lag.push(vec![], Value::Int(now.saturating_sub(last).max(0) as u64));
        lag
    }
}
