//! Long-lived exchanges obey revocation, through real sockets: a WebSocket upgrade is proxied
//! with the session check on the handshake, and a tunnel, an event stream and a long poll opened
//! with a session's token are closed within a second of that session ending.

mod support;

use http::Method;
use std::time::{Duration, Instant};
use support::{Gateway, MockStrapi};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API: &str = "/api/magic-sessionmanager";

/// Opens a raw connection and sends `GET path` with the bearer and extra header lines.
async fn open(gw: &Gateway, path: &str, jwt: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {jwt}\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s
}

const WS: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Reads the response head (up to the blank line).
async fn head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n =
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await.expect("head in time").expect("read");
        assert!(n > 0, "closed before the head: {}", String::from_utf8_lossy(&buf));
        buf.push(b[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Reads until the peer closes; returns how long that took (panics after `limit`).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

async fn metrics(gw: &Gateway) -> String {
    gw.admin_anon(Method::GET, "/metrics").send().await.text()
}

#[tokio::test]
async fn a_websocket_is_proxied_and_closed_when_its_session_ends() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let alice = gw.login("alice").await;
    let mut ws = open(&gw, "/ws/echo", &alice.jwt, WS).await;
    let h = head(&mut ws).await;
    assert!(h.starts_with("HTTP/1.1 101"), "{h}");
    assert!(h.to_ascii_lowercase().contains("upgrade: websocket"), "{h}");
    ws.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 5];
    ws.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"hello", "bytes flow both ways");
    // The handshake reached the backend with its upgrade headers and the checked bearer.
    let seen = backend.seen().into_iter().find(|r| r.path == "/ws/echo").expect("forwarded");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["authorization"], format!("Bearer {}", alice.jwt).as_str());
    assert!(metrics(&gw).await.contains("sessiongate_upgrades_open 1"));
    // Another user's tunnel stays open.
    let bob = gw.login("bob").await;
    let mut other = open(&gw, "/ws/echo", &bob.jwt, WS).await;
    assert!(head(&mut other).await.starts_with("HTTP/1.1 101"));
    // The user logs out elsewhere: the tunnel closes within a second.
    let t0 = Instant::now();
    assert_eq!(gw.post(&format!("{API}/logout")).bearer(&alice.jwt).send().await.status, 200);
    let took = closed_within(&mut ws, Duration::from_secs(1)).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "closed {took:?} after the logout answered");
    other.write_all(b"still").await.expect("write");
    let mut buf = [0u8; 5];
    other.read_exact(&mut buf).await.expect("the other tunnel still echoes");
    let m = metrics(&gw).await;
    assert!(m.contains("sessiongate_exchanges_closed_total{kind=\"websocket\"} 1"), "{m}");
    assert!(m.contains("sessiongate_upgrades_open 1"), "{m}");
}

#[tokio::test]
async fn an_upgrade_with_an_ended_sessions_token_never_reaches_the_backend() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let alice = gw.login("alice").await;
    gw.post("/api/auth/logout").bearer(&alice.jwt).json(serde_json::json!({})).send().await;
    let mut ws = open(&gw, "/ws/echo", &alice.jwt, WS).await;
    let h = head(&mut ws).await;
    assert!(h.starts_with("HTTP/1.1 401"), "{h}");
    assert!(h.contains("x-sessiongate-reason: session_terminated"), "{h}");
    assert!(!backend.seen().iter().any(|r| r.path == "/ws/echo"), "refused before the backend");
}

#[tokio::test]
async fn an_event_stream_is_cut_when_its_session_ends() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let alice = gw.login("alice").await;
    let mut sse = open(&gw, "/api/events", &alice.jwt, "Accept: text/event-stream\r\n").await;
    let h = head(&mut sse).await;
    assert!(h.starts_with("HTTP/1.1 200") && h.contains("text/event-stream"), "{h}");
    let mut buf = [0u8; 64];
    let n = sse.read(&mut buf).await.expect("an event");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("data: 0"), "events flow");
    let t0 = Instant::now();
    let kicked = gw.admin(Method::POST, &format!("/magic-sessionmanager/user/{}/terminate-all", alice.user_id));
    assert_eq!(kicked.send().await.status, 200);
    closed_within(&mut sse, Duration::from_secs(1)).await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    let m = metrics(&gw).await;
    assert!(m.contains("sessiongate_exchanges_closed_total{kind=\"stream\"} 1"), "{m}");
}

#[tokio::test]
async fn a_long_poll_of_an_ended_session_is_answered_at_once() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let alice = gw.login("alice").await;
    let poll = gw.get("/api/poll").bearer(&alice.jwt).send();
    let waiting = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    gw.post(&format!("{API}/logout")).bearer(&alice.jwt).send().await;
    let res = tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("answered within 1 s").expect("task");
    assert_eq!(res.status, 401);
    assert_eq!(res.reason().as_deref(), Some("session_terminated"));
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(metrics(&gw).await.contains("sessiongate_exchanges_closed_total{kind=\"waiting\"} 1"));
}

#[tokio::test]
async fn an_open_tunnel_still_counts_against_the_connection_cap() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[server]\nmax_connections = 2\n").await;
    let alice = gw.login("alice").await;
    let mut ws = open(&gw, "/ws/echo", &alice.jwt, WS).await;
    assert!(head(&mut ws).await.starts_with("HTTP/1.1 101"));
    let mut second = open(&gw, "/api/articles", &alice.jwt, "").await;
    assert!(head(&mut second).await.starts_with("HTTP/1.1 200"), "one connection besides the tunnel");
    // A third, while the tunnel and the second are open, is over the cap.
    let mut third = open(&gw, "/api/articles", &alice.jwt, "").await;
    closed_within(&mut third, Duration::from_secs(2)).await;
    let m = metrics(&gw).await;
    assert!(m.contains("sessiongate_connections_open{listener=\"public\"} 2"), "{m}");
    // The tunnel closes with its session; its place is free again.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !metrics(&gw).await.contains("sessiongate_connections_open{listener=\"public\"} 1") {
        assert!(Instant::now() < deadline, "the second connection's place is not free");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.post(&format!("{API}/logout")).bearer(&alice.jwt).send().await.status, 200);
    closed_within(&mut ws, Duration::from_secs(1)).await;
    let bob = gw.login("bob").await;
    let mut again = open(&gw, "/ws/echo", &bob.jwt, WS).await;
    assert!(head(&mut again).await.starts_with("HTTP/1.1 101"), "the tunnel's place was given back");
    assert_eq!(gw.get("/api/articles").bearer(&bob.jwt).send().await.status, 200);
}
