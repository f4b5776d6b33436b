//! CIDR ranges (`10.0.0.0/8`, `::1/128`), as `trusted_proxies` lists them.

use std::fmt;
use std::net::IpAddr;

/// An address range: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Reads `a.b.c.d/n` (n in 0..=32) or `ipv6/n` (0..=128). Bits past the
    /// prefix must be zero, so the text says the range it covers.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("not a CIDR (ADDRESS/PREFIX): {text:?}"))?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("not a CIDR: {address:?} is not an IP address"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let digits = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit());
        let prefix = digits
            .then(|| prefix.parse::<u8>().ok())
            .flatten()
            .filter(|p| *p <= width)
            .ok_or_else(|| format!("not a CIDR: prefix {prefix:?} is not in 0..={width}"))?;
        let cidr = Cidr { network, prefix };
        if masked(network, prefix) != bits(network) {
            return Err(format!(
                "not a CIDR: {address} has bits set past its /{prefix} prefix"
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_exact(ip.to_canonical())
    }

    fn contains_exact(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4()
            && masked(ip, self.prefix) == masked(self.network, self.prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The address as a left-aligned 128-bit number.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(ip) => u128::from(u32::from(ip)) << 96,
        IpAddr::V6(ip) => u128::from(ip),
    }
}

fn masked(ip: IpAddr, prefix: u8) -> u128 {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    bits(ip) & mask
}

#[cfg(test)]
mod tests {
    use super::Cidr;

    fn contains(cidr: &str, ip: &str) -> bool {
        Cidr::parse(cidr).unwrap().contains(ip.parse().unwrap())
    }

    #[test]
    fn ranges_cover_their_addresses_only() {
        assert!(contains("10.0.0.0/8", "10.255.1.2"));
        assert!(!contains("10.0.0.0/8", "11.0.0.1"));
        assert!(contains("127.0.0.1/32", "127.0.0.1"));
        assert!(!contains("127.0.0.1/32", "127.0.0.2"));
        assert!(contains("0.0.0.0/0", "192.0.2.1"));
        assert!(!contains("0.0.0.0/0", "::1"));
        assert!(contains("::1/128", "::1"));
        assert!(contains("2001:db8::/32", "2001:db8:ffff::1"));
        assert!(!contains("2001:db8::/32", "2001:db9::1"));
        assert!(contains("127.0.0.0/8", "::ffff:127.0.0.1"));
    }

    #[test]
    fn what_is_not_a_cidr_is_refused() {
        for text in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "ten/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
        ] {
            let error = Cidr::parse(text).unwrap_err();
            assert!(error.starts_with("not a CIDR"), "{text}: {error}");
        }
        assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
    }
}
