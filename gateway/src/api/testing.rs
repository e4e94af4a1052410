//! What the API handlers' tests share: a session context over a pool of the test's choosing.

use std::sync::Arc;

use tollgate_meter::embedded::EmbeddedStore;
use uuid::Uuid;

use super::Ctx;
use crate::identity::authz::{Identity, Session};
use crate::identity::token::{Claims, Tokens};
use crate::metering::Metering;
use crate::pool::{Caller, Pool, Timeouts};
use crate::state::{Gateway, GatewayConfig, Node};
use crate::tenancy::{Cluster, Registry};

/// A context with no pool behind it: enough for rewrites, which do no I/O.
pub(crate) fn ctx(policy: &str) -> Ctx {
    ctx_on(policy, Pool::new(Timeouts::default()))
}

/// A context for cluster `0xa` on `pool`.
pub(crate) fn ctx_on(policy: &str, pool: Pool) -> Ctx {
    let dir = std::env::temp_dir().join(format!("tollgate-unit-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let metering = Arc::new(Metering::new(
        Arc::new(EmbeddedStore::open(&dir).unwrap()),
        3600,
    ));
    let registry = Registry::default();
    let gw = Gateway::new(
        GatewayConfig {
            nodes: vec![Node {
                id: 7,
                host: "gw.example".into(),
                port: 9092,
            }],
            lanes: 1,
            region: "local".into(),
            max_frame_bytes: 1 << 20,
            max_sasl_frame_bytes: 1 << 16,
            max_in_flight: 1,
            limits: Default::default(),
            pool_kind: crate::pool::PoolKind::Stateless,
        },
        pool,
        registry.clone(),
        Arc::new(Tokens::hs256("t", b"0123456789abcdef0123456789abcdef")),
        metering.clone(),
    );
    let cluster = Cluster {
        id: Uuid::from_u128(0xa),
        tenant: "acme".into(),
        name: "orders".into(),
        max_message_bytes: 1 << 20,
        quotas: Default::default(),
        allowed_cidrs: None,
        credentials: Default::default(),
        created_at: 0,
    };
    // Registered, as a live cluster is: handlers look up its limits there.
    registry.upsert(cluster.clone());
    let cluster = Arc::new(cluster);
    let claims = Claims {
        iss: "t".into(),
        sub: "svc".into(),
        tenant: "acme".into(),
        cluster: cluster.id,
        iat: 0,
        exp: i64::MAX / 1000,
        jti: Uuid::nil(),
        policy: serde_json::from_str(policy).unwrap(),
    };
    let counters = metering.counters(cluster.id, "svc");
    let client = Caller::tenant(0, cluster.id);
    let mut session = Session::new(
        Identity::of_token(claims),
        cluster,
        "local".into(),
        counters,
    );
    session.metrics = gw.metrics().cluster(session.cluster.id);
    Ctx {
        gw,
        session: Arc::new(session),
        client,
    }
}
