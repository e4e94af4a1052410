//! Tenants, clusters, and how a cluster's names live on the shared pool.
//!
//! Every topic, group id and transactional id a tenant names is stored on the pool under its
//! cluster's namespace: `tg-<cluster uuid as 32 hex digits>-<name>`. The prefix has a fixed
//! length and ends in a fixed separator, so the mapping is injective (two different
//! (cluster, name) pairs never share a physical name) and reversible by stripping the prefix.
//! The prefix uses neither `.` nor `_`, so Kafka's rule that topic names may not collide once
//! `.` is read as `_` can only ever bite within one cluster, exactly as it would on a private
//! Kafka cluster.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Kafka's own limit on a topic name.
pub const MAX_TOPIC_NAME: usize = 249;
/// `tg-` + 32 hex digits + `-`.
pub const PREFIX_LEN: usize = 36;
/// The longest topic name a tenant may choose.
pub const MAX_TENANT_TOPIC_NAME: usize = MAX_TOPIC_NAME - PREFIX_LEN;
/// Group and transactional ids have no limit in Kafka; we bound them so a name cannot be used
/// to make the pool store arbitrarily large keys.
pub const MAX_TENANT_ID_NAME: usize = 1024;

pub const DEFAULT_MAX_MESSAGE_BYTES: i32 = 1024 * 1024;
pub const LIMIT_MAX_MESSAGE_BYTES: i32 = 10 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub max_message_bytes: i32,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    /// Stored clusters made before quotas existed have the defaults.
    #[serde(default)]
    pub quotas: crate::quotas::Quotas,
    /// The networks its clients may connect from; `None`: anywhere ([`crate::identity::allowlist`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_cidrs: Option<Vec<crate::identity::allowlist::Cidr>>,
    /// Its SCRAM users and revoked tokens ([`crate::identity::credentials`]).
    #[serde(
        default,
        skip_serializing_if = "crate::identity::credentials::Credentials::is_empty"
    )]
    pub credentials: crate::identity::credentials::Credentials,
}

impl Cluster {
    pub fn namespace(&self) -> Namespace {
        Namespace::of(self.id)
    }

    pub fn arn(&self, region: &str) -> String {
        format!(
            "arn:tollgate:kafka:{region}:{}:cluster/{}/{}",
            self.tenant,
            self.name,
            self.id.as_hyphenated()
        )
    }

    /// The ARN of a resource inside this cluster: `kind` is `topic`, `group` or
    /// `transactional-id`.
    pub fn resource_arn(&self, region: &str, kind: &str, name: &str) -> String {
        format!(
            "arn:tollgate:kafka:{region}:{}:{kind}/{}/{}/{name}",
            self.tenant,
            self.name,
            self.id.as_hyphenated()
        )
    }
}

/// Tenant ids are `[a-z0-9-]{1,32}`, per the contract.
pub fn valid_tenant_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Cluster names follow MSK's rule: letters, digits and hyphens, starting with a letter, at most
/// 64 characters. They appear in ARNs, so `/` and `*` must never get in.
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Why a tenant-chosen name cannot be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is longer than {0} characters")]
    TooLong(usize),
    #[error("the name may contain only ASCII letters, digits, '.', '_' and '-', and may not be '.' or '..'")]
    Illegal,
}

/// One cluster's view of the pool's names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    pub fn of(cluster: Uuid) -> Self {
        Namespace {
            prefix: format!("tg-{}-", cluster.as_simple()),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pool's name for a tenant's topic. Kafka's topic rules are applied to the tenant's
    /// name here, because after prefixing `.` or `..` would become legal pool names.
    pub fn topic(&self, name: &str) -> Result<String, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_TENANT_TOPIC_NAME {
            return Err(NameError::TooLong(MAX_TENANT_TOPIC_NAME));
        }
        if name == "."
            || name == ".."
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return Err(NameError::Illegal);
        }
        Ok(format!("{}{name}", self.prefix))
    }

    /// The pool's name for a group id or transactional id.
    pub fn id(&self, name: &str) -> Result<String, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_TENANT_ID_NAME {
            return Err(NameError::TooLong(MAX_TENANT_ID_NAME));
        }
        Ok(format!("{}{name}", self.prefix))
    }

    /// The tenant's name for a pool name, or `None` when the pool name is not this cluster's.
    pub fn strip<'a>(&self, physical: &'a str) -> Option<&'a str> {
        physical
            .strip_prefix(self.prefix.as_str())
            .filter(|rest| !rest.is_empty())
    }

    pub fn owns(&self, physical: &str) -> bool {
        self.strip(physical).is_some()
    }
}

/// The live set of clusters, shared by the admin API (which writes it after persisting) and the
/// data path (which reads it on every connection and produce). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    clusters: Arc<RwLock<Clusters>>,
}

#[derive(Debug, Default)]
struct Clusters {
    by_id: HashMap<Uuid, Arc<Cluster>>,
    /// Access key id -> its cluster: a SigV4 signature names only the key.
    by_access_key: HashMap<String, Uuid>,
    /// Client certificate principal -> the cluster that bound it: a certificate names no cluster.
    by_principal: HashMap<String, Uuid>,
}

impl Clusters {
    fn forget_keys(&mut self, cluster: &Cluster) {
        for key in cluster.credentials.access_keys.keys() {
            if self.by_access_key.get(key) == Some(&cluster.id) {
                self.by_access_key.remove(key);
            }
        }
        for principal in cluster.credentials.certificate_principals.keys() {
            if self.by_principal.get(principal) == Some(&cluster.id) {
                self.by_principal.remove(principal);
            }
        }
    }
}

impl Registry {
    pub fn get(&self, id: &Uuid) -> Option<Arc<Cluster>> {
        self.clusters
            .read()
            .expect("registry lock poisoned")
            .by_id
            .get(id)
            .cloned()
    }

    /// The cluster an access key belongs to.
    pub fn by_access_key(&self, key_id: &str) -> Option<Arc<Cluster>> {
        let clusters = self.clusters.read().expect("registry lock poisoned");
        let id = clusters.by_access_key.get(key_id)?;
        clusters.by_id.get(id).cloned()
    }

    /// The cluster that bound a client certificate principal.
    pub fn by_certificate_principal(&self, principal: &str) -> Option<Arc<Cluster>> {
        let clusters = self.clusters.read().expect("registry lock poisoned");
        let id = clusters.by_principal.get(principal)?;
        clusters.by_id.get(id).cloned()
    }

    pub fn upsert(&self, cluster: Cluster) {
        let mut clusters = self.clusters.write().expect("registry lock poisoned");
        if let Some(old) = clusters.by_id.get(&cluster.id).cloned() {
            clusters.forget_keys(&old);
        }
        for key in cluster.credentials.access_keys.keys() {
            clusters.by_access_key.insert(key.clone(), cluster.id);
        }
        for principal in cluster.credentials.certificate_principals.keys() {
            clusters.by_principal.insert(principal.clone(), cluster.id);
        }
        clusters.by_id.insert(cluster.id, Arc::new(cluster));
    }

    pub fn remove(&self, id: &Uuid) -> Option<Arc<Cluster>> {
        let mut clusters = self.clusters.write().expect("registry lock poisoned");
        let old = clusters.by_id.remove(id)?;
        clusters.forget_keys(&old);
        Some(old)
    }

    pub fn len(&self) -> usize {
        self.clusters
            .read()
            .expect("registry lock poisoned")
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Cluster>> {
        self.clusters
            .read()
            .expect("registry lock poisoned")
            .by_id
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_keys_find_their_cluster_until_removed_or_replaced() {
        use crate::identity::credentials::AccessKey;
        let key = |c: &mut Cluster, id: &str| {
            c.credentials.access_keys.insert(
                id.into(),
                AccessKey {
                    secret: "s".into(),
                    principal: "p".into(),
                    policy: serde_json::from_str(r#"{"Statement":[]}"#).unwrap(),
                    created_at: 0,
                },
            );
        };
        let mut a = Cluster {
            id: Uuid::from_u128(1),
            tenant: "t".into(),
            name: "a".into(),
            max_message_bytes: 1,
            created_at: 0,
            quotas: Default::default(),
            allowed_cidrs: None,
            credentials: Default::default(),
        };
        let mut b = Cluster {
            id: Uuid::from_u128(2),
            name: "b".into(),
            ..a.clone()
        };
        key(&mut a, "K1");
        key(&mut b, "K2");
        let r = Registry::default();
        r.upsert(a.clone());
        r.upsert(b.clone());
        assert_eq!(r.by_access_key("K1").unwrap().id, a.id);
        assert_eq!(r.by_access_key("K2").unwrap().id, b.id);
        assert!(r.by_access_key("K3").is_none());
        // K1 deleted, K3 made: the index follows the record.
        a.credentials.access_keys.clear();
        key(&mut a, "K3");
        r.upsert(a.clone());
        assert!(r.by_access_key("K1").is_none());
        assert_eq!(r.by_access_key("K3").unwrap().id, a.id);
        r.remove(&a.id);
        assert!(r.by_access_key("K3").is_none());
        assert_eq!(r.by_access_key("K2").unwrap().id, b.id);
    }

    #[test]
    fn mapping_round_trips_and_is_injective() {
        let a = Namespace::of(Uuid::from_u128(1));
        let b = Namespace::of(Uuid::from_u128(2));
        let pa = a.topic("orders").unwrap();
        let pb = b.topic("orders").unwrap();
        assert_ne!(pa, pb);
        assert_eq!(a.strip(&pa), Some("orders"));
        assert_eq!(b.strip(&pa), None);
        assert_eq!(a.prefix().len(), PREFIX_LEN);
        // A tenant name that looks like another namespace stays inside its own.
        let sneaky = a.topic(&pb).unwrap();
        assert_eq!(a.strip(&sneaky), Some(pb.as_str()));
        assert_eq!(b.strip(&sneaky), None);
        // Bare prefix is nobody's name.
        assert_eq!(a.strip(a.prefix()), None);
    }

    #[test]
    fn topic_rules_are_kafkas() {
        let ns = Namespace::of(Uuid::from_u128(7));
        assert_eq!(ns.topic(""), Err(NameError::Empty));
        assert_eq!(ns.topic("."), Err(NameError::Illegal));
        assert_eq!(ns.topic(".."), Err(NameError::Illegal));
        assert_eq!(ns.topic("a b"), Err(NameError::Illegal));
        assert_eq!(ns.topic("ü"), Err(NameError::Illegal));
        assert!(ns.topic("a.b_c-D9").is_ok());
        let longest = "x".repeat(MAX_TENANT_TOPIC_NAME);
        assert_eq!(ns.topic(&longest).unwrap().len(), MAX_TOPIC_NAME);
        assert_eq!(
            ns.topic(&format!("{longest}x")),
            Err(NameError::TooLong(MAX_TENANT_TOPIC_NAME))
        );
        assert!(ns.id("any string / with * chars").is_ok());
        assert_eq!(ns.id(""), Err(NameError::Empty));
    }

    #[test]
    fn arns() {
        let c = Cluster {
            id: Uuid::from_u128(0xabc),
            tenant: "acme".into(),
            name: "orders".into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            quotas: Default::default(),
            allowed_cidrs: None,
            credentials: Default::default(),
            created_at: 0,
        };
        assert_eq!(
            c.arn("local"),
            "arn:tollgate:kafka:local:acme:cluster/orders/00000000-0000-0000-0000-000000000abc"
        );
        assert_eq!(
            c.resource_arn("local", "topic", "t1"),
            "arn:tollgate:kafka:local:acme:topic/orders/00000000-0000-0000-0000-000000000abc/t1"
        );
    }

    #[test]
    fn id_rules() {
        assert!(valid_tenant_id("acme-2"));
        assert!(!valid_tenant_id("Acme"));
        assert!(!valid_tenant_id(""));
        assert!(!valid_tenant_id(&"a".repeat(33)));
        assert!(valid_cluster_name("orders-1"));
        assert!(!valid_cluster_name("1orders"));
        assert!(!valid_cluster_name("a/b"));
        assert!(!valid_cluster_name("a*"));
    }
}
