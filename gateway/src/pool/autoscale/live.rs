//! The live autoscaler: the gateway's load sampled every interval, decided on by the same
//! [`Decider`] as the simulator, every resize recorded as an event and every sample kept as
//! history (the trace `tollgate autoscale simulate` and `tune` read).
//!
//! What resizes the pool is an [`Actuator`] (`tollgate dev`'s tansu brokers, or for `tollgate
//! serve` an operator's command or the Kubernetes API). In `apply` mode with an actuator, each
//! resize is carried out and its event marked applied; in `shadow` mode, or without an
//! actuator, decisions are recorded with `applied: false`, and the log says so once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::actuator::Actuator;
use super::decide::{Decider, Decision, Load};
use super::policy::{Mode, Policy};
use super::shared::Shared;
use super::trace::Sample;
use crate::pool::DRAIN_TIMEOUT;
use crate::telemetry::audit::scaling::Outcome::{Failed, NotApplied, Resized};

/// The gateway's load as it happens: plain atomics, bumped on the data path where the request
/// already is, read by the autoscaler every interval.
#[derive(Debug, Default)]
pub struct Signals {
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Connections open now (a gauge: opened minus closed).
    opened: AtomicU64,
    closed: AtomicU64,
}

impl Signals {
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Record bytes the pool took (produce) ...
    pub fn bytes_in(&self, bytes: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// ... and record bytes delivered to clients (fetch).
    pub fn bytes_out(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a client connection until the returned guard is dropped.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.opened.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            connections: self
                .opened
                .load(Ordering::Relaxed)
                .saturating_sub(self.closed.load(Ordering::Relaxed)),
        }
    }
}

/// Keeps a connection counted in [`Signals`].
pub struct ConnectionGuard(Arc<Signals>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.closed.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
    connections: u64,
}

/// A decision that resized (or, in shadow mode, would have resized) the pool.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Event {
    #[serde(flatten)]
    pub decision: Decision,
    /// Whether the pool was asked to change.
    pub applied: bool,
}

/// Events kept: a scale event every few minutes for a month is far fewer.
const MAX_EVENTS: usize = 10_000;
/// Samples kept: 30 days at the default 10 s history resolution.
pub const MAX_SAMPLES: usize = 30 * 86_400 / 10;

/// The autoscaler's state, shared by its task and the admin API. Cheap to clone.
#[derive(Clone)]
pub struct Autoscaler {
    signals: Arc<Signals>,
    state: Arc<Mutex<State>>,
    actuator: Option<Arc<dyn Actuator>>,
    /// With several instances: the load is exchanged, and only the decider decides.
    shared: Option<Arc<Shared>>,
    /// Where resizes are reported (`pool.scaled`).
    audit: Option<crate::telemetry::audit::Audit>,
}

/// Who decides, when several instances share the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deciding {
    /// The deciding instance's id, as of the last exchange (None: Redis unreachable).
    pub decider: Option<String>,
    /// This instance's id.
    pub instance: String,
    /// How many instances' loads the last sample summed.
    pub instances: usize,
}

struct State {
    decider: Decider,
    /// The size the autoscaler last wanted.
    desired: Option<u32>,
    last: Option<(u64, Totals)>,
    latest: Option<Decision>,
    events: VecDeque<Event>,
    /// Scale decisions made since start, up and down: counters for the metrics, which the
    /// bounded event log cannot be (it forgets its oldest).
    scaled_up: u64,
    scaled_down: u64,
    history: VecDeque<Sample>,
    told_no_actuator: bool,
    /// The last exchange's deciding instance and instance count (several instances only).
    decided_by: Option<String>,
    instances: usize,
    /// Redis could not be reached at the last exchange (said once per outage).
    redis_down: bool,
    /// The decider's target at the last exchange, and whether this instance decided.
    target: Option<u32>,
    deciding_here: bool,
}

/// What the applier task does next.
#[derive(Debug, Clone)]
enum Job {
    /// This instance decided a resize.
    Resize(Decision),
    /// Another instance resizes the pool to this size.
    Follow(u32),
}

impl Autoscaler {
    /// An autoscaler with `policy` (checked by [`Policy::validate`]) over `signals`.
    pub fn new(policy: Policy, signals: Arc<Signals>) -> Autoscaler {
        Autoscaler {
            signals,
            state: Arc::new(Mutex::new(State {
                decider: Decider::new(policy),
                desired: None,
                last: None,
                latest: None,
                events: VecDeque::new(),
                scaled_up: 0,
                scaled_down: 0,
                history: VecDeque::new(),
                told_no_actuator: false,
                decided_by: None,
                instances: 1,
                redis_down: false,
                target: None,
                deciding_here: true,
            })),
            actuator: None,
            shared: None,
            audit: None,
        }
    }

    /// Reports every resize, failed resize and decision not applied to `audit`.
    pub fn with_audit(mut self, audit: crate::telemetry::audit::Audit) -> Autoscaler {
        self.audit = Some(audit);
        self
    }

    fn audit(&self, decision: &Decision, outcome: crate::telemetry::audit::scaling::Outcome) {
        if let Some(audit) = &self.audit {
            audit.pool_scaled(decision, outcome);
        }
    }

    /// Shares the load with the other instances on the same Redis, and decides only while
    /// this instance holds the decider lease.
    pub fn with_shared(mut self, shared: Shared) -> Autoscaler {
        self.shared = Some(Arc::new(shared));
        self
    }

    /// The size the deciding instance resizes the pool to, while this one does not decide.
    fn following(&self) -> Option<u32> {
        let state = self.lock();
        state.target.filter(|_| !state.deciding_here)
    }

    /// Who decides, when several instances share the pool; None for a lone instance.
    pub fn deciding(&self) -> Option<Deciding> {
        let shared = self.shared.as_ref()?;
        let state = self.lock();
        Some(Deciding {
            decider: state.decided_by.clone(),
            instance: shared.instance().to_owned(),
            instances: state.instances,
        })
    }

    /// Resizes the pool with `actuator` when the policy's mode is `apply`.
    pub fn with_actuator(mut self, actuator: Arc<dyn Actuator>) -> Autoscaler {
        self.actuator = Some(actuator);
        self
    }

    pub fn policy(&self) -> Policy {
        self.lock().decider.policy().clone()
    }

    /// Replaces the policy in force; the next decision uses it.
    pub fn set_policy(&self, policy: Policy) {
        self.lock().decider.set_policy(policy);
    }

    /// Samples the load at `now` (seconds) with `brokers` in the pool, decides, and records
    /// the sample and any resize. The first call only starts the rates.
    pub fn tick(&self, now: u64, brokers: u32, partitions: u64) -> Option<Decision> {
        let load = self.sample(now)?;
        self.record(now, brokers, partitions, load, true)
    }

    /// This instance's load since the last sample (rates per second, connections now); None
    /// on the first call, which only starts the rates.
    fn sample(&self, now: u64) -> Option<Load> {
        let totals = self.signals.totals();
        let mut state = self.lock();
        let (then, before) = state.last.replace((now, totals))?;
        let elapsed = now.saturating_sub(then).max(1);
        let rate = |now: u64, before: u64| now.saturating_sub(before) / elapsed;
        Some(Load {
            bytes_in_per_second: rate(totals.bytes_in, before.bytes_in),
            bytes_out_per_second: rate(totals.bytes_out, before.bytes_out),
            requests_per_second: rate(totals.requests, before.requests),
            connections: totals.connections,
        })
    }

    /// Records the pool's `load` at `now` in the history and, if this instance decides,
    /// decides on it. An instance that does not decide wants nothing.
    fn record(
        &self,
        now: u64,
        brokers: u32,
        partitions: u64,
        load: Load,
        deciding: bool,
    ) -> Option<Decision> {
        let mut state = self.lock();
        if state.history.len() == MAX_SAMPLES {
            state.history.pop_front();
        }
        state.history.push_back(Sample {
            time: now,
            brokers,
            bytes_in_per_second: load.bytes_in_per_second,
            bytes_out_per_second: load.bytes_out_per_second,
            requests_per_second: load.requests_per_second,
            connections: load.connections,
            partitions,
        });
        if !deciding {
            state.desired = None;
            return None;
        }
        // Decide from what the autoscaler asked for last, as HPA decides from the replica
        // count it set: brokers still starting count.
        let current = state.desired.unwrap_or(brokers);
        let decision = state.decider.decide(now, current, &load);
        state.latest = Some(decision.clone());
        if decision.changes() {
            let mode = state.decider.policy().mode;
            // Decisions applied are reported with their outcome, by `apply`.
            if mode != Mode::Apply {
                self.audit(&decision, NotApplied("shadow mode"));
            } else if self.actuator.is_none() {
                self.audit(&decision, NotApplied("no actuator resizes this pool"));
            }
            if mode == Mode::Apply && self.actuator.is_none() && !state.told_no_actuator {
                state.told_no_actuator = true;
                tracing::warn!(
                    "autoscaling policy in apply mode, but this pool has no actuator \
                     (--pool-scale-command or --pool-scale-kubernetes): decisions are \
                     recorded, the pool keeps its size"
                );
            }
            tracing::info!(
                from = decision.from_brokers,
                to = decision.to_brokers,
                reason = %decision.reason,
                "autoscaler decision"
            );
            if decision.to_brokers > decision.from_brokers {
                state.scaled_up += 1;
            } else if decision.to_brokers < decision.from_brokers {
                state.scaled_down += 1;
            }
            if state.events.len() == MAX_EVENTS {
                state.events.pop_front();
            }
            state.events.push_back(Event {
                decision: decision.clone(),
                applied: false,
            });
            state.desired = Some(decision.to_brokers);
        }
        Some(decision)
    }

    /// The size wanted now, and the last decision (with each signal's utilization).
    pub fn latest(&self) -> (Option<u32>, Option<Decision>) {
        let state = self.lock();
        (state.desired, state.latest.clone())
    }

    /// Scale decisions since start: (up, down).
    pub fn scale_events(&self) -> (u64, u64) {
        let state = self.lock();
        (state.scaled_up, state.scaled_down)
    }

    /// Events from `from` to `to` (seconds, inclusive).
    pub fn events(&self, from: u64, to: u64) -> Vec<Event> {
        self.lock()
            .events
            .iter()
            .filter(|e| (from..=to).contains(&e.decision.time))
            .cloned()
            .collect()
    }

    /// Samples from `from` to `to` (seconds, inclusive).
    pub fn history(&self, from: u64, to: u64) -> Vec<Sample> {
        self.lock()
            .history
            .iter()
            .filter(|s| (from..=to).contains(&s.time))
            .copied()
            .collect()
    }

    /// Carries a decision out, if the mode and an actuator allow, and marks its event. A resize
    /// that fails forgets the size it wanted, so the next decision starts from the pool as it
    /// is and asks again.
    async fn apply(&self, decision: &Decision) {
        let Some(actuator) = &self.actuator else {
            return;
        };
        if self.policy().mode != Mode::Apply {
            return;
        }
        if let Some(shared) = &self.shared {
            if let Err(e) = shared.announce(decision.to_brokers).await {
                // Not resizing what the other instances were not told of: the next decision
                // starts from the pool as it is and tries again.
                tracing::warn!(error = %e, "could not tell the other instances about a resize; not resizing");
                self.lock().desired = None;
                self.audit(decision, Failed);
                return;
            }
            if decision.to_brokers < decision.from_brokers {
                // Every other instance learns the target at its next exchange (one interval)
                // and drains the leaving brokers (at most a drain's length) before they stop.
                let interval = u64::from(self.policy().interval_seconds);
                tokio::time::sleep(Duration::from_secs(interval) + DRAIN_TIMEOUT).await;
            }
        }
        match actuator.resize(decision.to_brokers).await {
            Ok(n) => {
                tracing::info!(brokers = n, "pool resized");
                self.audit(decision, Resized);
                // What an operator of `tollgate dev` watches for, beside the log.
                println!(
                    "Pool: {} -> {n} brokers ({})",
                    decision.from_brokers, decision.reason
                );
                if let Some(e) = self
                    .lock()
                    .events
                    .iter_mut()
                    .rev()
                    .find(|e| e.decision.time == decision.time)
                {
                    e.applied = true;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not resize the pool");
                self.lock().desired = None;
                self.audit(decision, Failed);
            }
        }
    }

    /// Ticks every policy interval until `stop`, with the pool's size from `brokers` and its
    /// partitions from `partitions`. Resizes run beside the ticks (a broker can take minutes
    /// to start), one at a time; a decision made meanwhile waits, and only the latest is
    /// carried out.
    pub async fn run(
        self,
        brokers: impl Fn() -> u32 + Send,
        partitions: impl Fn() -> u64 + Send,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(stop);
        let (wanted, mut jobs) = tokio::sync::watch::channel::<Option<Job>>(None);
        let applier = self.clone();
        let applier = tokio::spawn(async move {
            while jobs.changed().await.is_ok() {
                let job = jobs.borrow_and_update().clone();
                match job {
                    Some(Job::Resize(decision)) => {
                        applier.apply(&decision).await;
                        applier.publish(&decision).await;
                    }
                    Some(Job::Follow(n)) => {
                        if let Some(actuator) = &applier.actuator {
                            actuator.follow(n).await;
                        }
                    }
                    None => {}
                }
            }
        });
        let mut followed = None;
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let seconds = self.policy().interval_seconds;
            let decided = tokio::select! {
                () = &mut stop => break,
                d = self.step(now, brokers(), partitions()) => d,
            };
            if let Some(decision) = decided.filter(Decision::changes) {
                followed = Some(decision.to_brokers);
                wanted.send_replace(Some(Job::Resize(decision)));
            } else if let Some(target) = self.following().filter(|t| Some(*t) != followed) {
                followed = Some(target);
                wanted.send_replace(Some(Job::Follow(target)));
            }
            let interval = Duration::from_secs(u64::from(seconds));
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        // A resize under way is abandoned: the process is stopping, and the pool with it
        // (`tollgate dev`) or not at all (`serve`).
        applier.abort();
    }

    /// Shares the event of `decision`, as it now stands, with the other instances.
    async fn publish(&self, decision: &Decision) {
        let Some(shared) = &self.shared else {
            return;
        };
        let event = self
            .lock()
            .events
            .iter()
            .rev()
            .find(|e| e.decision.time == decision.time)
            .and_then(|e| serde_json::to_string(e).ok());
        if let Some(event) = event {
            if let Err(e) = shared.push_event(&event, MAX_EVENTS).await {
                tracing::warn!(error = %e, "the event is kept by this instance only");
            }
        }
    }

    /// Replaces the policy for the whole pool: every instance on the same Redis adopts it at
    /// its next exchange.
    pub async fn put_policy(&self, policy: Policy) -> Result<(), String> {
        if let Some(shared) = &self.shared {
            let json = serde_json::to_string(&policy).map_err(|e| e.to_string())?;
            shared.put_policy(&json).await?;
        }
        self.set_policy(policy);
        Ok(())
    }

    /// Events from `from` to `to` (seconds, inclusive): the pool's, from Redis, with several
    /// instances (this instance's own if Redis cannot be read, and the log says so).
    pub async fn pool_events(&self, from: u64, to: u64) -> Vec<Event> {
        if let Some(shared) = &self.shared {
            match shared.events().await {
                Ok(all) => {
                    return all
                        .iter()
                        .filter_map(|e| serde_json::from_str::<Event>(e).ok())
                        .filter(|e| (from..=to).contains(&e.decision.time))
                        .collect()
                }
                Err(e) => tracing::warn!(error = %e, "showing this instance's events only"),
            }
        }
        self.events(from, to)
    }

    /// One interval: samples this instance's load, exchanges it with the other instances if
    /// there are any, records the pool's load, and decides if this instance is the decider.
    pub async fn step(&self, now: u64, brokers: u32, partitions: u64) -> Option<Decision> {
        let local = self.sample(now)?;
        let (load, deciding) = match &self.shared {
            None => (local, true),
            Some(shared) => {
                let policy = self.policy();
                let json = serde_json::to_string(&policy).unwrap_or_default();
                match shared
                    .exchange(now, &local, policy.interval_seconds, &json)
                    .await
                {
                    Ok(x) => {
                        if x.policy != json {
                            match Policy::from_json(&x.policy) {
                                Ok(p) => {
                                    tracing::info!(policy = %x.policy, "adopting the pool's autoscaling policy from Redis");
                                    self.set_policy(p);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "the pool's policy in Redis is invalid; keeping this instance's")
                                }
                            }
                        }
                        let mut state = self.lock();
                        if std::mem::take(&mut state.redis_down) {
                            tracing::info!("autoscaler reaches Redis again");
                        }
                        state.decided_by = Some(x.decider);
                        state.instances = x.instances;
                        state.target = x.target;
                        state.deciding_here = x.deciding;
                        (x.load, x.deciding)
                    }
                    Err(e) => {
                        // Without Redis no instance can know it decides alone: none does, and
                        // the pool keeps its size until Redis is back.
                        let mut state = self.lock();
                        if !std::mem::replace(&mut state.redis_down, true) {
                            tracing::warn!(error = %e, "autoscaler cannot reach Redis: not deciding, the pool keeps its size");
                        }
                        state.decided_by = None;
                        state.instances = 1;
                        state.deciding_here = false;
                        state.target = None;
                        (local, false)
                    }
                }
            }
        };
        self.record(now, brokers, partitions, load, deciding)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::autoscale::policy::{ScaleUp, Targets};
    use crate::pool::autoscale::trace;

    fn policy() -> Policy {
        Policy {
            min_brokers: 1,
            max_brokers: 5,
            target_per_broker: Targets {
                bytes_in_per_second: Some(1_000),
                connections: Some(10),
                ..Targets::default()
            },
            scale_up: ScaleUp {
                stabilization_seconds: 0,
                max_step: 4,
            },
            ..Policy::default()
        }
    }

    #[test]
    fn the_load_is_sampled_as_rates_decided_on_and_kept_as_a_trace() {
        let signals = Arc::new(Signals::default());
        let a = Autoscaler::new(policy(), signals.clone());
        assert!(
            a.tick(100, 1, 0).is_none(),
            "the first tick starts the rates"
        );
        let _open: Vec<_> = (0..3).map(|_| signals.connection()).collect();
        signals.bytes_in(30_000);
        signals.bytes_out(5_000);
        (0..50).for_each(|_| signals.request());
        // 30,000 bytes in over 10 s: 3,000/s, three brokers' worth.
        let d = a.tick(110, 1, 12).expect("a decision");
        assert_eq!((d.from_brokers, d.to_brokers), (1, 3), "{}", d.reason);
        let history = a.history(0, u64::MAX);
        assert_eq!(
            history,
            [Sample {
                time: 110,
                brokers: 1,
                bytes_in_per_second: 3_000,
                bytes_out_per_second: 500,
                requests_per_second: 5,
                connections: 3,
                partitions: 12,
            }]
        );
        // The next decision starts from what was asked for, not the pool's unchanged size.
        signals.bytes_in(30_000);
        let again = a.tick(120, 1, 12).unwrap();
        assert_eq!((again.from_brokers, again.to_brokers), (3, 3));
        let events = a.events(0, u64::MAX);
        assert_eq!(events.len(), 1);
        assert!(!events[0].applied, "no actuator: recorded, not applied");
        assert_eq!(a.latest().0, Some(3));
        // The history is the simulator's trace format.
        let csv = trace::to_csv(&a.history(0, u64::MAX));
        assert_eq!(trace::parse(&csv).unwrap().len(), 2);
    }

    #[test]
    fn the_recorded_history_replayed_through_the_simulator_makes_the_live_decisions() {
        // A live run: a load that rises, holds and falls, sampled every interval (5 s).
        let signals = Arc::new(Signals::default());
        let mut policy = policy();
        policy.scale_down.stabilization_seconds = 30;
        policy.scale_down.period_seconds = 10;
        let live = Autoscaler::new(policy.clone(), signals.clone());
        live.tick(1_000, 1, 0);
        let per_tick = [
            5, 12, 20, 35, 35, 35, 30, 8, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1,
        ];
        for (i, kb_per_s) in per_tick.iter().enumerate() {
            signals.bytes_in(kb_per_s * 1_000 * 5);
            live.tick(1_005 + 5 * i as u64, 1, 0);
        }
        let live_events: Vec<(u64, u32, u32)> = live
            .events(0, u64::MAX)
            .iter()
            .map(|e| {
                (
                    e.decision.time,
                    e.decision.from_brokers,
                    e.decision.to_brokers,
                )
            })
            .collect();
        assert!(live_events.len() >= 3, "{live_events:?}");

        // The same samples through the simulator, from the exported CSV.
        let history = trace::parse(&trace::to_csv(&live.history(0, u64::MAX))).unwrap();
        let capacity = crate::pool::autoscale::simulate::Capacity::from_json(
            r#"{"per_broker": {"bytes_in_per_second": 1000, "bytes_out_per_second": 1000,
                               "requests_per_second": 1000, "connections": 1000},
                "start_seconds": 0, "drain_seconds": 0, "price_per_broker_hour": "1",
                "latency_ms": [[0.0, 1]]}"#,
        )
        .unwrap();
        let replayed: Vec<(u64, u32, u32)> =
            crate::pool::autoscale::simulate::simulate(&history, &policy, &capacity)
                .decisions
                .iter()
                .map(|d| (d.time, d.from_brokers, d.to_brokers))
                .collect();
        assert_eq!(replayed, live_events);
    }

    #[test]
    fn closed_connections_leave_the_gauge() {
        let signals = Arc::new(Signals::default());
        let a = signals.connection();
        let b = signals.connection();
        drop(a);
        assert_eq!(signals.totals().connections, 1);
        drop(b);
        assert_eq!(signals.totals().connections, 0);
    }

    #[tokio::test]
    async fn instances_on_one_redis_sum_their_loads_and_one_decides() {
        use crate::pool::autoscale::shared::Shared;
        let redis = crate::pool::testing::RedisServer::start().await;
        let make = |name: &str| {
            let signals = Arc::new(Signals::default());
            let shared = Shared::new(&redis.url, name.to_owned()).unwrap();
            (
                Autoscaler::new(policy(), signals.clone()).with_shared(shared),
                signals,
            )
        };
        let (a, a_signals) = make("a");
        let (b, b_signals) = make("b");
        assert_eq!(
            a.step(100, 1, 0).await,
            None,
            "the first step starts the rates"
        );
        assert_eq!(b.step(100, 1, 0).await, None);
        // 6,000 B/s through a and 4,000 B/s through b: 10,000 B/s at the pool, 10 brokers'
        // worth at 1,000 B/s each; either instance alone would see fewer.
        a_signals.bytes_in(60_000);
        b_signals.bytes_in(40_000);
        let first = a
            .step(110, 1, 0)
            .await
            .expect("a decides: it took the lease first");
        let second = b.step(110, 1, 0).await;
        assert_eq!(second, None, "b does not decide while a holds the lease");
        assert_eq!(
            (first.from_brokers, first.to_brokers),
            (1, 5),
            "{}",
            first.reason
        );
        assert!(
            first.reason.contains("bytes_in_per_second 6000"),
            "a saw only its own load before b published: {}",
            first.reason
        );
        // Next interval: both have published, and the sum drives the decision.
        a_signals.bytes_in(60_000);
        b_signals.bytes_in(40_000);
        b.step(120, 5, 0).await;
        let summed = a.step(120, 5, 0).await.unwrap();
        assert!(
            summed.reason.contains("bytes_in_per_second 10000"),
            "{}",
            summed.reason
        );
        let deciding = b.deciding().unwrap();
        assert_eq!(
            (
                deciding.decider.as_deref(),
                deciding.instance.as_str(),
                deciding.instances
            ),
            (Some("a"), "b", 2)
        );
        // Both record the pool's load as history: either one's export is the pool's trace.
        assert_eq!(b.history(120, 120)[0].bytes_in_per_second, 10_000);
        assert_eq!(a.events(0, u64::MAX).len(), 1);
        assert!(b.events(0, u64::MAX).is_empty());
        // The decider's events are the pool's: every instance shows them.
        a.publish(&first).await;
        let shown = b.pool_events(0, u64::MAX).await;
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].decision, first);
        // A policy put through one instance is the pool's: the decider adopts it.
        let wider = Policy {
            max_brokers: 7,
            ..policy()
        };
        b.put_policy(wider.clone()).await.unwrap();
        a.step(122, 5, 0).await;
        assert_eq!(a.policy(), wider);
        // What the decider announces before a resize, the others follow.
        a.shared.as_ref().unwrap().announce(4).await.unwrap();
        b.step(125, 5, 0).await;
        assert_eq!(b.following(), Some(4));
        a.step(125, 5, 0).await;
        assert_eq!(a.following(), None, "the decider follows no one");

        // a stops: its lease runs out after three intervals (30 s here; expired at once
        // below), and b takes over.
        let mut conn = redis::Client::open(redis.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg("tg:autoscale:decider")
            .query_async(&mut conn)
            .await
            .unwrap();
        b_signals.bytes_in(40_000);
        let took_over = b.step(130, 5, 0).await;
        assert!(took_over.is_some(), "b decides once a's lease is gone");
        assert_eq!(b.deciding().unwrap().decider.as_deref(), Some("b"));
    }
}
