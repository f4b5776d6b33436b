//! `GET /metrics`: walks the live structures (listeners' states, pools'
//! backends, the control loop's counters) and writes every family in the
//! Prometheus text format. The names, labels and meanings are documented
//! in `docs/operations.md`; keep both in step.

use std::sync::Arc;

use http::StatusCode;
use hyper::body::Bytes;

use super::{AdminContext, Answer};
use crate::dns::Resolution;
use crate::http::state::ListenerState;
use crate::metrics::text::{CONTENT_TYPE, Exposition, Kind};
use crate::metrics::{DECISION_ERROR_KINDS, STATUS_CLASSES, StatusCounts};
use crate::pool::BackendPool;
use crate::server::published::{Published, Snapshot};

/// The version of `wit/policy.wit` this host implements.
fn wit_version() -> &'static str {
    const WIT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/policy.wit"));
    WIT.lines()
        .find_map(|line| line.trim().strip_prefix("package wasmroute:policy@"))
        .map_or("unknown", |rest| rest.trim_end_matches(';'))
}

/// The scrape answer.
pub(super) fn metrics(context: &AdminContext) -> Answer {
    let mut out = Exposition::default();
    let published = &context.published;
    if let Some(snapshot) = published.snapshot() {
        let states: Vec<(String, Arc<ListenerState>)> = (snapshot.listeners.iter())
            .map(|l| (l.name.clone(), l.handle.state()))
            .collect();
        requests(&mut out, &states);
        policies(&mut out, &states);
        super::shadow::metrics(&mut out, &states);
        backends(&mut out, &snapshot);
        connections(&mut out, &states);
    }
    reloads(&mut out, published);
    access_log(&mut out, published);
    process(&mut out);
    let body = Bytes::from(out.finish());
    super::routes::answer(StatusCode::OK, CONTENT_TYPE, body)
}

type States = [(String, Arc<ListenerState>)];

fn status_samples(out: &mut Exposition, labels: [(&str, &str); 3], counts: &StatusCounts) {
    let counts = counts.snapshot();
    for (class, count) in STATUS_CLASSES.iter().zip(counts) {
        // 1xx only when it happened (upgrades); the others always, so a
        // rate over them exists from the first scrape.
        if *class == "1xx" && count == 0 {
            continue;
        }
        let [listener, pool, backend] = labels;
        out.sample(
            "wasmroute_requests_total",
            &[listener, pool, backend, ("code", class)],
            count,
        );
    }
}

fn requests(out: &mut Exposition, states: &States) {
    out.family(
        "wasmroute_requests_total",
        Kind::Counter,
        "Requests served, by listener, pool, backend and status class (pool and backend empty for local answers).",
    );
    for (name, state) in states {
        let metrics = &state.metrics;
        for pool in &metrics.pools {
            for (address, codes) in &pool.backends {
                let address = address.to_string();
                let labels = [
                    ("listener", name.as_str()),
                    ("pool", &pool.name),
                    ("backend", &address),
                ];
                status_samples(out, labels, codes);
            }
        }
        let labels = [("listener", name.as_str()), ("pool", ""), ("backend", "")];
        status_samples(out, labels, &metrics.local_codes);
    }
    let name = "wasmroute_request_duration_seconds";
    out.family(
        name,
        Kind::Histogram,
        "Time from the request to the last byte of its response.",
    );
    for (listener, state) in states {
        let metrics = &state.metrics;
        for pool in &metrics.pools {
            let labels = [
                ("listener", listener.as_str()),
                ("pool", pool.name.as_str()),
            ];
            out.histogram(name, &labels, &pool.route.duration.snapshot());
        }
        let labels = [("listener", listener.as_str()), ("pool", "")];
        out.histogram(name, &labels, &metrics.local.duration.snapshot());
    }
}

fn policies(out: &mut Exposition, states: &States) {
    let name = "wasmroute_policy_decisions_total";
    out.family(
        name,
        Kind::Counter,
        "Calls of the policy's decide, by listener and policy.",
    );
    each_policy(states, |labels, m| {
        out.sample(name, &labels, m.decisions.duration.count());
    });
    let name = "wasmroute_policy_decision_seconds";
    out.family(name, Kind::Histogram, "Time of one policy decision.");
    each_policy(states, |labels, m| {
        out.histogram(name, &labels, &m.decisions.duration.snapshot());
    });
    let name = "wasmroute_policy_errors_total";
    out.family(
        name,
        Kind::Counter,
        "Failed decisions by kind: trap, timeout, invalid, tripped.",
    );
    each_policy(states, |[listener, policy], m| {
        for (kind, count) in DECISION_ERROR_KINDS.iter().zip(m.decisions.errors()) {
            out.sample(name, &[listener, policy, ("kind", kind)], count);
        }
    });
    let name = "wasmroute_policy_info";
    out.family(
        name,
        Kind::Gauge,
        "The module version serving each policy (value 1).",
    );
    let mut seen: Vec<u64> = Vec::new();
    for (_, state) in states {
        let module = &state.policy.module;
        if seen.contains(&module.version) {
            continue;
        }
        seen.push(module.version);
        let (version, digest) = (
            module.version.to_string(),
            super::status::hex(&module.digest),
        );
        let labels = [
            ("policy", module.name.as_str()),
            ("version", &version),
            ("sha256", &digest),
        ];
        out.sample(name, &labels, 1);
    }
}

fn backends(out: &mut Exposition, snapshot: &Snapshot) {
    let pools = &snapshot.pools;
    let name = "wasmroute_upstream_response_seconds";
    out.family(
        name,
        Kind::Histogram,
        "Time from sending a request to a backend to its response head.",
    );
    each_backend(pools, |pool, address, backend| {
        let labels = [("pool", pool), ("backend", address)];
        out.histogram(name, &labels, &backend.stats.upstream_response.snapshot());
    });
    let name = "wasmroute_backend_up";
    out.family(
        name,
        Kind::Gauge,
        "1 when the active check passes and the backend is not ejected.",
    );
    each_backend(pools, |pool, address, backend| {
        let up = backend.stats.check_up() && !backend.stats.ejected();
        out.sample(name, &[("pool", pool), ("backend", address)], u8::from(up));
    });
    let name = "wasmroute_backend_active_requests";
    out.family(name, Kind::Gauge, "Requests in flight to the backend.");
    each_backend(pools, |pool, address, backend| {
        out.sample(
            name,
            &[("pool", pool), ("backend", address)],
            backend.stats.active(),
        );
    });
    let name = "wasmroute_backend_ejections_total";
    out.family(
        name,
        Kind::Counter,
        "Times passive health checking ejected the backend.",
    );
    each_backend(pools, |pool, address, backend| {
        out.sample(
            name,
            &[("pool", pool), ("backend", address)],
            backend.stats.ejections.get(),
        );
    });
    let name = "wasmroute_health_checks_total";
    out.family(
        name,
        Kind::Counter,
        "Active health checks by result: pass, fail.",
    );
    each_backend(pools, |pool, address, backend| {
        let stats = &backend.stats;
        for (result, count) in [
            ("pass", stats.checks_passed.get()),
            ("fail", stats.checks_failed.get()),
        ] {
            out.sample(
                name,
                &[("pool", pool), ("backend", address), ("result", result)],
                count,
            );
        }
    });
    let name = "wasmroute_retries_total";
    out.family(
        name,
        Kind::Counter,
        "Requests sent again to another backend after a failed attempt.",
    );
    for pool in pools {
        out.sample(name, &[("pool", pool.name.as_str())], pool.retries.get());
    }
}

/// Calls `each` with every backend of `pools` (pool name, address text).
/// Calls `each` with the `listener` and `policy` labels of every listener
/// and its metrics.
fn each_policy(
    states: &States,
    mut each: impl FnMut([(&str, &str); 2], &crate::http::metrics::ListenerMetrics),
) {
    for (listener, state) in states {
        let m = &state.metrics;
        each([("listener", listener), ("policy", &m.policy)], m);
    }
}

fn each_backend(
    pools: &[Arc<BackendPool>],
    mut each: impl FnMut(&str, &str, &crate::pool::Backend),
) {
    for pool in pools {
        for backend in &pool.backends {
            each(&pool.name, &backend.address.to_string(), backend);
        }
    }
}

fn connections(out: &mut Exposition, states: &States) {
    let families: [(&str, Kind, &str); 5] = [
        (
            "wasmroute_connections_active",
            Kind::Gauge,
            "Client connections open now.",
        ),
        (
            "wasmroute_connections_total",
            Kind::Counter,
            "Client connections accepted.",
        ),
        (
            "wasmroute_tls_handshake_errors_total",
            Kind::Counter,
            "TLS handshakes with clients that failed.",
        ),
        (
            "wasmroute_tcp_received_bytes_total",
            Kind::Counter,
            "Bytes relayed from clients to backends (tcp listeners).",
        ),
        (
            "wasmroute_tcp_sent_bytes_total",
            Kind::Counter,
            "Bytes relayed from backends to clients (tcp listeners).",
        ),
    ];
    for (index, (name, kind, help)) in families.into_iter().enumerate() {
        out.family(name, kind, help);
        for (listener, state) in states {
            let c = &state.metrics.connections;
            let value = [
                c.active.get(),
                c.total.get(),
                c.tls_handshake_errors.get(),
                c.received_bytes.get(),
                c.sent_bytes.get(),
            ][index];
            out.sample(name, &[("listener", listener.as_str())], value);
        }
    }
}

fn dns_resolutions(out: &mut Exposition, published: &Published) {
    let name = "wasmroute_dns_resolutions_total";
    out.family(
        name,
        Kind::Counter,
        "Lookups of a pool's backend names, by result: ok, changed, failed, empty.",
    );
    for (pool, counters) in published.all_dns_resolutions().iter() {
        for resolution in Resolution::ALL {
            let labels = [("pool", pool.as_str()), ("result", resolution.label())];
            out.sample(name, &labels, counters.of(resolution).get());
        }
    }
}

fn reloads(out: &mut Exposition, published: &Published) {
    let name = "wasmroute_config_reloads_total";
    out.family(
        name,
        Kind::Counter,
        "Config reloads by result: ok, refused.",
    );
    out.sample(name, &[("result", "ok")], published.config_reloads_ok.get());
    out.sample(
        name,
        &[("result", "refused")],
        published.config_reloads_refused.get(),
    );
    let name = "wasmroute_policy_reloads_total";
    out.family(
        name,
        Kind::Counter,
        "New policy module files acted on, by result: ok, refused.",
    );
    for (policy, counters) in published.all_policy_reloads().iter() {
        out.sample(
            name,
            &[("policy", policy.as_str()), ("result", "ok")],
            counters.ok.get(),
        );
        out.sample(
            name,
            &[("policy", policy.as_str()), ("result", "refused")],
            counters.refused.get(),
        );
    }
    dns_resolutions(out, published);
    let name = "wasmroute_build_info";
    out.family(
        name,
        Kind::Gauge,
        "The wasmroute version and the policy WIT version it implements (value 1).",
    );
    out.sample(
        name,
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("wit", wit_version()),
        ],
        1,
    );
}

fn access_log(out: &mut Exposition, published: &Published) {
    let name = "wasmroute_access_log_dropped_total";
    out.family(
        name,
        Kind::Counter,
        "Access log lines dropped because the writer fell behind (its queue was full).",
    );
    out.sample(name, &[], published.access_log_dropped.get());
}

/// The process families, read from `/proc/self` now.
fn process(out: &mut Exposition) {
    if let Some(bytes) = resident_memory_bytes() {
        out.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
        );
        out.sample("process_resident_memory_bytes", &[], bytes);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        out.family("process_open_fds", Kind::Gauge, "Open file descriptors.");
        out.sample("process_open_fds", &[], entries.count());
    }
    if let Some(seconds) = cpu_seconds() {
        out.family(
            "process_cpu_seconds_total",
            Kind::Counter,
            "User and system CPU time spent, in seconds.",
        );
        out.sample("process_cpu_seconds_total", &[], seconds);
    }
}

/// `VmRSS` of `/proc/self/status`.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// `utime + stime` of `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    Some((user + system) as f64 / ticks as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wit_version_is_found() {
        let version = super::wit_version();
        assert!(version.split('.').count() == 3, "{version}");
    }

    #[test]
    fn process_figures_are_read() {
        assert!(super::resident_memory_bytes().is_some_and(|b| b > 0));
        assert!(super::cpu_seconds().is_some());
    }
}
