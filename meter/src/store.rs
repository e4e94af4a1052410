//! Where usage is kept: the [`UsageStore`] contract and what a flush carries.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::HourlyUsage;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("usage store: {0}")]
    Backend(String),
    #[error("usage store is unreachable: {0}")]
    Unavailable(String),
    #[error("usage store holds data it cannot read: {0}")]
    Corrupt(String),
}

/// Bytes one principal moved in one hour: the chargeback view of bytes in and out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PrincipalUsage {
    pub cluster: Uuid,
    pub principal: String,
    pub hour: i64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What a cluster holds, the rates its time-based usage accrues at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    pub partitions: u64,
    /// Measured or estimated.
    pub stored_bytes: u64,
}

/// A cluster's time-based usage from `from` to `to` (its accrual clock's move), with the rows
/// that split it by hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accrual {
    pub cluster: Uuid,
    pub from: i64,
    pub to: i64,
    /// The counts the rows were accrued at. The store keeps them beside the clock, so the
    /// next accrual from that clock, perhaps by a gateway started later that has not yet
    /// counted anything itself, knows what the cluster held when accrual stopped.
    pub counts: Counts,
    pub rows: Vec<HourlyUsage>,
}

/// One flush: everything counted since the previous one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flush {
    /// The gateway instance that counted it.
    pub instance: String,
    /// Increases by one with every flush an instance makes; a retried flush keeps its number.
    pub seq: u64,
    /// Byte counts to add, per cluster and hour.
    pub bytes: Vec<HourlyUsage>,
    /// The same bytes, per principal.
    pub principals: Vec<PrincipalUsage>,
    /// Time-based usage, each conditional on the cluster's stored clock (see below).
    pub accruals: Vec<Accrual>,
}

/// What applying a flush did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// False when this (instance, seq) was applied before: nothing changed.
    pub fresh: bool,
    /// Accruals skipped because the stored clock was not at their `from` (another instance
    /// accrued that time first, or this one is behind); the caller re-reads the clock.
    pub stale_accruals: Vec<Uuid>,
}

/// A place usage is kept.
///
/// Implementations must keep this contract, which the meter's exactness rests on:
/// - `apply` is atomic: all of a flush is stored, or none of it.
/// - `apply` is idempotent per (instance, seq): a flush whose seq is not above the highest
///   applied for its instance changes nothing and answers `fresh: false`. A flush retried after
///   a timeout is therefore counted once, whether or not the first attempt landed.
/// - An accrual is applied only if the cluster's stored clock equals its `from` (or the cluster
///   has no clock yet), and then sets the clock to `to` and the cluster's last counts to its
///   `counts`, in the same atomic write; otherwise it is skipped and reported.
///   The bytes of the same flush are applied regardless.
/// - The clock is never behind the time-based usage stored: a store that can lose the clock
///   apart from the usage (a Redis key) keeps it recoverable from that usage, so a lost clock
///   never makes accrual restart at the cluster's creation.
/// - Counts from different instances add up.
pub trait UsageStore: Send + Sync + 'static {
    fn apply<'a>(&'a self, flush: &'a Flush) -> BoxFuture<'a, Result<Applied, StoreError>>;

    /// Each cluster's accrual clock, `None` for clusters that have none yet.
    fn clocks<'a>(
        &'a self,
        clusters: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Option<i64>>, StoreError>>;

    /// Each cluster's counts as of its clock: those of the accrual that last moved it, `None`
    /// for clusters that have none recorded.
    fn last_counts<'a>(
        &'a self,
        clusters: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Option<Counts>>, StoreError>>;

    /// The cluster's usage per hour, for hours in `[from, to)`, in hour order, omitting hours
    /// without usage.
    fn hourly(
        &self,
        cluster: Uuid,
        from: i64,
        to: i64,
    ) -> BoxFuture<'_, Result<Vec<HourlyUsage>, StoreError>>;

    /// The hours of `cluster` that `apply` added usage to since
    /// [`mark_closed`](Self::mark_closed) last took them, oldest first, however old they are.
    /// The billing closer starts from these, so an hour whose usage arrives late (a backlog
    /// flushed days after an outage, a restarted gateway's catch-up) still reaches the ledger.
    fn unclosed(&self, cluster: Uuid) -> BoxFuture<'_, Result<Vec<i64>, StoreError>>;

    /// Takes each row's hour off [`unclosed`](Self::unclosed) if the hour's stored usage still
    /// equals the row (all zero for an hour without usage); an hour that changed since the row
    /// was read stays unclosed, so its growth is billed on a later pass.
    fn mark_closed<'a>(&'a self, rows: &'a [HourlyUsage]) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The cluster's bytes per principal and hour, for hours in `[from, to)`.
    fn principals(
        &self,
        cluster: Uuid,
        from: i64,
        to: i64,
    ) -> BoxFuture<'_, Result<Vec<PrincipalUsage>, StoreError>>;
}
