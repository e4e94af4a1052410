//! The ledger: what was billed, hour by hour, append-only.
//!
//! Once an hour is closed (its end plus a grace period for late flushes has passed),
//! [`Ledger::close_hour`] writes one [`LedgerEntry`] per billable dimension with `seq` 0. Closing
//! the same hour again with the same usage writes nothing (idempotent). Usage that arrives after
//! the hour was billed (a gateway that flushed late) grows the counters; closing again then
//! writes one adjustment entry (`seq` 1, 2, …) per dimension that grew, for the difference only.
//! Nothing is ever edited or deleted, so the ledger is an audit trail of every bill.
//!
//! Stores implement [`LedgerStore`]: [`RedbLedger`] for a single node (`tollgate dev`), and
//! [`RedisLedger`] when several gateways share state. Both pass the same contract tests
//! (`billing/tests/ledger_contract.rs`).

mod redb_store;
mod redis_store;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_meter::{HourlyUsage, HOUR};
use uuid::Uuid;

pub use redb_store::RedbLedger;
pub use redis_store::RedisLedger;

use crate::rates::RateCard;
use crate::rating::{self, Dimension};
use crate::report::{self, Report, ReportRequest};
use crate::Error;

/// One billed quantity: one dimension of one cluster's hour, original (`seq` 0) or adjustment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub cluster: Uuid,
    /// Unix seconds of the hour's first second.
    pub hour: i64,
    pub dimension: Dimension,
    /// 0 for the original bill of the hour, 1, 2, … for each later adjustment.
    pub seq: u32,
    /// The usage this entry bills, in the dimension's base unit (seconds, byte-seconds, bytes).
    /// For an adjustment, only the growth since the previous entries. This integer, not the
    /// rounded quantity, is what reports add up.
    pub billed_usage: u64,
    pub quantity: Decimal,
    pub rate: Decimal,
    pub amount: Decimal,
    pub currency: String,
    /// Unix seconds when the entry was written.
    pub billed_at: i64,
}

impl LedgerEntry {
    /// The key a store must keep unique.
    pub fn key(&self) -> (Uuid, i64, Dimension, u32) {
        (self.cluster, self.hour, self.dimension, self.seq)
    }

    fn conflict(&self) -> Error {
        Error::Conflict {
            cluster: self.cluster,
            hour: self.hour,
            dimension: self.dimension,
            seq: self.seq,
        }
    }
}

/// A boxed future, so that [`LedgerStore`] stays object-safe and the gateway can choose a store
/// at run time behind an `Arc<dyn LedgerStore>`; one allocation per call is noise next to the
/// I/O it waits for.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Where ledger entries live. The contract every implementation keeps (and
/// `billing/tests/ledger_contract.rs` checks):
///
/// - **Append-only.** Entries are never changed or removed once written.
/// - **Atomic, conditional batches.** [`append`](LedgerStore::append) writes all of a batch or
///   none of it. It fails with [`Error::Conflict`], writing nothing, if any entry's key
///   `(cluster, hour, dimension, seq)` exists already; this is what makes two gateways closing
///   the same hour at once safe. An empty batch succeeds and writes nothing. A batch holding
///   entries of more than one cluster, or one key twice, is refused with
///   [`Error::InvalidBatch`] (so a store can keep each cluster's entries under one lock or
///   key).
/// - **Durable on success.** Once `append` returns `Ok`, a later `entries` (from any handle
///   or, for shared stores, any gateway) sees the whole batch, byte for byte.
/// - **Range reads.** [`entries`](LedgerStore::entries) returns every entry of `cluster` whose
///   hour is in `[from_hour, to_hour)`, sorted by `(hour, dimension, seq)`.
pub trait LedgerStore: Send + Sync {
    fn append(&self, batch: Vec<LedgerEntry>) -> StoreFuture<'_, ()>;

    fn entries(
        &self,
        cluster: Uuid,
        from_hour: i64,
        to_hour: i64,
    ) -> StoreFuture<'_, Vec<LedgerEntry>>;
}

/// Checks the batch rules shared by every store; returns the batch's cluster, `None` if empty.
fn check_batch(batch: &[LedgerEntry]) -> Result<Option<Uuid>, Error> {
    let Some(first) = batch.first() else {
        return Ok(None);
    };
    let mut keys = std::collections::HashSet::with_capacity(batch.len());
    for entry in batch {
        if entry.cluster != first.cluster {
            return Err(Error::InvalidBatch(format!(
                "a batch holds one cluster's entries, found {} and {}",
                first.cluster, entry.cluster
            )));
        }
        if !keys.insert(entry.key()) {
            return Err(Error::InvalidBatch(format!(
                "{} seq {} of hour {} appears twice",
                entry.dimension, entry.seq, entry.hour
            )));
        }
    }
    Ok(Some(first.cluster))
}

/// What a store keeps as the value of a key: everything but the key, as a compact JSON array
/// (a month of 1,000 clusters is 3.7 million entries, so field names would dominate).
#[derive(Serialize, Deserialize)]
struct StoredValue(u64, Decimal, Decimal, Decimal, String, i64);

fn encode_value(entry: &LedgerEntry) -> Result<Vec<u8>, Error> {
    Ok(serde_json::to_vec(&StoredValue(
        entry.billed_usage,
        entry.quantity,
        entry.rate,
        entry.amount,
        entry.currency.clone(),
        entry.billed_at,
    ))?)
}

fn decode_entry(
    cluster: Uuid,
    hour: i64,
    dimension: u8,
    seq: u32,
    value: &[u8],
) -> Result<LedgerEntry, Error> {
    let key = || format!("{cluster}/{hour}/{dimension}/{seq}");
    let dimension = Dimension::from_code(dimension).ok_or_else(|| Error::Corrupt {
        key: key(),
        reason: format!("unknown dimension code {dimension}"),
    })?;
    let StoredValue(billed_usage, quantity, rate, amount, currency, billed_at) =
        serde_json::from_slice(value).map_err(|e| Error::Corrupt {
            key: key(),
            reason: e.to_string(),
        })?;
    Ok(LedgerEntry {
        cluster,
        hour,
        dimension,
        seq,
        billed_usage,
        quantity,
        rate,
        amount,
        currency,
        billed_at,
    })
}

/// What [`Ledger::close_hour`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The hour was billed for the first time: one `seq` 0 entry per dimension.
    Billed(Vec<LedgerEntry>),
    /// The hour had been billed and usage grew since: one adjustment per dimension that grew.
    Adjusted(Vec<LedgerEntry>),
    /// The ledger already bills exactly this usage.
    Unchanged,
}

/// Counts from [`Ledger::close_due`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloseSummary {
    pub billed: usize,
    pub adjusted: usize,
    pub unchanged: usize,
    /// Rows whose hour is still within its grace period, left for a later run.
    pub open: usize,
    /// Hours left as billed because their usage is now below the bill (see [`HeldHour`]).
    pub held: Vec<HeldHour>,
}

/// An hour whose usage went below what the ledger already bills for it.
///
/// Counters only grow, so a shrink means the usage store lost some of the hour (a Redis flushed
/// or failed over without persistence) or was read partially. The ledger is append-only and has
/// no negative entry, so nothing is written for the hour: its bill stands as it was, the hour is
/// reported for a person to look at, and every later run closes it again, which adjusts it as
/// usual once its usage is back above the bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldHour {
    pub cluster: Uuid,
    pub hour: i64,
    /// The first dimension found below its bill.
    pub dimension: Dimension,
    pub billed: u128,
    pub usage: u64,
}

impl std::fmt::Display for HeldHour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster {} hour {}: {} usage {} is below the {} already billed; the hour is held",
            self.cluster, self.hour, self.dimension, self.usage, self.billed
        )
    }
}

/// How often `close_hour` re-reads and retries after losing a race to another writer. The
/// loser's retry normally finds the winner's entries and has nothing left to write.
const CONFLICT_RETRIES: usize = 3;

/// The billing ledger over a store. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    grace: Duration,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger that closes an hour `grace` after it ends: late flushes inside the grace period
    /// land in the original bill instead of an adjustment.
    pub fn new(store: Arc<dyn LedgerStore>, grace: Duration) -> Ledger {
        Ledger { store, grace }
    }

    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Unix seconds from which the hour starting at `hour` may be billed.
    pub fn closes_at(&self, hour: i64) -> i64 {
        closes_at(hour, self.grace)
    }

    /// Bills one cluster's hour, or adjusts its bill: see the module docs. `usage` must be the
    /// hour's whole usage, merged across gateways and flushes; `now` is Unix seconds.
    pub async fn close_hour(
        &self,
        usage: &HourlyUsage,
        rates: &RateCard,
        now: i64,
    ) -> Result<CloseOutcome, Error> {
        let closes_at = self.closes_at(usage.hour);
        if now < closes_at {
            return Err(Error::HourOpen {
                cluster: usage.cluster,
                hour: usage.hour,
                closes_at,
            });
        }
        let mut attempt = 0;
        loop {
            let billed = self
                .store
                .entries(usage.cluster, usage.hour, usage.hour + HOUR)
                .await?;
            let (batch, original) = bill_growth(usage, &billed, rates, now)?;
            if batch.is_empty() {
                return Ok(CloseOutcome::Unchanged);
            }
            match self.store.append(batch.clone()).await {
                Ok(()) if original => return Ok(CloseOutcome::Billed(batch)),
                Ok(()) => return Ok(CloseOutcome::Adjusted(batch)),
                Err(Error::Conflict { .. }) if attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes every hour among `usage` rows that is due at `now`, merging rows of the same
    /// cluster and hour first (each gateway flushes its own partial count). Meant for a periodic
    /// task fed with the recent rows of the usage store; re-running it is harmless.
    ///
    /// An hour whose usage shrank below its bill does not stop the others: it is left as
    /// billed and listed in [`CloseSummary::held`]. Any other error (the store failing) ends
    /// the run; a later run retries.
    pub async fn close_due(
        &self,
        usage: &[HourlyUsage],
        rates: &RateCard,
        now: i64,
    ) -> Result<CloseSummary, Error> {
        let mut summary = CloseSummary::default();
        for row in merge_rows(usage)? {
            if now < self.closes_at(row.hour) {
                summary.open += 1;
                continue;
            }
            match self.close_hour(&row, rates, now).await {
                Ok(CloseOutcome::Billed(_)) => summary.billed += 1,
                Ok(CloseOutcome::Adjusted(_)) => summary.adjusted += 1,
                Ok(CloseOutcome::Unchanged) => summary.unchanged += 1,
                Err(Error::UsageShrank {
                    cluster,
                    hour,
                    dimension,
                    billed,
                    usage,
                }) => summary.held.push(HeldHour {
                    cluster,
                    hour,
                    dimension,
                    billed,
                    usage,
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(summary)
    }

    /// Entries of `cluster` for hours in `[from_hour, to_hour)`, sorted.
    pub async fn entries(
        &self,
        cluster: Uuid,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<LedgerEntry>, Error> {
        self.store.entries(cluster, from_hour, to_hour).await
    }

    /// The tenant's report for the request's period: what the ledger billed, plus any usage in
    /// `usage` the ledger does not cover yet (open hours, late flushes not yet adjusted), priced
    /// at `rates`. Passing only the rows of recent hours is enough: closed hours come from the
    /// ledger.
    pub async fn report(
        &self,
        request: &ReportRequest,
        usage: &[HourlyUsage],
        rates: &RateCard,
    ) -> Result<Report, Error> {
        let (first, end) = request.hours();
        let mut entries = Vec::new();
        for (cluster, _) in &request.clusters {
            entries.extend(self.store.entries(*cluster, first, end).await?);
        }
        report::build(request, rates, &entries, usage)
    }
}

/// Unix seconds from which the hour starting at `hour` may be billed, given `grace`.
pub(crate) fn closes_at(hour: i64, grace: Duration) -> i64 {
    let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    hour.saturating_add(HOUR).saturating_add(grace)
}

/// The entries that bring `billed` up to `usage`, and whether they are the hour's original bill.
fn bill_growth(
    usage: &HourlyUsage,
    billed: &[LedgerEntry],
    rates: &RateCard,
    now: i64,
) -> Result<(Vec<LedgerEntry>, bool), Error> {
    let mut batch = Vec::new();
    let original = billed.is_empty();
    for dimension in Dimension::ALL {
        let mut total: u128 = 0;
        let mut next_seq: Option<u32> = None;
        for entry in billed.iter().filter(|e| e.dimension == dimension) {
            total += u128::from(entry.billed_usage);
            let after = entry
                .seq
                .checked_add(1)
                .ok_or(Error::Overflow("numbering adjustments"))?;
            next_seq = Some(next_seq.map_or(after, |s| s.max(after)));
        }
        let now_usage = dimension.base_units(usage);
        if u128::from(now_usage) < total {
            return Err(Error::UsageShrank {
                cluster: usage.cluster,
                hour: usage.hour,
                dimension,
                billed: total,
                usage: now_usage,
            });
        }
        // Fits in u64: total <= now_usage.
        let growth = now_usage - total as u64;
        let seq = match next_seq {
            // Every dimension gets its original entry, zero or not, so that later usage is
            // always an adjustment against a bill that exists.
            None => 0,
            Some(_) if growth == 0 => continue,
            Some(seq) => seq,
        };
        let rate = rates.rate(dimension);
        let rated = rating::rate(dimension, usage.hour, growth, rate)?;
        batch.push(LedgerEntry {
            cluster: usage.cluster,
            hour: usage.hour,
            dimension,
            seq,
            billed_usage: growth,
            quantity: rated.quantity,
            rate,
            amount: rated.amount,
            currency: rates.currency.clone(),
            billed_at: now,
        });
    }
    Ok((batch, original))
}

/// Merges rows of the same cluster and hour, in first-seen order; an overflowing counter is an
/// error rather than a wrap (or a debug-build panic in `HourlyUsage::add`).
pub(crate) fn merge_rows(rows: &[HourlyUsage]) -> Result<Vec<HourlyUsage>, Error> {
    let mut index: HashMap<(Uuid, i64), usize> = HashMap::new();
    let mut merged: Vec<HourlyUsage> = Vec::new();
    for row in rows {
        let row = HourlyUsage {
            hour: tollgate_meter::hour_of(row.hour),
            ..*row
        };
        match index.get(&(row.cluster, row.hour)) {
            None => {
                index.insert((row.cluster, row.hour), merged.len());
                merged.push(row);
            }
            Some(&i) => {
                let m = &mut merged[i];
                let add = |a: u64, b: u64| a.checked_add(b).ok_or(Error::Overflow("merging usage"));
                m.cluster_seconds = add(m.cluster_seconds, row.cluster_seconds)?;
                m.partition_seconds = add(m.partition_seconds, row.partition_seconds)?;
                m.bytes_in = add(m.bytes_in, row.bytes_in)?;
                m.bytes_out = add(m.bytes_out, row.bytes_out)?;
                m.storage_byte_seconds = add(m.storage_byte_seconds, row.storage_byte_seconds)?;
            }
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cluster_seconds: u64, bytes_in: u64) -> HourlyUsage {
        HourlyUsage {
            cluster_seconds,
            bytes_in,
            ..HourlyUsage::zero(Uuid::from_u128(7), 7_200)
        }
    }

    #[test]
    fn first_close_bills_every_dimension_with_seq_zero() {
        let (batch, original) = bill_growth(&usage(3600, 0), &[], &RateCard::default(), 1).unwrap();
        assert!(original);
        assert_eq!(batch.len(), 5);
        assert!(batch.iter().all(|e| e.seq == 0 && e.billed_at == 1));
        assert_eq!(batch[0].amount, Decimal::new(75, 2));
        assert_eq!(batch[3].amount, Decimal::ZERO);
    }

    #[test]
    fn growth_becomes_adjustments_for_grown_dimensions_only() {
        let rates = RateCard::default();
        let (billed, _) = bill_growth(&usage(1800, 10), &[], &rates, 1).unwrap();
        let (batch, original) = bill_growth(&usage(1800, 10), &billed, &rates, 2).unwrap();
        assert!(batch.is_empty() && !original);
        let (adjust, original) = bill_growth(&usage(3600, 10), &billed, &rates, 3).unwrap();
        assert!(!original);
        assert_eq!(adjust.len(), 1);
        assert_eq!(
            (adjust[0].dimension, adjust[0].seq),
            (Dimension::ClusterHours, 1)
        );
        assert_eq!(adjust[0].billed_usage, 1800);
        assert_eq!(adjust[0].quantity, Decimal::new(5, 1));
        let mut all = billed.clone();
        all.extend(adjust);
        let (next, _) = bill_growth(&usage(3601, 10), &all, &rates, 4).unwrap();
        assert_eq!((next[0].seq, next[0].billed_usage), (2, 1));
    }

    #[test]
    fn shrinking_usage_is_refused() {
        let rates = RateCard::default();
        let (billed, _) = bill_growth(&usage(1800, 10), &[], &rates, 1).unwrap();
        let err = bill_growth(&usage(1800, 9), &billed, &rates, 2).unwrap_err();
        assert!(matches!(
            err,
            Error::UsageShrank {
                dimension: Dimension::DataInGb,
                ..
            }
        ));
    }

    #[test]
    fn batches_are_checked() {
        let (mut batch, _) = bill_growth(&usage(1, 1), &[], &RateCard::default(), 1).unwrap();
        assert_eq!(check_batch(&batch).unwrap(), Some(Uuid::from_u128(7)));
        assert_eq!(check_batch(&[]).unwrap(), None);
        batch[1].dimension = batch[0].dimension;
        assert!(matches!(check_batch(&batch), Err(Error::InvalidBatch(_))));
        batch[1].dimension = Dimension::PartitionHours;
        batch[1].cluster = Uuid::from_u128(8);
        assert!(matches!(check_batch(&batch), Err(Error::InvalidBatch(_))));
    }

    #[test]
    fn values_round_trip() {
        let (batch, _) = bill_growth(&usage(1, 1), &[], &RateCard::default(), 1).unwrap();
        for e in batch {
            let bytes = encode_value(&e).unwrap();
            let back = decode_entry(e.cluster, e.hour, e.dimension.code(), e.seq, &bytes).unwrap();
            assert_eq!(back, e);
        }
        assert!(matches!(
            decode_entry(Uuid::nil(), 0, 9, 0, b"[]"),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_entry(Uuid::nil(), 0, 0, 0, b"{"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn rows_merge_per_cluster_and_hour() {
        let mut rows = vec![usage(10, 1), usage(20, 2)];
        rows.push(HourlyUsage::zero(Uuid::from_u128(8), 7_200));
        let merged = merge_rows(&rows).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].cluster_seconds, merged[0].bytes_in), (30, 3));
        rows.push(usage(0, u64::MAX));
        assert!(matches!(merge_rows(&rows), Err(Error::Overflow(_))));
    }
}
