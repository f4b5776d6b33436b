//! Test-only policy: answers every request itself with what the policy saw
//! of it, one `key=value` per line (`tls`, `sni`, `method`, `path`,
//! `client`, `attempt`), so tests can check the request accessors end to
//! end (over plain HTTP and over TLS with SNI).
//!
//! Built by `tests/build.rs`; not shipped.

use wasmroute_policy::{Decision, InitContext, Method, Policy, Request, export_policy};

struct EchoRequest;

impl Policy for EchoRequest {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        ctx.config().deny_unknown_keys::<&str>(&[])?;
        Ok(EchoRequest)
    }

    fn decide(&mut self, req: &Request) -> Decision {
        let method = match req.method() {
            Method::Get => "GET".to_owned(),
            Method::Post => "POST".to_owned(),
            other => format!("{other:?}"),
        };
        let body = format!(
            "tls={}\nsni={}\nmethod={method}\npath={}\nclient={}\nattempt={}\n",
            req.is_tls(),
            req.server_name().unwrap_or_else(|| "-".to_owned()),
            req.path(),
            req.client_ip(),
            req.attempt(),
        );
        Decision::respond(200).body(body).into()
    }
}

export_policy!(EchoRequest);
