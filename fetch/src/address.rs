//! Which addresses are on the public internet, and a ureq resolver that connects only to those.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Whether an address is on the public internet.
///
/// IPv4: not loopback, private (RFC 1918), link-local (169.254/16, where cloud metadata services
/// live), carrier-grade NAT (100.64/10), "this network" (0/8), IETF protocol assignments
/// (192.0.0/24), the deprecated 6to4 relay anycast (192.88.99/24), documentation, benchmarking
/// (198.18/15), multicast, reserved (240/4) or broadcast.
///
/// IPv6 is an allow list: only global unicast (2000::/3) can be public, less documentation
/// (2001:db8::/32, 3fff::/20) and the IETF protocol block 2001::/23, which holds Teredo
/// (2001::/32: its embedded client address is obfuscated and relayed, so it is refused whole),
/// benchmarking and ORCHID. Forms that carry an IPv4 address are judged by that address, because
/// that is where the packets end up: IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and
/// 6to4 `2002:AABB:CCDD::/48`. The deprecated IPv4-compatible form `::a.b.c.d`, the local-use
/// NAT64 prefix 64:ff9b:1::/48 (its embedding depends on the local prefix length) and everything
/// else outside 2000::/3 (loopback, unspecified, unique local, link-local, multicast) are refused.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 88 && c == 99)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    // 6to4: 2002:AABB:CCDD::/48 tunnels to AA.BB.CC.DD.
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    let ietf_protocol = s[0] == 0x2001 && s[1] < 0x0200; // 2001::/23
    let documentation = (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] & 0xfff0) == 0x3ff0; // 2001:db8::/32, 3fff::/20
    global_unicast && !ietf_protocol && !documentation
}

/// The error the public-only resolver returns, found again in ureq's error chain by
/// [`crate::Fetcher`] to answer [`crate::FetchError::NotPublic`].
#[derive(Debug)]
pub(crate) struct NonPublicHost {
    pub host: String,
}

impl std::fmt::Display for NonPublicHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves only to non-public addresses", self.host)
    }
}

impl std::error::Error for NonPublicHost {}

/// A resolver that keeps only public addresses. The check sits in the resolver, so the address
/// checked is the address connected to (no second lookup an attacker could rebind), and every
/// redirect goes through it too. Numeric host spellings (`2130706433`, `0x7f.1`) arrive here
/// already normalized by the URL parser, or are parsed by the system resolver into the address
/// they mean; either way the address is what is judged.
pub(crate) struct PublicOnly;

impl ureq::Resolver for PublicOnly {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let all: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        let public: Vec<SocketAddr> = all.iter().copied().filter(|a| is_public(a.ip())).collect();
        if public.is_empty() && !all.is_empty() {
            let host = netloc.rsplit_once(':').map_or(netloc, |(h, _)| h).to_string();
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, NonPublicHost { host }));
        }
        Ok(public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_ipv4_ranges_are_refused() {
        for a in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a} is not public");
        }
        for a in ["8.8.8.8", "93.184.216.34", "1.1.1.1", "100.128.0.1", "172.32.0.1", "198.20.0.1", "192.0.1.1"] {
            assert!(is_public(a.parse().unwrap()), "{a} is public");
        }
    }

    #[test]
    fn non_public_ipv6_ranges_are_refused() {
        for a in [
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001:10::1",
            "100::1",
            "5f00::1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a} is not public");
        }
        for a in ["2606:4700::1111", "2a00:1450:4001:81a::200e", "2001:4860:4860::8888"] {
            assert!(is_public(a.parse().unwrap()), "{a} is public");
        }
    }

    #[test]
    fn ipv6_forms_that_carry_ipv4_are_judged_by_it() {
        for a in [
            // IPv4-mapped.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            // IPv4-compatible (deprecated): refused whatever it carries.
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            // NAT64 well-known prefix, and the local-use prefix (refused whole).
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::8.8.8.8",
            // 6to4 of private and loopback addresses.
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:a9fe:a9fe::1",
            // Teredo, whatever the client address.
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001::f7ff:fffe",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a} is not public");
        }
        for a in ["::ffff:1.1.1.1", "64:ff9b::808:808", "2002:808:808::1"] {
            assert!(is_public(a.parse().unwrap()), "{a} is public");
        }
    }
}
