//! Who the client is, by address: the connection's peer, or — when the peer is a trusted
//! proxy (`BALLAST_TRUSTED_PROXIES`) — the address the proxies recorded in `X-Forwarded-For`
//! or `Forwarded` (RFC 7239). Rate limits and bans count this address, so behind a load
//! balancer one guessing client does not ban everyone.
//!
//! The chain is read right to left, skipping trusted proxies: the first address that is not
//! one of ours is the client. Anything to its left was written by the client and is ignored.
//! Without trusted proxies the headers are never read (a client could name any address).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address of a request that came from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = if headers.contains_key("x-forwarded-for") {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(',').map(|hop| parse_hop(hop.trim())).collect::<Vec<_>>())
            .collect()
    } else {
        headers
            .get_all("forwarded")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(',').map(forwarded_for).collect::<Vec<_>>())
            .collect()
    };
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return ip,
            // Unreadable or hidden ("unknown", "_obfuscated"): the last trusted hop is as far
            // as the chain can be believed.
            None => return client,
        }
    }
    client
}

/// The `for=` of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| parse_hop(value.trim().trim_matches('"')))?
    })
}

/// One hop: `203.0.113.9`, `203.0.113.9:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[]), ip("9.9.9.9"));
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &["10.0.0.0/8".parse().expect("net")]), ip("9.9.9.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        // The client forged the leftmost entry; the proxies appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9"), ("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("203.0.113.9"));
        let h = headers(&[("forwarded", "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("2001:db8::1"));
        // No header, or a hidden hop: the proxy itself.
        assert_eq!(client_ip(ip("10.0.0.2"), &HeaderMap::new(), &trusted), ip("10.0.0.2"));
        let h = headers(&[("x-forwarded-for", "203.0.113.9, unknown")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("10.0.0.2"));
    }
}
