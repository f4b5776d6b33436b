//! Signed sticky-session cookies.
//!
//! The cookie names a backend by its
//! [`stable_id`](crate::BackendStats::stable_id) and carries an HMAC-SHA256
//! tag over it, made with a secret from the policy's config: a client
//! cannot forge a cookie for a backend of its choosing, and the proxy
//! remembers nothing (the cookie is the whole state), so several proxy
//! instances with the same secret and the same backends share stickiness
//! with no coordination.
//!
//! Value format: `<stable id, 16 hex digits>.<tag, 32 hex digits>` (the
//! first 128 bits of the HMAC), e.g.
//! `9f86d081884c7d65.4e2a...`. The tag is checked in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of the tag in bytes (hex digits / 2).
const TAG_LEN: usize = 16;

/// Signs and verifies sticky cookies with one secret.
#[derive(Clone)]
pub struct CookieSigner {
    mac: HmacSha256,
}

impl std::fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("CookieSigner { .. }")
    }
}

impl CookieSigner {
    /// The shortest secret accepted, in bytes.
    pub const MIN_SECRET_LEN: usize = 16;

    /// A signer for `secret` (at least [`MIN_SECRET_LEN`](Self::MIN_SECRET_LEN)
    /// bytes). `context` is mixed into every tag (a cookie name, a pool
    /// name), so a cookie issued for one context does not verify in
    /// another.
    pub fn new(secret: &[u8], context: &str) -> Result<Self, String> {
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(format!(
                "must be at least {} bytes, got {}",
                Self::MIN_SECRET_LEN,
                secret.len()
            ));
        }
        let mut mac = HmacSha256::new_from_slice(secret).map_err(|e| e.to_string())?;
        mac.update(b"wasmroute-sticky-v1\0");
        mac.update(context.as_bytes());
        mac.update(b"\0");
        Ok(CookieSigner { mac })
    }

    fn tag(&self, stable_id: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&stable_id.to_be_bytes());
        mac
    }

    /// The cookie value naming `stable_id`.
    pub fn sign(&self, stable_id: u64) -> String {
        let tag = self.tag(stable_id).finalize().into_bytes();
        let mut out = format!("{stable_id:016x}.");
        for byte in &tag[..TAG_LEN] {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// The stable id a cookie value names, if its tag is genuine; `None`
    /// for a malformed or tampered value.
    pub fn verify(&self, value: &str) -> Option<u64> {
        let (id, tag) = value.trim().split_once('.')?;
        if id.len() != 16 || tag.len() != TAG_LEN * 2 {
            return None;
        }
        let stable_id = u64::from_str_radix(id, 16).ok()?;
        let mut bytes = [0u8; TAG_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(tag.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        self.tag(stable_id)
            .verify_truncated_left(&bytes)
            .ok()
            .map(|()| stable_id)
    }
}

/// A `Set-Cookie` value for a sticky cookie: `Path=/`, `HttpOnly`,
/// `SameSite=Lax`, plus `Max-Age` when given (a session cookie otherwise)
/// and `Secure` when asked for.
pub fn set_cookie(name: &str, value: &str, max_age_s: Option<u32>, secure: bool) -> String {
    let mut out = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age_s {
        out.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        out.push_str("; Secure");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";

    #[test]
    fn round_trips() {
        let s = CookieSigner::new(SECRET, "web").unwrap();
        for id in [0, 1, 0xdead_beef, u64::MAX] {
            let v = s.sign(id);
            assert_eq!(v.len(), 16 + 1 + 32, "{v}");
            assert_eq!(s.verify(&v), Some(id));
        }
        // Deterministic: another instance with the same secret agrees.
        let other = CookieSigner::new(SECRET, "web").unwrap();
        assert_eq!(other.verify(&s.sign(42)), Some(42));
    }

    #[test]
    fn rejects_tampering() {
        let s = CookieSigner::new(SECRET, "web").unwrap();
        let v = s.sign(0x1234);
        // Another id with the old tag.
        let forged = format!("{:016x}{}", 0x1235, &v[16..]);
        assert_eq!(s.verify(&forged), None);
        // Every single flipped digit of the tag.
        for i in 17..v.len() {
            let mut bytes = v.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            assert_eq!(s.verify(std::str::from_utf8(&bytes).unwrap()), None, "{i}");
        }
        for bad in [
            "",
            ".",
            "1234",
            &v[..40],
            &format!("{v}00"),
            "zz.zz",
            "0000000000001234.XYZ",
        ] {
            assert_eq!(s.verify(bad), None, "{bad:?}");
        }
        // Another secret or another context.
        let other = CookieSigner::new(b"another secret of 32 bytes......", "web").unwrap();
        assert_eq!(other.verify(&v), None);
        let other = CookieSigner::new(SECRET, "video").unwrap();
        assert_eq!(other.verify(&v), None);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            CookieSigner::new(b"short", "web").unwrap_err(),
            "must be at least 16 bytes, got 5"
        );
        assert_eq!(
            format!("{:?}", CookieSigner::new(SECRET, "").unwrap()),
            "CookieSigner { .. }"
        );
    }

    #[test]
    fn set_cookie_attributes() {
        assert_eq!(
            set_cookie("lb", "v", None, false),
            "lb=v; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie("lb", "v", Some(60), true),
            "lb=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
    }
}
