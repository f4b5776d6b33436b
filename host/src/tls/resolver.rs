//! Choosing a listener's certificate from the ClientHello's SNI name.
//!
//! Lookup order: the exact name, then a wildcard one label up
//! (`*.example.com` covers `a.example.com`, not `example.com` nor
//! `a.b.example.com`, as RFC 6125 says), then `unknown_sni`: the first
//! certificate of the listener, or no certificate, which makes rustls fail
//! the handshake with an alert. A client that sends no SNI (an IP-address
//! URL, old clients) always gets the first certificate. When two
//! certificates cover the same name, the one listed first wins.
//!
//! Both maps are built once per config and read without locks; a reload
//! builds a new resolver.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCertificate;
use crate::config::UnknownSni;

/// SNI name -> certificate, for one listener.
#[derive(Debug)]
pub struct SniResolver {
    listener: Arc<str>,
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    unknown: UnknownSni,
}

impl SniResolver {
    /// A resolver over `certificates` (the first is the default); `None`
    /// when there are none.
    pub fn new(
        listener: &str,
        certificates: &[LoadedCertificate],
        unknown: UnknownSni,
    ) -> Option<SniResolver> {
        let default = Arc::clone(&certificates.first()?.key);
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for certificate in certificates {
            for name in &certificate.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent),
                    None => (&mut exact, name.as_str()),
                };
                map.entry(key.to_owned())
                    .or_insert_with(|| Arc::clone(&certificate.key));
            }
        }
        Some(SniResolver {
            listener: Arc::from(listener),
            default,
            exact,
            wildcard,
            unknown,
        })
    }

    /// The certificate for `name` (any case), ignoring `unknown_sni`.
    pub fn lookup(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(Arc::clone(&self.default));
        };
        if let Some(key) = self.lookup(name) {
            return Some(Arc::clone(key));
        }
        match self.unknown {
            UnknownSni::Default => {
                tracing::debug!(listener = %self.listener, sni = name, "unknown SNI name; serving the default certificate");
                Some(Arc::clone(&self.default))
            }
            UnknownSni::Refuse => {
                tracing::debug!(listener = %self.listener, sni = name, "unknown SNI name; refusing the handshake");
                None
            }
        }
    }
}
