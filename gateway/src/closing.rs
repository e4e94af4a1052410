//! Closing hours into the ledger.
//!
//! Once a minute, every cluster's recent usage (the last [`LOOKBACK`]) is handed to the ledger,
//! which bills each hour whose grace period has passed, and turns usage that grew after an hour
//! was billed (a late flush, a backlog from a Redis outage) into adjustment lines. Re-running
//! it is harmless: the ledger is idempotent, and with several gateways only one bills an hour.
//! Usage that arrives more than [`LOOKBACK`] after its hour is not re-examined.

use std::sync::Arc;
use std::time::Duration;

use tollgate_billing::{Ledger, RateCard};
use tollgate_meter::store::UsageStore;
use tollgate_meter::{hour_of, HOUR};

use crate::admin::Store;

pub const EVERY: Duration = Duration::from_secs(60);
pub const LOOKBACK: i64 = 48 * HOUR;

pub struct Closer {
    pub store: Store,
    pub usage: Arc<dyn UsageStore>,
    pub ledger: Arc<Ledger>,
    pub rates: RateCard,
}

impl Closer {
    /// One pass over every cluster, deleted ones included.
    pub async fn close(&self, now: i64) -> Result<(), String> {
        let store = self.store.clone();
        let records = tokio::task::spawn_blocking(move || store.cluster_records())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let from = hour_of(now - LOOKBACK);
        for record in records {
            if record.deleted_at.is_some_and(|d| d + LOOKBACK + HOUR < now) {
                continue;
            }
            let rows = self
                .usage
                .hourly(record.cluster.id, from, now + 1)
                .await
                .map_err(|e| e.to_string())?;
            self.ledger
                .close_due(&rows, &self.rates, now)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = &mut shutdown => return,
            }
            if let Err(e) = self.close(tollgate_meter::flusher::unix_now()).await {
                tracing::warn!(error = %e, "closing hours into the ledger failed; retrying next pass");
            }
        }
    }
}
