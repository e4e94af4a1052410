//! Mutual TLS: a client certificate the handshake verified, as a Kafka client's identity.
//!
//! As on a Kafka listener with `ssl.client.auth`, a client that presents a certificate and
//! does no SASL is authenticated by the certificate: its subject, mapped by
//! `--tls-principal-rules`, is the principal, and the cluster that bound that principal
//! (`POST /v1/clusters/{id}/certificate-principals`) is its cluster, with the binding's policy.
//! A client that does SASL is who SASL says, certificate or not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// What a revocation list names the certificate by: its issuer's Name and its serial.
    pub issuer: Vec<u8>,
    pub serial: Vec<u8>,
}

/// The revocation lists in force, for connections that outlive the handshake that checked them:
/// a list published later must reach them too.
pub trait Revocations: Send + Sync {
    /// Changes whenever the lists do, so that a connection looks again only then.
    fn generation(&self) -> u64;
    /// Whether a list of `issuer` names `serial`.
    fn revoked(&self, issuer: &[u8], serial: &[u8]) -> bool;
}

/// A certified client, and the lists that may revoke its certificate while it is connected.
pub struct Certified {
    pub client: CertifiedClient,
    revocations: Arc<dyn Revocations>,
    /// The lists' generation last looked at.
    seen: AtomicU64,
}

impl Certified {
    /// `seen`: the lists' generation read before the handshake that checked them, so that a
    /// list loaded during the handshake is looked at once more.
    pub fn new(client: CertifiedClient, revocations: Arc<dyn Revocations>, seen: u64) -> Self {
        Certified {
            client,
            revocations,
            seen: AtomicU64::new(seen),
        }
    }

    /// Whether a list loaded since it was last asked revokes the certificate. Costs an atomic
    /// load unless the lists changed.
    pub fn revoked_since(&self) -> bool {
        let now = self.revocations.generation();
        // A load, not a swap, on the per-request path; one task serves a connection, so
        // nothing races the store.
        if self.seen.load(Ordering::Relaxed) == now {
            return false;
        }
        self.seen.store(now, Ordering::Relaxed);
        self.revocations
            .revoked(&self.client.issuer, &self.client.serial)
    }
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
        issuer: cert.issuer,
        serial: cert.serial,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists that revoke serial 7 from generation 2 on.
    struct Lists(AtomicU64);

    impl Revocations for Lists {
        fn generation(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
        fn revoked(&self, issuer: &[u8], serial: &[u8]) -> bool {
            self.generation() >= 2 && issuer == b"ca" && serial == [7]
        }
    }

    fn client(serial: u8) -> CertifiedClient {
        CertifiedClient {
            principal: "alice".into(),
            not_after_unix: i64::MAX,
            issuer: b"ca".to_vec(),
            serial: vec![serial],
        }
    }

    #[test]
    fn a_list_loaded_after_the_handshake_revokes_a_live_certificate() {
        let lists = Arc::new(Lists(AtomicU64::new(1)));
        let revoked = Certified::new(client(7), lists.clone(), 1);
        let kept = Certified::new(client(8), lists.clone(), 1);
        assert!(
            !revoked.revoked_since(),
            "nothing changed since the handshake"
        );
        lists.0.store(2, Ordering::Relaxed);
        assert!(revoked.revoked_since());
        assert!(!kept.revoked_since());
        // A list loaded while the handshake ran is looked at once more.
        let during = Certified::new(client(7), lists.clone(), 1);
        assert!(during.revoked_since());
    }
}
