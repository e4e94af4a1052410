//! Where audit events go (`--audit-log`, `--audit-topic`, `--audit-s3-url`,
//! `--audit-s3-endpoint`, `--audit-s3-region`), checked before anything starts.

use std::path::PathBuf;

/// The sinks a gateway delivers its audit events to; none by default (the tenants' view and
/// the counters work without any).
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    /// `--audit-log FILE|-`: JSON lines appended to a file, or written to stdout.
    pub log: Option<LogTarget>,
    /// `--audit-topic NAME`: a topic on the pool, outside every tenant's namespace.
    pub topic: Option<String>,
    /// `--audit-s3-url s3://bucket/prefix` and its endpoint and region.
    pub s3: Option<S3Config>,
    /// Names this instance in `source` and in object keys; `$HOSTNAME` (or `tollgate`) and
    /// eight random hex digits when not given.
    pub instance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

impl LogTarget {
    /// `-` is stdout, anything else a file path.
    pub fn parse(arg: &str) -> LogTarget {
        match arg {
            "-" => LogTarget::Stdout,
            path => LogTarget::File(PathBuf::from(path)),
        }
    }
}

/// An S3-compatible bucket that takes gzip-compressed batches of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `http://host:port` or `https://host[:port]`, requests path-style (`/bucket/key`).
    pub endpoint: Endpoint,
    /// The region requests are signed for.
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The `Host` header: the port only when it is not the scheme's.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The region when neither `--audit-s3-region` nor `AWS_REGION` says: S3's own default.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Why the audit configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("--audit-log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--audit-topic {0:?}: {1}")]
    Topic(String, &'static str),
    #[error("--audit-s3-url {0:?}: {1}")]
    S3Url(String, String),
    #[error("--audit-s3-endpoint {0:?}: {1}")]
    S3Endpoint(String, String),
    #[error("--audit-s3-region {0:?}: a region is letters, digits and hyphens")]
    S3Region(String),
    #[error(
        "--audit-s3-url needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
         (and AWS_SESSION_TOKEN for temporary ones) in the gateway's environment"
    )]
    S3Credentials,
    #[error("--audit-s3-endpoint {0}: {1}")]
    S3Tls(String, String),
}

impl AuditConfig {
    /// The configuration the flags describe. `s3_region` falls back to `AWS_REGION`, then to
    /// [`DEFAULT_REGION`]; `s3_endpoint` to AWS's endpoint of that region.
    pub fn from_flags(
        log: Option<&str>,
        topic: Option<&str>,
        s3_url: Option<&str>,
        s3_endpoint: Option<&str>,
        s3_region: Option<&str>,
    ) -> Result<AuditConfig, AuditError> {
        let topic = topic.map(check_topic).transpose()?;
        let s3 = match s3_url {
            None => {
                if let Some(endpoint) = s3_endpoint {
                    return Err(AuditError::S3Endpoint(
                        endpoint.to_owned(),
                        "given without --audit-s3-url".into(),
                    ));
                }
                None
            }
            Some(url) => {
                let (bucket, prefix) = parse_s3_url(url)?;
                let region = match s3_region {
                    Some(r) => r.to_owned(),
                    None => std::env::var("AWS_REGION")
                        .ok()
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
                };
                if region.is_empty()
                    || !region
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(AuditError::S3Region(region));
                }
                let endpoint = match s3_endpoint {
                    Some(e) => parse_endpoint(e)?,
                    None => Endpoint {
                        tls: true,
                        host: format!("s3.{region}.amazonaws.com"),
                        port: 443,
                    },
                };
                Some(S3Config {
                    bucket,
                    prefix,
                    endpoint,
                    region,
                })
            }
        };
        Ok(AuditConfig {
            log: log.map(LogTarget::parse),
            topic,
            s3,
            instance: None,
        })
    }

    /// Whether any sink is configured.
    pub fn delivers(&self) -> bool {
        self.log.is_some() || self.topic.is_some() || self.s3.is_some()
    }
}

/// A pool topic name the audit log may use: a Kafka topic name outside every tenant's
/// namespace (`tg-` starts them all), so no tenant can name, read or delete it.
fn check_topic(name: &str) -> Result<String, AuditError> {
    let bad = |why| Err(AuditError::Topic(name.to_owned(), why));
    if name.is_empty() || name.len() > crate::tenancy::MAX_TOPIC_NAME {
        return bad("a topic name is 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return bad("a topic may not be named . or ..");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("a topic name is ASCII letters, digits, '.', '_' and '-'");
    }
    if name.starts_with("tg-") || name.starts_with("tg_") || name.starts_with("tg.") {
        // Kafka reads `.` as `_` when it checks names for collisions.
        return bad("names starting with tg- are tenants' (their namespace prefix)");
    }
    Ok(name.to_owned())
}

/// `s3://bucket[/prefix]`.
fn parse_s3_url(url: &str) -> Result<(String, String), AuditError> {
    let bad = |why: &str| Err(AuditError::S3Url(url.to_owned(), why.to_owned()));
    let Some(rest) = url.strip_prefix("s3://") else {
        return bad("expected s3://bucket/prefix");
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    // S3's bucket naming rules (the path-style subset every S3-compatible store accepts).
    if !(3..=63).contains(&bucket.len())
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        || !bucket.as_bytes()[0].is_ascii_alphanumeric()
        || !bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
    {
        return bad("a bucket name is 3 to 63 lowercase letters, digits, '.' and '-'");
    }
    let prefix = prefix.trim_matches('/');
    // S3's "safe" key characters: no escaping questions anywhere the keys are read.
    if prefix.len() > 512
        || !prefix.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'!' | b'-' | b'_' | b'.' | b'*' | b'\'' | b'(' | b')' | b'='
                )
        })
        || prefix.contains("//")
    {
        return bad("the prefix may hold letters, digits, / ! - _ . * ' ( ) = and no empty part");
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

/// `http://host[:port]` or `https://host[:port]`, nothing after the authority.
fn parse_endpoint(text: &str) -> Result<Endpoint, AuditError> {
    let bad = |why: &str| Err(AuditError::S3Endpoint(text.to_owned(), why.to_owned()));
    let (tls, rest) = if let Some(rest) = text.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("https://") {
        (true, rest)
    } else {
        return bad("expected http://host:port or https://host[:port]");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return bad("only a scheme, a host and a port (requests are path-style: /bucket/key)");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let Some((host, after)) = v6.split_once(']') else {
                return bad("an IPv6 address needs its closing ]");
            };
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return bad("the port is not a number from 1 to 65535"),
        },
    };
    if host.is_empty() {
        return bad("no host");
    }
    Ok(Endpoint {
        tls,
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_sinks() {
        let c = AuditConfig::from_flags(
            Some("-"),
            Some("tollgate-audit"),
            Some("s3://audit-bucket/tollgate/events/"),
            Some("http://127.0.0.1:9000"),
            Some("eu-west-1"),
        )
        .unwrap();
        assert_eq!(c.log, Some(LogTarget::Stdout));
        assert_eq!(c.topic.as_deref(), Some("tollgate-audit"));
        let s3 = c.s3.unwrap();
        assert_eq!(s3.bucket, "audit-bucket");
        assert_eq!(s3.prefix, "tollgate/events");
        assert_eq!(s3.region, "eu-west-1");
        assert_eq!(
            s3.endpoint,
            Endpoint {
                tls: false,
                host: "127.0.0.1".into(),
                port: 9000
            }
        );
        assert_eq!(s3.endpoint.authority(), "127.0.0.1:9000");
        let c =
            AuditConfig::from_flags(Some("/var/log/audit.jsonl"), None, None, None, None).unwrap();
        assert_eq!(c.log, Some(LogTarget::File("/var/log/audit.jsonl".into())));
        assert!(c.delivers());
        assert!(!AuditConfig::default().delivers());
    }

    #[test]
    fn aws_is_the_default_endpoint() {
        let c = AuditConfig::from_flags(None, None, Some("s3://logs-1"), None, Some("ap-south-1"))
            .unwrap();
        let s3 = c.s3.unwrap();
        assert_eq!(s3.prefix, "");
        assert_eq!(s3.endpoint.authority(), "s3.ap-south-1.amazonaws.com");
        assert!(s3.endpoint.tls);
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let topic = |t| AuditConfig::from_flags(None, Some(t), None, None, None).unwrap_err();
        assert!(topic("tg-0123-x").to_string().contains("tenants'"));
        assert!(topic("tg_0123").to_string().contains("tenants'"));
        assert!(topic("a b").to_string().contains("ASCII"));
        assert!(topic("").to_string().contains("1 to 249"));
        assert!(topic("..").to_string().contains(". or .."));
        let s3 = |u, e| {
            AuditConfig::from_flags(None, None, Some(u), e, Some("us-east-1"))
                .unwrap_err()
                .to_string()
        };
        assert!(s3("https://bucket/x", None).contains("s3://bucket/prefix"));
        assert!(s3("s3://B", None).contains("bucket name"));
        assert!(s3("s3://ok-bucket/a//b", None).contains("prefix"));
        assert!(s3("s3://ok-bucket/a b", None).contains("prefix"));
        assert!(s3("s3://ok-bucket", Some("ftp://x")).contains("http://host:port"));
        assert!(s3("s3://ok-bucket", Some("http://x:0")).contains("port"));
        assert!(s3("s3://ok-bucket", Some("http://x:9/path")).contains("path-style"));
        let e = AuditConfig::from_flags(None, None, None, Some("http://x:1"), None).unwrap_err();
        assert!(e.to_string().contains("without --audit-s3-url"));
        let e = AuditConfig::from_flags(None, None, Some("s3://ok-bucket"), None, Some("a b"))
            .unwrap_err();
        assert!(e.to_string().contains("region"));
    }

    #[test]
    fn ipv6_endpoints() {
        let e = parse_endpoint("http://[::1]:9000").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.authority(), "[::1]:9000");
        let e = parse_endpoint("https://minio.example").unwrap();
        assert_eq!(e.port, 443);
        assert_eq!(e.authority(), "minio.example");
    }
}
