//! The admin API's durable state: tenants and clusters in one redb file, `admin.redb`.
//!
//! Records are JSON values so that adding a field later needs no migration. Deleted clusters
//! stay as tombstones carrying `deleted_at`, because metering and billing need every cluster's
//! lifetime long after the cluster is gone; they are invisible to `cluster` and `clusters`.
//!
//! Every method does blocking file I/O (a commit is an fsync); async callers run them on
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::tenancy::{Cluster, Registry, Tenant};

/// The file name inside the data dir.
pub const FILE_NAME: &str = "admin.redb";

/// Tenant id -> JSON [`Tenant`].
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// Cluster uuid -> JSON [`ClusterRecord`], tombstones included.
const CLUSTERS: TableDefinition<u128, &[u8]> = TableDefinition::new("clusters");
/// `<tenant>/<cluster name>` -> cluster uuid, for live clusters only, so a name can be reused
/// once its cluster is deleted (as on MSK). Tenant ids cannot contain `/`, so the key is
/// unambiguous.
const CLUSTER_NAMES: TableDefinition<&str, u128> = TableDefinition::new("cluster_names");
/// Token id (`jti`) -> JSON [`IssuedToken`], for every token the admin API issued and that has
/// not expired long since: what `DELETE /v1/tokens/{jti}` finds the token's cluster by.
const TOKENS: TableDefinition<u128, &[u8]> = TableDefinition::new("tokens");

/// Expired tokens are forgotten when a token is issued and the table has a multiple of this
/// many entries: cheap on average, and the table stays about as large as the live tokens.
const TOKEN_PRUNE_EVERY: u64 = 256;

/// What the store remembers of an issued token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub cluster: Uuid,
    pub principal: String,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("tenant {0:?} already exists")]
    TenantExists(String),
    #[error("tenant {0:?} has a cluster named {1:?} already")]
    ClusterExists(String, String),
    #[error("no tenant {0:?}")]
    NoSuchTenant(String),
    #[error("no cluster {0}")]
    NoSuchCluster(Uuid),
    /// Something else the caller named does not exist; the message says what.
    #[error("{0}")]
    NotFound(String),
    /// What the caller would make exists already; the message says what.
    #[error("{0}")]
    Conflict(String),
    /// A change the caller asked for is not valid; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin database: {0}")]
    Db(#[from] redb::Error),
    #[error("admin database holds a record that does not parse ({0}); was it written by a newer Tollgate?")]
    Corrupt(#[from] serde_json::Error),
}

// redb has one error type per operation; funnel them all through `redb::Error` so `?` works.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A cluster as stored: live, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    #[serde(flatten)]
    pub cluster: Cluster,
    /// Seconds since the Unix epoch; set when the cluster was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// Seconds since the Unix epoch; set once the pool confirmed the cluster's topics are gone.
    /// A tombstone without it still owes a cleanup, which a repeated DELETE retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_at: Option<i64>,
}

impl ClusterRecord {
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }

    pub fn owes_cleanup(&self) -> bool {
        self.deleted_at.is_some() && self.cleaned_at.is_none()
    }
}

/// Cheap to clone; clones share the open database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    /// Opens (creating if needed) `admin.redb` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let db = Database::create(data_dir.join(FILE_NAME))?;
        // Read transactions cannot open a table that was never created.
        let txn = db.begin_write()?;
        txn.open_table(TENANTS)?;
        txn.open_table(CLUSTERS)?;
        txn.open_table(CLUSTER_NAMES)?;
        txn.open_table(TOKENS)?;
        txn.commit()?;
        Ok(Store { db: Arc::new(db) })
    }

    pub fn create_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        let value = serde_json::to_vec(tenant)?;
        let txn = self.db.begin_write()?;
        {
            let mut tenants = txn.open_table(TENANTS)?;
            if tenants.get(tenant.id.as_str())?.is_some() {
                return Err(StoreError::TenantExists(tenant.id.clone()));
            }
            tenants.insert(tenant.id.as_str(), value.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let txn = self.db.begin_read()?;
        let tenants = txn.open_table(TENANTS)?;
        let found = tenants.get(id)?;
        Ok(match found {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// All tenants, ordered by id.
    pub fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let txn = self.db.begin_read()?;
        let tenants = txn.open_table(TENANTS)?;
        let mut out = Vec::new();
        for row in tenants.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Stores a new cluster. Its tenant must exist and have no live cluster of the same name.
    pub fn create_cluster(&self, cluster: &Cluster) -> Result<(), StoreError> {
        let record = ClusterRecord {
            cluster: cluster.clone(),
            deleted_at: None,
            cleaned_at: None,
        };
        let value = serde_json::to_vec(&record)?;
        let name_key = name_key(&cluster.tenant, &cluster.name);
        let txn = self.db.begin_write()?;
        {
            if txn
                .open_table(TENANTS)?
                .get(cluster.tenant.as_str())?
                .is_none()
            {
                return Err(StoreError::NoSuchTenant(cluster.tenant.clone()));
            }
            let mut names = txn.open_table(CLUSTER_NAMES)?;
            if names.get(name_key.as_str())?.is_some() {
                return Err(StoreError::ClusterExists(
                    cluster.tenant.clone(),
                    cluster.name.clone(),
                ));
            }
            names.insert(name_key.as_str(), cluster.id.as_u128())?;
            txn.open_table(CLUSTERS)?
                .insert(cluster.id.as_u128(), value.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// A live cluster; tombstones are `None`.
    pub fn cluster(&self, id: Uuid) -> Result<Option<Cluster>, StoreError> {
        Ok(self
            .cluster_record(id)?
            .filter(ClusterRecord::is_live)
            .map(|r| r.cluster))
    }

    /// The stored record, tombstone or not.
    pub fn cluster_record(&self, id: Uuid) -> Result<Option<ClusterRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let clusters = txn.open_table(CLUSTERS)?;
        let found = clusters.get(id.as_u128())?;
        Ok(match found {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// Live clusters, of one tenant or of all, ordered by tenant then name.
    pub fn clusters(&self, tenant: Option<&str>) -> Result<Vec<Cluster>, StoreError> {
        let mut out: Vec<Cluster> = self
            .cluster_records()?
            .into_iter()
            .filter(|r| r.is_live() && tenant.is_none_or(|t| r.cluster.tenant == t))
            .map(|r| r.cluster)
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
        Ok(out)
    }

    /// Every cluster ever created, tombstones included: what metering needs for lifetimes.
    pub fn cluster_records(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let clusters = txn.open_table(CLUSTERS)?;
        let mut out = Vec::new();
        for row in clusters.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Changes a live cluster's `max_message_bytes` and quotas as `change` says and returns the
    /// updated cluster; `change` fails (with a message for the caller) to change nothing.
    pub fn update_cluster(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Cluster) -> Result<(), String>,
    ) -> Result<Cluster, StoreError> {
        self.change_cluster(id, |c| change(c).map_err(StoreError::Invalid))
    }

    /// Like [`Store::update_cluster`], for changes that fail with any [`StoreError`] (a SCRAM
    /// user that exists already, one that does not).
    pub fn change_cluster(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut Cluster) -> Result<(), StoreError>,
    ) -> Result<Cluster, StoreError> {
        let txn = self.db.begin_write()?;
        let updated = {
            let mut clusters = txn.open_table(CLUSTERS)?;
            let mut record = match clusters.get(id.as_u128())? {
                Some(v) => serde_json::from_slice::<ClusterRecord>(v.value())?,
                None => return Err(StoreError::NoSuchCluster(id)),
            };
            if !record.is_live() {
                return Err(StoreError::NoSuchCluster(id));
            }
            change(&mut record.cluster)?;
            clusters.insert(id.as_u128(), serde_json::to_vec(&record)?.as_slice())?;
            record.cluster
        };
        txn.commit()?;
        Ok(updated)
    }

    /// Turns a live cluster into a tombstone deleted at `now`, and returns it: its topics must
    /// now be removed from the pool, after which the caller reports [`Store::mark_cleaned`].
    ///
    /// A tombstone that still owes its cleanup is returned unchanged, so that retrying a delete
    /// whose cleanup failed retries the cleanup. A cluster that is unknown, or deleted and
    /// cleaned, is `NoSuchCluster`.
    pub fn delete_cluster(&self, id: Uuid, now: i64) -> Result<Cluster, StoreError> {
        let txn = self.db.begin_write()?;
        let deleted = {
            let mut clusters = txn.open_table(CLUSTERS)?;
            let mut record = match clusters.get(id.as_u128())? {
                Some(v) => serde_json::from_slice::<ClusterRecord>(v.value())?,
                None => return Err(StoreError::NoSuchCluster(id)),
            };
            if record.owes_cleanup() {
                return Ok(record.cluster);
            }
            if !record.is_live() {
                return Err(StoreError::NoSuchCluster(id));
            }
            record.deleted_at = Some(now);
            clusters.insert(id.as_u128(), serde_json::to_vec(&record)?.as_slice())?;
            txn.open_table(CLUSTER_NAMES)?
                .remove(name_key(&record.cluster.tenant, &record.cluster.name).as_str())?;
            record.cluster
        };
        txn.commit()?;
        Ok(deleted)
    }

    /// Records that a deleted cluster's topics are gone from the pool.
    pub fn mark_cleaned(&self, id: Uuid, now: i64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut clusters = txn.open_table(CLUSTERS)?;
            let mut record = match clusters.get(id.as_u128())? {
                Some(v) => serde_json::from_slice::<ClusterRecord>(v.value())?,
                None => return Err(StoreError::NoSuchCluster(id)),
            };
            if !record.owes_cleanup() {
                return Ok(());
            }
            record.cleaned_at = Some(now);
            clusters.insert(id.as_u128(), serde_json::to_vec(&record)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Fills `registry` with every live cluster; called once at startup, before the Kafka
    /// listener accepts connections. Returns how many clusters were loaded.
    /// Remembers a token the admin API issued at `now`.
    pub fn record_token(&self, jti: Uuid, token: &IssuedToken, now: i64) -> Result<(), StoreError> {
        let value = serde_json::to_vec(token)?;
        let txn = self.db.begin_write()?;
        {
            let mut tokens = txn.open_table(TOKENS)?;
            tokens.insert(jti.as_u128(), value.as_slice())?;
            if tokens.len()? % TOKEN_PRUNE_EVERY == 0 {
                tokens.retain(|_, v| {
                    serde_json::from_slice::<IssuedToken>(v).map_or(true, |t| t.expires_at > now)
                })?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A token the admin API issued, if it is remembered.
    pub fn issued_token(&self, jti: Uuid) -> Result<Option<IssuedToken>, StoreError> {
        let txn = self.db.begin_read()?;
        let tokens = txn.open_table(TOKENS)?;
        Ok(match tokens.get(jti.as_u128())? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    pub fn load_clusters(&self, registry: &Registry) -> Result<usize, StoreError> {
        let live = self.clusters(None)?;
        let n = live.len();
        for cluster in live {
            registry.upsert(cluster);
        }
        Ok(n)
    }
}

fn name_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tenancy::DEFAULT_MAX_MESSAGE_BYTES;

    /// A fresh directory under the system temp dir, removed when dropped.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("tollgate-admin-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tenant(id: &str) -> Tenant {
        Tenant {
            id: id.into(),
            name: format!("{id} corp"),
            created_at: 1_700_000_000,
        }
    }

    fn cluster(tenant: &str, name: &str) -> Cluster {
        Cluster {
            id: Uuid::new_v4(),
            tenant: tenant.into(),
            name: name.into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            quotas: Default::default(),
            allowed_cidrs: None,
            credentials: Default::default(),
            created_at: 1_700_000_100,
        }
    }

    #[test]
    fn tenants_round_trip_and_ids_are_unique() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).unwrap();
        store.create_tenant(&tenant("beta")).unwrap();
        store.create_tenant(&tenant("acme")).unwrap();
        assert_eq!(store.tenant("acme").unwrap(), Some(tenant("acme")));
        assert_eq!(store.tenant("nope").unwrap(), None);
        let ids: Vec<_> = store.tenants().unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(ids, ["acme", "beta"]);
        assert!(matches!(
            store.create_tenant(&tenant("acme")),
            Err(StoreError::TenantExists(id)) if id == "acme"
        ));
    }

    #[test]
    fn clusters_round_trip_and_names_are_unique_per_tenant() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).unwrap();
        store.create_tenant(&tenant("acme")).unwrap();
        store.create_tenant(&tenant("beta")).unwrap();

        let orders = cluster("acme", "orders");
        store.create_cluster(&orders).unwrap();
        assert_eq!(store.cluster(orders.id).unwrap(), Some(orders.clone()));
        assert!(matches!(
            store.create_cluster(&cluster("acme", "orders")),
            Err(StoreError::ClusterExists(..))
        ));
        // Another tenant may use the same name.
        store.create_cluster(&cluster("beta", "orders")).unwrap();
        assert!(matches!(
            store.create_cluster(&cluster("ghost", "orders")),
            Err(StoreError::NoSuchTenant(t)) if t == "ghost"
        ));
        assert_eq!(store.clusters(Some("acme")).unwrap(), vec![orders.clone()]);
        assert_eq!(store.clusters(None).unwrap().len(), 2);

        let patched = store
            .update_cluster(orders.id, |c| {
                c.max_message_bytes = 2 * 1024 * 1024;
                Ok(())
            })
            .unwrap();
        assert_eq!(patched.max_message_bytes, 2 * 1024 * 1024);
        assert_eq!(store.cluster(orders.id).unwrap(), Some(patched));
        assert!(matches!(
            store.update_cluster(Uuid::new_v4(), |_| Ok(())),
            Err(StoreError::NoSuchCluster(_))
        ));
    }

    #[test]
    fn delete_leaves_a_tombstone_that_owes_cleanup_until_marked() {
        let dir = TempDir::new();
        let store = Store::open(&dir.0).unwrap();
        store.create_tenant(&tenant("acme")).unwrap();
        let orders = cluster("acme", "orders");
        store.create_cluster(&orders).unwrap();

        assert_eq!(
            store.delete_cluster(orders.id, 1_800_000_000).unwrap(),
            orders
        );
        assert_eq!(store.cluster(orders.id).unwrap(), None);
        assert!(store.clusters(None).unwrap().is_empty());
        assert!(matches!(
            store.update_cluster(orders.id, |_| Ok(())),
            Err(StoreError::NoSuchCluster(_))
        ));
        // Until the pool confirms, a repeated delete hands the cluster back for another try,
        // without moving the deletion time.
        assert_eq!(
            store.delete_cluster(orders.id, 1_900_000_000).unwrap(),
            orders
        );
        store.mark_cleaned(orders.id, 1_800_000_005).unwrap();
        assert!(matches!(
            store.delete_cluster(orders.id, 1_900_000_000),
            Err(StoreError::NoSuchCluster(_))
        ));
        let record = store.cluster_record(orders.id).unwrap().unwrap();
        assert_eq!(record.deleted_at, Some(1_800_000_000));
        assert_eq!(record.cleaned_at, Some(1_800_000_005));

        // The name is free again; the new cluster is a different one.
        let again = cluster("acme", "orders");
        store.create_cluster(&again).unwrap();
        assert_eq!(store.clusters(Some("acme")).unwrap(), vec![again]);
        assert_eq!(store.cluster_records().unwrap().len(), 2);
    }

    #[test]
    fn data_survives_a_restart_and_loads_into_the_registry() {
        let dir = TempDir::new();
        let orders = cluster("acme", "orders");
        let gone = cluster("acme", "gone");
        {
            let store = Store::open(&dir.0).unwrap();
            store.create_tenant(&tenant("acme")).unwrap();
            store.create_cluster(&orders).unwrap();
            store.create_cluster(&gone).unwrap();
            store.delete_cluster(gone.id, 1_800_000_000).unwrap();
        }
        let store = Store::open(&dir.0).unwrap();
        assert_eq!(store.tenant("acme").unwrap(), Some(tenant("acme")));
        assert_eq!(store.cluster(orders.id).unwrap(), Some(orders.clone()));
        assert!(store
            .cluster_record(gone.id)
            .unwrap()
            .unwrap()
            .owes_cleanup());

        let registry = Registry::default();
        assert_eq!(store.load_clusters(&registry).unwrap(), 1);
        assert_eq!(registry.get(&orders.id).as_deref(), Some(&orders));
        assert!(registry.get(&gone.id).is_none());
    }
}
