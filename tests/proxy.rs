//! The gateway as a plain reverse proxy: forwarding, streaming, limits, timeouts, protocols.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::time::Duration;
use support::{Gateway, MockStrapi};

#[tokio::test]
async fn forwards_requests_with_query_and_streams_large_bodies() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let (jwt, _) = backend.issue_direct(1);
    let res = gw.get("/api/articles?pagination[page]=1&sort=title").bearer(&jwt).send().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["meta"]["pagination"]["total"], 1);
    assert!(backend.seen().iter().any(|r| r.path == "/api/articles?pagination[page]=1&sort=title"));
    // 5 MiB upload: above max_body_bytes (1 MiB), which bounds only buffered auth bodies.
    let big = vec![b'x'; 5 * 1024 * 1024];
    let res = gw.post("/api/upload").bearer(&jwt).body(big).send().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["received"], 5 * 1024 * 1024);
}

#[tokio::test]
async fn forwarding_headers_are_set_and_spoofed_ones_dropped() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let res = gw
        .get("/api/echo")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-sessiongate-user", "admin")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "1")
        .header("accept-encoding", "gzip")
        .send()
        .await;
    let h = res.json()["headers"].clone();
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(h["host"], backend.addr.to_string());
    assert!(h.get("x-sessiongate-user").is_none() && h.get("x-private").is_none(), "{h}");
    assert_eq!(h["accept-encoding"], "gzip", "content routes keep compression");
    assert!(h["x-request-id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(res.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn trusted_proxies_forward_the_client_address() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n").await;
    let res = gw
        .post("/api/auth/local")
        .header("x-forwarded-for", "203.0.113.7")
        .json(json!({"identifier": "alice", "password": support::PASSWORD}))
        .send()
        .await;
    let jwt = res.json()["jwt"].as_str().expect("jwt").to_string();
    let echo = gw.get("/api/echo").header("x-forwarded-for", "203.0.113.7").send().await.json();
    assert_eq!(echo["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    let cur = gw.get("/api/magic-sessionmanager/current-session").bearer(&jwt).send().await.json();
    assert_eq!(cur["data"]["ipAddress"], "203.0.113.7");
}

#[tokio::test]
async fn backend_down_is_a_502_in_the_backends_error_shape() {
    let backend = MockStrapi::start().await;
    let url = backend.url();
    drop(backend);
    let gw = Gateway::start(&url, "").await;
    let res = gw.get("/api/articles").send().await;
    assert_eq!(res.status, 502);
    assert_eq!(res.reason().as_deref(), Some("upstream_unavailable"));
    let v = res.json();
    assert_eq!(v["error"]["status"], 502);
    assert_eq!(v["error"]["details"]["reason"], "upstream_unavailable");
    assert!(!res.text().contains("127.0.0.1"), "no internal details in the body");
}

#[tokio::test]
async fn slow_backend_is_a_504() {
    let backend = MockStrapi::start().await;
    backend.with(|s| s.delay = Some(Duration::from_secs(3)));
    let gw = Gateway::start(&backend.url(), "[upstream]\nresponse_timeout = \"300ms\"\n").await;
    let started = std::time::Instant::now();
    let res = gw.get("/api/articles").send().await;
    assert_eq!(res.status, 504);
    assert_eq!(res.reason().as_deref(), Some("upstream_timeout"));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn oversized_auth_bodies_are_413_and_oversized_heads_431() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[server]\nmax_body_bytes = 1024\n").await;
    let big = json!({"identifier": "alice", "password": "x".repeat(4096)});
    let res = gw.post("/api/auth/local").json(big).send().await;
    assert_eq!(res.status, 413);
    assert_eq!(res.reason().as_deref(), Some("body_too_large"));
    assert_eq!(backend.count(&Method::POST, "/api/auth/local"), 0);
    let res = gw.get("/api/articles").header("x-big", &"y".repeat(40_000)).send().await;
    assert_eq!(res.status, 431);
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let login = Request::post(gw.url("/api/auth/local"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json!({"identifier": "alice", "password": support::PASSWORD}).to_string())))
        .expect("req");
    let res = client.request(login).await.expect("h2 request");
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes()).expect("json");
    let jwt = v["jwt"].as_str().expect("jwt");
    let req = Request::get(gw.url("/api/magic-sessionmanager/my-sessions"))
        .header("authorization", format!("Bearer {jwt}"))
        .body(Full::new(Bytes::new()))
        .expect("req");
    let res = client.request(req).await.expect("h2 request");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn tls_termination_serves_http1_and_http2() {
    use rustls::pki_types::pem::PemObject;
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = support::self_signed(dir.path());
    let gw = Gateway::start(
        &backend.url(),
        &format!("[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display()),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(&cert).expect("cert")).expect("root");
    for h2 in [false, true] {
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
        let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only();
        let connector = if h2 { b.enable_http2().build() } else { b.enable_http1().build() };
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(h2)
                .build(connector);
        let req = Request::get(format!("https://localhost:{}/api/echo", gw.addr.port()))
            .body(Full::new(Bytes::new()))
            .expect("req");
        let res = client.request(req).await.expect("https request");
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), if h2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 });
        let v: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes()).expect("json");
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let backend = MockStrapi::start().await;
    backend.with(|s| s.delay = Some(Duration::from_millis(500)));
    let mut gw = Gateway::with_defaults(&backend).await;
    let slow = tokio::spawn(gw.get("/api/echo").send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.stop().await;
    let res = slow.await.expect("join");
    assert_eq!(res.status, 200, "the request in flight completed during the drain");
    let refused = tokio::net::TcpStream::connect(gw.addr).await;
    assert!(refused.is_err(), "no longer accepting");
}

#[tokio::test]
async fn connection_limit_closes_excess_connections() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[server]\nmax_connections = 1\n").await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    first.write_all(b"GET /api/echo HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut buf = [0u8; 12];
    first.read_exact(&mut buf).await.expect("first served");
    assert_eq!(&buf, b"HTTP/1.1 200");
    let mut second = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let _ = second.write_all(b"GET /api/echo HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut out = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), second.read_to_end(&mut out)).await.expect("closed promptly");
    assert_eq!(n.unwrap_or(0), 0, "the excess connection is closed without an answer");
}

#[tokio::test]
async fn per_address_connection_limit_closes_excess_connections_and_frees_slots() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[server]\nmax_connections_per_ip = 2\n").await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn served(s: &mut tokio::net::TcpStream) -> bool {
        if s.write_all(b"GET /api/echo HTTP/1.1\r\nhost: x\r\n\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 12];
        matches!(tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await, Ok(Ok(_)))
            && &buf == b"HTTP/1.1 200"
    }
    let mut a = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let mut b = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    assert!(served(&mut a).await && served(&mut b).await, "two connections are within the limit");
    let mut c = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    assert!(!served(&mut c).await, "a third connection from the same address is closed");
    // The admin port is not limited per address.
    for _ in 0..3 {
        assert_eq!(gw.admin(Method::GET, "/healthz").send().await.status, 200);
    }
    drop(a);
    let mut freed = false;
    for _ in 0..50 {
        let mut d = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
        if served(&mut d).await {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "a closed connection frees its slot");
}

#[tokio::test]
async fn idle_connections_are_closed_on_both_protocols_but_not_mid_response() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[server]\nidle_timeout = \"300ms\"\n").await;
    // HTTP/1.1: after a response, an idle keep-alive connection is closed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h1 = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    h1.write_all(b"GET /api/echo HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = h1.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let eof = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match h1.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "idle HTTP/1.1 connection closed");

    // HTTP/2: the connection ends (GOAWAY) once idle.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = Request::get(gw.url("/api/echo")).body(Full::new(Bytes::new())).expect("req");
    assert_eq!(sender.send_request(req).await.expect("h2 response").status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection closed");

    // A response slower than the idle timeout is not cut.
    backend.with(|s| s.delay = Some(Duration::from_millis(900)));
    assert_eq!(gw.get("/api/echo").send().await.status, 200);
}
