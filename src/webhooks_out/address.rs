//! Where an outbound webhook may go: only globally routable unicast addresses, unless an
//! operator allows a range. A URL is resolved at delivery time and every address it resolves
//! to is checked; the delivery client connects only to checked addresses (see
//! [`super::client`]), so a DNS answer that changes between a check and a connect (rebinding)
//! cannot reach an internal address.
//!
//! The classification is IANA's: every block of the IPv4 and IPv6 special-purpose address
//! registries (the `iprfc` crate's pinned snapshot) is refused, with multicast and, for IPv6,
//! anything outside global unicast (2000::/3: site-local, IPv4-compatible and SIIT forms fall
//! there). An IPv4 address carried inside an IPv6 one (mapped, compatible, SIIT, NAT64, 6to4,
//! Teredo) is unwrapped and checked again, and this host's own interface addresses are refused
//! (a service bound on all interfaces is reachable through them).
//!
//! A refusal tells the tenant which rule refused ([`Rule`]), never what a name resolved to;
//! the fleet's own log has the detail.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The rule that refused an address: what a tenant is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// In a block of IANA's special-purpose registries (loopback, private, link-local and the
    /// cloud metadata service, shared, documentation, benchmarking, reserved, NAT64, 6to4, …).
    SpecialPurpose,
    /// Multicast or broadcast: not one receiver.
    Multicast,
    /// IPv6 outside global unicast (2000::/3): site-local, IPv4-compatible, SIIT and the like.
    NotGlobalUnicast,
    /// An IPv4 address inside an IPv6 one that is itself refused.
    EmbeddedIpv4,
    /// An address of the host the fleet runs on.
    FleetHost,
}

impl Rule {
    /// The rule's name, as the tenant reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::SpecialPurpose => "special_purpose_address",
            Rule::Multicast => "multicast_address",
            Rule::NotGlobalUnicast => "not_global_unicast",
            Rule::EmbeddedIpv4 => "embedded_ipv4_not_allowed",
            Rule::FleetHost => "fleet_host_address",
        }
    }
}

/// Why a URL may not be delivered to. The text is what the tenant sees: no address, no name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The host resolved to nothing.
    #[error("address_not_allowed: the host does not resolve")]
    Unresolved,
    /// An address no webhook may reach.
    #[error("address_not_allowed: {} (only globally routable addresses are delivered to; an operator may allow a range with BALLAST_OUTBOUND_ALLOW_CIDRS)", .0.as_str())]
    NotAllowed(Rule),
}

/// What may be reached: globally routable addresses, less this host's own, plus the ranges an
/// operator allows (which win over every rule: a private network's receivers, a test's loopback).
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
    host: Vec<IpAddr>,
}

impl AddressPolicy {
    /// The policy with `allow`ed ranges, refusing the addresses of this host's interfaces (read
    /// now; a failure to read them is logged and leaves only the registry's rules).
    pub fn new(allow: Vec<IpNet>) -> Self {
        let host = match if_addrs::get_if_addrs() {
            Ok(interfaces) => interfaces.into_iter().map(|i| i.ip()).collect(),
            Err(e) => {
                tracing::warn!(message = "Could not list this host's interface addresses; outbound webhooks refuse only the registry's blocks.", error = %e);
                Vec::new()
            }
        };
        Self { allow, host }
    }

    /// A policy with `allow` and these `host` addresses (tests).
    pub fn with_host(allow: Vec<IpNet>, host: Vec<IpAddr>) -> Self {
        Self { allow, host }
    }

    /// Whether a webhook may reach `ip`. `host` names it in the fleet's log when refused.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.allow.iter().any(|range| range.contains(&ip)) {
            return Ok(());
        }
        let carried = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let rule = if self.host.contains(&ip) || carried.is_some_and(|v4| self.host.contains(&v4)) { Some(Rule::FleetHost) } else { refused_by(ip) };
        match rule {
            None => Ok(()),
            Some(rule) => {
                tracing::warn!(message = "Outbound webhook address refused.", host, address = %ip, rule = rule.as_str());
                Err(Refused::NotAllowed(rule))
            }
        }
    }
}

/// The rule that refuses `ip` when no range is allowed, if any.
pub fn refused_by(ip: IpAddr) -> Option<Rule> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6)
                && refused_v4(v4).is_some()
            {
                return Some(Rule::EmbeddedIpv4);
            }
            if v6.is_multicast() {
                Some(Rule::Multicast)
            } else if iprfc::RFC6890.contains(&IpAddr::V6(v6)) {
                Some(Rule::SpecialPurpose)
            } else if (v6.segments()[0] & 0xe000) != 0x2000 {
                Some(Rule::NotGlobalUnicast)
            } else {
                None
            }
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<Rule> {
    if ip.is_multicast() || ip.is_broadcast() {
        Some(Rule::Multicast)
    } else if iprfc::RFC6890.contains(&IpAddr::V4(ip)) {
        Some(Rule::SpecialPurpose)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 address carries, in every form that carries one: IPv4-mapped
/// (::ffff:0:0/96), IPv4-compatible (::/96), SIIT (::ffff:0:0:0/96), NAT64 (64:ff9b::/96 and
/// 64:ff9b:1::/48), 6to4 (2002::/16, bits 16–47) and Teredo (2001::/32, the client's address
/// inverted in the last 32 bits).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(last),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last),
        [0x64, 0xff9b, 1, ..] => Some(last),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(last))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// One address from every block of IANA's IPv4 and IPv6 special-purpose registries (as of
    /// the 2025-10 snapshot), and the forms the issue found accepted.
    const SPECIAL: &[&str] = &[
        // IPv4 registry
        "0.0.0.0", "0.1.2.3", "10.1.2.3", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.255.0.1", "169.254.169.254", "172.16.0.1", "172.31.255.1",
        "192.0.0.1", "192.0.0.8", "192.0.0.9", "192.0.0.10", "192.0.0.170", "192.0.0.171", "192.0.2.1", "192.31.196.1", "192.52.193.1", "192.88.99.1",
        "192.168.1.1", "192.175.48.1", "198.18.0.1", "198.19.255.1", "198.51.100.1", "203.0.113.1", "240.0.0.1", "255.255.255.255",
        // multicast
        "224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1",
        // IPv6 registry
        "::1", "::", "::ffff:127.0.0.1", "::ffff:8.8.8.8", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "100::1", "100:0:0:1::1", "2001::1", "2001:1::1", "2001:1::2",
        "2001:1::3", "2001:2::1", "2001:3::1", "2001:4:112::1", "2001:10::1", "2001:20::1", "2001:30::1", "2001:db8::1", "2002:808:808::1", "2620:4f:8000::1",
        "3fff::1", "5f00::1", "fc00::1", "fd00:ec2::254", "fe80::1",
        // forms outside the registries: IPv4-compatible, SIIT, 6to4 of loopback, site-local
        "::127.0.0.1", "::ffff:0:127.0.0.1", "2002:7f00:1::", "fec0::1",
    ];

    #[test]
    fn every_special_purpose_block_and_every_embedded_form_is_refused() {
        let policy = AddressPolicy::with_host(Vec::new(), Vec::new());
        for special in SPECIAL {
            assert!(policy.check("h", ip(special)).is_err(), "{special} must be refused");
        }
        for public in ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001:82b::200e"] {
            assert_eq!(policy.check("h", ip(public)), Ok(()), "{public}");
        }
        // Teredo carrying 127.0.0.1 (inverted) is refused as embedded, as is 6to4 of 10.0.0.1.
        assert_eq!(refused_by(ip("2001:0:4136:e378:8000:63bf:80ff:fffe")), Some(Rule::EmbeddedIpv4));
        assert_eq!(refused_by(ip("2002:a00:1::")), Some(Rule::EmbeddedIpv4));
        assert_eq!(refused_by(ip("fec0::1")), Some(Rule::NotGlobalUnicast));
        assert_eq!(embedded_v4("2002:7f00:1::".parse().expect("v6")), Some(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn the_fleet_hosts_own_addresses_are_refused_and_an_allowed_range_wins() {
        let host = vec![ip("203.0.114.7"), ip("2a01:4f8::7")];
        let policy = AddressPolicy::with_host(Vec::new(), host.clone());
        assert_eq!(policy.check("h", ip("203.0.114.7")), Err(Refused::NotAllowed(Rule::FleetHost)));
        assert_eq!(policy.check("h", ip("::ffff:203.0.114.7")), Err(Refused::NotAllowed(Rule::FleetHost)));
        assert_eq!(policy.check("h", ip("2a01:4f8::7")), Err(Refused::NotAllowed(Rule::FleetHost)));
        assert_eq!(policy.check("h", ip("203.0.114.8")), Ok(()));
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("range"), "203.0.114.0/24".parse().expect("range")];
        let open = AddressPolicy::with_host(allow, host);
        assert_eq!(open.check("h", ip("127.0.0.1")), Ok(()));
        assert_eq!(open.check("h", ip("203.0.114.7")), Ok(()));
        assert!(open.check("h", ip("10.0.0.1")).is_err());
        // The real host's interfaces: loopback is among them.
        assert!(AddressPolicy::new(Vec::new()).host.iter().any(IpAddr::is_loopback));
    }

    #[test]
    fn a_refusal_names_the_rule_and_never_the_address() {
        let text = AddressPolicy::default().check("vm", ip("127.0.0.1")).expect_err("refused").to_string();
        assert!(text.starts_with("address_not_allowed: special_purpose_address"), "{text}");
        assert!(!text.contains("127.0.0.1") && !text.contains("vm"), "{text}");
    }
}
