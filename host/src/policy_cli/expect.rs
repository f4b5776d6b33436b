//! What a case expects the policy to decide, and how a decision is
//! compared with it.

use std::net::SocketAddr;

use super::cases::{Errors, PoolSpec, socket_address, unknown_pool};
use super::raw::RawExpect;

/// A validated expectation.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Forwarded: to `pool` (when given), to `backend` (when given),
    /// setting the given headers.
    Forward {
        /// The pool's name.
        pool: Option<String>,
        /// The backend's address.
        backend: Option<SocketAddr>,
        /// Response headers the decision sets or appends.
        headers: Vec<(String, String)>,
        /// Request headers the decision sets or appends.
        request_headers: Vec<(String, String)>,
    },
    /// Answered by the proxy with `status`.
    Respond {
        /// The status.
        status: u16,
        /// Headers of the answer.
        headers: Vec<(String, String)>,
        /// The answer's body, when given.
        body: Option<String>,
    },
    /// A connection refused.
    Reject,
}

/// A decision as `policy test` shows and compares it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Forward to a backend.
    Forward {
        /// Pool name.
        pool: String,
        /// Backend address.
        backend: SocketAddr,
        /// Response headers set or appended.
        headers: Vec<(String, String)>,
        /// Request headers set or appended.
        request_headers: Vec<(String, String)>,
    },
    /// An answer from the proxy.
    Respond {
        /// Status.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body, lossily as text.
        body: String,
    },
    /// A refused connection.
    Reject,
    /// The decision failed (trap, timeout, invalid decision).
    Error(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Forward { pool, backend, .. } => write!(f, "pool {pool}, backend {backend}"),
            Outcome::Respond { status, .. } => write!(f, "status {status}"),
            Outcome::Reject => f.write_str("reject"),
            Outcome::Error(error) => write!(f, "error: {error}"),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let headers = |parts: &mut Vec<String>, label: &str, list: &[(String, String)]| {
            parts.extend(list.iter().map(|(n, v)| format!("{label} {n}: {v}")));
        };
        match self {
            Expect::Forward {
                pool,
                backend,
                headers: response,
                request_headers,
            } => {
                parts.extend(pool.iter().map(|p| format!("pool {p}")));
                parts.extend(backend.iter().map(|b| format!("backend {b}")));
                headers(&mut parts, "header", response);
                headers(&mut parts, "request header", request_headers);
            }
            Expect::Respond {
                status,
                headers: response,
                body,
            } => {
                parts.push(format!("status {status}"));
                headers(&mut parts, "header", response);
                parts.extend(body.iter().map(|b| format!("body {b:?}")));
            }
            Expect::Reject => parts.push("reject".into()),
        }
        f.write_str(&parts.join(", "))
    }
}

/// What differs between `expect` and `got`; `None` when it holds.
pub fn difference(expect: &Expect, got: &Outcome) -> Option<String> {
    let mismatch = || Some(format!("expected {expect}, got {got}"));
    match (expect, got) {
        (
            Expect::Forward {
                pool,
                backend,
                headers,
                request_headers,
            },
            Outcome::Forward {
                pool: got_pool,
                backend: got_backend,
                headers: got_headers,
                request_headers: got_request,
            },
        ) => {
            if pool.as_ref().is_some_and(|p| p != got_pool)
                || backend.is_some_and(|b| b != *got_backend)
            {
                return mismatch();
            }
            missing_header("header", headers, got_headers)
                .or_else(|| missing_header("request header", request_headers, got_request))
        }
        (
            Expect::Respond {
                status,
                headers,
                body,
            },
            Outcome::Respond {
                status: got_status,
                headers: got_headers,
                body: got_body,
            },
        ) => {
            if status != got_status {
                return mismatch();
            }
            if let Some(body) = body.as_ref().filter(|b| *b != got_body) {
                return Some(format!("expected body {body:?}, got {got_body:?}"));
            }
            missing_header("header", headers, got_headers)
        }
        (Expect::Reject, Outcome::Reject) => None,
        _ => mismatch(),
    }
}

/// The first expected header the decision does not set, as a difference.
fn missing_header(
    label: &str,
    want: &[(String, String)],
    got: &[(String, String)],
) -> Option<String> {
    let (name, value) = want.iter().find(|(n, v)| {
        !got.iter()
            .any(|(gn, gv)| gn.eq_ignore_ascii_case(n) && gv == v)
    })?;
    let set: Vec<String> = got
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| format!("{v:?}"))
        .collect();
    let got = match set.is_empty() {
        true => "not set".to_owned(),
        false => set.join(", "),
    };
    Some(format!("expected {label} {name}: {value:?}, got {got}"))
}

/// Validates the `expect` of case `case` (`cases[N]`), a connection case
/// when `connection`.
pub(super) fn validate(
    errors: &mut Errors<'_>,
    case: &str,
    pools: &[PoolSpec],
    connection: bool,
    raw: RawExpect,
) -> Option<Expect> {
    let key = format!("{case}.expect");
    let before = errors.errors.len();
    let pool = raw.pool.as_deref().filter(|pool| {
        let known = PoolSpec::index_of(pools, pool).is_some();
        if !known {
            errors.add(format!("{key}.pool"), unknown_pool(pools, pool));
        }
        known
    });
    let backend = raw
        .backend
        .as_deref()
        .and_then(|text| socket_address(errors, &format!("{key}.backend"), text));
    if let Some(address) = backend {
        check_backend(errors, &key, pools, pool, address);
    }
    let forward = raw.pool.is_some() || raw.backend.is_some();
    let answers = raw.status.is_some();
    let rejects = raw.reject.is_some();
    match (forward, answers, rejects) {
        (false, false, false) => {
            let what = match connection {
                true => "pool, backend or reject = true",
                false => "pool, backend or status",
            };
            errors.add(key.as_str(), format!("names no expectation: give {what}"));
        }
        (true, true, _) | (true, _, true) | (_, true, true) => errors.add(
            key.as_str(),
            "a decision forwards, answers or rejects: give one of pool/backend, status, reject",
        ),
        _ => {}
    }
    if connection {
        for (given, field) in [
            (answers, "status"),
            (!raw.headers.is_empty(), "headers"),
            (!raw.request_headers.is_empty(), "request_headers"),
            (raw.body.is_some(), "body"),
        ] {
            if given {
                errors.add(
                    format!("{key}.{field}"),
                    "a connection decision has none (forward or reject only)",
                );
            }
        }
    } else if rejects {
        errors.add(
            format!("{key}.reject"),
            "only connections are rejected; a request is answered (status)",
        );
    }
    if raw.reject == Some(false) {
        errors.add(
            format!("{key}.reject"),
            "only `reject = true`; expect a pool or backend instead",
        );
    }
    if answers && !raw.request_headers.is_empty() {
        errors.add(
            format!("{key}.request_headers"),
            "an answer sends nothing to a backend",
        );
    }
    if let Some(status) = raw.status.filter(|s| !(200..=599).contains(s)) {
        errors.add(
            format!("{key}.status"),
            format!("{status} is not a final HTTP status (200..=599)"),
        );
    }
    if raw.body.is_some() && !answers {
        errors.add(format!("{key}.body"), "only an answer (status) has a body");
    }
    if errors.errors.len() > before {
        return None;
    }
    let pairs = |table: std::collections::BTreeMap<String, String>| table.into_iter().collect();
    Some(match (raw.status, rejects) {
        (Some(status), _) => Expect::Respond {
            status,
            headers: pairs(raw.headers),
            body: raw.body,
        },
        (None, true) => Expect::Reject,
        (None, false) => Expect::Forward {
            pool: pool.map(str::to_owned),
            backend,
            headers: pairs(raw.headers),
            request_headers: pairs(raw.request_headers),
        },
    })
}

/// Refuses an expected backend that is in no pool (or not in the expected
/// one).
fn check_backend(
    errors: &mut Errors<'_>,
    key: &str,
    pools: &[PoolSpec],
    pool: Option<&str>,
    address: SocketAddr,
) {
    let holds = |p: &PoolSpec| p.backends.iter().any(|b| b.address == address);
    let found = match pool {
        Some(name) => pools.iter().filter(|p| p.name == name).any(holds),
        None => pools.iter().any(holds),
    };
    if !found {
        let reason = match pool {
            Some(name) => format!("pool `{name}` has no backend {address}"),
            None => format!("no pool has a backend {address}"),
        };
        errors.add(format!("{key}.backend"), reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(pool: &str, headers: &[(&str, &str)]) -> Outcome {
        Outcome::Forward {
            pool: pool.into(),
            backend: "10.0.0.1:80".parse().unwrap(),
            headers: (headers.iter())
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            request_headers: Vec::new(),
        }
    }

    #[test]
    fn a_forward_matches_on_what_is_given() {
        let expect = Expect::Forward {
            pool: Some("web".into()),
            backend: None,
            headers: vec![("X-Served-By".into(), "edge".into())],
            request_headers: Vec::new(),
        };
        assert_eq!(
            difference(&expect, &forward("web", &[("x-served-by", "edge")])),
            None
        );
        assert_eq!(
            difference(&expect, &forward("web", &[("x-served-by", "other")])).unwrap(),
            "expected header X-Served-By: \"edge\", got \"other\""
        );
        assert_eq!(
            difference(&expect, &forward("web", &[])).unwrap(),
            "expected header X-Served-By: \"edge\", got not set"
        );
        assert_eq!(
            difference(&expect, &forward("video", &[("x-served-by", "edge")])).unwrap(),
            "expected pool web, header X-Served-By: edge, got pool video, backend 10.0.0.1:80"
        );
    }

    #[test]
    fn kinds_of_decision_never_match_each_other() {
        let answer = Expect::Respond {
            status: 503,
            headers: Vec::new(),
            body: Some("down\n".into()),
        };
        let error = Outcome::Error("decision timed out".into());
        assert_eq!(
            difference(&answer, &error).unwrap(),
            "expected status 503, body \"down\\n\", got error: decision timed out"
        );
        assert!(difference(&Expect::Reject, &forward("web", &[])).is_some());
        let got = Outcome::Respond {
            status: 503,
            headers: Vec::new(),
            body: "no healthy backend\n".into(),
        };
        assert_eq!(
            difference(&answer, &got).unwrap(),
            "expected body \"down\\n\", got \"no healthy backend\\n\""
        );
    }
}
