//! Where the brokers of a pool the gateway does not run are (`--pool-discover`).
//!
//! Two kinds, because they differ in what a scale-in can do:
//!
//! - **Ordered** (`list:`, `ordinal:`): a pool of `n` brokers is the first `n` addresses. Who
//!   leaves on a scale-in is known before it happens (the last ones, as a StatefulSet removes
//!   its highest ordinals), so the gateway drains them first and only then asks for fewer.
//! - **Observed** (`dns:`, or the pool's own metadata for leader-based pools): the brokers are
//!   whatever the name resolves to, or whatever the pool names, now. Who leaves is seen only as
//!   it happens, so brokers must stop gracefully on their own (a Kubernetes pod leaves its
//!   Service's endpoints before it is stopped; give it a `preStop` wait longer than the
//!   discovery interval plus the drain) and the gateway drains them when they disappear.

use std::fmt;

/// How to find the pool's brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `list:HOST:PORT,HOST:PORT,...`: brokers in scale order.
    List(Vec<String>),
    /// `ordinal:NAME-{i}.SERVICE:PORT`: `{i}` runs 0, 1, 2, ... (a StatefulSet's pods behind a
    /// headless Service).
    Ordinal(String),
    /// `dns:HOST:PORT`: every address `HOST` resolves to.
    Dns { host: String, port: u16 },
    /// The brokers the pool's Metadata names (leader-based pools such as Apache Kafka, whose
    /// brokers know each other).
    Metadata,
}

impl Discovery {
    /// Parses `--pool-discover`.
    pub fn parse(text: &str) -> Result<Discovery, String> {
        if text == "metadata" {
            return Ok(Discovery::Metadata);
        }
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            format!("--pool-discover {text:?}: expected list:HOST:PORT,..., ordinal:NAME-{{i}}.HOST:PORT, dns:HOST:PORT or metadata")
        })?;
        match kind {
            "list" => {
                let addrs: Vec<String> = rest
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect();
                if addrs.is_empty() {
                    return Err(format!("--pool-discover {text:?}: the list is empty"));
                }
                for a in &addrs {
                    port_of(a).map_err(|e| format!("--pool-discover {text:?}: {e}"))?;
                }
                Ok(Discovery::List(addrs))
            }
            "ordinal" => {
                if !rest.contains("{i}") {
                    return Err(format!(
                        "--pool-discover {text:?}: an ordinal template needs {{i}} where the broker's number goes, e.g. ordinal:tansu-{{i}}.tansu:9092"
                    ));
                }
                port_of(rest).map_err(|e| format!("--pool-discover {text:?}: {e}"))?;
                Ok(Discovery::Ordinal(rest.to_owned()))
            }
            "dns" => {
                let port = port_of(rest).map_err(|e| format!("--pool-discover {text:?}: {e}"))?;
                let host = rest.rsplit_once(':').map_or("", |(h, _)| h).to_owned();
                if host.is_empty() {
                    return Err(format!("--pool-discover {text:?}: no host name"));
                }
                Ok(Discovery::Dns { host, port })
            }
            _ => Err(format!(
                "--pool-discover {text:?}: unknown kind {kind:?} (list, ordinal, dns or metadata)"
            )),
        }
    }

    /// The addresses of a pool of `n` brokers, for an ordered discovery; `None` for an
    /// observed one.
    pub fn first(&self, n: u32) -> Option<Vec<String>> {
        match self {
            Discovery::List(addrs) => Some(addrs.iter().take(n as usize).cloned().collect()),
            Discovery::Ordinal(template) => Some(
                (0..n)
                    .map(|i| template.replace("{i}", &i.to_string()))
                    .collect(),
            ),
            Discovery::Dns { .. } | Discovery::Metadata => None,
        }
    }

    /// The most brokers the discovery can name (a list's length), if it has a bound.
    pub fn bound(&self) -> Option<u32> {
        match self {
            Discovery::List(addrs) => Some(u32::try_from(addrs.len()).unwrap_or(u32::MAX)),
            _ => None,
        }
    }

    /// Whether the gateway learns who leaves only as it happens.
    pub fn observed(&self) -> bool {
        self.first(0).is_none()
    }

    /// Every address a `dns:` name resolves to now, sorted. Other kinds have nothing to
    /// resolve.
    pub async fn resolve(&self) -> Result<Vec<String>, String> {
        let Discovery::Dns { host, port } = self else {
            return Ok(Vec::new());
        };
        let mut addrs: Vec<String> = tokio::net::lookup_host((host.as_str(), *port))
            .await
            .map_err(|e| format!("resolving {host}: {e}"))?
            .map(|a| a.to_string())
            .collect();
        addrs.sort();
        addrs.dedup();
        Ok(addrs)
    }
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Discovery::List(addrs) => write!(f, "list:{}", addrs.join(",")),
            Discovery::Ordinal(t) => write!(f, "ordinal:{t}"),
            Discovery::Dns { host, port } => write!(f, "dns:{host}:{port}"),
            Discovery::Metadata => f.write_str("metadata"),
        }
    }
}

fn port_of(addr: &str) -> Result<u16, String> {
    let (_, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not HOST:PORT"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{addr:?} has no valid port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_discoveries_name_the_first_n_and_so_who_leaves() {
        let list = Discovery::parse("list:a:9092, b:9092,c:9092").unwrap();
        assert_eq!(list.first(2).unwrap(), ["a:9092", "b:9092"]);
        assert_eq!(list.bound(), Some(3));
        let ordinal = Discovery::parse("ordinal:tansu-{i}.tansu.ns.svc:9092").unwrap();
        assert_eq!(
            ordinal.first(3).unwrap(),
            [
                "tansu-0.tansu.ns.svc:9092",
                "tansu-1.tansu.ns.svc:9092",
                "tansu-2.tansu.ns.svc:9092"
            ]
        );
        assert!(!ordinal.observed());
        assert!(Discovery::parse("dns:tansu.ns.svc:9092")
            .unwrap()
            .observed());
        assert_eq!(Discovery::parse("metadata").unwrap(), Discovery::Metadata);
    }

    #[test]
    fn bad_discoveries_say_what_is_wrong() {
        for (text, says) in [
            ("tansu:9092", "unknown kind"),
            ("nothing", "expected list:"),
            ("list:", "empty"),
            ("list:a:9092,b", "not HOST:PORT"),
            ("ordinal:tansu-0.tansu:9092", "needs {i}"),
            ("dns:tansu:0", "no valid port"),
            ("dns::9092", "no host"),
        ] {
            let e = Discovery::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[tokio::test]
    async fn dns_discovery_resolves_every_address() {
        let d = Discovery::parse("dns:localhost:9092").unwrap();
        let addrs = d.resolve().await.unwrap();
        assert!(addrs.iter().any(|a| a == "127.0.0.1:9092"), "{addrs:?}");
    }
}
