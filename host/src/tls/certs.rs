//! Loading one certificate chain and its private key from PEM files, and
//! proving the pair usable before it serves a single handshake.
//!
//! Everything a handshake would trip over later is checked here, at
//! `check`, start and reload, so an operator sees `FILE: key: reason`
//! instead of clients seeing handshake failures: the files must be
//! readable PEM, the key must be one the provider can sign with (RSA,
//! ECDSA or Ed25519 in PKCS#8, PKCS#1 or SEC1 form), the key must belong to
//! the first certificate, and that certificate must be valid now.
//!
//! The DNS names SNI can select the certificate by are read from the
//! certificate itself (subjectAltName, or the subject CN when there is no
//! SAN), so the config never repeats them and cannot disagree with them.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

/// A certificate pair ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    /// Chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// Lowercase DNS names it covers; `*.example.com` for a wildcard.
    pub names: Vec<String>,
}

/// Which file of a pair a problem is in (the config key it maps to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairFile {
    /// `cert`: the PEM chain.
    Cert,
    /// `key`: the PEM private key.
    Key,
}

/// Why a pair was refused; `reason` starts with the file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    /// The file at fault.
    pub file: PairFile,
    /// For a human, naming the file.
    pub reason: String,
}

impl CertError {
    fn cert(path: &Path, reason: impl std::fmt::Display) -> CertError {
        CertError {
            file: PairFile::Cert,
            reason: format!("{}: {reason}", path.display()),
        }
    }

    fn key(path: &Path, reason: impl std::fmt::Display) -> CertError {
        CertError {
            file: PairFile::Key,
            reason: format!("{}: {reason}", path.display()),
        }
    }
}

/// Reads and checks the pair `cert` + `key` (see the module docs).
pub fn load(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<LoadedCertificate, CertError> {
    let chain = read_chain(cert)?;
    let names = check_leaf(cert, &chain[0])?;
    let private_key = read_key(key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| CertError::key(key, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            tracing::warn!(key = %key.display(), "cannot tell whether the key matches its certificate");
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            let reason = format!(
                "private key does not match the certificate in {}",
                cert.display()
            );
            return Err(CertError::key(key, reason));
        }
        Err(error) => return Err(CertError::cert(cert, error)),
    }
    Ok(LoadedCertificate {
        key: Arc::new(certified),
        names,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// Every `CERTIFICATE` block, in file order (the leaf first); at least one.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read(path).map_err(|reason| CertError::cert(path, reason))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::cert(path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::cert(path, "no PEM CERTIFICATE block found"));
    }
    Ok(chain)
}

/// The first key block: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`)
/// or SEC1 (`EC PRIVATE KEY`).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read(path).map_err(|reason| CertError::key(path, reason))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let reason = format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}");
        CertError::key(path, reason)
    })
}

/// Checks the leaf's validity period and returns the names it covers.
fn check_leaf(path: &Path, leaf: &CertificateDer<'_>) -> Result<Vec<String>, CertError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        CertError::cert(
            path,
            format!("the first certificate is not valid X.509: {e}"),
        )
    })?;
    let validity = parsed.validity();
    let now = ASN1Time::now();
    if validity.not_after < now {
        let reason = format!("certificate expired at {}", validity.not_after);
        return Err(CertError::cert(path, reason));
    }
    if validity.not_before > now {
        let reason = format!("certificate is not valid before {}", validity.not_before);
        return Err(CertError::cert(path, reason));
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        let common_names = parsed.subject().iter_common_name();
        names.extend(
            common_names
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;

    use super::*;

    /// Runs `openssl <args>` in `dir` (openssl is how operators make these
    /// files, so the test uses the real thing).
    fn openssl(dir: &Path, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command line tool is needed by this test");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A self-signed certificate for `x.test` over the key `openssl` wrote
    /// with `keygen`; returns (cert, key) paths.
    fn pair(dir: &Path, stem: &str, keygen: &[&str]) -> (PathBuf, PathBuf) {
        let key = format!("{stem}.key");
        let cert = format!("{stem}.pem");
        // `-out` right after the subcommand: genrsa wants the size last.
        let mut args = vec![keygen[0], "-out", &key];
        args.extend(&keygen[1..]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-key",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                "/CN=x.test",
                "-addext",
                "subjectAltName=DNS:x.test,DNS:*.y.test",
            ],
        );
        (dir.join(cert), dir.join(key))
    }

    #[test]
    fn loads_rsa_ecdsa_and_ed25519_in_every_pem_form() {
        let dir = tempfile::tempdir().unwrap();
        let kinds: [(&str, &[&str], &str); 5] = [
            (
                "rsa-pkcs1",
                &["genrsa", "-traditional", "2048"],
                "BEGIN RSA PRIVATE KEY",
            ),
            (
                "rsa-pkcs8",
                &["genpkey", "-algorithm", "RSA"],
                "BEGIN PRIVATE KEY",
            ),
            (
                "ec-sec1",
                &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
                "BEGIN EC PRIVATE KEY",
            ),
            (
                "ec-pkcs8",
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-384",
                ],
                "BEGIN PRIVATE KEY",
            ),
            (
                "ed25519",
                &["genpkey", "-algorithm", "ED25519"],
                "BEGIN PRIVATE KEY",
            ),
        ];
        let provider = crate::tls::provider();
        for (stem, keygen, marker) in kinds {
            let (cert, key) = pair(dir.path(), stem, keygen);
            let text = std::fs::read_to_string(&key).unwrap();
            assert!(
                text.contains(marker),
                "{stem}: not the expected form:\n{text}"
            );
            let loaded = load(&cert, &key, &provider).unwrap_or_else(|e| panic!("{stem}: {e:?}"));
            assert_eq!(loaded.names, ["x.test", "*.y.test"], "{stem}");
        }
    }

    #[test]
    fn refuses_a_key_of_another_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pair(
            dir.path(),
            "ec",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
        );
        let (_, other) = pair(dir.path(), "ed", &["genpkey", "-algorithm", "ED25519"]);
        let error = load(&cert, &other, &crate::tls::provider()).unwrap_err();
        assert_eq!(error.file, PairFile::Key);
        assert!(
            error.reason.contains("does not match the certificate"),
            "{}",
            error.reason
        );
    }

    #[test]
    fn refuses_files_that_are_not_pem() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let error = load(&garbage, &garbage, &crate::tls::provider()).unwrap_err();
        assert_eq!(error.file, PairFile::Cert);
        assert!(
            error
                .reason
                .ends_with("garbage.pem: no PEM CERTIFICATE block found"),
            "{}",
            error.reason
        );
    }
}
