//! The `[[pools]]` part of validation: backends, timeouts and retries,
//! active health checks, passive ejection, TLS to backends.

use std::time::Duration;

use super::{Checker, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, MAX_RETRIES};
use crate::config::model::{
    BackendConfig, HEALTH_EXPECT_LIMIT, HealthConfig, HealthStep, NamedBackend, PassiveConfig,
    PoolConfig, UpstreamConfig, UpstreamTlsConfig,
};
use crate::config::raw::{
    RawBackend, RawDuration, RawHealth, RawHealthStep, RawPassive, RawPool, RawStatusRange,
    RawUpstreamTls,
};
use crate::config::units;

/// A valid `backends` entry, of either kind.
enum Entry {
    Address(BackendConfig),
    Name(NamedBackend),
}

impl Entry {
    /// An `address` entry as duplicates are found: the address or
    /// `name:port` (names compare without case). None for an invalid
    /// entry or an SRV name.
    fn address_text(entry: &Option<Entry>) -> Option<String> {
        match entry.as_ref()? {
            Entry::Address(backend) => Some(backend.address.to_string()),
            Entry::Name(named) => named.port.map(|_| named.text().to_ascii_lowercase()),
        }
    }

    /// An `srv` entry's name (lower case); None for any other entry.
    fn srv_text(entry: &Option<Entry>) -> Option<String> {
        match entry.as_ref()? {
            Entry::Name(named) if named.port.is_none() => Some(named.name.to_ascii_lowercase()),
            _ => None,
        }
    }

    /// The valid entries, by kind, each in file order.
    fn split(entries: Vec<Option<Entry>>) -> (Vec<BackendConfig>, Vec<NamedBackend>) {
        let mut backends = Vec::new();
        let mut names = Vec::new();
        for entry in entries.into_iter().flatten() {
            match entry {
                Entry::Address(backend) => backends.push(backend),
                Entry::Name(named) => names.push(named),
            }
        }
        (backends, names)
    }
}

impl Checker<'_> {
    pub(super) fn pools(&mut self, raw: &[RawPool]) -> Vec<PoolConfig> {
        let pools = raw.iter().enumerate();
        let pools = pools.map(|(i, pool)| self.pool(i, pool)).collect();
        self.duplicates(
            "pools",
            "name",
            "pool name",
            raw.iter().map(|p| p.name.as_str()),
        );
        pools
    }

    fn pool(&mut self, i: usize, raw: &RawPool) -> PoolConfig {
        let key = format!("pools[{i}]");
        self.name(&format!("{key}.name"), &raw.name);
        if raw.backends.is_empty() {
            let reason = match raw.name.as_str() {
                "" => "pool has no backends".to_owned(),
                name => format!("pool `{name}` has no backends"),
            };
            self.error(format!("{key}.backends"), reason);
        }
        let entries = raw.backends.iter().enumerate();
        let entries: Vec<_> = entries
            .map(|(j, backend)| self.backend(&format!("{key}.backends[{j}]"), backend))
            .collect();
        self.duplicates_opt(
            &format!("{key}.backends"),
            "address",
            "backend address",
            entries.iter().map(Entry::address_text),
        );
        self.duplicates_opt(
            &format!("{key}.backends"),
            "srv",
            "SRV name",
            entries.iter().map(Entry::srv_text),
        );
        let (backends, names) = Entry::split(entries);
        let health = raw
            .health
            .as_ref()
            .map(|h| self.health(&format!("{key}.health"), h));
        let load_header =
            self.load_header(&format!("{key}.load_header"), raw.load_header.as_deref());
        let upstream = self.upstream(&key, raw);
        let passive = self.passive(&format!("{key}.passive"), raw.passive.as_ref());
        let tls = raw
            .tls
            .as_ref()
            .map(|t| self.upstream_tls(&format!("{key}.tls"), t));
        PoolConfig {
            name: raw.name.clone(),
            backends,
            names,
            health,
            load_header,
            upstream,
            passive,
            tls,
            on_down: raw.on_down,
            proxy_protocol: raw.proxy_protocol,
        }
    }

    /// `[pools.tls]`: a CA path (resolved) and a server name that is a DNS
    /// name or an IP address.
    fn upstream_tls(&mut self, key: &str, raw: &RawUpstreamTls) -> UpstreamTlsConfig {
        let ca = raw
            .ca
            .as_ref()
            .map(|ca| self.path(&format!("{key}.ca"), ca));
        if let Some(name) = &raw.server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            let reason = format!("`{name}` is not a DNS name or an IP address");
            self.error(format!("{key}.server_name"), reason);
        }
        UpstreamTlsConfig {
            ca,
            server_name: raw.server_name.clone(),
        }
    }

    /// The timeouts and the retry budget of a pool (`{key}.connect_timeout`...).
    fn upstream(&mut self, key: &str, raw: &RawPool) -> UpstreamConfig {
        let default = UpstreamConfig::default();
        let retries = raw.retries.unwrap_or(default.retries);
        if retries > MAX_RETRIES {
            self.error(
                format!("{key}.retries"),
                format!("{retries} is too many: at most {MAX_RETRIES}"),
            );
        }
        UpstreamConfig {
            connect_timeout: self.duration(
                &format!("{key}.connect_timeout"),
                raw.connect_timeout.as_ref(),
                default.connect_timeout,
            ),
            response_timeout: self.duration(
                &format!("{key}.response_timeout"),
                raw.response_timeout.as_ref(),
                default.response_timeout,
            ),
            idle_timeout: self.duration(
                &format!("{key}.idle_timeout"),
                raw.idle_timeout.as_ref(),
                default.idle_timeout,
            ),
            retries,
        }
    }

    /// `[pools.passive]`: defaults when absent, none when `enabled = false`.
    fn passive(&mut self, key: &str, raw: Option<&RawPassive>) -> Option<PassiveConfig> {
        let default = PassiveConfig::default();
        let Some(raw) = raw else {
            return Some(default);
        };
        for (field, value) in [
            ("error_rate_percent", raw.error_rate_percent),
            ("max_ejected_percent", raw.max_ejected_percent),
        ] {
            if let Some(value) = value.filter(|&v| v > 100) {
                self.error(
                    format!("{key}.{field}"),
                    format!("{value} is not a percentage (0-100)"),
                );
            }
        }
        if raw.min_requests == Some(0) {
            self.error(format!("{key}.min_requests"), "must be at least 1");
        }
        let ejection_time = self.duration(
            &format!("{key}.ejection_time"),
            raw.ejection_time.as_ref(),
            default.ejection_time,
        );
        let max_ejection_time = self.duration(
            &format!("{key}.max_ejection_time"),
            raw.max_ejection_time.as_ref(),
            default.max_ejection_time.max(ejection_time),
        );
        if max_ejection_time < ejection_time {
            self.error(
                format!("{key}.max_ejection_time"),
                format!("{max_ejection_time:?} is shorter than ejection_time ({ejection_time:?})"),
            );
        }
        let config = PassiveConfig {
            consecutive_failures: raw
                .consecutive_failures
                .unwrap_or(default.consecutive_failures),
            error_rate_percent: raw.error_rate_percent.unwrap_or(default.error_rate_percent),
            min_requests: raw.min_requests.unwrap_or(default.min_requests),
            ejection_time,
            max_ejection_time,
            max_ejected_percent: raw
                .max_ejected_percent
                .unwrap_or(default.max_ejected_percent),
        };
        raw.enabled.unwrap_or(true).then_some(config)
    }

    fn load_header(&mut self, key: &str, raw: Option<&str>) -> http::HeaderName {
        const DEFAULT: http::HeaderName = http::HeaderName::from_static("x-backend-load");
        let Some(raw) = raw else { return DEFAULT };
        match http::HeaderName::from_bytes(raw.as_bytes()) {
            Ok(name) => name,
            Err(_) => {
                self.error(
                    key.to_owned(),
                    format!("`{raw}` is not a valid header name"),
                );
                DEFAULT
            }
        }
    }

    /// One `backends` entry: `address = "IP:port"` or `"name:port"`, or
    /// `srv = "_service._proto.name"`.
    fn backend(&mut self, key: &str, raw: &RawBackend) -> Option<Entry> {
        if raw.weight == 0 {
            self.error(format!("{key}.weight"), "must be at least 1");
        }
        let weight = raw.weight;
        let text = match (raw.address.as_deref(), raw.srv.as_deref()) {
            (Some(_), Some(_)) => {
                let reason = "give `address` or `srv`, not both";
                self.error(format!("{key}.srv"), reason);
                return None;
            }
            (None, Some(srv)) => return self.srv_backend(&format!("{key}.srv"), srv, weight),
            (Some(text), None) => text,
            (None, None) => {
                self.error(
                    format!("{key}.address"),
                    "missing: expected IP:port or name:port (e.g. 127.0.0.1:8080 or api.internal:8080), or an `srv` name",
                );
                return None;
            }
        };
        if let Ok(address) = text.parse() {
            return Some(Entry::Address(BackendConfig { address, weight }));
        }
        match units::parse_name_port(text) {
            Ok((name, port)) => Some(Entry::Name(NamedBackend {
                name,
                port: Some(port),
                weight,
            })),
            Err(reason) => {
                self.error(format!("{key}.address"), reason);
                None
            }
        }
    }

    /// `srv = "_http._tcp.web.internal"`: a DNS name whose SRV records
    /// give the targets and ports.
    fn srv_backend(&mut self, key: &str, text: &str, weight: u32) -> Option<Entry> {
        match units::check_dns_name(text) {
            Ok(()) => Some(Entry::Name(NamedBackend {
                name: text.strip_suffix('.').unwrap_or(text).to_owned(),
                port: None,
                weight,
            })),
            Err(reason) => {
                self.error(key, format!("`{text}`: {reason}"));
                None
            }
        }
    }

    fn health(&mut self, key: &str, raw: &RawHealth) -> HealthConfig {
        if let Some(path) = raw.path.as_deref().filter(|p| !p.starts_with('/')) {
            self.error(
                format!("{key}.path"),
                format!("`{path}` must start with '/'"),
            );
        }
        let interval = self.duration(
            &format!("{key}.interval"),
            raw.interval.as_ref(),
            DEFAULT_INTERVAL,
        );
        let timeout = self.duration(
            &format!("{key}.timeout"),
            raw.timeout.as_ref(),
            DEFAULT_TIMEOUT,
        );
        for (field, value) in [("rise", raw.rise), ("fall", raw.fall)] {
            if value == 0 {
                self.error(format!("{key}.{field}"), "must be at least 1");
            }
        }
        let expect_status = match &raw.expect_status {
            None => (200, 399),
            Some(range) => self.status_range(&format!("{key}.expect_status"), range),
        };
        if let Some(body) = &raw.expect_body {
            let key = format!("{key}.expect_body");
            if raw.path.is_none() {
                self.error(
                    key,
                    "needs an HTTP check: set `path` (without it the check is a TCP connect)",
                );
            } else if body.is_empty() {
                self.error(key, "must not be empty (remove it to accept any body)");
            }
        }
        if raw.expect_status.is_some() && raw.path.is_none() {
            self.error(
                format!("{key}.expect_status"),
                "needs an HTTP check: set `path` (without it the check is a TCP connect)",
            );
        }
        let jitter = self.jitter(&format!("{key}.jitter"), raw.jitter.as_ref(), interval);
        let steps = raw
            .steps
            .as_ref()
            .map_or_else(Vec::new, |steps| self.steps(key, raw, steps));
        HealthConfig {
            path: raw.path.clone(),
            interval,
            timeout,
            rise: raw.rise,
            fall: raw.fall,
            expect_status,
            expect_body: raw.expect_body.clone(),
            jitter,
            steps,
            port: raw
                .port
                .and_then(|port| self.port(&format!("{key}.port"), port)),
        }
    }

    /// `steps`: a non-empty script, not with `path`, each step exactly one
    /// non-empty `send` or `expect` (an `expect` that fits the buffer).
    fn steps(&mut self, key: &str, raw: &RawHealth, steps: &[RawHealthStep]) -> Vec<HealthStep> {
        let key = format!("{key}.steps");
        if steps.is_empty() {
            self.error(&key, "must not be empty (remove it for a connect check)");
        }
        if raw.path.is_some() {
            self.error(
                &key,
                "cannot be used with `path` (an HTTP check): choose one",
            );
        }
        let steps = steps.iter().enumerate();
        steps
            .filter_map(|(i, step)| self.step(&format!("{key}[{i}]"), step))
            .collect()
    }

    fn step(&mut self, key: &str, raw: &RawHealthStep) -> Option<HealthStep> {
        let (field, step) = match (&raw.send, &raw.expect) {
            (Some(send), None) => ("send", HealthStep::Send(send.clone().into_bytes())),
            (None, Some(expect)) => ("expect", HealthStep::Expect(expect.clone().into_bytes())),
            _ => {
                self.error(key, "a step needs exactly one of send or expect");
                return None;
            }
        };
        let (HealthStep::Send(bytes) | HealthStep::Expect(bytes)) = &step;
        if bytes.is_empty() {
            self.error(format!("{key}.{field}"), "must not be empty");
        } else if field == "expect" && bytes.len() > HEALTH_EXPECT_LIMIT {
            let reason = format!(
                "{} bytes is longer than the {HEALTH_EXPECT_LIMIT} bytes an expect buffers",
                bytes.len()
            );
            self.error(format!("{key}.{field}"), reason);
        }
        Some(step)
    }

    /// `port`: 1..=65535.
    fn port(&mut self, key: &str, port: i64) -> Option<u16> {
        match u16::try_from(port) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                self.error(key, format!("{port} is not a port: 1 to 65535"));
                None
            }
        }
    }

    /// `expect_status`: `200` or `"200-399"`, within 100..=599.
    fn status_range(&mut self, key: &str, raw: &RawStatusRange) -> (u16, u16) {
        const FALLBACK: (u16, u16) = (200, 399);
        let parsed = match raw {
            RawStatusRange::Code(code) => u16::try_from(*code).ok().map(|c| (c, c)),
            RawStatusRange::Text(text) => {
                let (low, high) = text.split_once('-').unwrap_or((text, text));
                match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
                    (Ok(low), Ok(high)) => Some((low, high)),
                    _ => None,
                }
            }
        };
        let shown = match raw {
            RawStatusRange::Code(code) => code.to_string(),
            RawStatusRange::Text(text) => format!("\"{text}\""),
        };
        match parsed {
            Some((low, high)) if (100..=599).contains(&low) && (low..=599).contains(&high) => {
                (low, high)
            }
            _ => {
                self.error(
                    key,
                    format!(
                        "{shown} is not a status or range of statuses: expected e.g. 200 or \"200-399\" (100-599, low before high)"
                    ),
                );
                FALLBACK
            }
        }
    }

    /// `jitter`: a duration up to `interval`, zero allowed; default interval/10.
    fn jitter(&mut self, key: &str, raw: Option<&RawDuration>, interval: Duration) -> Duration {
        let Some(RawDuration(text)) = raw else {
            return interval / 10;
        };
        match units::parse_duration(text) {
            Ok(jitter) if jitter > interval => {
                self.error(
                    key,
                    format!("`{text}` is longer than the interval ({interval:?})"),
                );
                interval / 10
            }
            Ok(jitter) => jitter,
            Err(reason) => {
                self.error(key, reason);
                interval / 10
            }
        }
    }
}
