//! Closing hours into the ledger.
//!
//! Once a minute, every cluster's recent usage (the last [`LOOKBACK`]) is handed to the ledger,
//! which bills each hour whose grace period has passed, and turns usage that grew after an hour
//! was billed (a late flush, a backlog from a Redis outage) into adjustment lines. Re-running
//! it is harmless: the ledger is idempotent, and with several gateways only one bills an hour.
//! Usage that arrives more than [`LOOKBACK`] after its hour is not re-examined.

use std::sync::Arc;
use std::time::Duration;

use tollgate_billing::{CloseSummary, Ledger, RateCard};
use tollgate_meter::store::UsageStore;
use tollgate_meter::{hour_of, HOUR};
use uuid::Uuid;

use crate::admin::Store;

pub const EVERY: Duration = Duration::from_secs(60);
pub const LOOKBACK: i64 = 48 * HOUR;

pub struct Closer {
    pub store: Store,
    pub usage: Arc<dyn UsageStore>,
    pub ledger: Arc<Ledger>,
    pub rates: RateCard,
}

/// What one pass did, for the log (and for whoever runs a pass by hand).
#[derive(Debug, Default)]
pub struct Pass {
    pub summary: CloseSummary,
    /// Clusters whose closing failed (the usage store or ledger did not answer), with why; the
    /// other clusters were closed all the same, and the next pass retries these.
    pub failed: Vec<(Uuid, String)>,
}

impl Closer {
    /// One pass over every cluster, deleted ones included. One cluster's failure, or one held
    /// hour, does not keep the others from closing: see [`Pass`] and
    /// [`CloseSummary::held`]. Errs only when the list of clusters cannot be read.
    pub async fn close(&self, now: i64) -> Result<Pass, String> {
        let store = self.store.clone();
        let records = tokio::task::spawn_blocking(move || store.cluster_records())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let from = hour_of(now - LOOKBACK);
        let mut pass = Pass::default();
        for record in records {
            if record.deleted_at.is_some_and(|d| d + LOOKBACK + HOUR < now) {
                continue;
            }
            let id = record.cluster.id;
            let closed = match self.usage.hourly(id, from, now + 1).await {
                Ok(rows) => self
                    .ledger
                    .close_due(&rows, &self.rates, now)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match closed {
                Ok(s) => {
                    pass.summary.billed += s.billed;
                    pass.summary.adjusted += s.adjusted;
                    pass.summary.unchanged += s.unchanged;
                    pass.summary.open += s.open;
                    pass.summary.held.extend(s.held);
                }
                Err(e) => pass.failed.push((id, e)),
            }
        }
        Ok(pass)
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = &mut shutdown => return,
            }
            match self.close(tollgate_meter::flusher::unix_now()).await {
                Ok(pass) => {
                    for (cluster, error) in &pass.failed {
                        tracing::warn!(%cluster, %error, "closing a cluster's hours failed; retrying next pass");
                    }
                    // A held hour will not heal by itself unless the lost usage comes back:
                    // it needs a person, so it is an error, repeated every pass.
                    for held in &pass.summary.held {
                        tracing::error!(cluster = %held.cluster, hour = held.hour, "{held}");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "closing hours into the ledger failed; retrying next pass")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::{Cluster, Tenant, DEFAULT_MAX_MESSAGE_BYTES};
    use tollgate_billing::RedbLedger;
    use tollgate_meter::embedded::EmbeddedStore;
    use tollgate_meter::store::Flush;
    use tollgate_meter::HourlyUsage;

    /// 2024-01-01T00:00:00Z.
    const START: i64 = 1_704_067_200;

    struct Fixture {
        closer: Closer,
        usage: Arc<EmbeddedStore>,
        dir: std::path::PathBuf,
        seq: u64,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Fixture {
        /// Clusters with ids 1..=n, created at `START`.
        fn new(n: u128) -> Fixture {
            let dir = std::env::temp_dir().join(format!("tollgate-closing-{}", Uuid::new_v4()));
            let store = Store::open(&dir).unwrap();
            store
                .create_tenant(&Tenant {
                    id: "acme".into(),
                    name: "Acme".into(),
                    created_at: START,
                })
                .unwrap();
            for i in 1..=n {
                store
                    .create_cluster(&Cluster {
                        id: Uuid::from_u128(i),
                        tenant: "acme".into(),
                        name: format!("c{i}"),
                        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
                        created_at: START,
                    })
                    .unwrap();
            }
            let usage = Arc::new(EmbeddedStore::open(&dir).unwrap());
            let ledger = RedbLedger::open(&dir.join("ledger")).unwrap();
            let closer = Closer {
                store,
                usage: usage.clone(),
                ledger: Arc::new(Ledger::new(Arc::new(ledger), Duration::ZERO)),
                rates: RateCard::default(),
            };
            Fixture {
                closer,
                usage,
                dir,
                seq: 0,
            }
        }

        /// Adds a whole hour of cluster `i`'s usage, with `bytes_in` bytes produced.
        async fn add(&mut self, i: u128, hour: i64, bytes_in: u64) {
            self.seq += 1;
            let row = HourlyUsage {
                cluster_seconds: 3_600,
                bytes_in,
                ..HourlyUsage::zero(Uuid::from_u128(i), hour)
            };
            let flush = Flush {
                instance: "gw".into(),
                seq: self.seq,
                bytes: vec![row],
                principals: Vec::new(),
                accruals: Vec::new(),
            };
            self.usage.apply(&flush).await.unwrap();
        }

        async fn billed(&self, i: u128, hour: i64) -> usize {
            let ledger = &self.closer.ledger;
            let entries = ledger.entries(Uuid::from_u128(i), hour, hour + HOUR);
            entries.await.unwrap().len()
        }
    }

    /// Issue 13: a cluster whose usage shrank below its bill used to end the pass with an
    /// error, so every cluster after it (ids 2 and 3 here) was never closed.
    #[tokio::test]
    async fn a_shrunk_cluster_does_not_stop_the_others() {
        let mut f = Fixture::new(3);
        let hour = START + HOUR;
        let now = hour + 2 * HOUR;
        // Cluster 1's hour was billed at 100 bytes in; the store now holds 40 (it lost some).
        let billed = HourlyUsage {
            cluster_seconds: 3_600,
            bytes_in: 100,
            ..HourlyUsage::zero(Uuid::from_u128(1), hour)
        };
        let ledger = f.closer.ledger.clone();
        ledger
            .close_hour(&billed, &f.closer.rates, now)
            .await
            .unwrap();
        f.add(1, hour, 40).await;
        f.add(2, hour, 7).await;
        f.add(3, hour, 9).await;

        let pass = f.closer.close(now).await.unwrap();
        assert!(pass.failed.is_empty(), "{:?}", pass.failed);
        assert_eq!(pass.summary.billed, 2);
        assert_eq!(pass.summary.held.len(), 1);
        assert_eq!(pass.summary.held[0].cluster, Uuid::from_u128(1));
        assert_eq!(f.billed(2, hour).await, 5);
        assert_eq!(f.billed(3, hour).await, 5);
        // The held hour keeps its original bill, and is retried (and reported) every pass.
        assert_eq!(f.billed(1, hour).await, 5);
        let again = f.closer.close(now + 60).await.unwrap();
        assert_eq!(again.summary.held.len(), 1);
        assert_eq!(again.summary.unchanged, 2);
    }
}
