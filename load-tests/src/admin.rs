//! Provisioning through the gateway's admin API with a tiny HTTP/1.1 client over a std
//! `TcpStream` (one request per connection, `Connection: close`), so that benchmarks and tests
//! pull in no HTTP stack of their own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// What clients need to reach one tenant cluster through the gateway.
pub struct Tenancy {
    /// The cluster's id as the admin API returned it.
    pub cluster_id: String,
    /// Prefix of the cluster's names on the pool: `tg-<uuid as 32 hex digits>-`.
    pub pool_prefix: String,
    /// The token clients present as their SASL PLAIN password.
    pub token: String,
}

/// A client of one gateway's admin API, authenticated with its admin token.
pub struct Admin {
    addr: SocketAddr,
    token: String,
}

impl Admin {
    pub fn new(addr: SocketAddr, token: &str) -> Self {
        Admin {
            addr,
            token: token.to_owned(),
        }
    }

    /// Polls `GET /healthz` until it answers 200 or `deadline` passes.
    pub fn wait_healthy(&self, deadline: Instant) -> Result<()> {
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            match self.call("GET", "/healthz", None) {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("admin API at {} not healthy in time: {last}", self.addr)
    }

    /// A tenant, a cluster that takes 10 MiB batches, and a token (principal `load-tests`,
    /// valid 12 hours) allowed everything in it.
    pub fn provision(&self, tenant: &str, cluster: &str) -> Result<Tenancy> {
        self.expect(
            "POST",
            "/v1/tenants",
            &json!({"id": tenant, "name": tenant}),
            201,
        )?;
        let created = self.expect(
            "POST",
            "/v1/clusters",
            &json!({"tenant": tenant, "name": cluster, "max_message_bytes": 10_485_760}),
            201,
        )?;
        let cluster_id = created["id"]
            .as_str()
            .context("POST /v1/clusters answered no id")?
            .to_owned();
        let token = self.expect(
            "POST",
            "/v1/tokens",
            &json!({
                "cluster": cluster_id,
                "principal": "load-tests",
                "policy": {"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Action": "kafka-cluster:*", "Resource": "*"}]},
                "ttl_seconds": 43_200,
            }),
            201,
        )?;
        let token = token["token"]
            .as_str()
            .context("POST /v1/tokens answered no token")?
            .to_owned();
        let pool_prefix = format!("tg-{}-", cluster_id.replace('-', "").to_ascii_lowercase());
        Ok(Tenancy {
            cluster_id,
            pool_prefix,
            token,
        })
    }

    fn expect(&self, method: &str, path: &str, body: &Value, status: u16) -> Result<Value> {
        let (got, text) = self.call(method, path, Some(body))?;
        if got != status {
            bail!("{method} {path} answered {got}, expected {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: body {text:?}"))
    }

    /// One request; the answer's status and body, whatever the status.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_response(&raw).with_context(|| format!("{method} {path}"))
    }
}

/// Status and body of a whole HTTP/1.1 response (`Content-Length`, chunked, or to EOF).
fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("response without a header end")?;
    let head = std::str::from_utf8(&raw[..split]).context("response head is not UTF-8")?;
    let mut body = &raw[split + 4..];
    let status_line = head.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let decoded;
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        decoded = dechunk(body)?;
        body = &decoded;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = &body[..len.min(body.len())];
    }
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&raw[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 8\r\n\r\n{\"a\": 1}";
        assert_eq!(parse_response(plain).unwrap(), (201, "{\"a\": 1}".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\": 1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "{\"a\": 1}".into()));
    }
}
