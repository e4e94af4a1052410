//! Mutual TLS: a client certificate the handshake verified, as a Kafka client's identity.
//!
//! As on a Kafka listener with `ssl.client.auth`, a client that presents a certificate and
//! does no SASL is authenticated by the certificate: its subject, mapped by
//! `--tls-principal-rules`, is the principal, and the cluster that bound that principal
//! (`POST /v1/clusters/{id}/certificate-principals`) is its cluster, with the binding's policy.
//! A client that does SASL is who SASL says, certificate or not.

use rustls_pki_types::CertificateDer;

use super::authz::{Identity, Session};
use super::certificate::{parse_certificate, PrincipalRules};
use super::credentials::Used;
use super::sasl::{admit, AuthError};
use crate::state::Gateway;

/// Who a verified client certificate says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedClient {
    pub principal: String,
    /// The certificate's `notAfter`, seconds since the Unix epoch: a session ends with it.
    pub not_after_unix: i64,
}

/// The principal of a certificate the handshake verified; the error says why there is none.
pub fn identify(
    leaf: &CertificateDer<'_>,
    rules: &PrincipalRules,
) -> Result<CertifiedClient, String> {
    let cert = parse_certificate(leaf).map_err(|e| e.to_string())?;
    let principal = rules.principal(&cert.subject).map_err(|e| e.to_string())?;
    Ok(CertifiedClient {
        principal,
        not_after_unix: cert.not_after_unix,
    })
}

/// The session a certified client gets from the cluster that bound its principal.
pub fn session(
    gw: &Gateway,
    client: &CertifiedClient,
    source: Option<std::net::IpAddr>,
) -> Result<Session, AuthError> {
    let unbound = || AuthError::CertificateUnbound(client.principal.clone());
    let cluster = gw
        .registry()
        .by_certificate_principal(&client.principal)
        .ok_or_else(unbound)?;
    let binding = cluster
        .credentials
        .certificate_principals
        .get(&client.principal)
        .cloned()
        .ok_or_else(unbound)?;
    let identity = Identity {
        principal: client.principal.clone(),
        policy: binding.policy,
        expires_at_ms: client.not_after_unix.saturating_mul(1000),
        used: Used::Certificate {
            principal: client.principal.clone(),
            id: binding.id,
        },
    };
    admit(gw, identity, cluster, None, source)
}
