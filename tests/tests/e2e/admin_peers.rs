//! Who may change state through the admin endpoint, by the peer's
//! address, over real sockets: from the machine's own non-loopback IPv4
//! address (the traffic stays on this host) a `POST` is refused without
//! `[admin] token` and accepted with the right bearer token, while `GET`
//! answers; and on a dual-stack `[::]` socket a `127.0.0.1` peer, which
//! the socket sees as `::ffff:127.0.0.1`, counts as loopback.
//!
//! Both need something of the machine (a non-loopback IPv4 address, a
//! dual-stack IPv6 socket). Without it a test says so on stderr and
//! returns: it has nothing to test there, and failing would only say the
//! machine is different, not that wasmroute is wrong.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use wasmroute_e2e::{Backend, ConfigBuilder, ListenerSpec, PoolSpec, ProxyFixture, bundled};

const TOKEN: &str = "s3cret-admin-token-0123";

/// The address this machine would send from towards 10.255.255.255: a
/// UDP `connect` only picks the route's source address and sends nothing.
fn non_loopback_ipv4() -> Option<Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.255:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// The proxy with its admin endpoint on `admin` (port 0) and `extra`
/// admin keys.
async fn start_with_admin_on(admin: &str, extra: &str) -> (Backend, ProxyFixture) {
    let backend = Backend::start("a").await.unwrap();
    let config = ConfigBuilder::new()
        .admin(extra)
        .listener(ListenerSpec::new("edge", "round-robin", &["web"]))
        .pool(PoolSpec::new("web", &[&backend]));
    // The first address in the file is the admin one.
    let text = config.render().replacen(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"{admin}\""),
        1,
    );
    let fx = ProxyFixture::start_with_text(&text, &[("round-robin", bundled("round-robin"))])
        .await
        .expect("the proxy starts");
    (backend, fx)
}

/// One request from `from` (port 0) to `to`; the status code and body.
async fn request_from(
    from: IpAddr,
    to: SocketAddr,
    head: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4().unwrap(),
        IpAddr::V6(_) => TcpSocket::new_v6().unwrap(),
    };
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    assert_eq!(stream.local_addr().unwrap().ip(), from);
    let authorization =
        authorization.map_or_else(String::new, |value| format!("Authorization: {value}\r\n"));
    let request = format!(
        "{head} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n{authorization}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

fn admin_addr(fx: &ProxyFixture) -> SocketAddr {
    fx.server().admin_addr().expect("an admin endpoint")
}

#[tokio::test]
async fn without_a_token_a_remote_peer_may_read_but_not_change() {
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("SKIPPED: this machine has no non-loopback IPv4 address to connect from");
        return;
    };
    let (backend, fx) = start_with_admin_on(&format!("{ip}:0"), "").await;
    let admin = admin_addr(&fx);
    let from = IpAddr::V4(ip);
    let (status, body) = request_from(from, admin, "POST /reload", None).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("loopback only"), "{body}");
    let drain = format!("POST /pools/web/backends/{}/drain", backend.addr());
    let (status, body) = request_from(from, admin, &drain, None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = request_from(from, admin, "GET /live", None).await;
    assert_eq!((status, body.as_str()), (200, "live\n"));
    let (status, body) = request_from(from, admin, "GET /status", None).await;
    assert_eq!(status, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let state = &status["pools"][0]["backends"][0]["state"];
    assert_eq!(state, "up", "the refused drain changed nothing: {status}");
}

#[tokio::test]
async fn with_a_token_a_remote_peer_may_change_with_it() {
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("SKIPPED: this machine has no non-loopback IPv4 address to connect from");
        return;
    };
    let (_backend, fx) =
        start_with_admin_on(&format!("{ip}:0"), &format!("token = \"{TOKEN}\"")).await;
    let admin = admin_addr(&fx);
    let from = IpAddr::V4(ip);
    let (status, body) = request_from(from, admin, "POST /reload", None).await;
    assert_eq!(status, 401, "{body}");
    let wrong = Some("Bearer not-the-token-at-all");
    let (status, body) = request_from(from, admin, "POST /reload", wrong).await;
    assert_eq!(status, 403, "{body}");
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) = request_from(from, admin, "POST /reload", Some(&bearer)).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["reloaded"], true, "{body}");
    let (status, _) = request_from(from, admin, "GET /live", None).await;
    assert_eq!(status, 200);
}

/// `[::]` accepts IPv4 peers too (unless `net.ipv6.bindv6only`): one from
/// 127.0.0.1 arrives as `::ffff:127.0.0.1`, loopback, so no token is
/// needed; a `::1` peer too.
#[tokio::test]
async fn an_ipv4_mapped_loopback_peer_counts_as_loopback() {
    if !dual_stack() {
        eprintln!("SKIPPED: no dual-stack IPv6 socket here ([::] does not accept 127.0.0.1)");
        return;
    }
    let (_backend, fx) = start_with_admin_on("[::]:0", "").await;
    let port = admin_addr(&fx).port();
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let (status, body) = request_from(to.ip(), to, "POST /reload", None).await;
    assert_eq!(status, 200, "{body}");
    let to = SocketAddr::new("::1".parse().unwrap(), port);
    let (status, body) = request_from(to.ip(), to, "POST /reload", None).await;
    assert_eq!(status, 200, "{body}");
}

/// A `[::]` socket here accepts a connection from 127.0.0.1.
fn dual_stack() -> bool {
    let Ok(listener) = std::net::TcpListener::bind("[::]:0") else {
        return false;
    };
    let Ok(port) = listener.local_addr().map(|a| a.port()) else {
        return false;
    };
    std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}
