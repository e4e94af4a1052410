//! TLS on the Kafka listener (rustls, ring): `--tls-cert FILE --tls-key FILE` (PEM), on every
//! lane, TLS 1.2 and 1.3 only (rustls speaks nothing older); with `--tls-client-ca FILE`, client
//! certificates too (mutual TLS), checked against `--tls-client-crl FILE` when given.
//!
//! The files are re-read when they change, without dropping a connection: each handshake takes
//! the server config in use at that moment from [`Reloading`], which [`Reloading::watch`]
//! replaces when the files' contents change (checked every [`RELOAD_EVERY`]; a certificate
//! renewed by cert-manager or certbot, or a CRL a CA publishes, is in use within seconds). Files
//! that do not load (a key written before its certificate, a key that does not match, a CRL
//! that does not parse) keep the config in use, say why, and are tried again at the next change.
//!
//! Client certificates are asked for but not required: a client without one goes on to SASL,
//! as on a Kafka listener that serves both. A client that presents one must present one the
//! CA signed, in its validity period and not revoked, or the handshake fails.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Where the listener's certificate chain and private key are, and its client CA and CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// PEM: the CA certificates client certificates must chain to; `None`: no mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// PEM: certificate revocation lists of the client CA.
    pub client_crl: Option<PathBuf>,
}

/// Why the files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("{cert} and {key} do not go together: {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("client certificates ({ca}): {why}")]
    ClientAuth { ca: PathBuf, why: String },
}

/// The server config in use, and what its files held when it was made.
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    current: RwLock<Loaded>,
    /// Counts loads, so that live connections look at the revocation lists again only when
    /// they may have changed.
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    /// The client CA's revocation lists, parsed: the handshake's verifier has them too, but
    /// connections made before a list changed are checked against these.
    crls: Vec<webpki::CertRevocationList<'static>>,
    /// The files' bytes it came from: a change is a difference in them.
    from: Vec<Vec<u8>>,
    #[cfg(test)]
    leaf: Vec<u8>,
}

impl Reloading {
    /// Loads the files once; fails with a message that names the file and what is wrong.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let from = read(&files)?;
        let loaded = configure(&files, from)?;
        Ok(Arc::new(Reloading {
            files,
            current: RwLock::new(loaded),
            generation: Default::default(),
        }))
    }

    /// What a handshake starting now uses.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("poisoned").config.clone())
    }

    /// Whether clients may present certificates (`--tls-client-ca`).
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Looks at the files once: loads them if they changed. Returns whether the config in use
    /// changed.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let from = read(&self.files)?;
        if self.current.read().expect("poisoned").from == from {
            return Ok(false);
        }
        let loaded = configure(&self.files, from)?;
        *self.current.write().expect("poisoned") = loaded;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(true)
    }

    /// Reloads on change until `stop`; says what it did, and once per bad set what is wrong.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_error = None;
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.reload()).await;
            match outcome {
                Ok(Ok(true)) => {
                    last_error = None;
                    tracing::info!(cert = %self.files.cert.display(), "TLS files reloaded");
                }
                Ok(Ok(false)) => last_error = None,
                Ok(Err(e)) => {
                    let e = e.to_string();
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "TLS files not reloaded; keeping the ones in use");
                        last_error = Some(e);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
            }
        }
    }

    #[cfg(test)]
    fn in_use(&self) -> Vec<u8> {
        self.current.read().expect("poisoned").leaf.clone()
    }
}

fn read(files: &TlsFiles) -> Result<Vec<Vec<u8>>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut all = vec![read(&files.cert)?, read(&files.key)?];
    for path in [&files.client_ca, &files.client_crl].into_iter().flatten() {
        all.push(read(path)?);
    }
    Ok(all)
}

fn configure(files: &TlsFiles, from: Vec<Vec<u8>>) -> Result<Loaded, TlsError> {
    let pem = |path: &Path, why: String| TlsError::Pem {
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(&from[0])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(pem(&files.cert, "no CERTIFICATE in it".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(&from[1]).map_err(|e| {
        pem(
            &files.key,
            format!("no PEM private key (PKCS#8, RSA or EC) in it ({e})"),
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| pem(&files.key, format!("unusable private key ({e})")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| pem(&files.cert, e.to_string()))?;
    let (builder, crls) = match &files.client_ca {
        None => (builder.with_no_client_auth(), Vec::new()),
        Some(ca) => {
            let (verifier, crls) = client_verifier(files, ca, &from, provider)?;
            (builder.with_client_cert_verifier(verifier), crls)
        }
    };
    #[cfg(test)]
    let leaf = chain[0].to_vec();
    let config = builder
        .with_single_cert(chain, der)
        .map_err(|e| pem(&files.key, e.to_string()))?;
    Ok(Loaded {
        config: Arc::new(config),
        crls,
        from,
        #[cfg(test)]
        leaf,
    })
}

/// Client certificates must chain to the CA file's certificates and must not be revoked by the
/// CRL file's lists (only the client's own certificate is looked up: an intermediate's
/// revocation is its issuer's list, which a deployment with intermediates adds to the file).
fn client_verifier(
    files: &TlsFiles,
    ca: &Path,
    from: &[Vec<u8>],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<
    (
        Arc<dyn rustls::server::danger::ClientCertVerifier>,
        Vec<webpki::CertRevocationList<'static>>,
    ),
    TlsError,
> {
    let fail = |why: String| TlsError::ClientAuth {
        ca: ca.to_owned(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_slice_iter(&from[2])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM certificate list ({e})")))?;
    if cas.is_empty() {
        return Err(fail("no CERTIFICATE in it".into()));
    }
    for cert in cas {
        roots
            .add(cert)
            .map_err(|e| fail(format!("unusable CA certificate ({e})")))?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated();
    let mut parsed = Vec::new();
    if let Some(crl_path) = &files.client_crl {
        let crls = CertificateRevocationListDer::pem_slice_iter(&from[3])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(crl_path, format!("not a PEM revocation list ({e})")))?;
        if crls.is_empty() {
            return Err(pem(crl_path, "no X509 CRL in it".into()));
        }
        parsed = crls
            .iter()
            .map(|crl| webpki::OwnedCertRevocationList::from_der(crl).map(Into::into))
            .collect::<Result<_, _>>()
            .map_err(|e| pem(crl_path, format!("unusable revocation list ({e:?})")))?;
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    Ok((builder.build().map_err(|e| fail(e.to_string()))?, parsed))
}

impl crate::identity::mtls::Revocations for Reloading {
    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn revoked(&self, issuer: &[u8], serial: &[u8]) -> bool {
        let current = self.current.read().expect("poisoned");
        current.crls.iter().any(|crl| {
            // A list that cannot be searched counts as naming the certificate: fail closed.
            crl.issuer() == issuer && !matches!(crl.find_serial(serial), Ok(None))
        })
    }
}

fn pem(path: &Path, why: String) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        why,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Certificates for tests, made with the `openssl` command (Debian's `openssl`, which
    //! `scripts/install-deps.sh` installs): a CA and server certificates it signs.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (scripts/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA (`ca.pem`, `ca.key`) in `dir`.
    pub fn ca(dir: &Path) -> PathBuf {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=tollgate test CA",
            ],
        );
        dir.join("ca.pem")
    }

    /// A server certificate for 127.0.0.1 and localhost signed by the CA in `dir`, as
    /// `<name>.pem` and `<name>.key`.
    pub fn server(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        (dir.join(pem), dir.join(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files for a server pair alone, no client certificates.
    fn pair(cert: PathBuf, key: PathBuf) -> TlsFiles {
        TlsFiles {
            cert,
            key,
            client_ca: None,
            client_crl: None,
        }
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_pair_loads_and_a_changed_pair_replaces_it() {
        let d = dir();
        testing::ca(&d);
        let (cert, key) = testing::server(&d, "first");
        let files = pair(d.join("live.pem"), d.join("live.key"));
        std::fs::copy(&cert, &files.cert).unwrap();
        std::fs::copy(&key, &files.key).unwrap();
        let tls = Reloading::load(files.clone()).unwrap();
        tls.acceptor();
        let first = tls.in_use();
        assert!(!tls.reload().unwrap(), "nothing changed");

        // A renewal writes the key first: the mismatched pair is refused and the old one
        // stays in use; once the certificate follows, the new pair is.
        let (cert2, key2) = testing::server(&d, "second");
        std::fs::copy(&key2, &files.key).unwrap();
        let err = tls.reload().unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert_eq!(tls.in_use(), first);
        std::fs::copy(&cert2, &files.cert).unwrap();
        assert!(tls.reload().unwrap());
        assert_ne!(tls.in_use(), first);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let d = dir();
        testing::ca(&d);
        let (cert, key) = testing::server(&d, "server");
        let missing = pair(d.join("nope.pem"), key.clone());
        let err = Reloading::load(missing).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        // A key where the certificate should be, and the other way round.
        let swapped = pair(key.clone(), cert.clone());
        let err = Reloading::load(swapped).unwrap_err().to_string();
        assert!(
            err.contains("no CERTIFICATE") || err.contains("not a PEM"),
            "{err}"
        );
        let garbage = d.join("garbage.key");
        std::fs::write(&garbage, "not a key").unwrap();
        let err = Reloading::load(pair(cert, garbage))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("garbage.key") && err.contains("private key"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
