//! The gateway's outbound HTTP/1.1 client, for the services it calls: the Kubernetes API
//! (`pool::autoscale::actuator::kubernetes`), an OTLP receiver (`telemetry::otlp::http`) and
//! the audit log's object store (`telemetry::audit::s3`).
//!
//! - [`Tls`]: rustls trusting the certificates of a CA file or of a CA bundle ([`Roots`],
//!   [`system_bundle`]), for one server name.
//! - [`connect`]: TCP, TLS when given, and the HTTP/1.1 handshake; the connection is driven by
//!   a task of its own, so the caller may keep it for more requests.
//! - [`send`]: one request on a connection of its own.
//! - [`within`]: an exchange's time limit, as an error that says so.
//!
//! What a caller asks of its server stays with the caller: the headers (a bearer token, a
//! SigV4 signature), how much of an answer it reads, its retries, whether it keeps a
//! connection.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// Debian's CA bundle (Ubuntu's and Alpine's too), which the container image installs.
pub const DEBIAN_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where Linux distributions keep their CA bundle (Debian and Alpine, Fedora and RHEL,
/// OpenSUSE, and the path some others link), in the order [`system_bundle`] looks.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    DEBIAN_CA_BUNDLE,
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The first of [`SYSTEM_CA_BUNDLES`] that exists here.
pub fn system_bundle() -> Option<&'static Path> {
    SYSTEM_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|path| path.is_file())
}

/// The PEM file a TLS client's trusted roots are read from. Either way a PEM section that
/// cannot be read is an error naming the file, and so is a file with no usable certificate.
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    /// The CA named for one server (a service account's `ca.crt`): every certificate in it
    /// must be one rustls can trust, since one passed over would only show as a failed
    /// handshake later.
    CaFile(&'a Path),
    /// A bundle of roots (a distribution's, or one given for a receiver): certificates rustls
    /// cannot use are passed over, as bundles carry a few; the others still count.
    Bundle(&'a Path),
}

impl Roots<'_> {
    fn path(&self) -> &Path {
        match self {
            Roots::CaFile(path) | Roots::Bundle(path) => path,
        }
    }
}

/// A TLS client for one server: the roots it trusts and the name the server's certificate
/// must carry.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Trusting `roots` for `host`, a DNS name or an IP address (without an IPv6 address's
    /// brackets).
    pub fn new(roots: Roots<'_>, host: &str) -> Result<Tls, String> {
        use rustls_pki_types::pem::PemObject;
        let file = roots.path();
        let mut store = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("reading the CA file {}: {e}", file.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("the CA file {}: {e}", file.display()))?;
            if let (Err(e), Roots::CaFile(_)) = (store.add(cert), roots) {
                return Err(format!("the CA file {}: {e}", file.display()));
            }
        }
        if store.is_empty() {
            return Err(format!(
                "the CA file {} holds no usable certificate",
                file.display()
            ));
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} is no TLS server name: {e}"))?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

/// Opens a connection to `host:port`: TCP, then TLS when `tls` is given, then the HTTP/1.1
/// handshake. The connection's task ends once the returned sender is dropped and the last
/// answer read (or dropped), or when the server closes.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<&Tls>,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let at = authority(host, port);
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {at}: {e}"))?;
    // A request is written whole and then waits for its answer; Nagle would only delay it.
    let _ = tcp.set_nodelay(true);
    match tls {
        None => handshake(tcp).await,
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS with {at}: {e}"))?;
            handshake(stream).await
        }
    }
}

/// Sends `request` on a connection of its own, for callers that call too seldom for a kept
/// connection to pay. The answer is returned once its head is in; the connection closes
/// after its body has been read or dropped.
pub async fn send(
    host: &str,
    port: u16,
    tls: Option<&Tls>,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let mut sender = connect(host, port, tls).await?;
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending: {e}"))
}

/// What `exchange` gives, or an error saying that `limit` passed first.
pub async fn within<T>(
    limit: Duration,
    exchange: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    // Its error, if any, reaches the caller through the sender's pending request.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `host:port` for messages, with an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::header::HOST;
    use hyper::service::service_fn;
    use hyper::{Method, StatusCode};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::listener::tls::{testing, Reloading, TlsFiles};

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-http-client-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A server on loopback answering every request with "METHOD PATH HOST BODY"; returns
    /// its port and how many connections it has accepted.
    async fn echo_server(tls: Option<TlsAcceptor>) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let line = format!(
                            "{} {} {}",
                            request.method(),
                            request.uri().path(),
                            request.headers()[HOST].to_str().unwrap_or("?")
                        );
                        let body = request.into_body().collect().await?.to_bytes();
                        let answer = format!("{line} {}", String::from_utf8_lossy(&body));
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(answer))))
                    });
                    let server = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = server.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ =
                                    server.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn request(method: Method, path: &str, port: u16, body: &'static str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, format!("127.0.0.1:{port}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    async fn read(answer: Response<Incoming>) -> (StatusCode, String) {
        let status = answer.status();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_request_goes_over_plain_http_on_a_connection_of_its_own() {
        let (port, accepted) = echo_server(None).await;
        for n in 1..=2 {
            let answer = send(
                "127.0.0.1",
                port,
                None,
                request(Method::PUT, "/bucket/key", port, "object"),
            )
            .await
            .unwrap();
            assert_eq!(
                read(answer).await,
                (
                    StatusCode::OK,
                    format!("PUT /bucket/key 127.0.0.1:{port} object")
                )
            );
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
    }

    #[tokio::test]
    async fn a_connection_is_kept_for_the_next_request() {
        let (port, accepted) = echo_server(None).await;
        let mut sender = connect("127.0.0.1", port, None).await.unwrap();
        for body in ["first", "second"] {
            sender.ready().await.unwrap();
            let answer = sender
                .send_request(request(Method::POST, "/v1/metrics", port, body))
                .await
                .unwrap();
            assert_eq!(
                read(answer).await.1,
                format!("POST /v1/metrics 127.0.0.1:{port} {body}")
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn https_is_verified_against_the_roots_given() {
        let (ours, theirs) = (dir(), dir());
        let ca = testing::ca(&ours);
        let (cert, key) = testing::server(&ours, "server");
        let acceptor = Reloading::load(TlsFiles {
            cert,
            key,
            client_ca: None,
            client_crl: None,
        })
        .unwrap()
        .acceptor();
        let (port, _) = echo_server(Some(acceptor)).await;

        let tls = Tls::new(Roots::CaFile(&ca), "127.0.0.1").unwrap();
        let answer = send(
            "127.0.0.1",
            port,
            Some(&tls),
            request(Method::GET, "/scale", port, ""),
        )
        .await
        .unwrap();
        assert_eq!(
            read(answer).await,
            (StatusCode::OK, format!("GET /scale 127.0.0.1:{port} "))
        );

        // A server whose certificate another CA signed is refused, and the error says where.
        let other = Tls::new(Roots::Bundle(&testing::ca(&theirs)), "127.0.0.1").unwrap();
        let err = connect("127.0.0.1", port, Some(&other))
            .await
            .err()
            .unwrap();
        assert!(
            err.starts_with(&format!("TLS with 127.0.0.1:{port}: ")),
            "{err}"
        );
        // And so is a name the certificate does not carry.
        let misnamed = Tls::new(Roots::CaFile(&ca), "tollgate.example").unwrap();
        let err = connect("127.0.0.1", port, Some(&misnamed))
            .await
            .err()
            .unwrap();
        assert!(err.starts_with("TLS with"), "{err}");
        std::fs::remove_dir_all(ours).unwrap();
        std::fs::remove_dir_all(theirs).unwrap();
    }

    #[test]
    fn ca_files_that_cannot_be_trusted_are_refused_with_their_name() {
        let d = dir();
        let ca = testing::ca(&d);
        let not_pem = d.join("not.pem");
        std::fs::write(&not_pem, "no certificate here\n").unwrap();
        let broken = d.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n%%% not base64 %%%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        // Valid PEM around bytes that are no certificate, after a real one.
        let mixed = d.join("mixed.pem");
        let mut text = std::fs::read_to_string(&ca).unwrap();
        text.push_str("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        std::fs::write(&mixed, text).unwrap();
        let missing = d.join("missing.pem");

        for roots in [Roots::CaFile(&not_pem), Roots::Bundle(&not_pem)] {
            let err = Tls::new(roots, "127.0.0.1").err().unwrap();
            assert!(err.contains("not.pem holds no usable certificate"), "{err}");
        }
        for roots in [Roots::CaFile(&broken), Roots::Bundle(&broken)] {
            let err = Tls::new(roots, "127.0.0.1").err().unwrap();
            assert!(
                err.starts_with("the CA file ") && err.contains("broken.pem: "),
                "{err}"
            );
        }
        for roots in [Roots::CaFile(&missing), Roots::Bundle(&missing)] {
            let err = Tls::new(roots, "127.0.0.1").err().unwrap();
            assert!(
                err.starts_with("reading the CA file ") && err.contains("missing.pem"),
                "{err}"
            );
        }
        // A CA file must be trusted whole; a bundle's unusable certificate is passed over.
        let err = Tls::new(Roots::CaFile(&mixed), "127.0.0.1").err().unwrap();
        assert!(err.contains("mixed.pem: "), "{err}");
        assert!(Tls::new(Roots::Bundle(&mixed), "127.0.0.1").is_ok());

        let err = Tls::new(Roots::CaFile(&ca), "not a host").err().unwrap();
        assert!(
            err.contains("\"not a host\" is no TLS server name"),
            "{err}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_says_where_it_went() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = connect("127.0.0.1", port, None).await.err().unwrap();
        assert!(
            err.starts_with(&format!("connecting to 127.0.0.1:{port}: ")),
            "{err}"
        );
        assert_eq!(authority("::1", 4318), "[::1]:4318");
    }

    #[tokio::test(start_paused = true)]
    async fn an_exchange_past_its_limit_says_so() {
        let limit = Duration::from_secs(30);
        let err = within(limit, std::future::pending::<Result<(), String>>())
            .await
            .unwrap_err();
        assert_eq!(err, "no answer within 30s");
        assert_eq!(within(limit, async { Ok(7) }).await, Ok(7));
    }
}
