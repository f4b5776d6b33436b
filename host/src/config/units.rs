//! Durations, sizes and socket addresses as written in the config file.
//!
//! * **Durations** are strings of one number and one unit, no spaces:
//!   `"250us"`, `"5ms"`, `"1.5s"`, `"2m"`. Units: `ns`, `us` (or `µs`), `ms`,
//!   `s`, `m`, `h`. The number may have a decimal fraction (exact to the
//!   nanosecond). Bare numbers (`5`, `"5"`) are refused: a unit is required
//!   so nobody has to guess whether `5` means seconds or milliseconds.
//! * **Sizes** are a whole number of bytes, either a TOML integer
//!   (`1048576`) or a string with an optional unit: `"1048576"`, `"512KiB"`,
//!   `"16MiB"`, `"1GiB"`. Binary units `KiB`, `MiB`, `GiB`, `TiB` are powers
//!   of 1024; decimal units `KB`, `MB`, `GB`, `TB` are powers of 1000; `B` is
//!   bytes. Units are matched case-insensitively; fractions are refused.
//! * **Socket addresses** are `IP:port`, `127.0.0.1:80` or `[::1]:80`.
//!   Hostnames are not accepted: the proxy never resolves names at load
//!   time, so what it binds or connects to is exactly what the file says.

use std::net::SocketAddr;
use std::time::Duration;

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Parses a duration such as `"5ms"` or `"1.5s"`; the error is a reason.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text.trim());
    if number.is_empty() {
        return Err(format!(
            "invalid duration `{text}`: expected a number and a unit, e.g. \"5ms\""
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "invalid duration `{text}`: missing unit (ns, us, ms, s, m or h), e.g. \"{text}ms\""
        ));
    }
    let Some(&(_, scale)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!(
            "invalid duration `{text}`: unknown unit `{unit}` (expected ns, us, ms, s, m or h)"
        ));
    };
    let nanos = scaled_nanos(number, scale)
        .ok_or_else(|| format!("invalid duration `{text}`: bad number `{number}`"))?;
    nanos_to_duration(nanos).ok_or_else(|| format!("invalid duration `{text}`: too large"))
}

/// Parses a size such as `"16MiB"` or `"1048576"` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text.trim());
    let lower = unit.to_ascii_lowercase();
    let Some(&(_, scale)) = SIZE_UNITS.iter().find(|(name, _)| *name == lower) else {
        return Err(format!(
            "invalid size `{text}`: unknown unit `{unit}` (expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
        ));
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid size `{text}`: expected a whole number with an optional unit, e.g. \"16MiB\""
        ));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("invalid size `{text}`: too large"))
}

/// Parses `IP:port` (`127.0.0.1:80`, `[::1]:80`); hostnames are refused.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!(
            "invalid address `{text}`: expected IP:port, e.g. 127.0.0.1:8080 or [::1]:8080 \
             (hostnames are not accepted)"
        )
    })
}

/// The longest DNS name in text form (RFC 1035, without the final dot).
const MAX_NAME: usize = 253;
/// The longest label of a DNS name.
const MAX_LABEL: usize = 63;

/// Parses a backend given by name, `name:port` (`api.internal:8080`), into
/// the name (without a trailing dot) and a port other than 0. Labels are
/// 1 to 63 letters, digits, `-` or `_`, not starting or ending with `-`.
pub fn parse_name_port(text: &str) -> Result<(String, u16), String> {
    let expected = "expected IP:port or name:port, e.g. 127.0.0.1:8080 or api.internal:8080";
    let Some((name, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}`: missing port: {expected}"));
    };
    let port: u16 = match port.parse() {
        Ok(0) | Err(_) => return Err(format!("`{text}`: `{port}` is not a port (1-65535)")),
        Ok(port) => port,
    };
    check_dns_name(name).map_err(|reason| format!("`{text}`: {reason}"))?;
    Ok((name.strip_suffix('.').unwrap_or(name).to_owned(), port))
}

/// Why `name` is not a DNS name (see [`parse_name_port`]).
pub fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("empty name".to_owned());
    }
    if bare.len() > MAX_NAME {
        return Err(format!("name of {} bytes: at most {MAX_NAME}", bare.len()));
    }
    for label in bare.split('.') {
        check_label(label).map_err(|reason| format!("not a DNS name: {reason}"))?;
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label".to_owned());
    }
    if label.len() > MAX_LABEL {
        return Err(format!("label `{label}` is longer than {MAX_LABEL} bytes"));
    }
    if let Some(bad) = label
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(format!("`{bad}` in label `{label}`"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label `{label}` starts or ends with `-`"));
    }
    Ok(())
}

/// Splits `"1.5ms"` into `("1.5", "ms")`: the leading digits and dots, then the rest.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// `number` (digits with at most one '.') times `scale` nanoseconds, exactly.
fn scaled_nanos(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    if fraction.len() > 18 {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let denominator = 10u128.pow(u32::try_from(fraction.len()).ok()?);
    let total = whole.checked_mul(scale)?;
    total.checked_add(fraction_value.checked_mul(scale)? / denominator)
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let subsec = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("5ms", Duration::from_millis(5)),
            ("500ms", Duration::from_millis(500)),
            ("1s", Duration::from_secs(1)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25ms", Duration::from_micros(250)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations() {
        for text in [
            "",
            "5",
            "ms",
            "5 parsecs",
            "-5ms",
            "1.2.3s",
            ".s",
            "5MS",
            "1e3ms",
        ] {
            assert!(parse_duration(text).is_err(), "{text} should be refused");
        }
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn sizes() {
        let ok = [
            ("1048576", 1_048_576),
            ("16MiB", 16 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("1gib", 1 << 30),
            ("2MB", 2_000_000),
            ("3KB", 3_000),
            ("10B", 10),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_sizes() {
        for text in [
            "",
            "MiB",
            "1.5MiB",
            "-1",
            "16 furlongs",
            "99999999999999999999TiB",
        ] {
            assert!(parse_size(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn socket_addrs() {
        assert_eq!(parse_socket_addr("127.0.0.1:80").unwrap().port(), 80);
        assert!(parse_socket_addr("[::1]:80").unwrap().is_ipv6());
        let err = parse_socket_addr("localhost:80").unwrap_err();
        assert!(err.contains("expected IP:port"), "{err}");
        assert!(parse_socket_addr("127.0.0.1").is_err());
    }
}
