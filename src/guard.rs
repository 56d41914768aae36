//! The target guard: hookd POSTs to URLs other people chose, so it refuses to connect to
//! addresses inside the provider's network (loopback, private, link-local, CGNAT, multicast,
//! unspecified, documentation and reserved ranges, and IPv4-mapped or NAT64 forms of those),
//! unless the operator's `delivery.allow_targets` opens them.
//!
//! The check runs on the addresses actually connected to: [`GuardedResolver`] is the HTTP
//! client's DNS resolver and drops blocked addresses from every answer, so a name that
//! resolves to a public address at ingest and to a private one at delivery (DNS rebinding) is
//! still refused. URLs with a literal IP never reach a resolver, so [`Guard::check_url`] checks
//! them before sending, and ingest refuses them with a 422.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The error text a delivery ends with when its target is refused.
pub const BLOCKED: &str = "blocked address";

/// IPv4 ranges that are never a webhook receiver on the public internet.
const BLOCKED_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // CGNAT (shared address space)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local (cloud metadata lives here)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast (deprecated)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, broadcast
];

/// IPv6 ranges that are never a receiver. IPv4-mapped and NAT64 addresses are judged by the
/// IPv4 address they carry.
const BLOCKED_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96), // unspecified, loopback, IPv4-compatible
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments (Teredo...)
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16), // 6to4: wraps any IPv4 address
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// Whether `ip` is in a range hookd refuses by default.
pub fn is_blocked_by_default(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => BLOCKED_V4.iter().any(|&(net, len)| in_v4(v4, net, len)),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_blocked_by_default(IpAddr::V4(v4));
            }
            BLOCKED_V6.iter().any(|&(net, len)| in_v6(v6, net, len))
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    Ipv4Net::new(net, len).is_ok_and(|n| n.contains(&ip))
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    Ipv6Net::new(net, len).is_ok_and(|n| n.contains(&ip))
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`)
/// address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// The guard with the operator's exceptions.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

impl Guard {
    pub fn new(allow: Vec<IpNet>) -> Guard {
        Guard { allow }
    }

    /// Whether hookd may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        !is_blocked_by_default(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL whose host is a literal IP address; names are checked when resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), &'static str> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(BLOCKED)
        }
    }
}

/// The error a resolver answer turns into when every address of a name is refused. The
/// delivery code finds it in the error chain and ends the delivery dead.
#[derive(Debug, thiserror::Error)]
#[error("{BLOCKED}: every address of this name is refused by the target guard")]
pub struct BlockedAddress;

/// The HTTP client's resolver: the system's answer, less the refused addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<std::sync::RwLock<Guard>>,
    /// The configured proxy's host name: the operator chose it, so it is resolved as it is.
    exempt: Option<String>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<std::sync::RwLock<Guard>>) -> GuardedResolver {
        GuardedResolver {
            guard,
            exempt: None,
        }
    }

    /// A resolver that leaves the name `host` (the proxy's) to the system, unjudged.
    pub fn with_exempt(guard: Arc<std::sync::RwLock<Guard>>, host: &str) -> GuardedResolver {
        GuardedResolver {
            guard,
            exempt: Some(host.to_ascii_lowercase()),
        }
    }
}

/// Resolves `host` and checks every address it has: the check for a target reached through a
/// proxy, which connects by itself to any of them. `Err` with the reason when one is refused
/// or the name does not resolve here.
pub async fn check_name(guard: &std::sync::RwLock<Guard>, host: &str) -> Result<(), String> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| format!("cannot resolve {host} to check it against the target guard: {e}"))?
        .collect();
    let guard = guard.read().unwrap_or_else(|e| e.into_inner()).clone();
    match found.iter().find(|a| !guard.permits(a.ip())) {
        Some(a) => Err(format!(
            "{BLOCKED}: {host} resolves to {} (among its addresses), refused by the target guard",
            a.ip()
        )),
        None => Ok(()),
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let exempt = self
            .exempt
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(name.as_str()));
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if exempt {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let guard = guard.read().unwrap_or_else(|e| e.into_inner()).clone();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| guard.permits(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether an error chain ends in [`BlockedAddress`].
pub fn is_blocked(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<BlockedAddress>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(text: &str) -> bool {
        is_blocked_by_default(text.parse().unwrap())
    }

    // The classifier is tested on every range without connecting anywhere.
    #[test]
    fn refuses_every_internal_range() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "2002:a00:1::",
            "2001::1",
            "100::1",
        ] {
            assert!(blocked(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn permits_public_addresses() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.167.255.255",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!blocked(ip), "{ip} should be permitted");
        }
    }

    #[test]
    fn allow_list_opens_ranges_including_mapped_forms() {
        let guard = Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        assert!(guard.permits("127.0.0.1".parse().unwrap()));
        assert!(guard.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(guard.permits("fd00::5".parse().unwrap()));
        assert!(!guard.permits("::1".parse().unwrap()));
        assert!(!guard.permits("10.0.0.1".parse().unwrap()));
        assert!(guard.permits("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn literal_urls_are_checked_names_are_left_to_the_resolver() {
        let guard = Guard::default();
        let check = |u: &str| guard.check_url(&reqwest::Url::parse(u).unwrap());
        assert_eq!(check("http://127.0.0.1:9/x"), Err(BLOCKED));
        assert_eq!(check("http://[::1]/x"), Err(BLOCKED));
        assert_eq!(check("http://[::ffff:7f00:1]/x"), Err(BLOCKED));
        assert_eq!(check("https://93.184.215.14/x"), Ok(()));
        assert_eq!(check("https://localhost/x"), Ok(()));
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        // "localhost" comes from /etc/hosts: no packet is sent.
        let name = || reqwest::dns::Name::from_str("localhost").unwrap();
        let closed = GuardedResolver::new(Arc::new(std::sync::RwLock::new(Guard::default())));
        let err = closed
            .resolve(name())
            .await
            .err()
            .expect("localhost is refused");
        assert!(is_blocked(err.as_ref()), "{err}");
        let open = Guard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let open = GuardedResolver::new(Arc::new(std::sync::RwLock::new(open)));
        let addrs: Vec<SocketAddr> = open.resolve(name()).await.unwrap().collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.is_ipv4() && a.ip().is_loopback()),
            "{addrs:?}"
        );
    }
}
