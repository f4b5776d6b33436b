//! Which admin request is which, who may make it, and the answers of the
//! small endpoints (`/live`, `/ready`, `/reload`, drain and enable);
//! `/shadow/{listener}` is answered by `super::shadow`.

use std::net::SocketAddr;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

use super::{AdminContext, Answer};

/// An admin resource, as its path names it.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Metrics,
    Live,
    Ready,
    Status,
    Reload,
    Shadow {
        listener: String,
    },
    Backend {
        pool: String,
        address: String,
        drain: bool,
    },
}

impl Resource {
    fn parse(path: &str) -> Option<Resource> {
        let simple = match path {
            "/metrics" => Some(Resource::Metrics),
            "/live" => Some(Resource::Live),
            "/ready" => Some(Resource::Ready),
            "/status" => Some(Resource::Status),
            "/reload" => Some(Resource::Reload),
            _ => None,
        };
        simple
            .or_else(|| Resource::parse_shadow(path))
            .or_else(|| Resource::parse_backend(path))
    }

    /// `/shadow/{listener}`.
    fn parse_shadow(path: &str) -> Option<Resource> {
        let listener = percent_decode(path.strip_prefix("/shadow/")?)?;
        let whole = !listener.is_empty() && !listener.contains('/');
        whole.then_some(Resource::Shadow { listener })
    }

    /// `/pools/{pool}/backends/{address}/drain` or `.../enable`.
    fn parse_backend(path: &str) -> Option<Resource> {
        let mut parts = path.strip_prefix("/pools/")?.split('/');
        let pool = percent_decode(parts.next()?)?;
        if parts.next()? != "backends" {
            return None;
        }
        let address = percent_decode(parts.next()?)?;
        let drain = match parts.next()? {
            "drain" => true,
            "enable" => false,
            _ => return None,
        };
        let complete = parts.next().is_none() && !pool.is_empty() && !address.is_empty();
        complete.then_some(Resource::Backend {
            pool,
            address,
            drain,
        })
    }

    /// The one method the resource answers.
    fn method(&self) -> Method {
        match self {
            Resource::Metrics
            | Resource::Live
            | Resource::Ready
            | Resource::Status
            | Resource::Shadow { .. } => Method::GET,
            Resource::Reload | Resource::Backend { .. } => Method::POST,
        }
    }
}

/// Answers one admin request.
pub(super) async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    context: &AdminContext,
) -> Answer {
    let Some(resource) = Resource::parse(request.uri().path()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let allowed = resource.method();
    if request.method() != allowed {
        let mut answer = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = HeaderValue::from_static(match allowed {
            Method::POST => "POST",
            _ => "GET",
        });
        answer.headers_mut().insert(header::ALLOW, allow);
        return answer;
    }
    if allowed == Method::POST
        && let Err(refusal) = authorize(&request, peer, context)
    {
        return *refusal;
    }
    match resource {
        Resource::Metrics => super::render::metrics(context),
        Resource::Live => text(StatusCode::OK, "live\n"),
        Resource::Ready => match context.lifecycle.is_ready() {
            true => text(StatusCode::OK, "ready\n"),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        },
        Resource::Status => json(StatusCode::OK, &super::status::status(context)),
        Resource::Reload => reload(context).await,
        Resource::Shadow { listener } => super::shadow::divergences(context, &listener),
        Resource::Backend {
            pool,
            address,
            drain,
        } => set_drained(context, &pool, &address, drain),
    }
}

/// Who may change state: with a token, whoever sends it; without one, a
/// loopback peer.
fn authorize(
    request: &Request<Incoming>,
    peer: SocketAddr,
    context: &AdminContext,
) -> Result<(), Box<Answer>> {
    let snapshot = context.published.snapshot();
    let token = snapshot
        .as_ref()
        .and_then(|s| s.config.admin.as_ref())
        .and_then(|admin| admin.token.as_deref());
    let presented = request.headers().get(header::AUTHORIZATION);
    match refusal(token, presented, peer) {
        None => Ok(()),
        Some(Refusal::Unauthorized) => {
            let mut answer = text(
                StatusCode::UNAUTHORIZED,
                "unauthorized: bearer token required\n",
            );
            let challenge = HeaderValue::from_static("Bearer realm=\"wasmroute-admin\"");
            answer
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
            Err(Box::new(answer))
        }
        Some(Refusal::WrongToken) => Err(Box::new(text(
            StatusCode::FORBIDDEN,
            "forbidden: wrong token\n",
        ))),
        Some(Refusal::NotLoopback) => Err(Box::new(text(
            StatusCode::FORBIDDEN,
            "forbidden: without [admin] token, changes are accepted from loopback only\n",
        ))),
    }
}

/// Why a state-changing request is refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// A token is set and the request has none (401).
    Unauthorized,
    /// A token is set and the request has another one (403).
    WrongToken,
    /// No token is set and the peer is not loopback (403).
    NotLoopback,
}

/// The rule itself: `token` is the configured one, `presented` the
/// request's `Authorization` header.
fn refusal(
    token: Option<&str>,
    presented: Option<&HeaderValue>,
    peer: SocketAddr,
) -> Option<Refusal> {
    let Some(token) = token else {
        // An IPv4 peer of a dual-stack (`[::]`) socket comes as
        // `::ffff:a.b.c.d`: `::ffff:127.0.0.1` is loopback too.
        return (!peer.ip().to_canonical().is_loopback()).then_some(Refusal::NotLoopback);
    };
    let bearer = presented
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match bearer {
        None => Some(Refusal::Unauthorized),
        Some(bearer) if same_secret(bearer.trim().as_bytes(), token.as_bytes()) => None,
        Some(_) => Some(Refusal::WrongToken),
    }
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn reload(context: &AdminContext) -> Answer {
    match context.control.reload().await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "reloaded": true })),
        Err(reasons) if reasons == "the server has stopped" => {
            text(StatusCode::SERVICE_UNAVAILABLE, "the server has stopped\n")
        }
        Err(reasons) => {
            let lines: Vec<&str> = reasons.lines().collect();
            json(StatusCode::BAD_REQUEST, &serde_json::json!(lines))
        }
    }
}

/// Drains a backend (no new requests; in-flight ones finish) or enables it.
fn set_drained(context: &AdminContext, pool: &str, address: &str, drain: bool) -> Answer {
    let snapshot = context.published.snapshot();
    let found = snapshot.as_ref().and_then(|s| {
        let pool = s.pools.iter().find(|p| p.name == pool)?;
        let address: SocketAddr = address.parse().ok()?;
        pool.backends.iter().find(|b| b.address == address).cloned()
    });
    let Some(backend) = found else {
        return text(StatusCode::NOT_FOUND, "no such pool or backend\n");
    };
    backend.stats.set_drained(drain);
    let action = if drain { "drained" } else { "enabled" };
    tracing::info!(%pool, backend = %backend.address, "backend {action} by the admin endpoint");
    let state = super::status::backend_state(&backend.stats);
    let answer = serde_json::json!({
        "pool": pool,
        "backend": backend.address.to_string(),
        "state": state,
    });
    json(StatusCode::OK, &answer)
}

/// `%XX` escapes decoded (for IPv6 brackets and colons); `None` when an
/// escape is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A plain-text answer.
pub(super) fn text(status: StatusCode, body: &'static str) -> Answer {
    answer(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

/// A JSON answer.
pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    answer(status, "application/json", Bytes::from(body))
}

/// An answer with a body of `content_type`.
pub(super) fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut answer = Response::new(Full::new(body));
    *answer.status_mut() = status;
    let value = HeaderValue::from_static(content_type);
    answer.headers_mut().insert(header::CONTENT_TYPE, value);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources() {
        assert_eq!(Resource::parse("/metrics"), Some(Resource::Metrics));
        assert_eq!(Resource::parse("/metrics/"), None);
        assert_eq!(
            Resource::parse("/pools/web/backends/127.0.0.1:80/drain"),
            Some(Resource::Backend {
                pool: "web".into(),
                address: "127.0.0.1:80".into(),
                drain: true
            })
        );
        assert_eq!(
            Resource::parse("/pools/web/backends/%5B%3A%3A1%5D%3A80/enable"),
            Some(Resource::Backend {
                pool: "web".into(),
                address: "[::1]:80".into(),
                drain: false
            })
        );
        assert_eq!(
            Resource::parse("/shadow/edge"),
            Some(Resource::Shadow {
                listener: "edge".into()
            })
        );
        assert_eq!(Resource::parse("/shadow/"), None);
        assert_eq!(Resource::parse("/shadow/edge/more"), None);
        assert_eq!(Resource::parse("/pools/web/backends/x/drain/more"), None);
        assert_eq!(Resource::parse("/pools/web/servers/x/drain"), None);
        assert_eq!(Resource::parse("/pools//backends/x/drain"), None);
    }

    #[test]
    fn changes_need_loopback_or_the_token() {
        let (local, remote): (SocketAddr, SocketAddr) = (
            "127.0.0.1:5".parse().unwrap(),
            "192.0.2.7:5".parse().unwrap(),
        );
        assert_eq!(refusal(None, None, local), None);
        assert_eq!(refusal(None, None, remote), Some(Refusal::NotLoopback));
        let token = Some("0123456789abcdef");
        let right = HeaderValue::from_static("Bearer 0123456789abcdef");
        let wrong = HeaderValue::from_static("Bearer 0123456789abcdeX");
        let basic = HeaderValue::from_static("Basic 0123456789abcdef");
        assert_eq!(refusal(token, Some(&right), remote), None);
        assert_eq!(refusal(token, None, local), Some(Refusal::Unauthorized));
        assert_eq!(
            refusal(token, Some(&basic), remote),
            Some(Refusal::Unauthorized)
        );
        assert_eq!(
            refusal(token, Some(&wrong), local),
            Some(Refusal::WrongToken)
        );
    }

    #[test]
    fn an_ipv4_mapped_loopback_peer_is_loopback() {
        let peer = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert_eq!(refusal(None, None, peer("[::ffff:127.0.0.1]:5")), None);
        assert_eq!(refusal(None, None, peer("[::ffff:127.8.9.10]:5")), None);
        assert_eq!(refusal(None, None, peer("[::1]:5")), None);
        assert_eq!(
            refusal(None, None, peer("[::ffff:192.0.2.7]:5")),
            Some(Refusal::NotLoopback)
        );
        assert_eq!(
            refusal(None, None, peer("[2001:db8::1]:5")),
            Some(Refusal::NotLoopback)
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
