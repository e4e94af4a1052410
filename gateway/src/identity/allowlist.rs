//! Network allowlists (CONTRACT "Security": the cluster field `allowed_cidrs`): the source
//! networks a cluster's clients may connect from.
//!
//! A connection's cluster is known once it authenticates (the token, or later the SCRAM user
//! or certificate, names it), so that is where the list is checked, and again at every
//! re-authentication; a refused client is told its own address and nothing of anyone else.
//! IPv4 peers reaching a dual-stack listener as IPv4-mapped IPv6 addresses are matched as the
//! IPv4 addresses they are.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One network: an address and how many of its leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit address.
fn masked(addr: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    addr >> (width - prefix)
}

impl FromStr for Cidr {
    type Err = String;

    /// `address/prefix`, or a bare address for that one address (`/32`, `/128`). Host bits
    /// set in the address are refused: `10.0.0.1/8` is more likely a typo than a network.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            |why: &str| format!("{s:?} is not a CIDR ({why}; e.g. 10.0.0.0/8 or 2001:db8::/32)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad("not an IP address"))?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| bad(&format!("the prefix must be 0 to {width}")))?,
        };
        let bits: u128 = match network {
            IpAddr::V4(v4) => u32::from(v4).into(),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let host_bits = if prefix == width {
            0
        } else {
            bits & ((1u128 << (width - prefix)) - 1)
        };
        if host_bits != 0 {
            return Err(bad("bits set after the prefix"));
        }
        Ok(Cidr { network, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether `ip` may connect to a cluster with these `allowed_cidrs` (`None`: from anywhere;
/// an empty list: from nowhere).
pub fn allows(allowed: Option<&[Cidr]>, ip: IpAddr) -> bool {
    allowed.is_none_or(|nets| nets.iter().any(|n| n.contains(ip)))
}

/// Parses an admin request's `allowed_cidrs`, saying which entry is wrong.
pub fn parse_list(entries: &[String]) -> Result<Vec<Cidr>, String> {
    entries
        .iter()
        .map(|e| e.parse().map_err(|why| format!("allowed_cidrs: {why}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_and_no_others() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        // An IPv4 client on a dual-stack listener arrives IPv4-mapped.
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("2001:db8::1")));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.2/32");
        assert!(one.contains(ip("127.0.0.2")) && !one.contains(ip("127.0.0.1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains(ip("192.0.2.1")) && !any.contains(ip("::1")));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (bad, why) in [
            ("10.0.0.0/33", "prefix must be 0 to 32"),
            ("::/129", "prefix must be 0 to 128"),
            ("10.0.0.1/8", "bits set after the prefix"),
            ("example.com/8", "not an IP address"),
            ("10.0.0.0/x", "prefix"),
        ] {
            let err = bad.parse::<Cidr>().unwrap_err();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
        let err = parse_list(&["10.0.0.0/8".into(), "nope".into()]).unwrap_err();
        assert!(err.starts_with("allowed_cidrs: \"nope\""), "{err}");
    }

    #[test]
    fn no_list_allows_all_and_an_empty_one_none() {
        assert!(allows(None, ip("192.0.2.1")));
        assert!(!allows(Some(&[]), ip("192.0.2.1")));
        let nets = parse_list(&["192.0.2.0/24".into()]).unwrap();
        assert!(allows(Some(&nets), ip("192.0.2.9")));
        assert!(!allows(Some(&nets), ip("198.51.100.1")));
    }

    #[test]
    fn stored_as_strings() {
        let nets = parse_list(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        let json = serde_json::to_string(&nets).unwrap();
        assert_eq!(json, r#"["10.0.0.0/8","::1/128"]"#);
        let back: Vec<Cidr> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, nets);
        assert!(serde_json::from_str::<Vec<Cidr>>(r#"["10.0.0.1/8"]"#).is_err());
    }
}
