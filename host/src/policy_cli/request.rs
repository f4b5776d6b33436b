//! The request head of a case: method, path (with query), version,
//! headers (repeated ones as arrays) and cookies (folded into one `Cookie`
//! header), each checked as hyper would parse it off the wire.

use super::cases::Errors;
use super::raw::{RawHeaderValues, RawRequest};

/// The head of `raw`, or `None` after reporting what is wrong (under
/// `key`, `cases[N].request`).
pub(super) fn head(
    errors: &mut Errors<'_>,
    key: &str,
    raw: RawRequest,
) -> Option<http::request::Parts> {
    let before = errors.errors.len();
    let mut builder = http::Request::builder();
    if let Some(method) = method(errors, key, raw.method.as_deref().unwrap_or("GET")) {
        builder = builder.method(method);
    }
    let path = raw.path.as_deref().unwrap_or("/");
    match path.parse::<http::uri::PathAndQuery>() {
        Ok(parsed) if path.starts_with('/') || path == "*" => {
            builder = builder.uri(http::Uri::from(parsed));
        }
        _ => errors.add(
            format!("{key}.path"),
            format!("{path:?} is not a request path (`/` and an optional `?query`)"),
        ),
    }
    if let Some(version) = version(errors, key, raw.http_version.as_deref()) {
        builder = builder.version(version);
    }
    let mut headers = http::HeaderMap::new();
    for (name, values) in &raw.headers {
        let values = match values {
            RawHeaderValues::One(value) => std::slice::from_ref(value),
            RawHeaderValues::Many(values) => values.as_slice(),
        };
        header(
            errors,
            &format!("{key}.headers.{name}"),
            &mut headers,
            name,
            values,
        );
    }
    if !raw.cookies.is_empty() {
        let folded: Vec<String> = (raw.cookies.iter())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let cookie_key = format!("{key}.cookies");
        header(
            errors,
            &cookie_key,
            &mut headers,
            "cookie",
            &[folded.join("; ")],
        );
    }
    if errors.errors.len() > before {
        return None;
    }
    let (mut head, ()) = builder.body(()).ok()?.into_parts();
    head.headers = headers;
    Some(head)
}

/// A method as a client sends it: an upper-case token (`GET`, `PROPFIND`).
fn method(errors: &mut Errors<'_>, key: &str, text: &str) -> Option<http::Method> {
    let upper = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let parsed = http::Method::from_bytes(text.as_bytes()).ok();
    match parsed {
        Some(method) if !text.is_empty() && text.chars().all(upper) => Some(method),
        _ => {
            let reason =
                format!("{text:?} is not an HTTP method (an upper-case token: GET, POST...)");
            errors.add(format!("{key}.method"), reason);
            None
        }
    }
}

fn version(errors: &mut Errors<'_>, key: &str, text: Option<&str>) -> Option<http::Version> {
    match text.unwrap_or("1.1") {
        "1.0" | "HTTP/1.0" => Some(http::Version::HTTP_10),
        "1.1" | "HTTP/1.1" => Some(http::Version::HTTP_11),
        "2" | "HTTP/2" => Some(http::Version::HTTP_2),
        other => {
            let reason = format!("{other:?} is not an HTTP version: \"1.0\", \"1.1\" or \"2\"");
            errors.add(format!("{key}.http_version"), reason);
            None
        }
    }
}

fn header(
    errors: &mut Errors<'_>,
    key: &str,
    headers: &mut http::HeaderMap,
    name: &str,
    values: &[String],
) {
    let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
        errors.add(key, format!("{name:?} is not a header name"));
        return;
    };
    for value in values {
        match http::HeaderValue::from_str(value) {
            Ok(value) => {
                headers.append(name.clone(), value);
            }
            Err(_) => errors.add(key, format!("{value:?} is not a header value")),
        }
    }
}
