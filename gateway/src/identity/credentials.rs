//! A cluster's credentials other than tokens (SCRAM users, MSK IAM access keys), and the tokens
//! it has revoked.
//!
//! They live in the cluster's record, so that the admin store persists them and the cluster
//! sync (`sync.rs`) carries them to every gateway instance with the cluster itself: a user
//! made or deleted through one instance is known to all within the sync interval, and a
//! deleted cluster takes its credentials with it.
//!
//! A session remembers which credential it was made from ([`Used`]); a connection checks that
//! it still [`stands`](Credentials::stands) whenever its cluster's record changes, and closes
//! when it does not (a deleted user, a revoked token).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::policy::Policy;
use super::scram;

/// The most SCRAM users one cluster may have: each is carried in every sync of its cluster.
pub const MAX_SCRAM_USERS: usize = 1000;
/// The longest user name: Kafka sets no limit; this keeps records and messages small.
pub const MAX_USERNAME_CHARS: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// User name -> what the server keeps of its password.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram_users: BTreeMap<String, ScramUser>,
    /// Access key id -> the key, for clients that sign with SigV4 as with AWS credentials.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub access_keys: BTreeMap<String, AccessKey>,
    /// Client certificate principal (after the mapping rules) -> its binding to this cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub certificate_principals: BTreeMap<String, CertificateBinding>,
    /// Token id (`jti`) -> the token's expiry (seconds since the Unix epoch): a revoked token
    /// is remembered until it would have expired anyway.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revoked_tokens: BTreeMap<Uuid, i64>,
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.scram_users.is_empty()
            && self.access_keys.is_empty()
            && self.certificate_principals.is_empty()
            && self.revoked_tokens.is_empty()
    }

    /// Whether the credential a session was made from still admits it.
    pub fn stands(&self, used: &Used) -> bool {
        match used {
            Used::Token { jti } => !self.revoked_tokens.contains_key(jti),
            Used::Scram { username, id } => self
                .scram_users
                .get(username)
                .is_some_and(|user| user.id == *id),
            Used::AccessKey { id } => self.access_keys.contains_key(id),
            Used::Certificate { principal, id } => self
                .certificate_principals
                .get(principal)
                .is_some_and(|binding| binding.id == *id),
        }
    }

    /// Forgets revoked tokens that have expired since: they are refused for that already.
    pub fn prune_revoked(&mut self, now: i64) {
        self.revoked_tokens.retain(|_, exp| *exp > now);
    }
}

/// One SCRAM user of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramUser {
    /// Made anew with every user, so that a user deleted and made again with another password
    /// does not keep the first one's connections open.
    pub id: Uuid,
    pub credential: scram::Credential,
    pub policy: Policy,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

/// An access key of a cluster: what a client signs its SigV4 requests with.
///
/// The secret is kept as it is, because verifying a SigV4 signature takes the secret itself
/// (every signing key is derived from it and the request's date); AWS keeps its secrets the
/// same way. The admin store and Redis therefore hold secrets, like the token signing key in
/// the data dir: both must be protected as credentials are.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub secret: String,
    pub principal: String,
    pub policy: Policy,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("principal", &self.principal)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// The credential a session was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Used {
    Token { jti: Uuid },
    Scram { username: String, id: Uuid },
    AccessKey { id: String },
    Certificate { principal: String, id: Uuid },
}

/// A client certificate principal bound to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateBinding {
    /// Made anew with every binding, as a SCRAM user's is.
    pub id: Uuid,
    pub policy: Policy,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

impl Used {
    /// Whether a re-authentication with `other` may replace a session made with `self`: the
    /// same kind of credential (KIP-368: the same mechanism).
    pub fn same_kind(&self, other: &Used) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// A new access key id: `TGK` and 17 random characters of AWS's key id alphabet, 20 in all.
pub fn new_access_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut random = [0u8; 17];
    super::fill_random(&mut random);
    let tail: String = random
        .iter()
        .map(|b| ALPHABET[usize::from(b % 32)] as char)
        .collect();
    format!("TGK{tail}")
}

/// A new secret access key: 30 random bytes, 40 characters of base64 as AWS's are.
pub fn new_secret() -> String {
    use base64::Engine;
    let mut random = [0u8; 30];
    super::fill_random(&mut random);
    base64::engine::general_purpose::STANDARD.encode(random)
}

/// A user name's problem, if it has one: 1 to [`MAX_USERNAME_CHARS`] characters, none a
/// control character.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.chars().count() > MAX_USERNAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(format!(
            "username must be 1 to {MAX_USERNAME_CHARS} printable characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: Uuid) -> ScramUser {
        ScramUser {
            id,
            credential: scram::Credential::new(
                scram::Mechanism::Sha256,
                "pw",
                scram::MIN_ITERATIONS,
            ),
            policy: serde_json::from_str(r#"{"Version":"2012-10-17","Statement":[]}"#).unwrap(),
            created_at: 0,
        }
    }

    #[test]
    fn a_session_stands_while_its_credential_does() {
        let mut c = Credentials::default();
        let first = Uuid::new_v4();
        c.scram_users.insert("alice".into(), user(first));
        let alice = Used::Scram {
            username: "alice".into(),
            id: first,
        };
        assert!(c.stands(&alice));
        // Deleted and made again: the old session does not stand on the new user.
        c.scram_users.insert("alice".into(), user(Uuid::new_v4()));
        assert!(!c.stands(&alice));
        c.scram_users.clear();
        assert!(!c.stands(&alice));

        let jti = Uuid::new_v4();
        let token = Used::Token { jti };
        assert!(c.stands(&token));
        c.revoked_tokens.insert(jti, 100);
        assert!(!c.stands(&token));
        c.prune_revoked(99);
        assert!(!c.stands(&token));
        c.prune_revoked(100);
        assert!(c.revoked_tokens.is_empty());
    }

    #[test]
    fn access_keys_stand_while_they_exist_and_look_like_aws_keys() {
        let mut c = Credentials::default();
        let id = new_access_key_id();
        assert_eq!(id.len(), 20);
        assert!(
            id.starts_with("TGK")
                && id
                    .chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
        );
        assert_ne!(id, new_access_key_id());
        let secret = new_secret();
        assert_eq!(secret.len(), 40);
        let used = Used::AccessKey { id: id.clone() };
        assert!(!c.stands(&used));
        c.access_keys.insert(
            id.clone(),
            AccessKey {
                secret: secret.clone(),
                principal: "svc".into(),
                policy: user(Uuid::nil()).policy,
                created_at: 0,
            },
        );
        assert!(c.stands(&used));
        assert!(!format!("{:?}", c.access_keys[&id]).contains(&secret));
        assert!(used.same_kind(&Used::AccessKey { id: "other".into() }));
        assert!(!used.same_kind(&Used::Token { jti: Uuid::nil() }));
    }

    #[test]
    fn usernames() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("a,b=c d@e").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a\nb").is_err());
        assert!(check_username(&"x".repeat(MAX_USERNAME_CHARS + 1)).is_err());
    }
}
