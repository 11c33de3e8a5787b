//! Where an outbound webhook may go. A URL is resolved at delivery time and every address it
//! resolves to is checked; the delivery client connects only to checked addresses (see
//! [`super::client`]), so a DNS answer that changes between a check and a connect (rebinding)
//! cannot reach an internal address. Loopback,
//! private, link-local (cloud metadata included), shared, multicast and unspecified addresses
//! are refused unless an operator allows a range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why a URL may not be delivered to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The host resolved to nothing.
    #[error("{0} does not resolve: {1}")]
    Unresolved(String, String),
    /// An address no webhook may reach.
    #[error("{0} resolves to {1}, a loopback, private, link-local or metadata address (an operator may allow a range)")]
    Internal(String, IpAddr),
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16: the cloud metadata service lives here
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240 // reserved
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_forbidden(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 is AWS's metadata)
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x64 && ip.segments()[1] == 0xff9b) // NAT64 of any IPv4 address
}

/// Whether no webhook may reach `ip` unless a range in `allow` holds it.
pub fn check(host: &str, ip: IpAddr, allow: &[IpNet]) -> Result<(), Refused> {
    let forbidden = match ip {
        IpAddr::V4(v4) => v4_forbidden(v4),
        IpAddr::V6(v6) => v6_forbidden(v6),
    };
    if forbidden && !allow.iter().any(|range| range.contains(&ip)) {
        return Err(Refused::Internal(host.to_owned(), ip));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn internal_and_metadata_addresses_are_refused_unless_a_range_allows_them() {
        for internal in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe"] {
            assert!(check("h", ip(internal), &[]).is_err(), "{internal} must be refused");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert_eq!(check("h", ip(public), &[]), Ok(()), "{public}");
        }
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("range")];
        assert_eq!(check("h", ip("127.0.0.1"), &allow), Ok(()));
        assert!(check("h", ip("10.0.0.1"), &allow).is_err());
    }
}
