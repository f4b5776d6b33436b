//! [`Outcome`]: a decision spelled out, for assertions on what a policy
//! answered beyond [`Decision::target`] and [`Decision::status`].

use crate::bindings::types::{self, HeaderEdit};
use crate::{Decision, PoolId};

/// One header edit of a forward decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace every value of the header with this one.
    Set(String, String),
    /// Add a value.
    Append(String, String),
    /// Remove every value.
    Remove(String),
}

/// Everything a [`Decision`] says.
///
/// ```
/// use wasmroute_policy::testing::{Edit, Outcome};
/// use wasmroute_policy::{Decision, PoolId};
/// let d = Decision::forward(PoolId(1), 2).append_response_header("set-cookie", "a=1");
/// let Outcome::Forward { pool, backend, response_edits, .. } = Outcome::of(&d) else { panic!() };
/// assert_eq!((pool, backend), (PoolId(1), 2));
/// assert_eq!(response_edits, [Edit::Append("set-cookie".into(), "a=1".into())]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request goes to a backend.
    Forward {
        /// Which pool.
        pool: PoolId,
        /// Which backend of it.
        backend: u32,
        /// Edits to the request headers, in order.
        request_edits: Vec<Edit>,
        /// Edits to the response headers, in order.
        response_edits: Vec<Edit>,
    },
    /// The proxy answers itself.
    Respond {
        /// The status code.
        status: u16,
        /// The headers, in order.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
}

impl Outcome {
    /// What `decision` says.
    pub fn of(decision: &Decision) -> Outcome {
        match decision.clone().into_raw() {
            types::Decision::Forward(f) => Outcome::Forward {
                pool: PoolId(f.pool),
                backend: f.backend,
                request_edits: f.request_edits.into_iter().map(edit).collect(),
                response_edits: f.response_edits.into_iter().map(edit).collect(),
            },
            types::Decision::Respond(r) => Outcome::Respond {
                status: r.status,
                headers: r.headers,
                body: r.body,
            },
        }
    }

    /// The response header edits of a forward (empty for an answer).
    pub fn response_edits(&self) -> &[Edit] {
        match self {
            Outcome::Forward { response_edits, .. } => response_edits,
            Outcome::Respond { .. } => &[],
        }
    }
}

fn edit(edit: HeaderEdit) -> Edit {
    match edit {
        HeaderEdit::Set((name, value)) => Edit::Set(name, value),
        HeaderEdit::Append((name, value)) => Edit::Append(name, value),
        HeaderEdit::Remove(name) => Edit::Remove(name),
    }
}
