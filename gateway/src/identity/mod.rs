//! Who a Kafka client is, and what it may do.
//!
//! A client proves an identity once per connection (and again at each KIP-368
//! re-authentication); what it proves becomes a [`authz::Session`]: a principal, its cluster and
//! an IAM-style [`policy`] that every request is checked against.
//!
//! - [`sasl`]: the SASL exchange (one message or several) and the mechanisms offered.
//! - [`token`]: Tollgate's own JWTs (OAUTHBEARER, PLAIN).
//! - [`scram`]: SCRAM-SHA-256 and -512 users of a cluster, stored as salted keys only.
//! - [`credentials`]: what a cluster's credentials are (SCRAM users, access keys, certificate
//!   principals, revoked tokens), kept in
//!   its record so that every gateway instance sees them, and whether a session's credential
//!   still stands.
//! - [`sigv4`]: Amazon MSK IAM, SigV4-presigned requests signed with a cluster's access key.
//! - [`certificate`] and [`mtls`]: client certificates (mutual TLS), their subjects as Kafka
//!   writes them, Kafka's principal mapping rules, and the cluster that bound the principal.
//! - [`allowlist`]: the networks a cluster's clients may connect from.
//! - [`policy`] and [`authz`]: policy documents, and the MSK action each Kafka API needs.

pub mod allowlist;
pub mod authz;
pub mod certificate;
pub mod credentials;
pub mod mtls;
pub mod policy;
pub mod sasl;
pub mod scram;
pub mod sigv4;
pub mod token;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Fills `out` from the operating system's random source (salts, nonces, keys).
pub(crate) fn fill_random(out: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .expect("the operating system's random source failed");
}
