//! The redirect listener: an `http` listener with `redirect_to_https = PORT`
//! answers every request with `301 Moved Permanently` to the same host and
//! path over https, without asking its policy or touching a backend.
//!
//! The host comes from the request (`Host`, or the HTTP/2 authority) with
//! its port replaced by `PORT` (left out when it is 443); a request without
//! a usable host gets a `400`, because guessing one would redirect clients
//! to a name they never asked for.

use std::convert::Infallible;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::body::ProxyBody;
use crate::http::pipeline::local;

/// Serves one plain connection with redirects to `https://...:port`.
pub async fn serve_redirect<IO>(
    io: IO,
    port: u16,
    builder: &auto::Builder<TokioExecutor>,
    graceful: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| async move {
        Ok::<_, Infallible>(redirect(&request, port))
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(error) = graceful.watch(connection.into_owned()).await {
        tracing::debug!(%error, "redirect connection ended with an error");
    }
}

/// The `301` for `request`, or a `400` when it names no host.
pub fn redirect<B>(request: &Request<B>, port: u16) -> Response<ProxyBody> {
    let Some(location) = location(request, port) else {
        return local(StatusCode::BAD_REQUEST, "missing or invalid Host header\n");
    };
    tracing::trace!(location = ?location, "redirecting to https");
    let mut response = Response::new(ProxyBody::empty());
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// `https://<host>[:port]<path and query>`.
fn location<B>(request: &Request<B>, port: u16) -> Option<HeaderValue> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.clone(),
        None => {
            let host = request.headers().get(header::HOST)?.to_str().ok()?;
            host.parse::<http::uri::Authority>().ok()?
        }
    };
    let host = authority.host();
    if host.is_empty() {
        return None;
    }
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let text = match port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location_of(request: Request<()>, port: u16) -> Option<String> {
        let response = redirect(&request, port);
        (response.status() == StatusCode::MOVED_PERMANENTLY).then(|| {
            response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned()
        })
    }

    #[test]
    fn keeps_host_path_and_query_and_swaps_the_port() {
        let request = Request::get("/a/b?c=d")
            .header("host", "example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(
            location_of(request, 8443).as_deref(),
            Some("https://example.com:8443/a/b?c=d")
        );
    }

    #[test]
    fn leaves_out_port_443_and_keeps_ipv6_brackets() {
        let request = Request::get("/")
            .header("host", "[::1]:80")
            .body(())
            .unwrap();
        assert_eq!(location_of(request, 443).as_deref(), Some("https://[::1]/"));
    }

    #[test]
    fn refuses_requests_without_a_usable_host() {
        let missing = Request::get("/").body(()).unwrap();
        assert_eq!(location_of(missing, 443), None);
        let bad = Request::get("/").header("host", "a b").body(()).unwrap();
        assert_eq!(location_of(bad, 443), None);
    }
}
