//! IAM-style policies: the documents tokens carry, and their evaluation.
//!
//! The grammar is the subset of AWS IAM that Amazon MSK uses for its data-plane actions:
//! statements with `Effect`, `Action` and `Resource` (each a string or a list of strings) and an
//! optional `Sid`. `*` matches any run of characters and `?` any single character, in actions
//! and resources alike; action names are case-insensitive, as in IAM, resources are not.
//!
//! Evaluation is IAM's: an explicit `Deny` beats any `Allow`, and whatever no statement allows
//! is denied. Elements we do not implement (`Condition`, `NotAction`, `NotResource`,
//! `Principal`) are rejected when the policy is parsed rather than ignored: a statement that
//! silently lost its condition would grant more than its author meant.

use serde::{Deserialize, Serialize};

/// A policy document, as it appears in a token's `policy` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(rename = "Version", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(rename = "Statement")]
    pub statements: OneOrMany<Statement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "Sid", default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(rename = "Effect")]
    pub effect: Effect,
    #[serde(rename = "Action")]
    pub actions: OneOrMany<String>,
    #[serde(rename = "Resource")]
    pub resources: OneOrMany<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    Allow,
    Deny,
}

/// IAM accepts a lone string wherever it accepts a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(one) => std::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy version {0:?} is not supported; use \"2012-10-17\"")]
    Version(String),
    #[error("policy has no statements")]
    Empty,
    #[error("statement {0} has an empty Action or Resource list")]
    EmptyList(usize),
    #[error("statement {index}: action {action:?} is not a kafka-cluster action")]
    UnknownAction { index: usize, action: String },
}

/// Every action MSK defines for its data plane, without the `kafka-cluster:` prefix.
pub const ACTIONS: &[&str] = &[
    "Connect",
    "DescribeCluster",
    "AlterCluster",
    "DescribeClusterDynamicConfiguration",
    "AlterClusterDynamicConfiguration",
    "WriteDataIdempotently",
    "CreateTopic",
    "DescribeTopic",
    "AlterTopic",
    "DeleteTopic",
    "DescribeTopicDynamicConfiguration",
    "AlterTopicDynamicConfiguration",
    "ReadData",
    "WriteData",
    "DescribeGroup",
    "AlterGroup",
    "DeleteGroup",
    "DescribeTransactionalId",
    "AlterTransactionalId",
];

impl Policy {
    /// Checks what serde cannot: the version, non-empty lists, and that every action pattern
    /// could match at least one MSK action (a typo such as `kafka-cluster:ReadDate` would
    /// otherwise silently grant nothing, or, in a Deny, silently deny nothing).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(v) = &self.version {
            if v != "2012-10-17" && v != "2008-10-17" {
                return Err(PolicyError::Version(v.clone()));
            }
        }
        if self.statements.as_slice().is_empty() {
            return Err(PolicyError::Empty);
        }
        for (index, st) in self.statements.as_slice().iter().enumerate() {
            if st.actions.as_slice().is_empty() || st.resources.as_slice().is_empty() {
                return Err(PolicyError::EmptyList(index));
            }
            for action in st.actions.as_slice() {
                let known = ACTIONS
                    .iter()
                    .any(|a| action_matches(action, &format!("kafka-cluster:{a}")));
                if !known {
                    return Err(PolicyError::UnknownAction {
                        index,
                        action: action.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Is `action` (e.g. `kafka-cluster:ReadData`) allowed on `resource` (an ARN)?
    pub fn allows(&self, action: &str, resource: &str) -> bool {
        let mut allowed = false;
        for st in self.statements.as_slice() {
            let applies = st
                .actions
                .as_slice()
                .iter()
                .any(|a| action_matches(a, action))
                && st
                    .resources
                    .as_slice()
                    .iter()
                    .any(|r| wildcard_match(r.as_bytes(), resource.as_bytes()));
            if applies {
                match st.effect {
                    Effect::Deny => return false,
                    Effect::Allow => allowed = true,
                }
            }
        }
        allowed
    }
}

fn action_matches(pattern: &str, action: &str) -> bool {
    wildcard_match(
        pattern.to_ascii_lowercase().as_bytes(),
        action.to_ascii_lowercase().as_bytes(),
    )
}

/// Glob matching with `*` (any run, including empty) and `?` (exactly one byte), in linear time:
/// the classic two-pointer algorithm that backtracks only to the last `*`.
pub fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        let p: Policy = serde_json::from_str(json).expect("policy parses");
        p.validate().expect("policy is valid");
        p
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*", b""));
        assert!(wildcard_match(b"*", b"anything"));
        assert!(wildcard_match(b"a*c", b"abbbc"));
        assert!(wildcard_match(b"a*c", b"ac"));
        assert!(!wildcard_match(b"a*c", b"acb"));
        assert!(wildcard_match(b"a?c", b"abc"));
        assert!(!wildcard_match(b"a?c", b"ac"));
        assert!(wildcard_match(
            b"*topic/orders/*/*",
            b"arn:x:topic/orders/u/t"
        ));
        assert!(!wildcard_match(b"topic/orders/*", b"topic/orderz/u"));
        assert!(wildcard_match(b"**a**", b"xxaxx"));
        assert!(!wildcard_match(b"", b"a"));
        assert!(wildcard_match(b"", b""));
    }

    #[test]
    fn allow_by_wildcard_action_and_resource() {
        let p = policy(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
                "Action":["kafka-cluster:*Topic","kafka-cluster:ReadData"],
                "Resource":"arn:tollgate:kafka:*:acme:topic/orders/*/*"}]}"#,
        );
        let t = "arn:tollgate:kafka:local:acme:topic/orders/u1/payments";
        assert!(p.allows("kafka-cluster:CreateTopic", t));
        assert!(p.allows("kafka-cluster:DescribeTopic", t));
        assert!(p.allows("kafka-cluster:ReadData", t));
        // Case-insensitive actions, as in IAM.
        assert!(p.allows("KAFKA-CLUSTER:readdata", t));
        assert!(!p.allows("kafka-cluster:WriteData", t));
        // Another tenant's or another cluster's resources are not matched.
        assert!(!p.allows(
            "kafka-cluster:ReadData",
            "arn:tollgate:kafka:local:other:topic/orders/u1/payments"
        ));
        assert!(!p.allows(
            "kafka-cluster:ReadData",
            "arn:tollgate:kafka:local:acme:topic/billing/u2/payments"
        ));
    }

    #[test]
    fn deny_beats_allow_whatever_the_order() {
        let allow = r#"{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}"#;
        let deny = r#"{"Effect":"Deny","Action":"kafka-cluster:WriteData","Resource":"*:topic/*/*/secret"}"#;
        for (first, second) in [(allow, deny), (deny, allow)] {
            let p = policy(&format!(r#"{{"Statement":[{first},{second}]}}"#));
            let secret = "arn:tollgate:kafka:r:t:topic/c/u/secret";
            assert!(!p.allows("kafka-cluster:WriteData", secret));
            assert!(p.allows("kafka-cluster:ReadData", secret));
            assert!(p.allows(
                "kafka-cluster:WriteData",
                "arn:tollgate:kafka:r:t:topic/c/u/public"
            ));
        }
    }

    #[test]
    fn default_deny() {
        let p = policy(
            r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:Connect","Resource":"*"}]}"#,
        );
        assert!(p.allows("kafka-cluster:Connect", "arn:anything"));
        assert!(!p.allows("kafka-cluster:ReadData", "arn:anything"));
        let deny_only = policy(
            r#"{"Statement":[{"Effect":"Deny","Action":"kafka-cluster:ReadData","Resource":"*"}]}"#,
        );
        assert!(!deny_only.allows("kafka-cluster:Connect", "arn:anything"));
    }

    #[test]
    fn rejects_what_it_does_not_implement() {
        let with_condition = r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*",
            "Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"true"}}}]}"#;
        assert!(serde_json::from_str::<Policy>(with_condition).is_err());
        let not_action =
            r#"{"Statement":[{"Effect":"Allow","NotAction":"kafka-cluster:*","Resource":"*"}]}"#;
        assert!(serde_json::from_str::<Policy>(not_action).is_err());
        let bad_effect =
            r#"{"Statement":[{"Effect":"Maybe","Action":"kafka-cluster:*","Resource":"*"}]}"#;
        assert!(serde_json::from_str::<Policy>(bad_effect).is_err());
    }

    #[test]
    fn validate_catches_typos_and_empty_lists() {
        let typo: Policy = serde_json::from_str(
            r#"{"Statement":[{"Effect":"Deny","Action":"kafka-cluster:ReadDate","Resource":"*"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            typo.validate(),
            Err(PolicyError::UnknownAction { .. })
        ));
        let empty: Policy = serde_json::from_str(
            r#"{"Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#,
        )
        .unwrap();
        assert_eq!(empty.validate(), Err(PolicyError::EmptyList(0)));
        let none: Policy = serde_json::from_str(r#"{"Statement":[]}"#).unwrap();
        assert_eq!(none.validate(), Err(PolicyError::Empty));
        let version: Policy = serde_json::from_str(
            r#"{"Version":"2020-01-01","Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#,
        )
        .unwrap();
        assert!(matches!(version.validate(), Err(PolicyError::Version(_))));
    }
}
