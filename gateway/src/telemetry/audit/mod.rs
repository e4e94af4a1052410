//! Audit events. (Skeleton: the event model and the handle the rest of the gateway calls;
//! delivery is being built.)

use std::sync::Arc;

use uuid::Uuid;

/// What happened, as the event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A client authenticated (SASL or certificate).
    AuthenticationSucceeded,
    /// A client's authentication failed.
    AuthenticationFailed,
    /// A request was refused by the principal's policy.
    AuthorizationDenied,
    /// The admin API changed something (tenant, cluster, credential, quota, token).
    AdminChange,
    /// A quota refused or throttled a client.
    QuotaBreached,
    /// The pool's autoscaler scaled (or decided to).
    PoolScaled,
}

/// One event as its emitter knows it; the handle adds id, time and source.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    pub cluster: Option<Uuid>,
    pub principal: Option<String>,
    pub client_address: Option<String>,
    /// What was attempted: an IAM action (`kafka-cluster:WriteData`), a SASL mechanism, an
    /// admin route (`POST /v1/clusters`).
    pub action: String,
    /// What it was attempted on (a topic ARN, a cluster id), if anything.
    pub resource: Option<String>,
    pub granted: bool,
    /// Why, in words (never a secret).
    pub reason: Option<String>,
}

/// The gateway's audit log. Cheap to clone; emitting never waits.
#[derive(Clone, Default)]
pub struct Audit {
    _inner: Arc<()>,
}

impl Audit {
    pub fn emit(&self, event: Event) {
        let _ = event;
    }
}
