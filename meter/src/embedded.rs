//! The default usage store: `usage.redb` in the data dir.
//!
//! redb commits are atomic and durable (a torn write leaves the previous commit intact), so a
//! flush is either wholly on disk or not at all, and the (instance, seq) it records commits with
//! it: a restart never double counts, and a crash loses at most what was not yet flushed.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use crate::store::{Applied, BoxFuture, Counts, Flush, PrincipalUsage, StoreError, UsageStore};
use crate::HourlyUsage;

pub const FILE_NAME: &str = "usage.redb";

/// (cluster, hour) -> five little-endian u64 counters, in `HourlyUsage` field order.
const HOURLY: TableDefinition<(u128, i64), &[u8]> = TableDefinition::new("hourly");
/// (cluster, hour, principal) -> bytes in, bytes out.
const PRINCIPALS: TableDefinition<(u128, i64, &str), (u64, u64)> =
    TableDefinition::new("principals");
/// (cluster, hour) of hours whose usage changed since the closer billed them.
const UNCLOSED: TableDefinition<(u128, i64), ()> = TableDefinition::new("unclosed");
/// cluster -> accrual clock.
const CLOCKS: TableDefinition<u128, i64> = TableDefinition::new("clocks");
/// cluster -> (partitions, stored bytes) the clock's last move accrued at.
const COUNTS: TableDefinition<u128, (u64, u64)> = TableDefinition::new("counts");
/// instance -> highest flush seq applied.
const SEQS: TableDefinition<&str, u64> = TableDefinition::new("seqs");

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode(u: &HourlyUsage) -> [u8; 40] {
    let mut out = [0u8; 40];
    for (i, v) in [
        u.cluster_seconds,
        u.partition_seconds,
        u.bytes_in,
        u.bytes_out,
        u.storage_byte_seconds,
    ]
    .into_iter()
    .enumerate()
    {
        out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    out
}

fn decode(cluster: Uuid, hour: i64, b: &[u8]) -> Result<HourlyUsage, StoreError> {
    if b.len() != 40 {
        return Err(StoreError::Corrupt(format!(
            "hourly record of {} bytes",
            b.len()
        )));
    }
    let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Ok(HourlyUsage {
        cluster,
        hour,
        cluster_seconds: v(0),
        partition_seconds: v(1),
        bytes_in: v(2),
        bytes_out: v(3),
        storage_byte_seconds: v(4),
    })
}

/// Usage in a redb file. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let db = Database::create(data_dir.join(FILE_NAME)).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(HOURLY).map_err(backend)?;
        txn.open_table(PRINCIPALS).map_err(backend)?;
        txn.open_table(CLOCKS).map_err(backend)?;
        txn.open_table(COUNTS).map_err(backend)?;
        txn.open_table(UNCLOSED).map_err(backend)?;
        txn.open_table(SEQS).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    fn apply_blocking(&self, flush: &Flush) -> Result<Applied, StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let mut applied = Applied {
            fresh: true,
            stale_accruals: Vec::new(),
        };
        {
            let mut seqs = txn.open_table(SEQS).map_err(backend)?;
            let last = seqs
                .get(flush.instance.as_str())
                .map_err(backend)?
                .map(|v| v.value());
            if last.is_some_and(|last| flush.seq <= last) {
                applied.fresh = false;
                return Ok(applied);
            }
            seqs.insert(flush.instance.as_str(), flush.seq)
                .map_err(backend)?;

            let mut hourly = txn.open_table(HOURLY).map_err(backend)?;
            let mut unclosed = txn.open_table(UNCLOSED).map_err(backend)?;
            let mut add = |row: &HourlyUsage| -> Result<(), StoreError> {
                let key = (row.cluster.as_u128(), row.hour);
                unclosed.insert(key, ()).map_err(backend)?;
                let mut total = match hourly.get(key).map_err(backend)? {
                    Some(v) => decode(row.cluster, row.hour, v.value())?,
                    None => HourlyUsage::zero(row.cluster, row.hour),
                };
                total.add(row);
                hourly
                    .insert(key, encode(&total).as_slice())
                    .map_err(backend)?;
                Ok(())
            };
            for row in &flush.bytes {
                add(row)?;
            }
            let mut clocks = txn.open_table(CLOCKS).map_err(backend)?;
            let mut counts = txn.open_table(COUNTS).map_err(backend)?;
            for acc in &flush.accruals {
                let key = acc.cluster.as_u128();
                let clock = clocks.get(key).map_err(backend)?.map(|v| v.value());
                if clock.is_some_and(|c| c != acc.from) {
                    applied.stale_accruals.push(acc.cluster);
                    continue;
                }
                for row in &acc.rows {
                    add(row)?;
                }
                clocks.insert(key, acc.to).map_err(backend)?;
                counts
                    .insert(key, (acc.counts.partitions, acc.counts.stored_bytes))
                    .map_err(backend)?;
            }
            let mut principals = txn.open_table(PRINCIPALS).map_err(backend)?;
            for p in &flush.principals {
                let key = (p.cluster.as_u128(), p.hour, p.principal.as_str());
                let (bin, bout) = principals
                    .get(key)
                    .map_err(backend)?
                    .map(|v| v.value())
                    .unwrap_or((0, 0));
                principals
                    .insert(key, (bin + p.bytes_in, bout + p.bytes_out))
                    .map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)?;
        Ok(applied)
    }

    fn hourly_blocking(
        &self,
        cluster: Uuid,
        from: i64,
        to: i64,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(HOURLY).map_err(backend)?;
        let c = cluster.as_u128();
        let mut out = Vec::new();
        for entry in table.range((c, from)..(c, to)).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let row = decode(cluster, k.value().1, v.value())?;
            if !row.is_zero() {
                out.push(row);
            }
        }
        Ok(out)
    }

    fn principals_blocking(
        &self,
        cluster: Uuid,
        from: i64,
        to: i64,
    ) -> Result<Vec<PrincipalUsage>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(PRINCIPALS).map_err(backend)?;
        let c = cluster.as_u128();
        let mut out = Vec::new();
        for entry in table.range((c, from, "")..(c, to, "")).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let (_, hour, principal) = k.value();
            let (bytes_in, bytes_out) = v.value();
            out.push(PrincipalUsage {
                cluster,
                principal: principal.to_owned(),
                hour,
                bytes_in,
                bytes_out,
            });
        }
        Ok(out)
    }

    fn unclosed_blocking(&self, cluster: Uuid) -> Result<Vec<i64>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(UNCLOSED).map_err(backend)?;
        let c = cluster.as_u128();
        let mut out = Vec::new();
        for entry in table
            .range((c, i64::MIN)..=(c, i64::MAX))
            .map_err(backend)?
        {
            out.push(entry.map_err(backend)?.0.value().1);
        }
        Ok(out)
    }

    fn mark_closed_blocking(&self, rows: &[HourlyUsage]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            let hourly = txn.open_table(HOURLY).map_err(backend)?;
            let mut unclosed = txn.open_table(UNCLOSED).map_err(backend)?;
            for row in rows {
                let key = (row.cluster.as_u128(), row.hour);
                let stored = match hourly.get(key).map_err(backend)? {
                    Some(v) => decode(row.cluster, row.hour, v.value())?,
                    None => HourlyUsage::zero(row.cluster, row.hour),
                };
                if stored == *row {
                    unclosed.remove(key).map_err(backend)?;
                }
            }
        }
        txn.commit().map_err(backend)
    }

    fn clocks_blocking(&self, clusters: &[Uuid]) -> Result<Vec<Option<i64>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CLOCKS).map_err(backend)?;
        clusters
            .iter()
            .map(|c| Ok(table.get(c.as_u128()).map_err(backend)?.map(|v| v.value())))
            .collect()
    }

    fn last_counts_blocking(&self, clusters: &[Uuid]) -> Result<Vec<Option<Counts>>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(COUNTS).map_err(backend)?;
        clusters
            .iter()
            .map(|c| {
                Ok(table.get(c.as_u128()).map_err(backend)?.map(|v| {
                    let (partitions, stored_bytes) = v.value();
                    Counts {
                        partitions,
                        stored_bytes,
                    }
                }))
            })
            .collect()
    }
}

/// Runs blocking store work off the async worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
}

impl UsageStore for EmbeddedStore {
    fn apply<'a>(&'a self, flush: &'a Flush) -> BoxFuture<'a, Result<Applied, StoreError>> {
        let store = self.clone();
        let flush = flush.clone();
        Box::pin(blocking(move || store.apply_blocking(&flush)))
    }

    fn clocks<'a>(
        &'a self,
        clusters: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Option<i64>>, StoreError>> {
        let store = self.clone();
        let clusters = clusters.to_vec();
        Box::pin(blocking(move || store.clocks_blocking(&clusters)))
    }

    fn last_counts<'a>(
        &'a self,
        clusters: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Option<Counts>>, StoreError>> {
        let store = self.clone();
        let clusters = clusters.to_vec();
        Box::pin(blocking(move || store.last_counts_blocking(&clusters)))
    }

    fn unclosed(&self, cluster: Uuid) -> BoxFuture<'_, Result<Vec<i64>, StoreError>> {
        let store = self.clone();
        Box::pin(blocking(move || store.unclosed_blocking(cluster)))
    }

    fn mark_closed<'a>(&'a self, rows: &'a [HourlyUsage]) -> BoxFuture<'a, Result<(), StoreError>> {
        let store = self.clone();
        let rows = rows.to_vec();
        Box::pin(blocking(move || store.mark_closed_blocking(&rows)))
    }

    fn hourly(
        &self,
        cluster: Uuid,
        from: i64,
        to: i64,
    ) -> BoxFuture<'_, Result<Vec<HourlyUsage>, StoreError>> {
        let store = self.clone();
        Box::pin(blocking(move || store.hourly_blocking(cluster, from, to)))
    }

    fn principals(
        &self,
        cluster: Uuid,
        from: i64,
        to: i64,
    ) -> BoxFuture<'_, Result<Vec<PrincipalUsage>, StoreError>> {
        let store = self.clone();
        Box::pin(blocking(move || {
            store.principals_blocking(cluster, from, to)
        }))
    }
}
