//! How the gateway reaches a pool that asks for TLS and SASL (`--pool-tls-ca`,
//! `--pool-tls-cert`, `--pool-tls-key`, `--pool-sasl-mechanism`, `--pool-sasl-username`,
//! `--pool-sasl-password`), as an Apache Kafka pool in production usually does.
//!
//! Every pool connection (requests, fetches, probes) is opened through [`PoolSecurity::connect`]:
//! TCP, then TLS verified against the configured CA with the broker's host name, then the SASL
//! exchange (PLAIN or SCRAM), all before the connection carries its first request.
//!
//! The gateway's pool login is the gateway's own: tenants never see it, and it is never a
//! tenant's credential. A broker that asks for re-authentication (KIP-368) closes the
//! connection when the session ends; the gateway opens a new one, as after any close.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::UpstreamError;
use crate::identity::scram;

/// A SASL answer larger than this is not a login but a broken or hostile broker.
const MAX_SASL_FRAME: usize = 64 * 1024;

/// The pool's SASL mechanisms the gateway can log in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMechanism {
    Plain,
    Scram(scram::Mechanism),
}

impl std::str::FromStr for PoolMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "PLAIN" => Ok(PoolMechanism::Plain),
            other => scram::Mechanism::parse(other)
                .map(PoolMechanism::Scram)
                .ok_or_else(|| format!("{other:?}: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")),
        }
    }
}

impl PoolMechanism {
    fn name(self) -> &'static str {
        match self {
            PoolMechanism::Plain => "PLAIN",
            PoolMechanism::Scram(m) => m.name(),
        }
    }
}

/// The gateway's own pool login.
#[derive(Clone)]
pub struct PoolSasl {
    pub mechanism: PoolMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PoolSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// TLS and SASL towards the pool; the default is neither.
#[derive(Debug, Clone, Default)]
pub struct PoolSecurity {
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<PoolSasl>,
}

/// A pool connection as opened: TCP, or TLS over it.
pub enum PoolStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl PoolSecurity {
    /// TLS with the CA (PEM) the brokers' certificates chain to, and a client certificate and
    /// key (PEM) for brokers that ask for one; then, if given, SASL.
    pub fn new(
        ca: Option<&std::path::Path>,
        client: Option<(&std::path::Path, &std::path::Path)>,
        sasl: Option<PoolSasl>,
    ) -> Result<Self, String> {
        let tls = match ca {
            None => None,
            Some(ca) => Some(Arc::new(client_config(ca, client)?)),
        };
        Ok(PoolSecurity { tls, sasl })
    }

    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a connection to `addr` (`host:port`) and logs in, within `timeout` in all.
    pub async fn connect(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<PoolStream, UpstreamError> {
        let failed = |reason: String| UpstreamError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let steps = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let mut stream = match &self.tls {
                None => PoolStream::Plain(tcp),
                Some(config) => {
                    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(host.to_owned())
                        .map_err(|e| failed(format!("{host:?} is not a TLS server name: {e}")))?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| failed(format!("TLS: {e}")))?;
                    PoolStream::Tls(Box::new(tls))
                }
            };
            if let Some(sasl) = &self.sasl {
                let login = match &mut stream {
                    PoolStream::Plain(s) => log_in(s, sasl).await,
                    PoolStream::Tls(s) => log_in(s.as_mut(), sasl).await,
                };
                login.map_err(|why| failed(format!("SASL {}: {why}", sasl.mechanism.name())))?;
            }
            Ok(stream)
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| failed("connect timed out".into()))?
    }
}

fn client_config(
    ca: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<rustls::ClientConfig, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
        let cert = cert.map_err(|e| format!("{}: not a PEM certificate ({e})", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate ({e})", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CERTIFICATE in it", ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&read(cert)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: not a PEM certificate chain ({e})", cert.display()))?;
            let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| format!("{}: no PEM private key ({e})", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))
        }
    }
}

/// SaslHandshake, then SaslAuthenticate until the mechanism is done.
async fn log_in<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    sasl: &PoolSasl,
) -> Result<(), String> {
    let handshake = SaslHandshakeRequest::default()
        .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name()));
    let answer: SaslHandshakeResponse =
        exchange(stream, ApiKey::SaslHandshake, 1, &handshake, 1).await?;
    if answer.error_code != 0 {
        let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(format!(
            "the broker does not offer it (error {}; it offers {offered:?})",
            answer.error_code
        ));
    }
    match sasl.mechanism {
        PoolMechanism::Plain => {
            let message = format!("\0{}\0{}", sasl.username, sasl.password);
            authenticate(stream, message.into_bytes(), 2).await?;
        }
        PoolMechanism::Scram(mechanism) => {
            let (client, first) = scram::Client::start(mechanism, &sasl.username, &sasl.password);
            let server_first = authenticate(stream, first.into_bytes(), 2).await?;
            let (proven, last) = client.prove(&server_first).map_err(|e| e.to_string())?;
            let server_final = authenticate(stream, last.into_bytes(), 3).await?;
            proven.verify(&server_final).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: Vec<u8>,
    correlation_id: i32,
) -> Result<bytes::Bytes, String> {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(bytes.into());
    let answer: SaslAuthenticateResponse = exchange(
        stream,
        ApiKey::SaslAuthenticate,
        1,
        &request,
        correlation_id,
    )
    .await?;
    if answer.error_code != 0 {
        return Err(format!(
            "refused (error {}): {}",
            answer.error_code,
            answer.error_message.as_deref().unwrap_or("no message")
        ));
    }
    Ok(answer.auth_bytes)
}

/// One request and its answer, before the connection is shared: nothing else is in flight.
async fn exchange<S, M, R>(
    stream: &mut S,
    api: ApiKey,
    version: i16,
    body: &M,
    correlation_id: i32,
) -> Result<R, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: kafka_protocol::protocol::Encodable + 'static,
    R: Decodable,
{
    let mut frame =
        crate::frame::encode_request(api, version, "tollgate", body).map_err(|e| e.to_string())?;
    crate::frame::set_correlation_id(&mut frame, correlation_id);
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| e.to_string())?;
    // A TLS record (alert or handshake, version 3.x) where a Kafka answer should be: the
    // broker speaks TLS and we did not.
    if matches!(len, [0x15 | 0x16, 0x03, ..]) {
        return Err("the broker answered with TLS; give its CA with --pool-tls-ca".into());
    }
    let len = i32::from_be_bytes(len);
    if !(4..=MAX_SASL_FRAME as i32).contains(&len) {
        return Err(format!("answer frame of {len} bytes"));
    }
    let mut body = BytesMut::zeroed(len as usize);
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    let mut body = body.freeze();
    let header = kafka_protocol::messages::ResponseHeader::decode(
        &mut body,
        api.response_header_version(version),
    )
    .map_err(|e| e.to_string())?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "answer to correlation id {} where {correlation_id} was asked",
            header.correlation_id
        ));
    }
    R::decode(&mut body, version).map_err(|e| e.to_string())
}
