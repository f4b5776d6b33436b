//! [`TestRequest`] and [`TestConnection`]: what a policy is asked to
//! decide in a native test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::PoolId;
use crate::sys;

/// A request head for [`TestPolicy::decide`](super::TestPolicy::decide),
/// built as a client would send it. The policy's [`Request`](crate::Request)
/// answers it as the host answers a real one: headers by case-insensitive
/// name, first value first, `None` for a value that is not visible ASCII;
/// cookies from every `Cookie` header; the authority from
/// [`authority`](Self::authority) (an HTTP/2 `:authority`) else the `Host`
/// header.
///
/// Defaults: client IP `127.0.0.1`, HTTP/1.1, no TLS, first attempt.
///
/// ```
/// use wasmroute_policy::PoolId;
/// use wasmroute_policy::testing::TestRequest;
/// let req = TestRequest::get("/cart?item=3")
///     .header("host", "shop.example")
///     .header("x-tag", "a")
///     .header("X-Tag", "b") // repeated: `header("x-tag")` is "a"
///     .cookie("session", "s1")
///     .client_ip("2001:db8::7")
///     .retry_after(&[(PoolId(0), 1)]); // a retry: attempt 1, backend 1 tried
/// # let _ = req;
/// ```
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub(crate) data: sys::Request,
}

impl TestRequest {
    /// A request with `method` (as sent, `GET`) for `target`, a path with
    /// an optional query (`/a/b?x=1`; `*` for `OPTIONS *`).
    pub fn new(method: &str, target: &str) -> TestRequest {
        assert!(
            is_token(method),
            "TestRequest: {method:?} is not a valid method"
        );
        assert!(
            target.starts_with('/') || target == "*",
            "TestRequest: the target {target:?} must start with '/' (or be '*')"
        );
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (target, None),
        };
        TestRequest {
            data: sys::Request {
                method: method.to_owned(),
                path: path.to_owned(),
                query,
                uri_authority: None,
                headers: Vec::new(),
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                http_version: 11,
                is_tls: false,
                server_name: None,
                tried: Vec::new(),
            },
        }
    }

    /// A `GET` of `target`.
    pub fn get(target: &str) -> TestRequest {
        TestRequest::new("GET", target)
    }

    /// A `POST` to `target`.
    pub fn post(target: &str) -> TestRequest {
        TestRequest::new("POST", target)
    }

    /// Adds a header value (a repeated name adds another value). Panics on
    /// a name or value no HTTP message can carry.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        assert!(is_token(name), "TestRequest::header: invalid name {name:?}");
        let allowed = |c: char| c == '\t' || !c.is_control();
        assert!(
            value.chars().all(allowed),
            "TestRequest::header: invalid value {value:?}"
        );
        self.data.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a `Cookie: name=value` header.
    pub fn cookie(self, name: &str, value: &str) -> Self {
        self.header("cookie", &format!("{name}={value}"))
    }

    /// The authority of the request URI, as an HTTP/2 `:authority` (it
    /// wins over the `Host` header).
    pub fn authority(mut self, authority: &str) -> Self {
        self.data.uri_authority = Some(authority.to_owned());
        self
    }

    /// The client's IP address (`10.0.0.7`, `::1`); the policy reads it as
    /// the host renders it (`Request::client_ip`). Panics if not an IP.
    pub fn client_ip(mut self, ip: &str) -> Self {
        self.data.client_ip = parse_ip(ip);
        self
    }

    /// The HTTP version: 10, 11 or 20.
    pub fn http_version(mut self, version: u8) -> Self {
        assert!(
            [10, 11, 20].contains(&version),
            "TestRequest::http_version: 10, 11 or 20, got {version}"
        );
        self.data.http_version = version;
        self
    }

    /// A request over TLS, without SNI.
    pub fn tls(mut self) -> Self {
        self.data.is_tls = true;
        self
    }

    /// A request over TLS whose client sent the server name `name`.
    pub fn server_name(mut self, name: &str) -> Self {
        self.data.is_tls = true;
        self.data.server_name = Some(name.to_owned());
        self
    }

    /// A retry: the backends already tried, in order. The attempt number
    /// is their count, as on the host.
    pub fn retry_after(mut self, tried: &[(PoolId, u32)]) -> Self {
        self.data.tried = tried.iter().map(|&(p, b)| (p.0, b)).collect();
        self
    }
}

/// A TCP connection for
/// [`TestPolicy::decide_connection`](super::TestPolicy::decide_connection).
///
/// Defaults: client `127.0.0.1:40000`, local port 8000, no ClientHello,
/// first attempt. As on the host, the ClientHello accessors answer as for
/// a client that sent none unless the policy's
/// [`READS_CLIENT_HELLO`](crate::ConnectionPolicy::READS_CLIENT_HELLO) is
/// true, and the server name is lower-cased.
///
/// ```
/// use wasmroute_policy::testing::TestConnection;
/// let conn = TestConnection::new()
///     .client_ip("10.0.0.1")
///     .local_port(6380)
///     .server_name("DB.example") // seen as "db.example"
///     .alpn(&["h2", "http/1.1"]);
/// # let _ = conn;
/// ```
#[derive(Debug, Clone)]
pub struct TestConnection {
    pub(crate) data: sys::Connection,
}

impl Default for TestConnection {
    fn default() -> Self {
        TestConnection::new()
    }
}

impl TestConnection {
    /// A plain TCP connection from `127.0.0.1:40000` to port 8000.
    pub fn new() -> TestConnection {
        TestConnection {
            data: sys::Connection {
                client: SocketAddr::from((Ipv4Addr::LOCALHOST, 40000)),
                local_port: 8000,
                hello: None,
                tried: Vec::new(),
            },
        }
    }

    /// The client's IP address. Panics if not an IP.
    pub fn client_ip(mut self, ip: &str) -> Self {
        self.data.client.set_ip(parse_ip(ip));
        self
    }

    /// The client's TCP port.
    pub fn client_port(mut self, port: u16) -> Self {
        self.data.client.set_port(port);
        self
    }

    /// The proxy port the client connected to.
    pub fn local_port(mut self, port: u16) -> Self {
        self.data.local_port = port;
        self
    }

    /// The client's first bytes are a TLS ClientHello (without SNI or
    /// ALPN unless given).
    pub fn tls(mut self) -> Self {
        self.data.hello.get_or_insert_with(Default::default);
        self
    }

    /// A ClientHello with this server name (lower-cased, as the host
    /// reports it).
    pub fn server_name(mut self, name: &str) -> Self {
        let hello = self.data.hello.get_or_insert_with(Default::default);
        hello.0 = Some(name.to_ascii_lowercase());
        self
    }

    /// A ClientHello offering these ALPN protocols, in this order.
    pub fn alpn(mut self, protocols: &[&str]) -> Self {
        let hello = self.data.hello.get_or_insert_with(Default::default);
        hello.1 = protocols.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// A retry: the backends already tried, in order.
    pub fn retry_after(mut self, tried: &[(PoolId, u32)]) -> Self {
        self.data.tried = tried.iter().map(|&(p, b)| (p.0, b)).collect();
        self
    }
}

/// An HTTP token (a method or header name).
fn is_token(text: &str) -> bool {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !text.is_empty() && text.bytes().all(tchar)
}

fn parse_ip(ip: &str) -> IpAddr {
    ip.parse()
        .unwrap_or_else(|e| panic!("not an IP address: {ip:?}: {e}"))
}
