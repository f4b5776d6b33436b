//! Turns the raw file into a [`Config`], collecting every problem.
//!
//! Each part is checked on its own and a placeholder stands in for a bad
//! value, so checking goes on and one run reports all errors; the
//! placeholders never escape because any error makes the result `Err`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{ConfigError, ConfigErrors};
use super::model::{
    AdminConfig, CertificateConfig, Config, ListenerConfig, PoliciesConfig, Protocol, UnknownSni,
};
use super::raw::{
    RawAdmin, RawCertificate, RawConfig, RawDuration, RawListener, RawPolicies, RawPool, RawSize,
};
use super::units;

mod access_log;
mod pools;
mod resolver;
mod server;
mod shadow;
mod tcp;

/// Admin bearer tokens: long enough not to be guessed, short enough for a header.
const MIN_ADMIN_TOKEN: usize = 16;
const MAX_ADMIN_TOKEN: usize = 256;
const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
/// `[policies] decision_timeout` when the config gives none.
pub const DEFAULT_DECISION_TIMEOUT: Duration = Duration::from_millis(5);
/// `[policies] memory_limit` when the config gives none.
pub const DEFAULT_MEMORY_LIMIT: u64 = 16 << 20;
const MIN_MEMORY_LIMIT: u64 = 1 << 20;
/// A 32-bit Wasm linear memory cannot grow past 4 GiB.
const MAX_MEMORY_LIMIT: u64 = 4 << 30;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx and HAProxy ask for about as much; Linux caps it at
/// `net.core.somaxconn` (4096 by default since 5.4).
const DEFAULT_BACKLOG: u32 = 4096;
/// The largest `somaxconn` of kernels before 5.4 (a 16-bit field); a
/// larger queue only hides an accept loop that cannot keep up.
const MAX_BACKLOG: u32 = 65535;
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The most `retries` a pool may ask for.
const MAX_RETRIES: u32 = 10;
/// Stands in for an address that did not parse; never returned.
const PLACEHOLDER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Validates `raw`, read from `file`; relative paths resolve against its folder.
pub(super) fn validate(raw: RawConfig, file: &Path) -> Result<Config, ConfigErrors> {
    let mut checker = Checker::new(file);
    let config = checker.config(raw);
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors {
            errors: checker.errors,
        })
    }
}

/// `true` for a non-empty name made of `[A-Za-z0-9_.-]`.
pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

struct Checker<'a> {
    file: &'a Path,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    fn new(file: &'a Path) -> Self {
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        Checker {
            file,
            base,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError::new(self.file, key, reason));
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let admin = raw.admin.map(|admin| self.admin(admin));
        let server = self.server(raw.server);
        let access_log = raw.access_log.map(|log| self.access_log(log));
        let policies = self.policies(raw.policies);
        let listeners = self.listeners(&raw.listeners);
        let pools = self.pools(&raw.pools);
        let resolver = self.resolver(raw.resolver.as_ref());
        self.listener_references(&raw.listeners, &raw.pools);
        Config {
            file: self.file.to_path_buf(),
            admin,
            server,
            access_log,
            policies,
            listeners,
            pools,
            resolver,
        }
    }

    fn admin(&mut self, raw: RawAdmin) -> AdminConfig {
        let address = match raw.address {
            Some(text) => self.address("admin.address", &text),
            None => DEFAULT_ADMIN,
        };
        let token = raw.token.filter(|token| self.admin_token(token));
        AdminConfig { address, token }
    }

    /// Whether `token` may be an admin bearer token (an error says why not).
    fn admin_token(&mut self, token: &str) -> bool {
        let reason = if token.len() < MIN_ADMIN_TOKEN || token.len() > MAX_ADMIN_TOKEN {
            format!(
                "must be {MIN_ADMIN_TOKEN} to {MAX_ADMIN_TOKEN} characters long (it has {})",
                token.len()
            )
        } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
            "may hold visible ASCII characters only (no spaces or control characters)".to_owned()
        } else {
            return true;
        };
        self.error("admin.token", reason);
        false
    }

    fn policies(&mut self, raw: RawPolicies) -> PoliciesConfig {
        let dir = match raw.dir {
            Some(dir) => self.path("policies.dir", &dir),
            None => {
                self.error(
                    "policies.dir",
                    "missing: the folder of policy modules, e.g. [policies] dir = \"policies.d\"",
                );
                PathBuf::new()
            }
        };
        let decision_timeout = self.duration(
            "policies.decision_timeout",
            raw.decision_timeout.as_ref(),
            DEFAULT_DECISION_TIMEOUT,
        );
        let memory_limit = self.memory_limit(raw.memory_limit.as_ref());
        PoliciesConfig {
            dir,
            decision_timeout,
            memory_limit,
        }
    }

    fn memory_limit(&mut self, raw: Option<&RawSize>) -> u64 {
        const KEY: &str = "policies.memory_limit";
        let bytes = match raw {
            None => return DEFAULT_MEMORY_LIMIT,
            Some(RawSize::Bytes(bytes)) => *bytes,
            Some(RawSize::Text(text)) => match units::parse_size(text) {
                Ok(bytes) => bytes,
                Err(reason) => {
                    self.error(KEY, reason);
                    return DEFAULT_MEMORY_LIMIT;
                }
            },
        };
        if bytes < MIN_MEMORY_LIMIT {
            self.error(
                KEY,
                format!("{bytes} bytes is too small: at least 1MiB (1048576 bytes)"),
            );
        } else if bytes > MAX_MEMORY_LIMIT {
            self.error(
                KEY,
                format!("{bytes} bytes is too large: a Wasm memory holds at most 4GiB"),
            );
        }
        bytes
    }

    fn listeners(&mut self, raw: &[RawListener]) -> Vec<ListenerConfig> {
        if raw.is_empty() {
            self.error(
                "listeners",
                "at least one listener is required ([[listeners]])",
            );
        }
        let listeners: Vec<_> = raw
            .iter()
            .enumerate()
            .map(|(i, listener)| self.listener(i, listener))
            .collect();
        self.duplicates(
            "listeners",
            "name",
            "listener name",
            raw.iter().map(|l| l.name.as_str()),
        );
        let addresses = listeners.iter().map(|l| l.address);
        let bound = addresses.map(|a| (a != PLACEHOLDER_ADDR && a.port() != 0).then_some(a));
        self.duplicates_opt("listeners", "address", "listener address", bound);
        listeners
    }

    fn listener(&mut self, i: usize, raw: &RawListener) -> ListenerConfig {
        let key = format!("listeners[{i}]");
        self.name(&format!("{key}.name"), &raw.name);
        let address = self.required_address(&format!("{key}.address"), raw.address.as_deref());
        self.policy_name(&format!("{key}.policy"), &raw.policy);
        let certificates = self.certificates(&key, raw);
        let (handshake_timeout, unknown_sni) = self.tls_options(&key, raw);
        let redirect_to_https = self.redirect(&key, raw);
        let backlog = self.backlog(&format!("{key}.backlog"), raw.backlog);
        let send_timeout = self.duration(
            &format!("{key}.send_timeout"),
            raw.send_timeout.as_ref(),
            DEFAULT_SEND_TIMEOUT,
        );
        let tcp = self.tcp_options(&key, raw);
        let trusted_proxies = self.trusted_proxies(&key, raw);
        let shadow = self.shadow(&key, raw);
        ListenerConfig {
            name: raw.name.clone(),
            address,
            protocol: raw.protocol,
            policy: raw.policy.clone(),
            pools: raw.pools.clone(),
            on_error: raw.on_error,
            policy_config: raw.policy_config.clone(),
            certificates,
            handshake_timeout,
            unknown_sni,
            redirect_to_https,
            backlog,
            send_timeout,
            accept_proxy_protocol: raw.accept_proxy_protocol,
            trusted_proxies,
            tcp,
            shadow,
        }
    }

    /// `trusted_proxies`: CIDR ranges, not empty with
    /// `accept_proxy_protocol`, absent without it.
    fn trusted_proxies(&mut self, key: &str, raw: &RawListener) -> Vec<crate::config::Cidr> {
        let key = format!("{key}.trusted_proxies");
        let entries = raw.trusted_proxies.as_deref();
        match (raw.accept_proxy_protocol, entries) {
            (true, None | Some([])) => {
                let reason = "required (a list of CIDR ranges) with accept_proxy_protocol = true";
                self.error(key, reason.to_owned());
                return Vec::new();
            }
            (false, Some(_)) => {
                let reason = "only with accept_proxy_protocol = true";
                self.error(key, reason.to_owned());
                return Vec::new();
            }
            _ => {}
        }
        let entries = entries.unwrap_or_default().iter().enumerate();
        let parsed = entries.map(|(i, text)| match crate::config::Cidr::parse(text) {
            Ok(cidr) => Some(cidr),
            Err(reason) => {
                self.error(format!("{key}[{i}]"), reason);
                None
            }
        });
        parsed.collect::<Vec<_>>().into_iter().flatten().collect()
    }

    /// `backlog`: 1..=[`MAX_BACKLOG`]; [`DEFAULT_BACKLOG`] when absent.
    fn backlog(&mut self, key: &str, raw: Option<i64>) -> u32 {
        let Some(value) = raw else {
            return DEFAULT_BACKLOG;
        };
        match u32::try_from(value) {
            Ok(backlog @ 1..=MAX_BACKLOG) => backlog,
            _ => {
                self.error(
                    key,
                    format!("{value}: must be a listen queue length from 1 to {MAX_BACKLOG}"),
                );
                DEFAULT_BACKLOG
            }
        }
    }

    /// `handshake_timeout` and `unknown_sni`, which only `https` listeners use.
    fn tls_options(&mut self, key: &str, raw: &RawListener) -> (Duration, UnknownSni) {
        if raw.protocol != Protocol::Https {
            let set = [
                ("handshake_timeout", raw.handshake_timeout.is_some()),
                ("unknown_sni", raw.unknown_sni.is_some()),
            ];
            for (field, _) in set.iter().filter(|(_, set)| *set) {
                self.error(
                    format!("{key}.{field}"),
                    "only used by https listeners; set protocol = \"https\" or remove it",
                );
            }
        }
        let timeout = self.duration(
            &format!("{key}.handshake_timeout"),
            raw.handshake_timeout.as_ref(),
            DEFAULT_HANDSHAKE_TIMEOUT,
        );
        (timeout, raw.unknown_sni.unwrap_or(UnknownSni::Default))
    }

    /// `redirect_to_https`: an `http` listener only, a port other than 0.
    fn redirect(&mut self, key: &str, raw: &RawListener) -> Option<u16> {
        let port = raw.redirect_to_https?;
        let key = format!("{key}.redirect_to_https");
        if raw.protocol != Protocol::Http {
            self.error(
                key,
                "only an http listener can redirect to https; remove it or set protocol = \"http\"",
            );
        } else if port == 0 {
            self.error(key, "must be the https port clients should use (1-65535)");
        }
        Some(port)
    }

    fn policy_name(&mut self, key: &str, policy: &str) {
        if policy.is_empty() {
            self.error(key, "missing: the file stem of a module in policies.dir");
        } else if !is_valid_name(policy) {
            self.error(
                key,
                format!(
                    "invalid policy name `{policy}`: use only letters, digits, '_', '.' and '-'"
                ),
            );
        }
    }

    fn certificates(&mut self, key: &str, raw: &RawListener) -> Vec<CertificateConfig> {
        let key = format!("{key}.certificates");
        match (raw.protocol, raw.certificates.is_empty()) {
            (Protocol::Https, true) => self.error(
                &key,
                "an https listener needs at least one certificate ([[listeners.certificates]])",
            ),
            (Protocol::Http | Protocol::Tcp, false) => self.error(
                &key,
                "certificates are only used by https listeners; set protocol = \"https\" or remove them",
            ),
            _ => {}
        }
        let certificates = raw.certificates.iter().enumerate();
        certificates
            .map(|(j, cert)| self.certificate(&format!("{key}[{j}]"), cert))
            .collect()
    }

    fn certificate(&mut self, key: &str, raw: &RawCertificate) -> CertificateConfig {
        let mut file = |field: &str, value: &Option<PathBuf>, what: &str| {
            let key = format!("{key}.{field}");
            match value {
                Some(path) => self.path(&key, path),
                None => {
                    self.error(key, format!("missing: the path of the PEM {what}"));
                    PathBuf::new()
                }
            }
        };
        let cert = file("cert", &raw.cert, "certificate chain");
        let key = file("key", &raw.key, "private key");
        CertificateConfig { cert, key }
    }

    /// Checks each listener's pool list against the defined pools.
    fn listener_references(&mut self, listeners: &[RawListener], pools: &[RawPool]) {
        let mut defined: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        defined.retain(|name| !name.is_empty());
        defined.sort_unstable();
        defined.dedup();
        let known = match defined.join(", ") {
            names if names.is_empty() => "no pools are defined".to_owned(),
            names => format!("defined pools: {names}"),
        };
        for (i, listener) in listeners.iter().enumerate() {
            let key = format!("listeners[{i}].pools");
            if listener.pools.is_empty() {
                self.error(
                    &key,
                    "must name at least one pool; the first is the default",
                );
            }
            for (j, pool) in listener.pools.iter().enumerate() {
                if !defined.contains(&pool.as_str()) {
                    let reason = format!("unknown pool `{pool}` ({known})");
                    self.error(format!("{key}[{j}]"), reason);
                } else if listener.pools[..j].contains(pool) {
                    self.error(
                        format!("{key}[{j}]"),
                        format!("pool `{pool}` is listed twice"),
                    );
                }
            }
        }
    }

    /// A listener or pool name: non-empty, `[A-Za-z0-9_.-]`.
    fn name(&mut self, key: &str, name: &str) {
        if name.is_empty() {
            self.error(key, "missing or empty name");
        } else if !is_valid_name(name) {
            let reason =
                format!("invalid name `{name}`: use only letters, digits, '_', '.' and '-'");
            self.error(key, reason);
        }
    }

    fn required_address(&mut self, key: &str, text: Option<&str>) -> SocketAddr {
        match text {
            Some(text) => self.address(key, text),
            None => {
                self.error(key, "missing: expected IP:port, e.g. 127.0.0.1:8080");
                PLACEHOLDER_ADDR
            }
        }
    }

    fn address(&mut self, key: &str, text: &str) -> SocketAddr {
        units::parse_socket_addr(text).unwrap_or_else(|reason| {
            self.error(key, reason);
            PLACEHOLDER_ADDR
        })
    }

    /// A duration that must be more than zero; `default` when absent.
    fn duration(&mut self, key: &str, raw: Option<&RawDuration>, default: Duration) -> Duration {
        let Some(RawDuration(text)) = raw else {
            return default;
        };
        match units::parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                self.error(key, format!("`{text}`: must be more than zero"));
                default
            }
            Ok(duration) => duration,
            Err(reason) => {
                self.error(key, reason);
                default
            }
        }
    }

    /// A non-empty path, resolved against the config file's folder.
    fn path(&mut self, key: &str, path: &Path) -> PathBuf {
        if path.as_os_str().is_empty() {
            self.error(key, "must not be empty");
        }
        self.base.join(path)
    }

    /// Reports `{list}[i].{field}` for each repeated name (invalid names
    /// are reported on their own already).
    fn duplicates<'v>(
        &mut self,
        list: &str,
        field: &str,
        what: &str,
        values: impl Iterator<Item = &'v str>,
    ) {
        let values = values.map(|v| is_valid_name(v).then_some(v));
        self.duplicates_opt(list, field, what, values);
    }

    /// Like [`Self::duplicates`], skipping `None` (values that are absent or invalid).
    fn duplicates_opt<T: Eq + Hash + std::fmt::Display>(
        &mut self,
        list: &str,
        field: &str,
        what: &str,
        values: impl Iterator<Item = Option<T>>,
    ) {
        let mut first_seen: HashMap<T, usize> = HashMap::new();
        for (i, value) in values.enumerate() {
            let Some(value) = value else { continue };
            let reason =
                |first: usize| format!("duplicate {what} `{value}` (also {list}[{first}])");
            match first_seen.get(&value) {
                Some(&first) => self.error(format!("{list}[{i}].{field}"), reason(first)),
                None => {
                    first_seen.insert(value, i);
                }
            }
        }
    }
}
