//! The crate's one error type.

use std::path::PathBuf;

use uuid::Uuid;

use crate::calendar::rfc3339;
use crate::rating::Dimension;

/// Everything billing can fail with. Messages name the cluster, hour and dimension involved so
/// an operator can find the usage or ledger record at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The rate card makes no sense (a negative rate, a malformed currency code).
    #[error("invalid rate card: {0}")]
    InvalidRates(String),

    /// A number left what `Decimal` (96-bit mantissa) or the integer accumulators can hold.
    /// Real usage never gets there; corrupt counters might, and we refuse rather than wrap.
    #[error("arithmetic overflow while {0}; the usage counters are implausibly large")]
    Overflow(&'static str),

    /// `close_hour` was asked to bill an hour whose grace period for late flushes has not
    /// passed yet.
    #[error("hour {} of cluster {cluster} cannot be billed before {}", rfc3339(*hour), rfc3339(*closes_at))]
    HourOpen {
        cluster: Uuid,
        hour: i64,
        closes_at: i64,
    },

    /// The usage handed to `close_hour` is smaller than what was already billed. Counters only
    /// grow, so this is a partial count (one gateway's share, or an unmerged row); nothing was
    /// written.
    #[error(
        "usage of cluster {cluster} for hour {} went down for {dimension}: {billed} already \
         billed, {usage} now; pass the merged usage of all gateways",
        rfc3339(*hour)
    )]
    UsageShrank {
        cluster: Uuid,
        hour: i64,
        dimension: Dimension,
        billed: u128,
        usage: u64,
    },

    /// A ledger entry with this key exists already: another writer billed the hour first.
    /// Nothing of the batch was written; re-reading the ledger and retrying is safe.
    #[error(
        "ledger entry for cluster {cluster}, hour {}, {dimension}, seq {seq} exists already",
        rfc3339(*hour)
    )]
    Conflict {
        cluster: Uuid,
        hour: i64,
        dimension: Dimension,
        seq: u32,
    },

    /// A batch handed to a ledger store breaks the store contract (mixed clusters, a key twice).
    #[error("invalid ledger batch: {0}")]
    InvalidBatch(String),

    /// A dimension name that is not one of the five billable dimensions.
    #[error("no billable dimension is named {0:?}; expected one of cluster_hours, partition_hours, storage_gb_months, data_in_gb, data_out_gb")]
    UnknownDimension(String),

    /// The report period is reversed.
    #[error("invalid report period: {0}")]
    InvalidPeriod(String),

    /// The ledger billed in one currency and the rate card prices in another; summing them would
    /// be meaningless.
    #[error("the ledger holds amounts in {ledger} but the rate card is in {rates}")]
    CurrencyMismatch { ledger: String, rates: String },

    #[error("cannot create the ledger directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("embedded ledger: {0}")]
    Redb(#[from] redb::Error),

    #[error("redis ledger: {0}")]
    Redis(#[from] redis::RedisError),

    /// A stored record does not parse: written by a newer Tollgate, or damaged.
    #[error("ledger record {key} does not parse ({reason}); was it written by a newer Tollgate?")]
    Corrupt { key: String, reason: String },

    #[error("JSON encoding: {0}")]
    Json(#[from] serde_json::Error),

    /// A blocking store task panicked or was cancelled.
    #[error("ledger background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

// redb has one error type per operation; funnel them all through `redb::Error` so `?` works.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Redb(e.into())
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
