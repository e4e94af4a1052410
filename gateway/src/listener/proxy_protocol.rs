//! The PROXY protocol, version 2 (HAProxy's binary header), from trusted load balancers only:
//! `--proxy-protocol off|optional|required` with `--proxy-trusted-cidrs`.
//!
//! A load balancer in front of the gateway (an AWS NLB, HAProxy, Envoy) can put the client's
//! real address in a header before the client's first byte. Allowlists ([`crate::identity::allowlist`])
//! and logs then see that address rather than the balancer's. The header is believed only from
//! a peer in the trusted networks: anyone else could claim any address. So:
//! - `off`: no header is read; every peer is the client.
//! - `optional`: a trusted peer's connection may start with a header (a health check may not);
//!   an untrusted peer's is never read as one, so a forged header is just bytes that are not
//!   Kafka, and the connection fails as any garbage does.
//! - `required`: every connection must come from a trusted peer and start with a header.
//!
//! A `LOCAL` header (the balancer's own health check) keeps the peer's address. Only the
//! address block is used; TLVs are skipped. Version 1 (the text header) is not accepted.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::identity::allowlist::Cidr;

/// The twelve bytes every version 2 header starts with.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// How the listener treats PROXY headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    #[default]
    Off,
    Optional,
    Required,
}

/// The listener's PROXY protocol settings.
#[derive(Debug, Clone, Default)]
pub struct ProxyProtocol {
    pub mode: Mode,
    /// The load balancers whose headers are believed.
    pub trusted: Vec<Cidr>,
}

/// Why a connection was refused before its first Kafka byte.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("a PROXY header is required and {0} is not a trusted load balancer")]
    Untrusted(IpAddr),
    #[error("a PROXY header is required and the connection did not start with one")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ProxyProtocol {
    fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(peer))
    }

    /// Whether `peer`'s connections may carry a header: it is a trusted load balancer and
    /// headers are read at all.
    pub fn believes(&self, peer: IpAddr) -> bool {
        self.mode != Mode::Off && self.trusts(peer)
    }

    /// Reads the header a trusted peer may send; returns the client's address and the
    /// stream, with any bytes read past the header still to be read.
    pub async fn accept<S: AsyncRead + Unpin>(
        &self,
        mut stream: S,
        peer: SocketAddr,
    ) -> Result<(SocketAddr, Prefixed<S>), ProxyError> {
        let trusted = self.trusts(peer.ip());
        match self.mode {
            Mode::Off => return Ok((peer, Prefixed::new(Vec::new(), stream))),
            Mode::Optional if !trusted => return Ok((peer, Prefixed::new(Vec::new(), stream))),
            Mode::Required if !trusted => return Err(ProxyError::Untrusted(peer.ip())),
            _ => {}
        }
        // The first 16 bytes: a header's fixed part, or a Kafka request's first bytes (a
        // request is longer than 16 bytes, so reading them never waits on a client that has
        // sent less than a whole request).
        let mut head = [0u8; 16];
        let mut got = 0;
        while got < head.len() {
            let n = stream.read(&mut head[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
            if head[..got] != SIGNATURE[..got.min(12)] {
                break;
            }
        }
        if got < 12 || head[..12] != SIGNATURE {
            if self.mode == Mode::Required {
                return Err(ProxyError::Missing);
            }
            return Ok((peer, Prefixed::new(head[..got].to_vec(), stream)));
        }
        if got < 16 {
            return Err(ProxyError::Malformed("cut short"));
        }
        let version_command = head[12];
        if version_command >> 4 != 2 {
            return Err(ProxyError::Malformed("not version 2"));
        }
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        let mut rest = vec![0u8; len];
        stream.read_exact(&mut rest).await?;
        let client = match (version_command & 0x0f, head[13]) {
            // LOCAL: the balancer speaking for itself (a health check).
            (0, _) => peer,
            // PROXY over TCP/IPv4, TCP/IPv6.
            (1, 0x11) => {
                let a = rest
                    .get(..12)
                    .ok_or(ProxyError::Malformed("IPv4 block cut short"))?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]]))
            }
            (1, 0x21) => {
                let a = rest
                    .get(..36)
                    .ok_or(ProxyError::Malformed("IPv6 block cut short"))?;
                let ip: [u8; 16] = a[..16].try_into().expect("16 bytes");
                SocketAddr::new(
                    Ipv6Addr::from(ip).into(),
                    u16::from_be_bytes([a[32], a[33]]),
                )
            }
            (1, _) => return Err(ProxyError::Malformed("not TCP over IPv4 or IPv6")),
            _ => return Err(ProxyError::Malformed("unknown command")),
        };
        Ok((client, Prefixed::new(Vec::new(), stream)))
    }
}

/// A stream with bytes already read from it put back in front.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_v4(src: [u8; 4], port: u16) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend([0x21, 0x11, 0, 12]);
        h.extend(src);
        h.extend([10, 0, 0, 1]);
        h.extend(port.to_be_bytes());
        h.extend(9092u16.to_be_bytes());
        h
    }

    fn settings(mode: Mode) -> ProxyProtocol {
        ProxyProtocol {
            mode,
            trusted: vec!["127.0.0.1/32".parse().unwrap()],
        }
    }

    const LB: &str = "127.0.0.1:40000";
    const KAFKA: &[u8] = b"\x00\x00\x00\x15\x00\x12\x00\x03kafka request bytes";

    async fn read_all<S: AsyncRead + Unpin>(mut s: S) -> Vec<u8> {
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_trusted_header_gives_the_client_address_and_the_bytes_after_it() {
        let mut bytes = header_v4([192, 0, 2, 7], 5555);
        bytes.extend(KAFKA);
        let (client, rest) = settings(Mode::Optional)
            .accept(&bytes[..], LB.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(client, "192.0.2.7:5555".parse().unwrap());
        assert_eq!(read_all(rest).await, KAFKA);
    }

    #[tokio::test]
    async fn without_a_header_optional_passes_everything_through() {
        let (client, rest) = settings(Mode::Optional)
            .accept(KAFKA, LB.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(client, LB.parse().unwrap());
        assert_eq!(read_all(rest).await, KAFKA);
        // Required refuses it.
        let err = settings(Mode::Required)
            .accept(KAFKA, LB.parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ProxyError::Missing), "{err}");
    }

    #[tokio::test]
    async fn an_untrusted_peers_header_is_never_believed() {
        let mut bytes = header_v4([192, 0, 2, 7], 5555);
        bytes.extend(KAFKA);
        let stranger: SocketAddr = "127.0.0.3:40000".parse().unwrap();
        let (client, rest) = settings(Mode::Optional)
            .accept(&bytes[..], stranger)
            .await
            .unwrap();
        assert_eq!(client, stranger, "the forged address is not taken");
        assert_eq!(
            read_all(rest).await,
            bytes,
            "its bytes reach Kafka parsing, which refuses them"
        );
        let err = settings(Mode::Required)
            .accept(&bytes[..], stranger)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, ProxyError::Untrusted(_)), "{err}");
    }

    #[tokio::test]
    async fn local_ipv6_and_malformed_headers() {
        let mut local = SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        let (client, _) = settings(Mode::Required)
            .accept(&local[..], LB.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(client, LB.parse().unwrap(), "LOCAL keeps the peer");

        let mut v6 = SIGNATURE.to_vec();
        v6.extend([0x21, 0x21, 0, 36 + 3]);
        v6.extend("2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend([0u8; 16]);
        v6.extend(7000u16.to_be_bytes());
        v6.extend(9092u16.to_be_bytes());
        v6.extend([1, 0, 0]); // a TLV, skipped
        let (client, _) = settings(Mode::Required)
            .accept(&v6[..], LB.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(client, "[2001:db8::9]:7000".parse().unwrap());

        let mut v1ish = SIGNATURE.to_vec();
        v1ish.extend([0x11, 0x11, 0, 12]);
        v1ish.extend([0u8; 12]);
        let err = settings(Mode::Optional)
            .accept(&v1ish[..], LB.parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, ProxyError::Malformed("not version 2")),
            "{err}"
        );
        let short = &header_v4([1, 2, 3, 4], 1)[..20];
        assert!(settings(Mode::Optional)
            .accept(short, LB.parse().unwrap())
            .await
            .is_err());
    }
}
