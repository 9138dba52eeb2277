//! Server-side request forgery guard: push requests may not reach loopback, link-local,
//! private or other special address ranges unless the operator allows it
//! (`--push-allow-private`, or `--push-allow-networks` for chosen networks). The check
//! runs on every resolved address at connection time, so a name that resolves to a
//! private address later is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or a network like 10.1.0.0/16"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length (0 to {max})"))?
        };
        Ok(Network { addr, prefix })
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What the operator allows.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub allow_private: bool,
    pub allow_networks: Vec<Network>,
}

fn special_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // protocol assignments
        || o[0] >= 240
}

fn special_v6(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let s = a.segments();
    // IPv4-compatible (::a.b.c.d) and 6to4 (2002:aabb:ccdd::) carry an IPv4 address.
    if s[..6] == [0; 6] {
        return special_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return special_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 can reach private IPv4
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
}

impl Guard {
    /// Why `ip` may not be called, or None when it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<String> {
        if self.allow_private || self.allow_networks.iter().any(|n| n.contains(ip)) {
            return None;
        }
        let special = match ip {
            IpAddr::V4(a) => special_v4(a),
            IpAddr::V6(a) => special_v6(a),
        };
        special.then(|| {
            format!(
                "{ip} is a loopback, private, link-local or otherwise special address; Ferry does not call it unless the server allows it (--push-allow-private or --push-allow-networks)"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_refused_unless_allowed() {
        let g = Guard::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(g.refuses(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(g.refuses(ip.parse().unwrap()).is_none(), "{ip}");
        }
        let g = Guard {
            allow_private: false,
            allow_networks: vec!["10.1.0.0/16".parse().unwrap(), "::1".parse().unwrap()],
        };
        assert!(g.refuses("10.1.200.3".parse().unwrap()).is_none());
        assert!(g.refuses("10.2.0.1".parse().unwrap()).is_some());
        assert!(g.refuses("::1".parse().unwrap()).is_none());
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("nonsense".parse::<Network>().is_err());
        let all = Guard {
            allow_private: true,
            allow_networks: vec![],
        };
        assert!(all.refuses("127.0.0.1".parse().unwrap()).is_none());
    }
}
