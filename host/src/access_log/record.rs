//! A request's access-log record as it crosses its thread's ring: the
//! fields of its [`Head`] and [`Tail`] in binary (numbers little-endian,
//! texts as a length and their bytes), behind the record's length. The
//! request only copies them ([`encode_head`], [`encode_tail`], [`seal`]);
//! the writer thread turns each back into a line ([`decode`]), a batch at
//! a time. A plain proxied request's record is about 130 bytes where its
//! JSON line is about 420, and the request path runs no formatting code.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, UNIX_EPOCH};

use super::format::{Head, PROTOCOLS, Tail};

/// Bytes of a record's length, in front of it.
pub const LENGTH_BYTES: usize = 4;
/// A text that is absent (`None`), in place of a length.
const ABSENT: u32 = u32::MAX;

/// Starts a record in `out` (empty) with the fields of `head`, leaving
/// room for its length.
pub fn encode_head(head: &Head<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; LENGTH_BYTES]);
    let since_epoch = head.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    push_duration(out, since_epoch);
    push_text(out, Some(head.listener));
    push_socket_addr(out, head.client);
    push_text(out, Some(head.method));
    push_text(out, head.host);
    push_text(out, Some(head.path));
    // Every `Version` there is has its place in the table.
    let protocol = PROTOCOLS
        .iter()
        .position(|(known, _)| *known == head.protocol);
    out.push(protocol.unwrap_or(PROTOCOLS.len()) as u8);
    push_text(out, head.referer);
    push_text(out, head.user_agent);
}

/// Adds the fields of `tail` to a record [`encode_head`] began.
pub fn encode_tail(tail: &Tail<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&tail.status.to_le_bytes());
    out.extend_from_slice(&tail.bytes_in.to_le_bytes());
    out.extend_from_slice(&tail.bytes_out.to_le_bytes());
    push_duration(out, tail.duration);
    out.push(u8::from(tail.upstream.is_some()));
    push_duration(out, tail.upstream.unwrap_or_default());
    push_text(out, tail.pool);
    push_text(out, tail.backend);
    out.extend_from_slice(&tail.attempts.to_le_bytes());
    push_text(out, Some(tail.policy));
    out.extend_from_slice(&tail.policy_version.to_le_bytes());
    push_duration(out, tail.decision);
    out.push(u8::from(tail.tls));
    push_text(out, tail.sni);
    push_text(out, tail.error);
}

/// Writes the length of the record `out` holds in front of it; `false`
/// when it is too long to say (it is not to be queued then).
pub fn seal(record: &mut [u8]) -> bool {
    let Ok(length) = u32::try_from(record.len() - LENGTH_BYTES) else {
        return false;
    };
    record[..LENGTH_BYTES].copy_from_slice(&length.to_le_bytes());
    true
}

fn push_duration(out: &mut Vec<u8>, duration: Duration) {
    out.extend_from_slice(&duration.as_secs().to_le_bytes());
    out.extend_from_slice(&duration.subsec_nanos().to_le_bytes());
}

/// Texts longer than a length can say are cut (a head is far shorter).
fn push_text(out: &mut Vec<u8>, text: Option<&[u8]>) {
    match text {
        Some(text) => {
            let length = u32::try_from(text.len()).unwrap_or(ABSENT - 1);
            out.extend_from_slice(&length.to_le_bytes());
            out.extend_from_slice(&text[..length as usize]);
        }
        None => out.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

fn push_socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.ip().octets());
            out.extend_from_slice(&v6.scope_id().to_le_bytes());
        }
    }
    out.extend_from_slice(&addr.port().to_le_bytes());
}

/// Splits the first record off `queued` (records one after another, as a
/// ring holds them): the record without its length, and what follows.
/// `None` when `queued` does not begin with a whole record.
pub fn split_first(queued: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = queued.split_first_chunk::<LENGTH_BYTES>()?;
    let length = u32::from_le_bytes(*length) as usize;
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// The head and tail `record` (without its length) holds; `None` when it
/// is not a record [`encode_head`] and [`encode_tail`] wrote.
pub fn decode(record: &[u8]) -> Option<(Head<'_>, Tail<'_>)> {
    let mut fields = Fields(record);
    let head = Head {
        time: UNIX_EPOCH.checked_add(fields.duration()?)?,
        listener: fields.text()??,
        client: fields.socket_addr()?,
        method: fields.text()??,
        host: fields.text()?,
        path: fields.text()??,
        protocol: PROTOCOLS.get(usize::from(fields.byte()?))?.0,
        referer: fields.text()?,
        user_agent: fields.text()?,
    };
    let tail = Tail {
        status: u16::from_le_bytes(fields.array()?),
        bytes_in: fields.u64()?,
        bytes_out: fields.u64()?,
        duration: fields.duration()?,
        upstream: {
            let upstream = fields.byte()? == 1;
            let time = fields.duration()?;
            upstream.then_some(time)
        },
        pool: fields.text()?,
        backend: fields.text()?,
        attempts: u32::from_le_bytes(fields.array()?),
        policy: fields.text()??,
        policy_version: fields.u64()?,
        decision: fields.duration()?,
        tls: fields.byte()? == 1,
        sni: fields.text()?,
        error: fields.text()?,
    };
    fields.0.is_empty().then_some((head, tail))
}

/// The fields of a record not read yet.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (value, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*value)
    }

    fn byte(&mut self) -> Option<u8> {
        self.array::<1>().map(|[byte]| byte)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn duration(&mut self) -> Option<Duration> {
        let secs = self.u64()?;
        let nanos = u32::from_le_bytes(self.array()?);
        (nanos < 1_000_000_000).then(|| Duration::new(secs, nanos))
    }

    /// `Some(None)` for an absent text.
    fn text(&mut self) -> Option<Option<&'a [u8]>> {
        let length = u32::from_le_bytes(self.array()?);
        if length == ABSENT {
            return Some(None);
        }
        let (text, rest) = self.0.split_at_checked(length as usize)?;
        self.0 = rest;
        Some(Some(text))
    }

    fn socket_addr(&mut self) -> Option<SocketAddr> {
        match self.byte()? {
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>()?);
                let port = u16::from_le_bytes(self.array()?);
                Some(SocketAddr::from((ip, port)))
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>()?);
                let scope = u32::from_le_bytes(self.array()?);
                let port = u16::from_le_bytes(self.array()?);
                Some(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;
    use std::time::SystemTime;

    fn head(time: SystemTime, client: &str) -> Head<'static> {
        Head {
            time,
            listener: b"edge",
            client: client.parse().unwrap(),
            method: b"POST",
            host: None,
            path: b"/a?b=\"c\"",
            protocol: Version::HTTP_2,
            referer: Some(b""),
            user_agent: Some("caf\u{e9}".as_bytes()),
        }
    }

    fn tail() -> Tail<'static> {
        Tail {
            status: 502,
            bytes_in: 1 << 40,
            bytes_out: 7,
            duration: Duration::new(3, 999_999_999),
            upstream: Some(Duration::ZERO),
            pool: Some(b"web".as_slice()),
            backend: None,
            attempts: 2,
            policy: b"rr",
            policy_version: u64::MAX,
            decision: Duration::from_nanos(1500),
            tls: true,
            sni: Some(b"a.test".as_slice()),
            error: Some(b"backend closed\n"),
        }
    }

    fn encoded(head: &Head<'_>, tail: &Tail<'_>) -> Vec<u8> {
        let mut record = Vec::new();
        encode_head(head, &mut record);
        encode_tail(tail, &mut record);
        assert!(seal(&mut record));
        record
    }

    #[test]
    fn a_record_gives_back_what_was_encoded() {
        let time = UNIX_EPOCH + Duration::new(1_796_131_116, 123_456_789);
        for client in ["127.0.0.1:50000", "[::1]:443", "[fe80::1%3]:8080"] {
            let (head, tail) = (head(time, client), tail());
            let record = encoded(&head, &tail);
            let (first, rest) = split_first(&record).unwrap();
            assert!(rest.is_empty());
            let (got_head, got_tail) = decode(first).unwrap();
            assert_eq!(format!("{got_head:?}"), format!("{head:?}"), "{client}");
            assert_eq!(format!("{got_tail:?}"), format!("{tail:?}"), "{client}");
        }
    }

    /// The record of a plain proxied request, as `bench/peers.sh` makes
    /// them, fits the room a record is given up front
    /// (`RECORD_CAPACITY`): one allocation, no regrowth.
    #[test]
    fn a_typical_record_fits_its_first_allocation() {
        let head = Head {
            listener: b"bench",
            method: b"GET",
            host: Some(b"127.0.0.1:18084"),
            path: b"/",
            protocol: Version::HTTP_11,
            referer: None,
            user_agent: None,
            ..head(SystemTime::now(), "127.0.0.1:54321")
        };
        let tail = Tail {
            pool: Some(b"backends".as_slice()),
            backend: Some(b"127.0.0.1:18082".as_slice()),
            policy: b"round-robin",
            sni: None,
            error: None,
            ..tail()
        };
        let record = encoded(&head, &tail);
        assert!(
            record.len() <= super::super::RECORD_CAPACITY,
            "{} bytes",
            record.len()
        );
    }

    #[test]
    fn records_split_one_after_another_and_torn_ones_are_refused() {
        let head = head(SystemTime::now(), "10.0.0.1:1");
        let mut queued = encoded(&head, &tail());
        let one = queued.len();
        queued.extend(encoded(
            &head,
            &Tail {
                upstream: None,
                ..tail()
            },
        ));
        let (first, rest) = split_first(&queued).unwrap();
        assert_eq!(first.len(), one - LENGTH_BYTES);
        let (second, rest) = split_first(rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(decode(second).unwrap().1.upstream, None);
        assert!(
            split_first(&queued[..one - 1]).is_none(),
            "a record cut short"
        );
        assert!(
            decode(&first[..first.len() - 1]).is_none(),
            "a field cut short"
        );
        let mut longer = first.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_none(), "bytes past the last field");
    }
}
