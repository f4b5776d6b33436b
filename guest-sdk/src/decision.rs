//! What a policy returns for a request, and the two builders that make it:
//! [`Forward`] (to a backend, with header edits) and [`Respond`] (a local
//! answer, with headers and a body).

use crate::PoolId;
use crate::bindings::types::{self, HeaderEdit};

/// What to do with one request: forward it to a backend, or answer it
/// directly.
///
/// [`Decision::forward`] starts a [`Forward`], [`Decision::respond`] a
/// [`Respond`]; both turn into a `Decision` with `.into()`. Each builder
/// has only the methods that apply to it, so a body on a forwarded
/// request or a request-header edit on a local answer does not compile:
///
/// ```
/// # use wasmroute_policy::{Decision, PoolId};
/// let to_backend: Decision = Decision::forward(PoolId::DEFAULT, 2)
///     .set_request_header("x-routed-by", "my-policy")
///     .append_response_header("set-cookie", "backend=2; Path=/")
///     .into();
/// let redirect: Decision = Decision::respond(308)
///     .header("location", "https://example.com/")
///     .body("moved\n")
///     .into();
/// assert_eq!(to_backend.target(), Some((PoolId::DEFAULT, 2)));
/// assert_eq!(redirect.status(), Some(308));
/// ```
///
/// ```compile_fail
/// # use wasmroute_policy::{Decision, PoolId};
/// let _ = Decision::forward(PoolId::DEFAULT, 2).body("a forwarded request has no body");
/// ```
///
/// ```compile_fail
/// # use wasmroute_policy::Decision;
/// let _ = Decision::respond(200).set_request_header("x-a", "a local answer is not sent upstream");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Decision(types::Decision);

/// A request sent to a backend, with header edits: built by
/// [`Decision::forward`], turned into a [`Decision`] with `.into()`. Edits
/// are applied in the order they were added.
#[derive(Debug, Clone)]
#[must_use]
pub struct Forward(types::Forward);

/// A local answer, with headers and a body: built by
/// [`Decision::respond`], turned into a [`Decision`] with `.into()`.
#[derive(Debug, Clone)]
#[must_use]
pub struct Respond(types::Respond);

impl Decision {
    /// Sends the request to backend `backend` (its index in the pool, as in
    /// [`BackendStats::index`](crate::BackendStats::index)) of `pool`. The
    /// host refuses (and handles as a policy error) an unknown pool, a
    /// backend out of range or an unhealthy backend.
    pub fn forward(pool: PoolId, backend: u32) -> Forward {
        Forward(types::Forward {
            pool: pool.0,
            backend,
            request_edits: Vec::new(),
            response_edits: Vec::new(),
        })
    }

    /// Answers the request directly with `status` (200..=599; anything else
    /// is an error decision), no headers and an empty body. Add them with
    /// [`Respond::header`] and [`Respond::body`].
    pub fn respond(status: u16) -> Respond {
        Respond(types::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    /// `503 Service Unavailable` with the body `no healthy backend\n`: the
    /// answer when the chosen pool has no healthy backend.
    pub fn no_backend() -> Self {
        Decision::respond(503)
            .header("content-type", "text/plain; charset=utf-8")
            .body("no healthy backend\n")
            .into()
    }

    /// [`forward`](Self::forward) to `backend` of `pool` when a backend was
    /// picked, else [`no_backend`](Self::no_backend): what a balancing
    /// helper's `Option` answer becomes.
    pub fn forward_or_no_backend(pool: PoolId, backend: Option<u32>) -> Self {
        match backend {
            Some(backend) => Decision::forward(pool, backend).into(),
            None => Decision::no_backend(),
        }
    }

    /// The pool and backend a forward decision sends the request to; `None`
    /// for a local answer.
    pub fn target(&self) -> Option<(PoolId, u32)> {
        match &self.0 {
            types::Decision::Forward(forward) => Some((PoolId(forward.pool), forward.backend)),
            types::Decision::Respond(_) => None,
        }
    }

    /// The status of a local answer; `None` for a forward decision.
    pub fn status(&self) -> Option<u16> {
        match &self.0 {
            types::Decision::Respond(respond) => Some(respond.status),
            types::Decision::Forward(_) => None,
        }
    }

    /// The body of a local answer; `None` for a forward decision.
    pub fn body(&self) -> Option<&[u8]> {
        match &self.0 {
            types::Decision::Respond(respond) => Some(&respond.body),
            types::Decision::Forward(_) => None,
        }
    }

    /// The first value given to response header `name` (case-insensitive):
    /// a header of a local answer, or a value a forward decision sets or
    /// appends on the backend's response. `None` when there is none.
    pub fn response_header(&self, name: &str) -> Option<&str> {
        match &self.0 {
            types::Decision::Respond(respond) => respond
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str()),
            types::Decision::Forward(forward) => edited_value(&forward.response_edits, name),
        }
    }

    /// The first value a forward decision sets or appends on request header
    /// `name` (case-insensitive) before the request goes upstream; `None`
    /// for a local answer or a header it does not give a value.
    pub fn request_header(&self, name: &str) -> Option<&str> {
        match &self.0 {
            types::Decision::Forward(forward) => edited_value(&forward.request_edits, name),
            types::Decision::Respond(_) => None,
        }
    }

    /// The value handed back to the host.
    pub(crate) fn into_raw(self) -> types::Decision {
        self.0
    }
}

/// The first value `edits` set or append on header `name`.
fn edited_value<'a>(edits: &'a [HeaderEdit], name: &str) -> Option<&'a str> {
    edits.iter().find_map(|edit| match edit {
        HeaderEdit::Set((n, value)) | HeaderEdit::Append((n, value))
            if n.eq_ignore_ascii_case(name) =>
        {
            Some(value.as_str())
        }
        _ => None,
    })
}

impl Forward {
    /// Replaces every value of a request header before the request is sent
    /// upstream. Applied after the host's own proxy headers
    /// (`X-Forwarded-*`, `Forwarded`), so it may override them; hop-by-hop
    /// headers cannot be set.
    pub fn set_request_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let edit = HeaderEdit::Set((name.into(), value.into()));
        self.0.request_edits.push(edit);
        self
    }

    /// Adds a request header value, keeping existing ones.
    pub fn append_request_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let edit = HeaderEdit::Append((name.into(), value.into()));
        self.0.request_edits.push(edit);
        self
    }

    /// Removes every value of a request header.
    pub fn remove_request_header(mut self, name: impl Into<String>) -> Self {
        self.0.request_edits.push(HeaderEdit::Remove(name.into()));
        self
    }

    /// Replaces every value of a header of the backend's response.
    pub fn set_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let edit = HeaderEdit::Set((name.into(), value.into()));
        self.0.response_edits.push(edit);
        self
    }

    /// Adds a value to a header of the backend's response, keeping
    /// existing ones (a sticky-session cookie, say).
    pub fn append_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let edit = HeaderEdit::Append((name.into(), value.into()));
        self.0.response_edits.push(edit);
        self
    }
}

impl Respond {
    /// Adds a header to the answer (after any added before, also of the
    /// same name): `Decision::respond(302).header("location", url)`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body of the answer (sent with a `Content-Length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.0.body = body.into();
        self
    }
}

impl From<Forward> for Decision {
    fn from(forward: Forward) -> Self {
        Decision(types::Decision::Forward(forward.0))
    }
}

impl From<Respond> for Decision {
    fn from(respond: Respond) -> Self {
        Decision(types::Decision::Respond(respond.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits(edits: &[HeaderEdit]) -> Vec<String> {
        edits
            .iter()
            .map(|edit| match edit {
                HeaderEdit::Set((n, v)) => format!("set {n}={v}"),
                HeaderEdit::Append((n, v)) => format!("append {n}={v}"),
                HeaderEdit::Remove(n) => format!("remove {n}"),
            })
            .collect()
    }

    #[test]
    fn forward_collects_edits_in_order() {
        let decision: Decision = Decision::forward(PoolId(1), 3)
            .set_request_header("x-a", "1")
            .append_request_header("x-b", "2")
            .remove_request_header("x-c")
            .set_response_header("x-d", "4")
            .append_response_header("x-e", "5")
            .append_response_header("x-e", "6")
            .into();
        assert_eq!(decision.target(), Some((PoolId(1), 3)));
        assert_eq!((decision.status(), decision.body()), (None, None));
        assert_eq!(decision.request_header("X-A"), Some("1"));
        assert_eq!(decision.request_header("x-c"), None);
        assert_eq!(decision.response_header("x-e"), Some("5"));
        assert_eq!(decision.response_header("x-a"), None);
        let types::Decision::Forward(forward) = decision.into_raw() else {
            panic!("not a forward");
        };
        assert_eq!(
            edits(&forward.request_edits),
            ["set x-a=1", "append x-b=2", "remove x-c"]
        );
        assert_eq!(
            edits(&forward.response_edits),
            ["set x-d=4", "append x-e=5", "append x-e=6"]
        );
    }

    #[test]
    fn respond_builds_headers_and_body() {
        let decision: Decision = Decision::respond(302)
            .header("Location", "/a")
            .header("x-n", "1")
            .header("x-n", "2")
            .body("moved")
            .into();
        assert_eq!(decision.status(), Some(302));
        assert_eq!(decision.target(), None);
        assert_eq!(decision.body(), Some(&b"moved"[..]));
        assert_eq!(decision.response_header("location"), Some("/a"));
        assert_eq!(decision.request_header("location"), None);
        let types::Decision::Respond(respond) = decision.into_raw() else {
            panic!("not a respond");
        };
        let headers: Vec<(&str, &str)> = respond
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(headers, [("Location", "/a"), ("x-n", "1"), ("x-n", "2")]);
    }

    #[test]
    fn no_backend_is_503() {
        let decision = Decision::no_backend();
        assert_eq!(decision.status(), Some(503));
        assert_eq!(decision.body(), Some(&b"no healthy backend\n"[..]));
        assert_eq!(
            decision.response_header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }

    #[test]
    fn forward_or_no_backend_follows_the_pick() {
        let forward = Decision::forward_or_no_backend(PoolId(2), Some(5));
        assert_eq!(forward.target(), Some((PoolId(2), 5)));
        let none = Decision::forward_or_no_backend(PoolId(2), None);
        assert_eq!((none.target(), none.status()), (None, Some(503)));
    }
}
