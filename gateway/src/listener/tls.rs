//! TLS on the Kafka listener (rustls, ring): `--tls-cert FILE --tls-key FILE` (PEM), on every
//! lane, TLS 1.2 and 1.3 only (rustls speaks nothing older).
//!
//! The certificate and key are re-read when their files change, without dropping a
//! connection: the server config resolves its certificate per handshake from [`Reloading`],
//! which [`Reloading::watch`] replaces when the files' contents change (checked every
//! [`RELOAD_EVERY`]; a certificate renewed by cert-manager or certbot is in use within
//! seconds). A pair that does not load (a key written before its certificate, a key that does
//! not match) keeps the one in use, says why, and is tried again at the next change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Where the listener's certificate chain and private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// Why a certificate and key could not be used.
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
}

/// The certificate in use, and what its files held when it was loaded.
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' bytes it came from (certificate, key): a change is a difference in them.
    from: (Vec<u8>, Vec<u8>),
}

impl Reloading {
    /// Loads the pair once; fails with a message that names the file and what is wrong.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let from = read(&files)?;
        let key = certified(&files, &from)?;
        Ok(Arc::new(Reloading {
            files,
            current: RwLock::new(Loaded { key, from }),
        }))
    }

    /// The acceptor every lane uses: TLS 1.3 and 1.2, no client certificates, the certificate
    /// resolved from `self` at each handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Looks at the files once: loads them if they changed. Returns whether the certificate
    /// in use changed.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let from = read(&self.files)?;
        if self.current.read().expect("poisoned").from == from {
            return Ok(false);
        }
        let key = certified(&self.files, &from)?;
        *self.current.write().expect("poisoned") = Loaded { key, from };
        Ok(true)
    }

    /// Reloads on change until `stop`; says what it did, and once per bad pair what is wrong.
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
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Ok(Ok(false)) => last_error = None,
                Ok(Err(e)) => {
                    let e = e.to_string();
                    if last_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "TLS certificate not reloaded; keeping the one in use");
                        last_error = Some(e);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
            }
        }
    }

    #[cfg(test)]
    fn in_use(&self) -> Vec<u8> {
        self.current.read().expect("poisoned").key.cert[0].to_vec()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("poisoned").key.clone())
    }
}

fn read(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(&files.cert)?, read(&files.key)?))
}

fn certified(
    files: &TlsFiles,
    (cert, key): &(Vec<u8>, Vec<u8>),
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = |path: &Path, why: String| TlsError::Pem {
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(pem(&files.cert, "no CERTIFICATE in it".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        pem(
            &files.key,
            format!("no PEM private key (PKCS#8, RSA or EC) in it ({e})"),
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| pem(&files.key, format!("unusable private key ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why: e.to_string(),
    })?;
    Ok(Arc::new(certified))
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
        let files = TlsFiles {
            cert: d.join("live.pem"),
            key: d.join("live.key"),
        };
        std::fs::copy(&cert, &files.cert).unwrap();
        std::fs::copy(&key, &files.key).unwrap();
        let tls = Reloading::load(files.clone()).unwrap();
        tls.acceptor().unwrap();
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
        let missing = TlsFiles {
            cert: d.join("nope.pem"),
            key: key.clone(),
        };
        let err = Reloading::load(missing).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");
        // A key where the certificate should be, and the other way round.
        let swapped = TlsFiles {
            cert: key.clone(),
            key: cert.clone(),
        };
        let err = Reloading::load(swapped).unwrap_err().to_string();
        assert!(
            err.contains("no CERTIFICATE") || err.contains("not a PEM"),
            "{err}"
        );
        let garbage = d.join("garbage.key");
        std::fs::write(&garbage, "not a key").unwrap();
        let err = Reloading::load(TlsFiles { cert, key: garbage })
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("garbage.key") && err.contains("private key"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
