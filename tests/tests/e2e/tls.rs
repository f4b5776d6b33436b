//! TLS termination (issue #5) against real rustls clients and, where it is
//! installed, `curl`: certificates are generated per test (rcgen), written
//! as PEM files next to the config, and the proxy terminates TLS in front
//! of plain-HTTP test backends.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasmroute::ServerEvent;
use wasmroute_e2e::client::raw_exchange;
use wasmroute_e2e::tls::{Leaf, TestCa, TlsClient, TlsHttp, alpn, presented};
use wasmroute_e2e::{Backend, FixtureDir, STEP, bundled};

/// A config with an https listener `secure` (certificate files as given,
/// relative to the config, and `extra` listener lines), an optional plain
/// listener `plain` with `plain_extra` lines, and pool `web`.
fn config(backend: SocketAddr, certs: &[&str], extra: &str, plain_extra: Option<&str>) -> String {
    let mut text = format!(
        "[policies]\ndir = \"policies\"\ndecision_timeout = \"250ms\"\n\n\
         [[listeners]]\nname = \"secure\"\naddress = \"127.0.0.1:0\"\nprotocol = \"https\"\n\
         policy = \"round-robin\"\npools = [\"web\"]\n{extra}\n"
    );
    for stem in certs {
        text.push_str(&format!(
            "[[listeners.certificates]]\ncert = \"certs/{stem}.pem\"\nkey = \"certs/{stem}.key\"\n"
        ));
    }
    if let Some(plain_extra) = plain_extra {
        text.push_str(&format!(
            "\n[[listeners]]\nname = \"plain\"\naddress = \"127.0.0.1:0\"\nprotocol = \"http\"\n\
             policy = \"round-robin\"\npools = [\"web\"]\n{plain_extra}\n"
        ));
    }
    text.push_str(&format!(
        "\n[[pools]]\nname = \"web\"\nbackends = [{{ address = \"{backend}\" }}]\n"
    ));
    text
}

/// A proxy whose `secure` listener (with `extra` keys) serves one
/// certificate for `a.test`, issued by the returned CA, in front of backend
/// `web-1`; `plain_extra` adds the `plain` listener with those keys.
async fn a_test_proxy(
    extra: &str,
    plain_extra: Option<&str>,
) -> anyhow::Result<(Backend, TestCa, wasmroute_e2e::ProxyFixture)> {
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let a = ca.leaf(&["a.test"])?;
    let text = config(backend.addr(), &["a"], extra, plain_extra);
    let fx = folder(&[("a", &a)], &text)?.start().await?;
    Ok((backend, ca, fx))
}

/// A fixture folder with `certs/<stem>.{pem,key}` for each leaf and the config.
fn folder(leaves: &[(&str, &Leaf)], config: &str) -> anyhow::Result<FixtureDir> {
    let dir = FixtureDir::new()?;
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs)?;
    for (stem, leaf) in leaves {
        leaf.write(&certs, stem)?;
    }
    dir.write_policy("round-robin", bundled("round-robin"))?;
    dir.write_config(config)?;
    Ok(dir)
}

/// Replaces `certs/<stem>.{pem,key}` atomically (temporary file + rename each).
fn renew(dir: &Path, stem: &str, leaf: &Leaf) -> anyhow::Result<()> {
    let certs = dir.join("certs");
    for (ext, text) in [("pem", &leaf.chain_pem), ("key", &leaf.key_pem)] {
        let tmp = certs.join(format!(".{stem}.{ext}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, certs.join(format!("{stem}.{ext}")))?;
    }
    Ok(())
}

/// The leaf the proxy presents for `sni` (or without SNI when `None`).
async fn leaf_for(addr: SocketAddr, sni: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let client = TlsClient::accepting_any(&["http/1.1"])?;
    let stream = match sni {
        Some(name) => client.connect(addr, name).await?,
        None => client.without_sni().connect(addr, "no-sni.invalid").await?,
    };
    Ok(presented(&stream).expect("a certificate").as_ref().to_vec())
}

#[tokio::test]
async fn sni_selects_exact_wildcard_and_default_certificates() -> anyhow::Result<()> {
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let a = ca.leaf(&["a.test"])?;
    let b = ca.leaf(&["b.test"])?;
    let wild = ca.leaf(&["*.wild.test"])?;
    let text = config(backend.addr(), &["a", "b", "wild"], "", None);
    let fx = folder(&[("a", &a), ("b", &b), ("wild", &wild)], &text)?
        .start()
        .await?;
    let addr = fx.addr("secure");

    // Verified against the CA, so each name must really be covered.
    let verifying = TlsClient::trusting(&ca, &["http/1.1"])?;
    for (name, leaf) in [
        ("a.test", &a),
        ("b.test", &b),
        ("x.wild.test", &wild),
        ("B.TEST", &b),
    ] {
        let stream = verifying.connect(addr, name).await?;
        assert_eq!(
            presented(&stream).as_ref(),
            Some(&leaf.der),
            "certificate for {name}"
        );
        let mut http = TlsHttp::start(stream).await?;
        let reply = http.get(name, "/").await?;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.backend(), Some("web-1"));
    }
    // A wildcard covers one label only; unknown names and no SNI get the first.
    for sni in [
        Some("wild.test"),
        Some("a.b.wild.test"),
        Some("unknown.test"),
        None,
    ] {
        assert_eq!(
            leaf_for(addr, sni).await?,
            a.der.as_ref(),
            "certificate for {sni:?}"
        );
    }
    let seen = backend.last_seen().await.expect("a request");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    fx.shutdown().await
}

#[tokio::test]
async fn alpn_negotiates_http2_or_http1() -> anyhow::Result<()> {
    let (backend, ca, fx) = a_test_proxy("", None).await?;
    let addr = fx.addr("secure");

    for (offered, chosen, version) in [
        (&["h2", "http/1.1"][..], "h2", http::Version::HTTP_2),
        (&["http/1.1"][..], "http/1.1", http::Version::HTTP_11),
    ] {
        let stream = TlsClient::trusting(&ca, offered)?
            .connect(addr, "a.test")
            .await?;
        assert_eq!(alpn(&stream).as_deref(), Some(chosen));
        let mut http = TlsHttp::start(stream).await?;
        for _ in 0..2 {
            let reply = http.get("a.test", "/over-tls").await?;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.version, version);
        }
    }
    let seen = backend.last_seen().await.expect("a request");
    assert_eq!(seen.uri.path(), "/over-tls");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    fx.shutdown().await
}

#[tokio::test]
async fn unknown_sni_can_be_refused() -> anyhow::Result<()> {
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let a = ca.leaf(&["a.test"])?;
    let text = config(backend.addr(), &["a"], "unknown_sni = \"refuse\"", None);
    let fx = folder(&[("a", &a)], &text)?.start().await?;
    let addr = fx.addr("secure");

    let any = TlsClient::accepting_any(&["http/1.1"])?;
    let refused = any.connect(addr, "unknown.test").await;
    assert!(refused.is_err(), "unknown SNI was accepted");
    // No SNI still gets the default certificate; known names work.
    assert_eq!(leaf_for(addr, None).await?, a.der.as_ref());
    let stream = TlsClient::trusting(&ca, &["http/1.1"])?
        .connect(addr, "a.test")
        .await?;
    let reply = TlsHttp::start(stream).await?.get("a.test", "/").await?;
    assert_eq!(reply.status, StatusCode::OK);
    fx.shutdown().await
}

fn reloaded(e: &ServerEvent) -> bool {
    matches!(e, ServerEvent::ConfigReloaded)
}

fn rejected(e: &ServerEvent) -> bool {
    matches!(e, ServerEvent::ConfigRejected { .. })
}

#[tokio::test]
async fn renewed_certificate_serves_new_connections_and_open_ones_continue() -> anyhow::Result<()> {
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let old = ca.leaf(&["a.test"])?;
    let text = config(backend.addr(), &["a"], "", None);
    let mut fx = folder(&[("a", &old)], &text)?.start().await?;
    let addr = fx.addr("secure");
    let client = TlsClient::trusting(&ca, &["http/1.1"])?;

    let open = client.connect(addr, "a.test").await?;
    assert_eq!(presented(&open).as_ref(), Some(&old.der));
    let mut open = TlsHttp::start(open).await?;
    assert_eq!(open.get("a.test", "/").await?.status, StatusCode::OK);

    // A renewal is picked up from the files alone.
    let new = ca.leaf(&["a.test"])?;
    fx.clear_events();
    renew(fx.dir().path(), "a", &new)?;
    fx.await_event(reloaded, STEP).await?;
    let fresh = client.connect(addr, "a.test").await?;
    assert_eq!(
        presented(&fresh).as_ref(),
        Some(&new.der),
        "new connections get the renewed certificate"
    );
    assert_eq!(
        open.get("a.test", "/again").await?.status,
        StatusCode::OK,
        "the open connection keeps working"
    );

    // A broken renewal (key of another certificate) is refused; the last good one keeps serving.
    let other = ca.leaf(&["a.test"])?;
    fx.clear_events();
    let key_path = fx.dir().path().join("certs/a.key");
    std::fs::write(&key_path, &other.key_pem)?;
    let event = fx.await_event(rejected, STEP).await?;
    let ServerEvent::ConfigRejected { reason } = event else {
        unreachable!()
    };
    assert!(
        reason.contains("listeners[0].certificates[0].key"),
        "{reason}"
    );
    assert!(
        reason.contains("a.key") && reason.contains("does not match"),
        "{reason}"
    );
    let after = client.connect(addr, "a.test").await?;
    assert_eq!(presented(&after).as_ref(), Some(&new.der));
    let reply = TlsHttp::start(after).await?.get("a.test", "/").await?;
    assert_eq!(reply.status, StatusCode::OK);
    fx.shutdown().await
}

#[tokio::test]
async fn mismatched_key_is_refused_at_start_and_at_reload() -> anyhow::Result<()> {
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let a = ca.leaf(&["a.test"])?;
    let b = ca.leaf(&["b.test"])?;
    let mismatched = Leaf {
        key_pem: b.key_pem.clone(),
        ..a.clone()
    };
    let text = config(backend.addr(), &["bad"], "", None);
    let error = match folder(&[("bad", &mismatched)], &text)?.start().await {
        Ok(_) => panic!("a mismatched key was accepted at start"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("wasmroute.toml: listeners[0].certificates[0].key: "),
        "{error}"
    );
    assert!(
        error.contains("bad.key: private key does not match the certificate in"),
        "{error}"
    );

    let good = config(backend.addr(), &["a"], "", None);
    let fx = folder(&[("a", &a), ("bad", &mismatched)], &good)?
        .start()
        .await?;
    fx.rewrite_config(&config(backend.addr(), &["a", "bad"], "", None))?;
    let error = fx
        .reload()
        .await
        .expect_err("a mismatched key was accepted at reload");
    assert!(
        error
            .to_string()
            .contains("listeners[0].certificates[1].key"),
        "{error}"
    );
    let stream = TlsClient::trusting(&ca, &["http/1.1"])?
        .connect(fx.addr("secure"), "a.test")
        .await?;
    assert_eq!(
        presented(&stream).as_ref(),
        Some(&a.der),
        "the old config keeps serving"
    );
    fx.shutdown().await
}

#[tokio::test]
async fn expired_certificate_is_refused() -> anyhow::Result<()> {
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let expired = ca.leaf_with(&["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    })?;
    let text = config(backend.addr(), &["old"], "", None);
    let error = match folder(&[("old", &expired)], &text)?.start().await {
        Ok(_) => panic!("an expired certificate was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("listeners[0].certificates[0].cert: "),
        "{error}"
    );
    assert!(error.contains("old.pem: certificate expired at"), "{error}");
    Ok(())
}

#[tokio::test]
async fn stalled_handshake_is_closed_and_others_are_served() -> anyhow::Result<()> {
    let (_backend, ca, fx) = a_test_proxy("handshake_timeout = \"200ms\"", None).await?;
    let addr = fx.addr("secure");

    // One client sends nothing, another the first bytes of a TLS record only.
    let mut silent = TcpStream::connect(addr).await?;
    let mut partial = TcpStream::connect(addr).await?;
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await?;
    let started = tokio::time::Instant::now();

    let stream = TlsClient::trusting(&ca, &["h2"])?
        .connect(addr, "a.test")
        .await?;
    let reply = TlsHttp::start(stream).await?.get("a.test", "/").await?;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "served while two clients stall"
    );

    for stalled in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(STEP, stalled.read(&mut buf)).await?;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the stalled client got {read:?}"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "closed after {waited:?}, before the timeout"
    );
    fx.shutdown().await
}

#[tokio::test]
async fn plaintext_on_the_tls_port_gets_a_400() -> anyhow::Result<()> {
    let (backend, ca, fx) = a_test_proxy("", None).await?;
    let addr = fx.addr("secure");

    let raw = raw_exchange(addr, b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n", STEP).await?;
    assert!(raw.closed, "the connection stayed open");
    assert!(raw.text().starts_with("HTTP/1.1 400 "), "{}", raw.text());
    assert!(raw.text().contains("use https://"), "{}", raw.text());
    let garbage = raw_exchange(addr, &[0u8; 16], STEP).await?;
    assert!(garbage.closed && garbage.bytes.is_empty(), "{garbage:?}");

    let stream = TlsClient::trusting(&ca, &["http/1.1"])?
        .connect(addr, "a.test")
        .await?;
    assert_eq!(
        TlsHttp::start(stream)
            .await?
            .get("a.test", "/")
            .await?
            .status,
        StatusCode::OK
    );
    assert_eq!(backend.served(), 1, "nothing plaintext reached the backend");
    fx.shutdown().await
}

#[tokio::test]
async fn redirect_listener_sends_plain_http_to_https() -> anyhow::Result<()> {
    let (backend, _ca, fx) = a_test_proxy("", Some("redirect_to_https = 8443")).await?;

    let client = wasmroute_e2e::Client::http1();
    let url = fx.url("plain", "/some/path?x=1");
    let reply = client.get_with(&url, &[("host", "a.test:8080")]).await?;
    assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    let location = reply.headers.get("location").and_then(|v| v.to_str().ok());
    assert_eq!(location, Some("https://a.test:8443/some/path?x=1"));
    assert_eq!(backend.served(), 0, "a redirect never reaches a backend");
    fx.shutdown().await
}

/// `curl` (OpenSSL, nghttp2) as a second, independent client.
#[tokio::test]
async fn curl_speaks_http2_over_tls() -> anyhow::Result<()> {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed; skipping");
        return Ok(());
    }
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let a = ca.leaf(&["a.test"])?;
    let text = config(backend.addr(), &["a"], "", None);
    let dir = folder(&[("a", &a)], &text)?;
    let ca_file = dir.path().join("certs/ca.pem");
    std::fs::write(&ca_file, ca.pem())?;
    let fx = dir.start().await?;
    let port = fx.addr("secure").port();
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", "--http2", "--max-time", "10", "--cacert"])
        .arg(&ca_file)
        .args(["--resolve", &format!("a.test:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://a.test:{port}/from-curl"));
    let output = tokio::task::spawn_blocking(move || curl.output()).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.ends_with("\n2 200"), "{stdout}");
    assert!(stdout.starts_with("web-1"), "{stdout}");
    fx.shutdown().await
}

/// A plain listener `edge` over pool `web` (one backend at `backend`) with
/// `[pools.tls]` lines `tls`.
fn reencrypt_config(backend: SocketAddr, tls: &str) -> String {
    format!(
        "[policies]\ndir = \"policies\"\ndecision_timeout = \"250ms\"\n\n\
         [[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:0\"\n\
         policy = \"round-robin\"\npools = [\"web\"]\n\n\
         [[pools]]\nname = \"web\"\nbackends = [{{ address = \"{backend}\" }}]\n\
         [pools.tls]\n{tls}\n"
    )
}

#[tokio::test]
async fn tls_to_backends_verifies_the_configured_name_and_ca() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let backend = wasmroute_e2e::tls::TlsBackend::start(&ca.leaf(&["backend.test"])?).await?;
    let good = reencrypt_config(
        backend.addr(),
        "ca = \"certs/ca.pem\"\nserver_name = \"backend.test\"",
    );
    let dir = folder(&[], &good)?;
    std::fs::write(dir.path().join("certs/ca.pem"), ca.pem())?;
    let fx = dir.start().await?;
    let client = wasmroute_e2e::Client::http1();
    let reply = client.get(&fx.url("edge", "/")).await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), "tls-backend sni=backend.test");

    fx.shutdown().await?;

    // A name the backend's certificate does not cover fails verification
    // (a fresh server: pooled connections outlive a reload).
    let wrong = reencrypt_config(
        backend.addr(),
        "ca = \"certs/ca.pem\"\nserver_name = \"wrong.test\"",
    );
    let dir = folder(&[], &wrong)?;
    std::fs::write(dir.path().join("certs/ca.pem"), ca.pem())?;
    let fx = dir.start().await?;
    let reply = client.get(&fx.url("edge", "/")).await?;
    assert!(
        reply.status.is_server_error(),
        "{} {}",
        reply.status,
        reply.text()
    );
    fx.shutdown().await
}

#[tokio::test]
async fn tls_to_backends_refuses_a_bad_ca_file() -> anyhow::Result<()> {
    let text = reencrypt_config("127.0.0.1:9".parse()?, "ca = \"certs/missing.pem\"");
    let error = match folder(&[], &text)?.start().await {
        Ok(_) => panic!("a missing CA file was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("pools[0].tls.ca: "), "{error}");
    assert!(error.contains("missing.pem: cannot read"), "{error}");
    Ok(())
}

/// The policy sees whether the connection is TLS: `sticky-cookie` marks its
/// cookie `Secure` exactly when `is-tls` says so.
#[tokio::test]
async fn the_policy_sees_tls() -> anyhow::Result<()> {
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let a = ca.leaf(&["a.test"])?;
    let policy_config = "[listeners.policy_config]\nsecret = \"0123456789abcdef0123\"\n";
    let text = config(backend.addr(), &["a"], policy_config, Some(policy_config))
        .replace("policy = \"round-robin\"", "policy = \"sticky-cookie\"");
    let dir = folder(&[("a", &a)], &text)?;
    dir.write_policy("sticky-cookie", bundled("sticky-cookie"))?;
    let fx = dir.start().await?;

    let stream = TlsClient::trusting(&ca, &["h2"])?
        .connect(fx.addr("secure"), "a.test")
        .await?;
    let reply = TlsHttp::start(stream).await?.get("a.test", "/").await?;
    let cookie = reply
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok());
    assert!(
        cookie.is_some_and(|c| c.contains("Secure")),
        "over TLS: {cookie:?}"
    );
    let reply = wasmroute_e2e::get(&fx.url("plain", "/")).await?;
    let cookie = reply
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok());
    assert!(
        cookie.is_some_and(|c| !c.contains("Secure")),
        "plain: {cookie:?}"
    );
    fx.shutdown().await
}

/// The policy sees the SNI name and that the connection is TLS (the
/// `echo-request` test policy answers with what it saw).
#[tokio::test]
async fn the_policy_sees_the_sni_name() -> anyhow::Result<()> {
    let backend = Backend::start("web-1").await?;
    let ca = TestCa::new()?;
    let a = ca.leaf(&["a.test", "*.wild.test"])?;
    let text = config(backend.addr(), &["a"], "", None)
        .replace("policy = \"round-robin\"", "policy = \"echo-request\"");
    let dir = folder(&[("a", &a)], &text)?;
    dir.write_policy("echo-request", wasmroute_e2e::guests::ECHO_REQUEST)?;
    let fx = dir.start().await?;
    for name in ["a.test", "x.wild.test"] {
        let stream = TlsClient::trusting(&ca, &["http/1.1"])?
            .connect(fx.addr("secure"), name)
            .await?;
        let reply = TlsHttp::start(stream).await?.get(name, "/sni").await?;
        let text = reply.text();
        assert!(
            text.starts_with(&format!("tls=true\nsni={name}\n")),
            "{name}: {text}"
        );
    }
    assert_eq!(backend.served(), 0);
    fx.shutdown().await
}
