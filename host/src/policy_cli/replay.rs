//! Replays cases through the real module in the real policy runtime: each
//! case gets fresh pools with the backend signals it describes and a fresh
//! [`BoundPolicy`] (same engine, host functions and limits as a listener),
//! so a case never depends on the ones before it.

use std::sync::Arc;

use super::cases::{Case, Input, PoolSpec};
use super::expect::{Outcome, difference};
use crate::config::{BackendConfig, ConfigError, PoolConfig};
use crate::policy::{
    BoundPolicy, Capabilities, CompiledPolicy, ConnectionDecision, ConnectionView, Decision,
    HeaderEdit, PolicyLimits, RequestView, decide, decide_connection,
};
use crate::pool::{ActiveRequest, BackendPool, now_ms};

/// Recent requests recorded to give a backend its error rate (so the rate
/// is exact to the permille).
const ERROR_SAMPLES: u32 = 1000;

/// A case bound and ready to decide.
pub struct Prepared {
    case: Case,
    policy: Arc<BoundPolicy>,
    /// The in-flight requests that make up the backends' `active` counts,
    /// held until the case is decided.
    _active: Vec<ActiveRequest>,
}

/// The result of one case.
pub struct Verdict {
    /// The case's line: name, input, decision and expectation.
    pub line: String,
    /// What differs, when the expectation does not hold.
    pub difference: Option<String>,
}

/// Binds every case to `module` (running `init` with its pools and
/// `policy_config`), or every case that cannot be run: `init` refused, or a
/// connection case for a module that does not decide connections.
pub fn prepare(
    cases: Vec<Case>,
    module: &Arc<CompiledPolicy>,
    limits: PolicyLimits,
    file: &std::path::Path,
) -> Result<Vec<Prepared>, Vec<ConfigError>> {
    let mut prepared = Vec::with_capacity(cases.len());
    let mut errors = Vec::new();
    for case in cases {
        let (pools, active) = pools(&case.pools);
        let policy = BoundPolicy::new(
            Arc::clone(module),
            pools,
            Arc::default(),
            &case.policy_config,
            limits,
        );
        if let Err(error) = policy.validate() {
            // A file-wide `policy_config` is refused once, not per case.
            let error = ConfigError::new(file, case.config_key.clone(), error.to_string());
            if !errors.contains(&error) {
                errors.push(error);
            }
            continue;
        }
        let capabilities = policy.capabilities().unwrap_or(Capabilities::REQUESTS);
        if matches!(case.input, Input::Connection(_))
            && !capabilities.contains(Capabilities::CONNECTIONS)
        {
            let reason = format!(
                "policy `{}` does not decide connections (it exports no decide-connection)",
                module.name
            );
            errors.push(ConfigError::new(
                file,
                format!("{}.connection", case.key),
                reason,
            ));
            continue;
        }
        prepared.push(Prepared {
            case,
            policy: Arc::new(policy),
            _active: active,
        });
    }
    match errors.is_empty() {
        true => Ok(prepared),
        false => Err(errors),
    }
}

/// Decides one prepared case and compares the decision with its
/// expectation.
pub fn run(prepared: Prepared) -> Verdict {
    let Prepared { case, policy, .. } = prepared;
    let (input, outcome) = match case.input {
        Input::Request(request) => {
            let mut summary = format!("{} {}", request.head.method, request.head.uri);
            push_tried(&mut summary, &case.pools, &request.tried);
            let mut view = RequestView::new(
                request.head,
                request.client_ip,
                request.tls,
                request.server_name,
            );
            view.tried = request.tried;
            let (_, result) = decide(&policy, view);
            let outcome = match result {
                Ok(decision) => request_outcome(&case.pools, decision),
                Err(error) => Outcome::Error(error.to_string()),
            };
            (summary, outcome)
        }
        Input::Connection(connection) => {
            let mut summary = connection_summary(&connection);
            push_tried(&mut summary, &case.pools, &connection.tried);
            let reads_hello = policy
                .capabilities()
                .is_some_and(|c| c.contains(Capabilities::CLIENT_HELLO));
            // The proxy peeks the ClientHello only for a policy that reads it.
            let hello = connection.hello.filter(|_| reads_hello);
            let mut view = ConnectionView::new(connection.client, connection.local_port, hello);
            view.tried = connection.tried;
            let (_, result) = decide_connection(&policy, view);
            let outcome = match result {
                Ok(decision) => connection_outcome(&case.pools, decision),
                Err(error) => Outcome::Error(error.to_string()),
            };
            (summary, outcome)
        }
    };
    let difference = difference(&case.expect, &outcome);
    let verdict = match difference {
        None => "ok  ",
        Some(_) => "FAIL",
    };
    Verdict {
        line: format!(
            "{verdict} {}: {input} -> {outcome} (expect {})",
            case.name, case.expect
        ),
        difference,
    }
}

fn connection_summary(connection: &super::cases::ConnectionInput) -> String {
    let mut text = format!(
        "connection from {} to port {}",
        connection.client, connection.local_port
    );
    if let Some(hello) = &connection.hello {
        match &hello.server_name {
            Some(name) => text.push_str(&format!(", TLS for {name}")),
            None => text.push_str(", TLS"),
        }
        if !hello.alpn.is_empty() {
            text.push_str(&format!(" (ALPN {})", hello.alpn.join(",")));
        }
    }
    text
}

/// ` (retry after web 10.0.0.1:80)` for a retry view.
fn push_tried(summary: &mut String, pools: &[PoolSpec], tried: &[(u32, u32)]) {
    let names: Vec<String> = (tried.iter())
        .map(|&(pool, backend)| {
            let pool = &pools[pool as usize];
            format!("{} {}", pool.name, pool.backends[backend as usize].address)
        })
        .collect();
    if !names.is_empty() {
        summary.push_str(&format!(" (retry after {})", names.join(", ")));
    }
}

/// Fresh pools with the signals `specs` describe, and the in-flight
/// requests that hold their `active` counts.
fn pools(specs: &[PoolSpec]) -> (Arc<[Arc<BackendPool>]>, Vec<ActiveRequest>) {
    let mut active = Vec::new();
    let pools = specs
        .iter()
        .map(|spec| {
            let config = PoolConfig {
                name: spec.name.clone(),
                backends: (spec.backends.iter())
                    .map(|b| BackendConfig {
                        address: b.address,
                        weight: b.weight,
                    })
                    .collect(),
                ..PoolConfig::default()
            };
            let pool = Arc::new(BackendPool::new(&config, None));
            for (backend, spec) in pool.backends.iter().zip(&spec.backends) {
                let stats = &backend.stats;
                stats.set_healthy(spec.healthy);
                if spec.ewma_us > 0 {
                    stats.record_latency(std::time::Duration::from_micros(spec.ewma_us.into()));
                }
                if let Some(permille) = spec.error_permille {
                    let now = now_ms();
                    for i in 0..ERROR_SAMPLES {
                        stats.errors.record(i < permille, now);
                    }
                }
                if let Some((cpu, memory)) = spec.load {
                    stats.load.store(cpu, memory, now_ms());
                }
                active.extend((0..spec.active).map(|_| backend.start_request()));
            }
            pool
        })
        .collect();
    (pools, active)
}

fn request_outcome(pools: &[PoolSpec], decision: Decision) -> Outcome {
    match decision {
        Decision::Forward(forward) => Outcome::Forward {
            pool: pools[forward.pool as usize].name.clone(),
            backend: pools[forward.pool as usize].backends[forward.backend as usize].address,
            headers: set_headers(&forward.response_edits),
            request_headers: set_headers(&forward.request_edits),
        },
        Decision::Respond(respond) => Outcome::Respond {
            status: respond.status,
            headers: respond.headers,
            body: String::from_utf8_lossy(&respond.body).into_owned(),
        },
    }
}

fn connection_outcome(pools: &[PoolSpec], decision: ConnectionDecision) -> Outcome {
    match decision {
        ConnectionDecision::Forward(forward) => Outcome::Forward {
            pool: pools[forward.pool as usize].name.clone(),
            backend: pools[forward.pool as usize].backends[forward.backend as usize].address,
            headers: Vec::new(),
            request_headers: Vec::new(),
        },
        ConnectionDecision::Reject => Outcome::Reject,
    }
}

/// The headers a list of edits sets or appends (removals left out).
fn set_headers(edits: &[HeaderEdit]) -> Vec<(String, String)> {
    edits
        .iter()
        .filter_map(|edit| match edit {
            HeaderEdit::Set(pair) | HeaderEdit::Append(pair) => Some(pair.clone()),
            HeaderEdit::Remove(_) => None,
        })
        .collect()
}
