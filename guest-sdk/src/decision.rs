//! What a policy returns for a request.

use crate::PoolId;
use crate::bindings::types::{self, HeaderEdit};

/// What to do with one request: forward it to a backend, or answer it
/// directly.
///
/// Start with [`Decision::forward`], [`Decision::respond`] or
/// [`Decision::no_backend`] and chain header edits:
///
/// ```
/// # use wasmroute_policy::{Decision, PoolId};
/// let to_backend = Decision::forward(PoolId::DEFAULT, 2)
///     .set_request_header("x-routed-by", "my-policy")
///     .append_response_header("set-cookie", "backend=2; Path=/");
/// let redirect = Decision::respond(308)
///     .header("location", "https://example.com/")
///     .body("moved\n");
/// # let _ = (to_backend, redirect);
/// ```
///
/// Header edits are applied in the order they were added. Request-header
/// edits only apply to a forwarded request (a locally answered request is
/// never sent upstream), and a body only to a local answer; the other
/// combination is a mistake, caught by a debug assertion.
#[derive(Debug, Clone)]
#[must_use]
pub struct Decision(types::Decision);

impl Decision {
    /// Sends the request to backend `backend` (its index in the pool, as in
    /// [`BackendStats::index`](crate::BackendStats::index)) of `pool`. The
    /// host refuses (and handles as a policy error) an unknown pool, a
    /// backend out of range or an unhealthy backend.
    pub fn forward(pool: PoolId, backend: u32) -> Self {
        Decision(types::Decision::Forward(types::Forward {
            pool: pool.0,
            backend,
            request_edits: Vec::new(),
            response_edits: Vec::new(),
        }))
    }

    /// Answers the request directly with `status` (200..=599; anything else
    /// is an error decision), no headers and an empty body. Add them with
    /// [`header`](Decision::header) and [`body`](Decision::body).
    pub fn respond(status: u16) -> Self {
        Decision(types::Decision::Respond(types::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }))
    }

    /// `503 Service Unavailable` with the body `no healthy backend\n`: the
    /// answer when the chosen pool has no healthy backend.
    pub fn no_backend() -> Self {
        Decision::respond(503)
            .header("content-type", "text/plain; charset=utf-8")
            .body("no healthy backend\n")
    }

    /// [`forward`](Self::forward) to `backend` of `pool` when a backend was
    /// picked, else [`no_backend`](Self::no_backend): what a balancing
    /// helper's `Option` answer becomes.
    pub fn forward_or_no_backend(pool: PoolId, backend: Option<u32>) -> Self {
        match backend {
            Some(backend) => Decision::forward(pool, backend),
            None => Decision::no_backend(),
        }
    }

    /// Replaces every value of a request header before the request is sent
    /// upstream. Applied after the host's own proxy headers
    /// (`X-Forwarded-*`, `Forwarded`), so it may override them; hop-by-hop
    /// headers cannot be set.
    pub fn set_request_header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.request_edit(HeaderEdit::Set((name.into(), value.into())))
    }

    /// Adds a request header value, keeping existing ones.
    pub fn append_request_header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.request_edit(HeaderEdit::Append((name.into(), value.into())))
    }

    /// Removes every value of a request header.
    pub fn remove_request_header(self, name: impl Into<String>) -> Self {
        self.request_edit(HeaderEdit::Remove(name.into()))
    }

    /// Replaces every value of a response header: of the backend's response
    /// for a forwarded request, of the local answer otherwise.
    pub fn set_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let (name, value) = (name.into(), value.into());
        match &mut self.0 {
            types::Decision::Forward(forward) => {
                forward.response_edits.push(HeaderEdit::Set((name, value)));
            }
            types::Decision::Respond(respond) => {
                respond
                    .headers
                    .retain(|(existing, _)| !existing.eq_ignore_ascii_case(&name));
                respond.headers.push((name, value));
            }
        }
        self
    }

    /// Adds a response header value, keeping existing ones: to the backend's
    /// response for a forwarded request (a sticky-session cookie, say), to
    /// the local answer otherwise.
    pub fn append_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        let (name, value) = (name.into(), value.into());
        match &mut self.0 {
            types::Decision::Forward(forward) => {
                forward
                    .response_edits
                    .push(HeaderEdit::Append((name, value)));
            }
            types::Decision::Respond(respond) => respond.headers.push((name, value)),
        }
        self
    }

    /// Adds a header to the response; the same as
    /// [`append_response_header`](Decision::append_response_header), named
    /// for local answers: `Decision::respond(302).header("location", url)`.
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.append_response_header(name, value)
    }

    /// Sets the body of a local answer (sent with a `Content-Length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        match &mut self.0 {
            types::Decision::Respond(respond) => respond.body = body.into(),
            types::Decision::Forward(_) => {
                debug_assert!(false, "Decision::body on a forward decision");
            }
        }
        self
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

    fn request_edit(mut self, edit: HeaderEdit) -> Self {
        match &mut self.0 {
            types::Decision::Forward(forward) => forward.request_edits.push(edit),
            types::Decision::Respond(_) => {
                debug_assert!(false, "request header edit on a respond decision");
            }
        }
        self
    }

    /// The value handed back to the host.
    pub(crate) fn into_raw(self) -> types::Decision {
        self.0
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
        let decision = Decision::forward(PoolId(1), 3)
            .set_request_header("x-a", "1")
            .append_request_header("x-b", "2")
            .remove_request_header("x-c")
            .set_response_header("x-d", "4")
            .append_response_header("x-e", "5")
            .header("x-f", "6");
        assert_eq!(decision.target(), Some((PoolId(1), 3)));
        assert_eq!(decision.status(), None);
        let types::Decision::Forward(forward) = decision.into_raw() else {
            panic!("not a forward");
        };
        assert_eq!(
            edits(&forward.request_edits),
            ["set x-a=1", "append x-b=2", "remove x-c"]
        );
        assert_eq!(
            edits(&forward.response_edits),
            ["set x-d=4", "append x-e=5", "append x-f=6"]
        );
    }

    #[test]
    fn respond_builds_headers_and_body() {
        let decision = Decision::respond(302)
            .header("Location", "/a")
            .header("x-n", "1")
            .set_response_header("location", "/b")
            .append_response_header("x-n", "2")
            .body("moved");
        assert_eq!(decision.status(), Some(302));
        assert_eq!(decision.target(), None);
        let types::Decision::Respond(respond) = decision.into_raw() else {
            panic!("not a respond");
        };
        let headers: Vec<(&str, &str)> = respond
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(headers, [("x-n", "1"), ("location", "/b"), ("x-n", "2")]);
        assert_eq!(respond.body, b"moved");
    }

    #[test]
    fn no_backend_is_503() {
        let types::Decision::Respond(respond) = Decision::no_backend().into_raw() else {
            panic!("not a respond");
        };
        assert_eq!(respond.status, 503);
        assert_eq!(respond.body, b"no healthy backend\n");
    }
}
