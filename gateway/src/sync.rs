//! Sharing clusters between gateway instances through Redis (`--redis-url`).
//!
//! Every instance pushes the cluster records of its own admin store to the Redis hash
//! `tg:clusters` and pulls the hash into its registry, once a second. Tokens minted through one
//! instance's admin API are then accepted by every instance (given the same signing key, see
//! `--token-signing-key-file`), and a deleted cluster's connections end everywhere within about
//! two seconds. Pushing the whole set each time keeps it idempotent and self-healing after a
//! Redis restart; clusters are few compared to requests.
//!
//! The admin API itself (tenants, listing, usage, reports) is served by the instance whose data
//! dir holds the admin store; other instances serve Kafka clients only.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::admin::{ClusterRecord, Store};
use crate::tenancy::Registry;

const KEY: &str = "tg:clusters";
pub const EVERY: Duration = Duration::from_secs(1);

pub struct ClusterSync {
    conn: ConnectionManager,
    store: Store,
    registry: Registry,
}

impl ClusterSync {
    /// Connects lazily: an instance starts while Redis is down and syncs once it is back.
    pub fn new(url: &str, store: Store, registry: Registry) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_connection_timeout(Some(Duration::from_secs(2)));
        Ok(ClusterSync {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            store,
            registry,
        })
    }

    /// Publishes this instance's clusters, deleted ones included (their deletion must reach the
    /// other instances).
    async fn push(&self) -> Result<Vec<ClusterRecord>, String> {
        let store = self.store.clone();
        let records = tokio::task::spawn_blocking(move || store.cluster_records())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if records.is_empty() {
            return Ok(records);
        }
        let fields: Vec<(String, String)> = records
            .iter()
            .filter_map(|r| {
                serde_json::to_string(r)
                    .ok()
                    .map(|json| (r.cluster.id.as_hyphenated().to_string(), json))
            })
            .collect();
        let mut conn = self.conn.clone();
        conn.hset_multiple::<_, _, _, ()>(KEY, &fields)
            .await
            .map_err(|e| e.to_string())?;
        Ok(records)
    }

    /// Brings the registry in line with every instance's clusters. This instance's own records
    /// (`local`) win: a cluster deleted here since the push stays deleted.
    async fn pull(&self, local: &[ClusterRecord]) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let all: std::collections::HashMap<String, String> =
            conn.hgetall(KEY).await.map_err(|e| e.to_string())?;
        for json in all.values() {
            let record: ClusterRecord = match serde_json::from_str(json) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable cluster record in Redis; skipped");
                    continue;
                }
            };
            let own = local.iter().find(|l| l.cluster.id == record.cluster.id);
            if own.is_some() {
                continue;
            }
            if record.deleted_at.is_some() {
                self.registry.remove(&record.cluster.id);
            } else if self.registry.get(&record.cluster.id).as_deref() != Some(&record.cluster) {
                self.registry.upsert(record.cluster);
            }
        }
        Ok(())
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failing = false;
        loop {
            let round = async {
                let local = self.push().await?;
                self.pull(&local).await
            };
            match round.await {
                Ok(()) if failing => {
                    tracing::info!("cluster sync through Redis restored");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cluster sync through Redis failed; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = &mut shutdown => return,
            }
        }
    }
}
