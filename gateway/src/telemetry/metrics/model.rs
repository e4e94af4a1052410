//! The snapshot every exposition reads: families of samples, each sample with its labels and
//! the cluster it belongs to (so a tenant's view is a filter, not a second registry).

/// What a family measures, as Prometheus and OTLP type it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset by a restart); its name ends in `_total`.
    Counter,
    Gauge,
    Histogram,
}

/// A histogram's cumulative buckets, sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Upper bounds, ascending, without +Inf.
    pub bounds: &'static [f64],
    /// Observations at or below each bound (cumulative), then the total count for +Inf.
    pub cumulative: Vec<u64>,
    pub sum: f64,
}

impl Buckets {
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Exact counts (bytes, messages, requests): integers, never rounded through a float.
    Int(u64),
    /// Signed gauges (lag can be read below zero mid-reconciliation; it is clamped, but the
    /// type says what it is).
    Signed(i64),
    Float(f64),
    Histogram(Buckets),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// One metric name and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: Value) {
        self.samples.push(Sample { labels, value });
    }
}

/// Whose series a collection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The operator: every cluster's series and the gateway's own.
    All,
    /// A tenant: this cluster's series only, none of the gateway's or the pool's.
    Cluster(uuid::Uuid),
}

impl Scope {
    /// Whether a series of `cluster` belongs in this view.
    pub fn includes(&self, cluster: &uuid::Uuid) -> bool {
        match self {
            Scope::All => true,
            Scope::Cluster(id) => id == cluster,
        }
    }

    /// Whether series that belong to no cluster (the pool's, the gateway's) are in this view.
    pub fn operator(&self) -> bool {
        matches!(self, Scope::All)
    }
}

/// A source of families beside the registry's own (consumer lag, the pool, the meter, audit).
/// `collect` runs on every scrape and export: it reads atomics and small tables, never waits
/// on the network, and adds only what `scope` may see.
pub trait Collect: Send + Sync {
    fn collect(&self, scope: Scope, out: &mut Vec<Family>);
}
