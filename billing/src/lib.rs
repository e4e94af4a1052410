//! Billing: from metered usage to money, without ever losing a cent to floating point.
//!
//! - [`rates`]: the [`RateCard`], the price of each billable dimension (configurable; the
//!   defaults are the documented rates).
//! - [`calendar`]: civil-calendar math in UTC, because a GB-month depends on how many hours the
//!   month of each hour has.
//! - [`rating`]: the billable [`Dimension`]s and the pure functions that turn
//!   [`tollgate_meter::HourlyUsage`] into quantities and amounts, exactly per the contract.
//! - [`ledger`]: the append-only, idempotent [`Ledger`] of billed hours, and its two stores:
//!   [`RedbLedger`] (embedded, one file) and [`RedisLedger`] (shared between gateways).
//! - [`report`]: the tenant's [`Report`] for a period (`GET /v1/billing/report`), as JSON or CSV.
//!
//! Money is [`rust_decimal::Decimal`]; quantities stay integers in their base units (seconds,
//! bytes, byte-seconds) until the moment they are priced. Every error is an [`Error`].

pub mod calendar;
mod error;
pub mod ledger;
pub mod rates;
pub mod rating;
pub mod report;

pub use error::Error;
pub use ledger::{
    CloseOutcome, CloseSummary, HeldHour, Ledger, LedgerEntry, LedgerStore, RedbLedger,
    RedisLedger, StoreFuture,
};
pub use rates::RateCard;
pub use rating::Dimension;
pub use report::{Report, ReportLine, ReportRequest};
