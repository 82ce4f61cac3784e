//! Outbound safety: which destination addresses a delivery may connect to.
//!
//! Tenants choose URLs, so without this a hook could reach the cluster's
//! internals (the API server, cloud metadata at 169.254.169.254, Redis).
//! Every non-public address is refused unless an operator allow-list
//! contains it. The delivery client applies this to IP literals and to every
//! address a name resolves to, right before connecting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// IPv4 ranges that are not publicly routable (RFC 6890 and friends).
const NON_PUBLIC_V4: &[(&str, &str)] = &[
    ("0.0.0.0/8", "unspecified/this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (incl. cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved/broadcast"),
];

/// IPv6 ranges that are not publicly routable, checked inside 2000::/3.
const NON_PUBLIC_V6: &[(&str, &str)] = &[
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments (incl. Teredo)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// Why an address is refused; `None` for a public address.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

/// A table of ranges, parsed once: the check runs on every request.
type Table = std::sync::LazyLock<Vec<(IpNet, &'static str)>>;

fn parse_table(ranges: &'static [(&'static str, &'static str)]) -> Vec<(IpNet, &'static str)> {
    ranges
        .iter()
        .map(|(net, why)| (net.parse().expect("static CIDRs parse"), *why))
        .collect()
}

static V4_TABLE: Table = Table::new(|| parse_table(NON_PUBLIC_V4));
static V6_TABLE: Table = Table::new(|| parse_table(NON_PUBLIC_V6));
static GLOBAL_UNICAST: Table = Table::new(|| parse_table(&[("2000::/3", "global unicast")]));

fn in_table(ip: IpAddr, table: &Table) -> Option<&'static str> {
    table.iter().find_map(|(net, why)| net.contains(&ip).then_some(*why))
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    in_table(IpAddr::V4(ip), &V4_TABLE)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        // ::ffff:a.b.c.d reaches a.b.c.d: judge the IPv4 address.
        return Some(v4_reason(v4).unwrap_or("IPv4-mapped"));
    }
    if let Some(why) = in_table(IpAddr::V6(ip), &V6_TABLE) {
        return Some(why);
    }
    if in_table(IpAddr::V6(ip), &GLOBAL_UNICAST).is_none() {
        return Some("not global unicast (incl. IPv4-compatible)");
    }
    None
}

/// The operator's allow-list plus the built-in rules.
#[derive(Clone, Debug, Default)]
pub struct AddressFilter {
    allowed: Vec<IpNet>,
}

/// A `--allow-destination-cidr` entry that is not a CIDR.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid --allow-destination-cidr entry {0:?}: expected a CIDR such as 127.0.0.0/8 or fd00::/8")]
pub struct InvalidCidr(String);

impl AddressFilter {
    /// A filter allowing exactly the given CIDRs beyond public addresses.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        AddressFilter { allowed }
    }

    /// Parses a comma-separated CIDR list (bare addresses count as /32 or /128).
    pub fn parse_list(list: &str) -> Result<Vec<IpNet>, InvalidCidr> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| InvalidCidr(s.to_string()))
            })
            .collect()
    }

    /// `Ok` when a connection to `ip` is allowed, else why not.
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let Some(why) = non_public_reason(ip) else {
            return Ok(());
        };
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = |candidate: IpAddr| self.allowed.iter().any(|net| net.contains(&candidate));
        if allowed(ip) || mapped.is_some_and(allowed) {
            return Ok(());
        }
        Err(format!(
            "destination address {ip} is not public ({why}) and not in --allow-destination-cidr"
        ))
    }

    /// The allowed ones of a name's addresses, or why the first is refused
    /// when none is allowed.
    pub fn allowed(&self, addresses: &[IpAddr]) -> Result<Vec<IpAddr>, String> {
        let mut first_refusal = None;
        let allowed: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|ip| match self.check(*ip) {
                Ok(()) => true,
                Err(why) => {
                    first_refusal.get_or_insert(why);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| "no addresses".into()));
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(filter: &AddressFilter, ip: &str) -> bool {
        filter.check(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn non_public_addresses_are_refused_by_default() {
        let f = AddressFilter::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(refused(&f, ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let f = AddressFilter::default();
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001::1"] {
            assert!(!refused(&f, ip), "{ip} should pass");
        }
    }

    #[test]
    fn the_allow_list_opens_ranges_including_their_mapped_form() {
        let f = AddressFilter::new(AddressFilter::parse_list("127.0.0.0/8, fd00::/8").unwrap());
        assert!(!refused(&f, "127.0.0.1"));
        assert!(!refused(&f, "::ffff:127.0.0.1"));
        assert!(!refused(&f, "fd00::5"));
        assert!(refused(&f, "::1"));
        assert!(refused(&f, "10.0.0.1"));
    }

    #[test]
    fn refusals_say_why() {
        let err = AddressFilter::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("169.254.169.254") && err.contains("link-local"), "{err}");
    }

    #[test]
    fn bad_cidrs_are_refused() {
        assert!(AddressFilter::parse_list("10.0.0.0/33").is_err());
        assert!(AddressFilter::parse_list("nope").is_err());
        assert_eq!(AddressFilter::parse_list("10.0.0.1").unwrap().len(), 1);
        assert!(AddressFilter::parse_list("").unwrap().is_empty());
    }
}
