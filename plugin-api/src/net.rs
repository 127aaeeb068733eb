//! Typed network values that cross the ABI: router addresses and destination networks.
//!
//! They are parsed once, where text enters (a spec file, an HTTP body, a command line), and
//! travel as values: the host never parses strings again.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use abi_stable::StableAbi;

/// An IPv4 address (a router's private address), ordered numerically.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ipv4 {
    octets: [u8; 4],
}

impl Ipv4 {
    /// The address `a.b.c.d`.
    pub const fn new(a: u8, b: u8, c: u8, d: u8) -> Ipv4 {
        Ipv4 { octets: [a, b, c, d] }
    }

    /// Parses a strict dotted quad: no leading zeros, no short forms, no spaces.
    pub fn parse(text: &str) -> Option<Ipv4> {
        if text.len() > 15 || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        text.parse::<Ipv4Addr>().ok().map(Ipv4::from)
    }

    /// The standard library's address.
    pub const fn addr(self) -> Ipv4Addr {
        let [a, b, c, d] = self.octets;
        Ipv4Addr::new(a, b, c, d)
    }
}

impl From<Ipv4Addr> for Ipv4 {
    fn from(ip: Ipv4Addr) -> Ipv4 {
        Ipv4 { octets: ip.octets() }
    }
}

impl From<Ipv4> for Ipv4Addr {
    fn from(ip: Ipv4) -> Ipv4Addr {
        ip.addr()
    }
}

impl From<Ipv4> for IpAddr {
    fn from(ip: Ipv4) -> IpAddr {
        IpAddr::V4(ip.addr())
    }
}

impl FromStr for Ipv4 {
    type Err = String;
    fn from_str(text: &str) -> Result<Ipv4, String> {
        Ipv4::parse(text).ok_or_else(|| format!("'{text}' is not a valid IPv4 address"))
    }
}

impl fmt::Display for Ipv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.addr(), f)
    }
}

impl fmt::Debug for Ipv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.addr(), f)
    }
}

/// The address family of a [`Cidr`].
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4, prefixes 0..=32.
    V4,
    /// IPv6, prefixes 0..=128.
    V6,
}

impl Family {
    /// The longest prefix of the family.
    pub const fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A destination network in canonical form (host bits zero), IPv4 or IPv6.
///
/// Ordered by family (IPv4 first), then address, then prefix length. Built only by
/// [`Cidr::new`] or [`Cidr::parse`], so every value is canonical.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    family: Family,
    /// IPv4 in the first 4 bytes, the rest zero.
    addr: [u8; 16],
    prefix: u8,
}

impl Cidr {
    /// The network `ip/prefix`; fails when the prefix is too long or host bits are set
    /// (the error names the network).
    pub fn new(ip: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let (family, bytes, bits): (Family, [u8; 16], u32) = match ip {
            IpAddr::V4(v4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                (Family::V4, b, 32)
            }
            IpAddr::V6(v6) => (Family::V6, v6.octets(), 128),
        };
        if u32::from(prefix) > bits {
            return Err(format!("prefix length '{prefix}' must be a number from 0 to {bits}"));
        }
        let network = Cidr { family, addr: mask(bytes, prefix), prefix };
        if network.addr != bytes {
            return Err(format!("host bits are set; the network is {network}"));
        }
        Ok(network)
    }

    /// Parses `address/prefix` strictly (IPv4 dotted quad or IPv6 text, decimal prefix).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let Some((addr, len)) = text.split_once('/') else {
            return Err("a CIDR needs a prefix length, e.g. 10.55.0.0/16".into());
        };
        let ip: IpAddr = if addr.contains(':') {
            addr.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| format!("'{addr}' is not an IPv6 address"))?
        } else {
            Ipv4::parse(addr).map(IpAddr::from).ok_or_else(|| format!("'{addr}' is not an IPv4 address"))?
        };
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match len.parse::<u8>() {
            Ok(l) if u32::from(l) <= bits && len.bytes().all(|b| b.is_ascii_digit()) => l,
            _ => return Err(format!("prefix length '{len}' must be a number from 0 to {bits}")),
        };
        Cidr::new(ip, prefix)
    }

    /// IPv4 or IPv6.
    pub const fn family(&self) -> Family {
        self.family
    }

    /// The prefix length.
    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network address.
    pub fn ip(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3])),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(self.addr)),
        }
    }

    /// The network address when this is an IPv4 network.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }
    }

    /// True when `ip` (of the same family) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let family = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
        family == self.family && mask(probe_bytes(ip), self.prefix) == self.addr
    }

    /// True when every address of `other` lies in this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.family == self.family && other.prefix >= self.prefix && mask(other.addr, self.prefix) == self.addr
    }
}

fn probe_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// `bytes` with every bit after the first `prefix` cleared.
fn mask(mut bytes: [u8; 16], prefix: u8) -> [u8; 16] {
    for (i, byte) in bytes.iter_mut().enumerate() {
        let keep = (usize::from(prefix)).saturating_sub(i * 8).min(8);
        *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    bytes
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Cidr, String> {
        Cidr::parse(text)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip(), self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_strict_and_ordered_numerically() {
        for bad in
            ["192.168.1.1111", "192.168.1.", "292.168.1.1", "10.1", "010.001.1.1", "10.0.0.1 ", "::1", "0x0a000001", ""]
        {
            assert_eq!(Ipv4::parse(bad), None, "{bad}");
        }
        let (a, b) = (Ipv4::parse("10.0.0.9").unwrap(), Ipv4::parse("10.0.0.10").unwrap());
        assert!(a < b);
        assert_eq!(b.to_string(), "10.0.0.10");
        assert_eq!(Ipv4Addr::from(a), Ipv4Addr::new(10, 0, 0, 9));
    }

    #[test]
    fn cidrs_of_both_families_are_canonical() {
        for ok in
            ["192.168.0.0/16", "128.0.0.0/1", "192.168.0.0/32", "0.0.0.0/0", "::/0", "2001:db8::/32", "2001:db8::1/128"]
        {
            assert_eq!(Cidr::parse(ok).unwrap().to_string(), ok);
        }
        for bad in [
            "1.1.1.0", "1.1.1.0/", "1.1.1.0/-1", "1.1.1.0/33", "192.168.1.1111/32", "10/8", "10.0.0.0/255.0.0.0",
            "10.0.0.0/+8", " 10.0.0.0/8", "::/129", "2001:db8::1/64",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Cidr::parse("10.1.0.1/16").unwrap_err(), "host bits are set; the network is 10.1.0.0/16");
        assert_eq!(Cidr::parse("2001:db8::1/64").unwrap_err(), "host bits are set; the network is 2001:db8::/64");
    }

    #[test]
    fn families_never_mix() {
        let v4 = Cidr::parse("0.0.0.0/0").unwrap();
        let v6 = Cidr::parse("::/0").unwrap();
        assert_ne!(v4, v6);
        assert!(v4 < v6);
        assert!(v4.covers(&Cidr::parse("10.0.0.0/8").unwrap()));
        assert!(!v6.covers(&Cidr::parse("10.0.0.0/8").unwrap()));
        assert!(v4.contains("10.1.2.3".parse().unwrap()) && !v4.contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/8").unwrap().contains("10.255.0.1".parse().unwrap()));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains("11.0.0.1".parse().unwrap()));
        assert_eq!(v4.family(), Family::V4);
        assert_eq!(v6.family().max_prefix(), 128);
    }
}
