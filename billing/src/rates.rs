//! The rate card: what one unit of each billable dimension costs.
//!
//! Rates are `Decimal`s written as strings (`"0.0015"`), never floats: `0.1` as an `f64` is not
//! one tenth, and a rate card is the one place a rounding error would be multiplied by every
//! hour of every cluster.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::rating::Dimension;
use crate::Error;

/// Prices per unit of each dimension, in one currency. `Default` is the contract's rate card.
/// Missing fields take their default, unknown fields are an error (a typo must not silently
/// bill at the default rate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateCard {
    /// ISO 4217 code of the currency every rate is in, e.g. `"USD"`.
    pub currency: String,
    /// Price of one cluster-hour (a cluster existing for 3600 seconds).
    #[serde(with = "rust_decimal::serde::str")]
    pub cluster_hours: Decimal,
    /// Price of one partition-hour (one partition existing for 3600 seconds).
    #[serde(with = "rust_decimal::serde::str")]
    pub partition_hours: Decimal,
    /// Price of one GB-month: 2^30 bytes stored for every hour of a calendar month.
    #[serde(with = "rust_decimal::serde::str")]
    pub storage_gb_months: Decimal,
    /// Price of one GB (2^30 bytes) of record batches produced.
    #[serde(with = "rust_decimal::serde::str")]
    pub data_in_gb: Decimal,
    /// Price of one GB (2^30 bytes) of record batches fetched.
    #[serde(with = "rust_decimal::serde::str")]
    pub data_out_gb: Decimal,
}

impl Default for RateCard {
    fn default() -> Self {
        RateCard {
            currency: "USD".to_owned(),
            cluster_hours: Decimal::new(75, 2),
            partition_hours: Decimal::new(15, 4),
            storage_gb_months: Decimal::new(10, 2),
            data_in_gb: Decimal::new(10, 2),
            data_out_gb: Decimal::new(5, 2),
        }
    }
}

impl RateCard {
    /// The price of one unit of `dimension`.
    pub fn rate(&self, dimension: Dimension) -> Decimal {
        match dimension {
            Dimension::ClusterHours => self.cluster_hours,
            Dimension::PartitionHours => self.partition_hours,
            Dimension::StorageGbMonths => self.storage_gb_months,
            Dimension::DataInGb => self.data_in_gb,
            Dimension::DataOutGb => self.data_out_gb,
        }
    }

    /// Rejects a card that would bill nonsense: negative rates (credits are not usage), and a
    /// currency that is not a three-letter ISO 4217 code. Call it right after loading.
    pub fn validate(&self) -> Result<(), Error> {
        let code = self.currency.as_bytes();
        if code.len() != 3 || !code.iter().all(u8::is_ascii_uppercase) {
            return Err(Error::InvalidRates(format!(
                "currency {:?} is not a three-letter ISO 4217 code such as \"USD\"",
                self.currency
            )));
        }
        for dimension in Dimension::ALL {
            let rate = self.rate(dimension);
            if rate.is_sign_negative() && !rate.is_zero() {
                return Err(Error::InvalidRates(format!(
                    "{dimension} costs {rate}; rates cannot be negative"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contract_rates() {
        let card = RateCard::default();
        card.validate().unwrap();
        let json = serde_json::to_value(&card).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "currency": "USD",
                "cluster_hours": "0.75",
                "partition_hours": "0.0015",
                "storage_gb_months": "0.10",
                "data_in_gb": "0.10",
                "data_out_gb": "0.05",
            })
        );
    }

    #[test]
    fn partial_cards_take_defaults() {
        let card: RateCard = serde_json::from_str(r#"{"data_out_gb": "0.02"}"#).unwrap();
        assert_eq!(card.data_out_gb, Decimal::new(2, 2));
        assert_eq!(card.cluster_hours, RateCard::default().cluster_hours);
    }

    #[test]
    fn rejects_unknown_fields_floats_and_negatives() {
        assert!(serde_json::from_str::<RateCard>(r#"{"cluster_hour": "1"}"#).is_err());
        assert!(serde_json::from_str::<RateCard>(r#"{"cluster_hours": 0.1}"#).is_err());
        let card: RateCard = serde_json::from_str(r#"{"data_in_gb": "-0.01"}"#).unwrap();
        let err = card.validate().unwrap_err().to_string();
        assert!(err.contains("data_in_gb costs -0.01"), "{err}");
        let card = RateCard {
            currency: "usd".into(),
            ..RateCard::default()
        };
        assert!(card.validate().is_err());
        // Free is allowed, and so is a "negative zero".
        let card = RateCard {
            data_in_gb: Decimal::ZERO,
            data_out_gb: -Decimal::ZERO,
            ..RateCard::default()
        };
        card.validate().unwrap();
    }
}
