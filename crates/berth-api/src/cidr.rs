//! IPv4 ranges (`10.42.0.0/24`): the one CIDR type of berth, shared by the cluster's pod and
//! service ranges (the API server), a node's pod range (the runtime's bridge and leases) and
//! the routes between nodes.
//!
//! Invariant: a parsed `Ipv4Net` holds its network address (host bits cleared) and a prefix
//! from the range the parser was given, so two spellings of one range compare equal and its
//! `Display` is the canonical form.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// An IPv4 range, `10.42.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// Text that is not an IPv4 range with an allowed prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an IPv4 range like {example} (prefix {min} to {max})", min = .prefixes.start(), max = .prefixes.end())]
pub struct CidrError {
    pub input: String,
    pub example: &'static str,
    pub prefixes: RangeInclusive<u8>,
}

impl Ipv4Net {
    /// The prefixes a node's pod range may have (what `FromStr` and serde accept): room for a
    /// gateway and at least two pods.
    pub const NODE_PREFIXES: RangeInclusive<u8> = 8..=30;
    /// The prefixes a cluster range may have: it holds whole /24s, one per node.
    pub const CLUSTER_PREFIXES: RangeInclusive<u8> = 8..=24;

    /// Parses `a.b.c.d/p` with `p` in `prefixes`, clearing the host bits; `example` is the
    /// range an error message shows.
    pub fn parse(
        s: &str,
        prefixes: RangeInclusive<u8>,
        example: &'static str,
    ) -> Result<Ipv4Net, CidrError> {
        let bad = || CidrError {
            input: s.to_string(),
            example,
            prefixes: prefixes.clone(),
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !prefixes.contains(&prefix) || prefix > 32 {
            return Err(bad());
        }
        let net = Ipv4Net { addr, prefix };
        Ok(Ipv4Net {
            addr: net.network(),
            prefix,
        })
    }

    /// A cluster range (`--cluster-cidr`, `--service-cidr`): a prefix of 8 to 24 bits.
    pub fn parse_cluster(s: &str) -> Result<Ipv4Net, CidrError> {
        Ipv4Net::parse(s, Ipv4Net::CLUSTER_PREFIXES, "10.42.0.0/16")
    }

    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
    /// Whether the two ranges share an address. CIDR ranges nest or are apart, so they share
    /// one exactly when one holds the other's network address.
    pub fn overlaps(self, other: Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
    /// The first host address: the bridge's (the pods' gateway).
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }
    /// Addresses pods may get: all but the network, the gateway and broadcast.
    pub fn pod_addresses(self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network()) + 2;
        let last = u32::from(self.network()) | !self.mask();
        (first..last).map(Ipv4Addr::from)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A node's pod range: a prefix of [`Ipv4Net::NODE_PREFIXES`].
impl FromStr for Ipv4Net {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Ipv4Net, CidrError> {
        Ipv4Net::parse(s, Ipv4Net::NODE_PREFIXES, "10.42.0.0/24")
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = CidrError;
    fn try_from(s: String) -> Result<Ipv4Net, CidrError> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let n: Ipv4Net = "10.42.3.7/24".parse().unwrap();
        assert_eq!(n.to_string(), "10.42.3.0/24");
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 42, 3, 1));
        let all: Vec<_> = n.pod_addresses().collect();
        assert_eq!(all.len(), 253);
        assert_eq!(all[0], Ipv4Addr::new(10, 42, 3, 2));
        assert_eq!(*all.last().unwrap(), Ipv4Addr::new(10, 42, 3, 254));
        assert!(n.contains(Ipv4Addr::new(10, 42, 3, 200)));
        assert!(!n.contains(Ipv4Addr::new(10, 42, 4, 1)));
        for bad in ["10.42.0.0", "10.42.0.0/33", "x/24", "10.0.0.0/31", ""] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_overlap_when_one_holds_the_other() {
        let net = |s: &str| Ipv4Net::parse(s, 0..=32, "10.42.0.0/24").unwrap();
        let n = net("10.42.1.0/24");
        assert!(n.overlaps(n));
        assert!(n.overlaps(net("10.42.0.0/16")) && net("10.42.0.0/16").overlaps(n));
        assert!(n.overlaps(net("10.42.1.128/25")) && net("10.42.1.128/25").overlaps(n));
        assert!(n.overlaps(net("10.42.1.77/32")));
        assert!(n.overlaps(net("0.0.0.0/0")));
        assert!(!n.overlaps(net("10.42.0.0/24")) && !n.overlaps(net("10.42.2.0/24")));
        assert!(!n.overlaps(net("10.42.0.0/31")));
        // Host bits are cleared on parsing: `10.42.0.200/23` is 10.42.0.0/23.
        assert!(n.overlaps(net("10.42.0.200/23")));
        assert!(!n.overlaps(net("10.42.2.200/23")));
    }

    #[test]
    fn cluster_ranges_hold_whole_24s() {
        let c = Ipv4Net::parse_cluster("10.42.7.9/16").unwrap();
        assert_eq!(c.to_string(), "10.42.0.0/16");
        assert!(Ipv4Net::parse_cluster("10.0.0.0/25").is_err());
        assert_eq!(
            Ipv4Net::parse_cluster("nope").unwrap_err().to_string(),
            "\"nope\" is not an IPv4 range like 10.42.0.0/16 (prefix 8 to 24)"
        );
    }
}
