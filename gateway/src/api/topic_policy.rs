//! What a tenant may ask of the shared pool when it creates or configures topics.
//!
//! The pool's brokers are shared, so a topic config is a decision about everyone's disks and
//! CPUs: `segment.bytes=14` makes a broker roll a segment per record, and 100,000 partitions
//! exhaust its file handles. Tenants may set only the topic configs Amazon MSK Serverless lets
//! its tenants set, within ranges that keep the pool healthy; everything else (the replication
//! factor, replica placement, segment and index tuning) is the operator's. A refusal names the
//! config or limit, with Kafka's own codes (INVALID_CONFIG, POLICY_VIOLATION), so admin
//! clients report it as they would a broker's.

use kafka_protocol::ResponseError;

pub const INVALID_CONFIG: i16 = ResponseError::InvalidConfig.code();
pub const POLICY_VIOLATION: i16 = ResponseError::PolicyViolation.code();

/// A refusal: Kafka's error code and a message naming what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    fn config(message: String) -> Self {
        Refusal {
            code: INVALID_CONFIG,
            message,
        }
    }
}

/// The topic configs a tenant may set, as MSK Serverless lists them, and what each may hold.
const ALLOWED: &[(&str, Rule)] = &[
    ("cleanup.policy", Rule::List(&["delete", "compact"])),
    (
        "compression.type",
        Rule::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
    ),
    // Up to the cluster's own record batch limit (checked by the caller's bound).
    ("max.message.bytes", Rule::MessageBytes),
    (
        "message.timestamp.difference.max.ms",
        Rule::Range(0, i64::MAX),
    ),
    ("message.timestamp.before.max.ms", Rule::Range(0, i64::MAX)),
    ("message.timestamp.after.max.ms", Rule::Range(0, i64::MAX)),
    (
        "message.timestamp.type",
        Rule::OneOf(&["CreateTime", "LogAppendTime"]),
    ),
    // -1 is unlimited; otherwise at least a segment's worth, so retention cannot be used to
    // make the broker delete continuously.
    ("retention.bytes", Rule::UnlimitedOr(1024 * 1024, i64::MAX)),
    // -1 is forever; otherwise at least a minute (MSK's minimum): shorter retention turns
    // the pool's brokers into a deletion loop.
    ("retention.ms", Rule::UnlimitedOr(60_000, i64::MAX)),
];

#[derive(Debug, Clone, Copy)]
enum Rule {
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these, each at most once.
    List(&'static [&'static str]),
    Range(i64, i64),
    /// -1, or within the range.
    UnlimitedOr(i64, i64),
    MessageBytes,
}

/// Checks one config a tenant wants to set (`value` None: back to the default, always
/// allowed for an allowed name). `max_message_bytes` is the cluster's record batch limit.
pub fn check_config(
    name: &str,
    value: Option<&str>,
    max_message_bytes: i32,
) -> Result<(), Refusal> {
    let Some((_, rule)) = ALLOWED.iter().find(|(n, _)| *n == name) else {
        let allowed: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
        return Err(Refusal::config(format!(
            "topic config {name} cannot be set on this service; allowed: {}",
            allowed.join(", ")
        )));
    };
    let Some(value) = value else {
        return Ok(());
    };
    let number = |lo: i64, hi: i64, unlimited: bool| -> Result<(), Refusal> {
        match value.trim().parse::<i64>() {
            Ok(-1) if unlimited => Ok(()),
            Ok(v) if (lo..=hi).contains(&v) => Ok(()),
            _ => Err(Refusal::config(format!(
                "{name}={value} is out of range: {}{lo} to {hi}",
                if unlimited { "-1 or " } else { "" }
            ))),
        }
    };
    match *rule {
        Rule::OneOf(values) if values.contains(&value) => Ok(()),
        Rule::OneOf(values) => Err(Refusal::config(format!(
            "{name}={value} is not allowed; use one of {}",
            values.join(", ")
        ))),
        Rule::List(values) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            let known = items.iter().all(|i| values.contains(i));
            let unique = items
                .iter()
                .enumerate()
                .all(|(n, i)| !items[..n].contains(i));
            if known && unique && !items.is_empty() {
                Ok(())
            } else {
                Err(Refusal::config(format!(
                    "{name}={value} is not allowed; use a list of {}",
                    values.join(", ")
                )))
            }
        }
        Rule::Range(lo, hi) => number(lo, hi, false),
        Rule::UnlimitedOr(lo, hi) => number(lo, hi, true),
        Rule::MessageBytes => number(1, i64::from(max_message_bytes), false),
    }
}

/// Checks that `adding` partitions fit the cluster's `max_partitions` quota (None: no limit)
/// with `in_use` already there.
pub fn check_partitions(in_use: u64, adding: u64, limit: Option<u64>) -> Result<(), Refusal> {
    let Some(limit) = limit else {
        return Ok(());
    };
    if adding == 0 || in_use.saturating_add(adding) <= limit {
        return Ok(());
    }
    Err(Refusal {
        code: POLICY_VIOLATION,
        message: format!(
            "the cluster may have at most {limit} partitions (quota max_partitions); \
             {in_use} exist and this asks for {adding} more"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i32 = 1024 * 1024;

    #[test]
    fn allowed_configs_within_range_pass() {
        for (name, value) in [
            ("cleanup.policy", "compact"),
            ("cleanup.policy", "delete,compact"),
            ("compression.type", "zstd"),
            ("max.message.bytes", "1048576"),
            ("message.timestamp.type", "LogAppendTime"),
            ("retention.ms", "-1"),
            ("retention.ms", "604800000"),
            ("retention.bytes", "-1"),
        ] {
            assert_eq!(
                check_config(name, Some(value), MIB),
                Ok(()),
                "{name}={value}"
            );
        }
        assert_eq!(check_config("retention.ms", None, MIB), Ok(()));
    }

    #[test]
    fn pool_harming_configs_are_refused_with_a_message_naming_them() {
        let e = check_config("segment.bytes", Some("14"), MIB).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.message.contains("segment.bytes"), "{}", e.message);
        assert!(
            e.message.contains("retention.ms"),
            "lists what is allowed: {}",
            e.message
        );
        for (name, value) in [
            ("retention.ms", "10"),
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("retention.bytes", "100"),
            ("max.message.bytes", "2097152"),
            ("max.message.bytes", "0"),
            ("cleanup.policy", "delete,delete"),
            ("cleanup.policy", ""),
            ("compression.type", "brotli"),
            ("min.insync.replicas", "1"),
            ("unclean.leader.election.enable", "true"),
        ] {
            let e = check_config(name, Some(value), MIB).unwrap_err();
            assert_eq!(e.code, INVALID_CONFIG, "{name}={value}");
            assert!(e.message.contains(name), "{name}: {}", e.message);
        }
    }

    #[test]
    fn partitions_are_limited_by_the_clusters_quota() {
        let msk = crate::quotas::Quotas::default().max_partitions;
        assert_eq!(check_partitions(0, 2_400, msk), Ok(()));
        assert_eq!(check_partitions(2_399, 1, msk), Ok(()));
        let e = check_partitions(2_000, 401, msk).unwrap_err();
        assert_eq!(e.code, POLICY_VIOLATION);
        assert!(
            e.message.contains("2400") && e.message.contains("2000"),
            "{}",
            e.message
        );
        assert!(check_partitions(0, 100_000, msk).is_err());
        assert!(check_partitions(u64::MAX, 1, msk).is_err());
        // A small quota binds where the default would not, and names itself.
        assert_eq!(check_partitions(2, 1, Some(3)), Ok(()));
        let e = check_partitions(2, 2, Some(3)).unwrap_err();
        assert_eq!(e.code, POLICY_VIOLATION);
        assert!(
            e.message.contains("at most 3 partitions") && e.message.contains("max_partitions"),
            "{}",
            e.message
        );
        // No limit.
        assert_eq!(check_partitions(u64::MAX, 100_000, None), Ok(()));
    }
}
