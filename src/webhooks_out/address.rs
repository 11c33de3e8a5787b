//! Where an outbound webhook may go. A URL is resolved at delivery time, every address it
//! resolves to is checked, and the request is then pinned to the checked address (the caller
//! connects to what [`resolve`] returns, never resolving again), so a DNS answer that changes
//! between the check and the connect (rebinding) cannot reach an internal address. Loopback,
//! private, link-local (cloud metadata included), shared, multicast and unspecified addresses
//! are refused unless an operator allows a range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Why a URL may not be delivered to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// Only http and https.
    #[error("only http and https URLs are delivered to")]
    Scheme,
    /// No host in the URL.
    #[error("the URL has no host")]
    NoHost,
    /// The host did not resolve.
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

/// Resolves `url` now and checks every address; the one to connect to.
pub async fn resolve(url: &reqwest::Url, allow: &[IpNet]) -> Result<SocketAddr, Refused> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme);
    }
    let host = url.host_str().ok_or(Refused::NoHost)?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| Refused::Unresolved(host.clone(), e.to_string()))?
        .collect();
    // Every answer is checked: a host with one public and one internal record is refused.
    for addr in &addrs {
        check(&host, addr.ip(), allow)?;
    }
    addrs.first().copied().ok_or_else(|| Refused::Unresolved(host, "no addresses".into()))
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

    #[tokio::test]
    async fn a_name_is_resolved_and_every_answer_checked() {
        let url = reqwest::Url::parse("http://localhost:9/hook").expect("url");
        assert!(matches!(resolve(&url, &[]).await, Err(Refused::Internal(..))));
        let allow: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("v4"), "::1/128".parse().expect("v6")];
        assert_eq!(resolve(&url, &allow).await.map(|a| a.port()), Ok(9));
        assert_eq!(resolve(&reqwest::Url::parse("ftp://example.com/").expect("url"), &[]).await, Err(Refused::Scheme));
    }
}
