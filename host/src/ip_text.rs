//! An IP address as text, without `core::fmt` for IPv4 and without the
//! heap: written once per client connection for the forwarding headers
//! (formatting them per request was about 2.5 % of the proxy's CPU time
//! under load), and per call for a policy's `key-hash` of the client IP.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;

/// Room for the text of any [`IpAddr`] (at most 39 characters; 45 is
/// RFC 4291's longest form, with an embedded IPv4 address).
const MAX_LEN: usize = 45;

/// The text `IpAddr`'s `Display` writes, kept inline.
#[derive(Clone, Copy)]
pub struct IpText {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl IpText {
    /// Writes `ip` as `Display` does.
    pub fn new(ip: IpAddr) -> IpText {
        let mut bytes = [0; MAX_LEN];
        let len = match ip {
            IpAddr::V4(v4) => write_ipv4(v4.octets(), &mut bytes),
            IpAddr::V6(v6) => {
                let mut rest = &mut bytes[..];
                // Cannot fail: MAX_LEN holds any address.
                let _ = write!(rest, "{v6}");
                MAX_LEN - rest.len()
            }
        };
        IpText {
            bytes,
            len: len as u8,
        }
    }

    /// The text, ASCII.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes `a.b.c.d` (decimal, no leading zeros) into `out`; returns the
/// length.
fn write_ipv4(octets: [u8; 4], out: &mut [u8; MAX_LEN]) -> usize {
    let mut len = 0;
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = match octet {
            100.. => 0,
            10.. => 1,
            _ => 2,
        };
        for digit in &digits[skip..] {
            out[len] = b'0' + digit;
            len += 1;
        }
    }
    len
}

impl fmt::Debug for IpText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_display_for_every_form() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.7",
            "::1",
            "::",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:192.0.2.128",
            "1:2:3:4:5:6:77.77.88.88",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                IpText::new(ip).as_bytes(),
                ip.to_string().as_bytes(),
                "{ip}"
            );
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, n.wrapping_mul(7), n / 3, 255 - n]);
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }
}
