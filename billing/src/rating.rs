//! Rating: turning hourly usage into billable quantities and amounts, per the contract.
//!
//! The contract's formulas divide by 3600, by 2^30, and by `2^30 * 3600 * hours in the month`,
//! and none of those has a finite decimal expansion in general (1/3600 = 0.000277…). Rounding a
//! quantity first and multiplying it by a rate second would compound two roundings, and summing
//! per-hour rounded amounts would make a month's bill depend on how it was added up. So a
//! quantity is kept as an exact fraction, a [`Measure`]: an integer numerator (`units`) over a
//! denominator fixed per dimension ([`Dimension::denominator`]):
//!
//! | dimension           | units                                          | denominator             |
//! |---------------------|------------------------------------------------|-------------------------|
//! | `cluster_hours`     | cluster-seconds                                | 3600                    |
//! | `partition_hours`   | partition-seconds                              | 3600                    |
//! | `storage_gb_months` | byte-seconds × (L / hours in the hour's month) | 2^30 × 3600 × L         |
//! | `data_in_gb`        | bytes produced                                 | 2^30                    |
//! | `data_out_gb`       | bytes fetched                                  | 2^30                    |
//!
//! where L = 9,061,920 is the least common multiple of the four month lengths in hours (672,
//! 696, 720, 744), so a storage hour of any month is an exact integer over the same denominator.
//! Measures of one dimension therefore add as integers, exactly, in any order.
//!
//! Converting to `Decimal` happens once, at the end, in this order:
//! - quantity = `units / denominator`: one `Decimal` division, rounded half-to-even to the
//!   96-bit mantissa (28 or 29 significant digits; at most 28 decimal places).
//! - amount = `whole × rate + (rest × rate) / denominator`, where `whole` and `rest` are the
//!   integer quotient and remainder of `units / denominator` (exact integer arithmetic). The
//!   first product is exact (it is the priced whole units; it only fails when the amount itself
//!   leaves `Decimal`'s range). The second product is exact whenever its mantissa fits in
//!   96 bits (`rest` is below the denominator, ~3.5·10^19 at most, so for any rate with fewer
//!   than ~9 significant digits), and the division rounds it once, half-to-even. The final
//!   addition rounds only if the sum needs more than 28–29 significant digits. So an amount is
//!   within one unit in its last place (relative error ≤ 10^-27, absolute ≤ 10^-28) of the exact
//!   rational `quantity × rate`, and exact when that rational has a short enough decimal
//!   expansion. It is deliberately not `Decimal(quantity) × rate`, which would round the
//!   quantity first, and not `(units × rate) / denominator`, whose intermediate product can
//!   overflow for large usage at a rate with no decimals even though the amount is small.
//!
//! Every step is checked: an overflow is an [`Error::Overflow`], never a panic or a wrap.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_meter::HourlyUsage;

use crate::calendar::hours_in_month;
use crate::rates::RateCard;
use crate::Error;

/// Seconds in an hour.
const HOUR_SECONDS: u128 = 3_600;
/// Bytes in a GB: 2^30, as the contract defines it.
const GB: u128 = 1 << 30;
/// Least common multiple of 672, 696, 720 and 744: every month length divides it.
const MONTH_HOURS_LCM: u128 = 9_061_920;

/// What is billed, each with its own unit. Declaration order is report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Hours the cluster existed; unit `hour`.
    ClusterHours,
    /// Partition count integrated over time; unit `partition-hour`.
    PartitionHours,
    /// Stored bytes integrated over time, in GB kept for a whole month; unit `GB-month`.
    StorageGbMonths,
    /// Record batch bytes produced; unit `GB`.
    DataInGb,
    /// Record batch bytes fetched; unit `GB`.
    DataOutGb,
}

impl Dimension {
    /// Every dimension, in report order.
    pub const ALL: [Dimension; 5] = [
        Dimension::ClusterHours,
        Dimension::PartitionHours,
        Dimension::StorageGbMonths,
        Dimension::DataInGb,
        Dimension::DataOutGb,
    ];

    /// The name used in the API, the CSV and the rate card.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::ClusterHours => "cluster_hours",
            Dimension::PartitionHours => "partition_hours",
            Dimension::StorageGbMonths => "storage_gb_months",
            Dimension::DataInGb => "data_in_gb",
            Dimension::DataOutGb => "data_out_gb",
        }
    }

    /// The unit a quantity of this dimension is counted in, as reports show it. Named after the
    /// thing a rate is "per", so `rate` reads as "USD per `unit`".
    pub fn unit(self) -> &'static str {
        match self {
            Dimension::ClusterHours => "hour",
            Dimension::PartitionHours => "partition-hour",
            Dimension::StorageGbMonths => "GB-month",
            Dimension::DataInGb | Dimension::DataOutGb => "GB",
        }
    }

    /// The metered counter this dimension is billed from, in its base unit (seconds,
    /// partition-seconds, byte-seconds or bytes).
    pub fn base_units(self, usage: &HourlyUsage) -> u64 {
        match self {
            Dimension::ClusterHours => usage.cluster_seconds,
            Dimension::PartitionHours => usage.partition_seconds,
            Dimension::StorageGbMonths => usage.storage_byte_seconds,
            Dimension::DataInGb => usage.bytes_in,
            Dimension::DataOutGb => usage.bytes_out,
        }
    }

    /// The fixed denominator of every [`Measure`] of this dimension.
    pub fn denominator(self) -> u128 {
        match self {
            Dimension::ClusterHours | Dimension::PartitionHours => HOUR_SECONDS,
            Dimension::StorageGbMonths => GB * HOUR_SECONDS * MONTH_HOURS_LCM,
            Dimension::DataInGb | Dimension::DataOutGb => GB,
        }
    }

    /// A small stable number for compact storage keys. Never renumber: ledgers hold these.
    pub fn code(self) -> u8 {
        match self {
            Dimension::ClusterHours => 0,
            Dimension::PartitionHours => 1,
            Dimension::StorageGbMonths => 2,
            Dimension::DataInGb => 3,
            Dimension::DataOutGb => 4,
        }
    }

    /// The inverse of [`Dimension::code`].
    pub fn from_code(code: u8) -> Option<Dimension> {
        Dimension::ALL.get(usize::from(code)).copied()
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dimension {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| Error::UnknownDimension(s.to_owned()))
    }
}

/// An exact quantity of one dimension: `units / dimension.denominator()`. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub dimension: Dimension,
    pub units: u128,
}

impl Measure {
    pub fn zero(dimension: Dimension) -> Measure {
        Measure {
            dimension,
            units: 0,
        }
    }

    /// The measure of `base_units` of `dimension` metered in the hour starting at `hour`. Only
    /// storage depends on the hour: its month's length weighs each byte-second.
    pub fn of_hour(dimension: Dimension, hour: i64, base_units: u64) -> Measure {
        let units = match dimension {
            Dimension::StorageGbMonths => {
                // hours_in_month is one of 672/696/720/744, all divisors of the LCM, and
                // u64 * 13,485 cannot overflow u128.
                let weight = MONTH_HOURS_LCM / u128::from(hours_in_month(hour));
                u128::from(base_units) * weight
            }
            _ => u128::from(base_units),
        };
        Measure { dimension, units }
    }

    /// Exact sum with another measure of the same dimension.
    pub fn checked_add(self, other: Measure) -> Result<Measure, Error> {
        debug_assert_eq!(self.dimension, other.dimension);
        let units = self
            .units
            .checked_add(other.units)
            .ok_or(Error::Overflow("summing usage"))?;
        Ok(Measure { units, ..self })
    }

    /// The quantity in the dimension's unit, rounded once (see the module docs).
    pub fn quantity(&self) -> Result<Decimal, Error> {
        let q = integer(self.units)?
            .checked_div(integer(self.dimension.denominator())?)
            .ok_or(Error::Overflow("computing a quantity"))?;
        Ok(q.normalize())
    }

    /// `quantity × rate`, rounded at most once or twice in the last place (see the module docs).
    pub fn amount(&self, rate: Decimal) -> Result<Decimal, Error> {
        let overflow = || Error::Overflow("pricing usage");
        let denominator = self.dimension.denominator();
        let (whole, rest) = (self.units / denominator, self.units % denominator);
        let whole = integer(whole)?.checked_mul(rate).ok_or_else(overflow)?;
        let rest = integer(rest)?;
        let denominator = integer(denominator)?;
        let rest = match rest.checked_mul(rate) {
            Some(product) => product.checked_div(denominator),
            // Only for rates with ~9 or more significant digits: price the rounded fraction.
            None => rest
                .checked_div(denominator)
                .and_then(|fraction| fraction.checked_mul(rate)),
        }
        .ok_or_else(overflow)?;
        Ok(whole.checked_add(rest).ok_or_else(overflow)?.normalize())
    }
}

/// An integer as a `Decimal`, or an overflow error past its 96-bit mantissa.
fn integer(n: u128) -> Result<Decimal, Error> {
    i128::try_from(n)
        .ok()
        .and_then(|n| Decimal::try_from_i128_with_scale(n, 0).ok())
        .ok_or(Error::Overflow("converting usage to a decimal"))
}

/// One dimension of one hour, priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rated {
    pub dimension: Dimension,
    /// The usage priced, in the dimension's base unit.
    pub base_units: u64,
    pub quantity: Decimal,
    pub rate: Decimal,
    pub amount: Decimal,
}

/// Prices `base_units` of `dimension` metered in the hour starting at `hour`.
pub fn rate(
    dimension: Dimension,
    hour: i64,
    base_units: u64,
    rate: Decimal,
) -> Result<Rated, Error> {
    let measure = Measure::of_hour(dimension, hour, base_units);
    Ok(Rated {
        dimension,
        base_units,
        quantity: measure.quantity()?,
        rate,
        amount: measure.amount(rate)?,
    })
}

/// Prices every dimension of one hourly usage row, in [`Dimension::ALL`] order.
pub fn rate_hour(usage: &HourlyUsage, rates: &RateCard) -> Result<[Rated; 5], Error> {
    let mut out = [Rated {
        dimension: Dimension::ClusterHours,
        base_units: 0,
        quantity: Decimal::ZERO,
        rate: Decimal::ZERO,
        amount: Decimal::ZERO,
    }; 5];
    for (slot, dimension) in out.iter_mut().zip(Dimension::ALL) {
        *slot = rate(
            dimension,
            usage.hour,
            dimension.base_units(usage),
            rates.rate(dimension),
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use uuid::Uuid;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn lcm_is_divisible_by_every_month_length() {
        for h in [672u128, 696, 720, 744] {
            assert_eq!(MONTH_HOURS_LCM % h, 0);
        }
        assert!(Dimension::StorageGbMonths.denominator() < (1u128 << 96));
    }

    #[test]
    fn contract_example() {
        let m = Measure::of_hour(Dimension::ClusterHours, 0, 5_400);
        assert_eq!(m.quantity().unwrap().to_string(), "1.5");
        assert_eq!(m.amount(dec("0.75")).unwrap().to_string(), "1.125");
    }

    #[test]
    fn gb_is_two_to_the_thirty() {
        let m = Measure::of_hour(Dimension::DataInGb, 0, 3 << 29);
        assert_eq!(m.quantity().unwrap(), dec("1.5"));
        assert_eq!(m.amount(dec("0.10")).unwrap(), dec("0.15"));
    }

    #[test]
    fn one_second_is_rounded_once() {
        let m = Measure::of_hour(Dimension::ClusterHours, 0, 1);
        // 1/3600 and 0.75/3600, each correctly rounded to 28 decimal places.
        assert_eq!(m.quantity().unwrap(), dec("0.0002777777777777777777777778"));
        assert_eq!(
            m.amount(dec("0.75")).unwrap(),
            dec("0.0002083333333333333333333333")
        );
    }

    #[test]
    fn a_full_month_of_one_gb_is_one_gb_month() {
        for (start, hours) in [
            (datetime!(2023-02-01 00:00 UTC), 672),
            (datetime!(2024-02-01 00:00 UTC), 696),
            (datetime!(2024-04-01 00:00 UTC), 720),
            (datetime!(2024-12-01 00:00 UTC), 744),
        ] {
            let mut total = Measure::zero(Dimension::StorageGbMonths);
            for i in 0..hours {
                let hour = start.unix_timestamp() + i * 3600;
                let m = Measure::of_hour(Dimension::StorageGbMonths, hour, (1 << 30) * 3600);
                total = total.checked_add(m).unwrap();
            }
            assert_eq!(total.quantity().unwrap(), Decimal::ONE, "{start}");
            assert_eq!(total.amount(dec("0.10")).unwrap(), dec("0.1"));
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let m = Measure {
            dimension: Dimension::DataInGb,
            units: u128::MAX,
        };
        assert!(matches!(m.quantity(), Err(Error::Overflow(_))));
        let m = Measure {
            dimension: Dimension::DataInGb,
            units: (1 << 96) - 1,
        };
        assert!(m.quantity().is_ok());
        assert!(matches!(m.amount(Decimal::MAX), Err(Error::Overflow(_))));
        // A large quantity at a rate without decimals: the amount fits, so no overflow.
        let m = Measure {
            dimension: Dimension::StorageGbMonths,
            units: 34 * 10u128.pow(21),
        };
        let a = m.amount(Decimal::new(9_999_999, 0)).unwrap();
        assert!(a > Decimal::ZERO);
        // Huge rates take the fallback path, still without overflow.
        let m = Measure {
            dimension: Dimension::StorageGbMonths,
            units: Dimension::StorageGbMonths.denominator() - 1,
        };
        let a = m.amount(Decimal::new(i64::MAX, 0)).unwrap();
        assert!(a < Decimal::new(i64::MAX, 0) && a > Decimal::new(i64::MAX, 0) / Decimal::TWO);
        let a = Measure::of_hour(Dimension::DataInGb, 0, u64::MAX);
        let b = Measure {
            units: u128::MAX,
            ..a
        };
        assert!(matches!(a.checked_add(b), Err(Error::Overflow(_))));
    }

    #[test]
    fn rates_every_dimension_of_an_hour() {
        let usage = HourlyUsage {
            cluster: Uuid::nil(),
            hour: datetime!(2024-04-10 10:00 UTC).unix_timestamp(),
            cluster_seconds: 3_600,
            partition_seconds: 36_000,
            bytes_in: 1 << 30,
            bytes_out: 1 << 31,
            storage_byte_seconds: (1 << 30) * 3_600 * 720,
        };
        let rated = rate_hour(&usage, &RateCard::default()).unwrap();
        let amounts: Vec<String> = rated.iter().map(|r| r.amount.to_string()).collect();
        assert_eq!(amounts, ["0.75", "0.015", "0.1", "0.1", "0.1"]);
        let quantities: Vec<String> = rated.iter().map(|r| r.quantity.to_string()).collect();
        assert_eq!(quantities, ["1", "10", "1", "1", "2"]);
    }

    #[test]
    fn names_and_codes_round_trip() {
        for d in Dimension::ALL {
            assert_eq!(d.as_str().parse::<Dimension>().unwrap(), d);
            assert_eq!(Dimension::from_code(d.code()), Some(d));
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
        assert_eq!(Dimension::from_code(5), None);
    }
}
