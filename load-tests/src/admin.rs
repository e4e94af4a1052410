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

/// What an unbound quota of bytes (per second, or stored) is set to: 2^50, a PiB (a PiB a
/// second), which no run here comes near.
pub const UNBOUND_BYTES: u64 = 1 << 50;
/// What an unbound count quota (connections, requests, partitions, groups; per second or per
/// 5 minutes) is set to: 2^40, about 10^12.
pub const UNBOUND_COUNT: u64 = 1 << 40;

/// How a provisioned cluster's quotas are set. The quotas themselves are the ones the gateway
/// shows on the new cluster, so a quota the gateway gains is set too, never left at a default
/// that could bind.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaSetting {
    /// Enforced but never binding: every quota set, so the gateway does all its quota
    /// accounting (token buckets per cluster and partition, leases through Redis, connection,
    /// partition and group counts, the storage check), each far above anything a benchmark
    /// reaches ([`UNBOUND_BYTES`] for byte quotas, [`UNBOUND_COUNT`] for the others). The
    /// gateway's arithmetic takes such values: a bucket's cost is `amount * 10^9 / quota` in
    /// 128 bits, shares and graces fit an `i64`, and Redis's doubles hold 2^50 exactly. What
    /// measures a pool's capacity or the gateway's cost uses this, not the defaults.
    Unbound,
    /// Every quota null (no limit): the gateway keeps no quota state for the cluster beyond
    /// reading the nulls.
    Off,
    /// The gateway's defaults (Amazon MSK Serverless's limits, which a benchmark on one
    /// partition or at 15,000 requests/s passes).
    Defaults,
}

impl QuotaSetting {
    /// The `"quotas"` object that sets each of `names` so; `None` for the defaults.
    pub fn body<'a>(self, names: impl IntoIterator<Item = &'a str>) -> Option<Value> {
        let value = |name: &str| match self {
            QuotaSetting::Unbound if name.contains("bytes") => Value::from(UNBOUND_BYTES),
            QuotaSetting::Unbound => Value::from(UNBOUND_COUNT),
            _ => Value::Null,
        };
        (self != QuotaSetting::Defaults).then(|| {
            Value::Object(
                names
                    .into_iter()
                    .map(|name| (name.to_owned(), value(name)))
                    .collect(),
            )
        })
    }
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

    /// A tenant, a cluster that takes 10 MiB batches with its quotas set as `quotas` says,
    /// and a token (principal `load-tests`, valid 12 hours) allowed everything in it.
    pub fn provision(&self, tenant: &str, cluster: &str, quotas: QuotaSetting) -> Result<Tenancy> {
        self.expect(
            "POST",
            "/v1/tenants",
            &json!({"id": tenant, "name": tenant}),
            201,
        )?;
        let body = json!({"tenant": tenant, "name": cluster, "max_message_bytes": 10_485_760});
        let created = self.expect("POST", "/v1/clusters", &body, 201)?;
        let cluster_id = created["id"]
            .as_str()
            .context("POST /v1/clusters answered no id")?
            .to_owned();
        // Every quota the gateway shows on the new cluster, before a client can connect.
        let names = created["quotas"]
            .as_object()
            .context("POST /v1/clusters answered no quotas")?
            .keys()
            .map(String::as_str);
        if let Some(quotas) = quotas.body(names) {
            self.expect(
                "PATCH",
                &format!("/v1/clusters/{cluster_id}"),
                &json!({ "quotas": quotas }),
                200,
            )?;
        }
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
    fn each_setting_sets_every_quota_the_gateway_shows() {
        let names = [
            "ingress_bytes_per_second",
            "storage_limit_bytes",
            "requests_per_second",
            "partition_mutations_per_5_minutes",
        ];
        let unbound = QuotaSetting::Unbound.body(names).unwrap();
        let unbound = unbound.as_object().unwrap();
        assert_eq!(unbound.len(), names.len());
        assert_eq!(unbound["ingress_bytes_per_second"], UNBOUND_BYTES);
        assert_eq!(unbound["storage_limit_bytes"], UNBOUND_BYTES);
        assert_eq!(unbound["requests_per_second"], UNBOUND_COUNT);
        assert_eq!(unbound["partition_mutations_per_5_minutes"], UNBOUND_COUNT);
        // Far above the defaults (MSK Serverless's: 200 MiB/s in, 15,000 requests/s), and
        // exact in a double (Redis's Lua numbers).
        for v in unbound.values() {
            let v = v.as_u64().unwrap();
            assert!((1 << 40..=1 << 53).contains(&v), "{v}");
        }
        let off = QuotaSetting::Off.body(names).unwrap();
        let off = off.as_object().unwrap();
        assert_eq!(off.len(), names.len());
        assert!(off.values().all(Value::is_null));
        assert_eq!(QuotaSetting::Defaults.body(names), None);
    }

    #[test]
    fn parses_content_length_and_chunked_bodies() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 8\r\n\r\n{\"a\": 1}";
        assert_eq!(parse_response(plain).unwrap(), (201, "{\"a\": 1}".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\": 1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "{\"a\": 1}".into()));
    }
}
