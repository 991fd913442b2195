//! Security: route-matching bypass attempts on every watched route class (HTTP/1.1 spellings,
//! absolute-form targets, HTTP/2 `:path` tricks), request smuggling and malformed heads, header
//! limits, slowloris, and cross-user access (IDOR) on the user and admin APIs.

mod support;

use http::Method;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{Gateway, MockStrapi, PASSWORD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes on a new connection and reads until the server closes it (or 3 s pass).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

fn status_of(response: &str) -> u16 {
    response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// One HTTP/1.1 request with any target bytes (the http crate refuses some of the spellings
/// tried here, e.g. backslashes); returns the status and the body.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: test\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let res = raw(addr, req.as_bytes()).await;
    let body = res.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status_of(&res), body)
}

/// How the mock backend (like Strapi's router: case-insensitive, optional trailing slash)
/// would route a path.
fn backend_route(path: &str) -> String {
    let p = path.split('?').next().unwrap_or("").to_ascii_lowercase();
    p.strip_suffix('/').filter(|s| !s.is_empty()).map(str::to_string).unwrap_or(p)
}

/// Spellings of `path` a client could try to slip past the gateway's route matching.
fn spellings(path: &str) -> Vec<String> {
    let upper = path.to_uppercase();
    let (head, last) = path.rsplit_once('/').expect("a path");
    let first = &path[1..2];
    vec![
        path.to_string(),
        upper.clone(),
        format!("{path}/"),
        format!("{upper}/"),
        format!("{path}?x=1"),
        format!("{path}?"),
        format!("/{path}"),
        path.replace('/', "//"),
        format!("{head}/./{last}"),
        format!("{head}/x/../{last}"),
        format!("{head}/%2e/{last}"),
        format!("{head}/%2E%2E/{}/{last}", head.rsplit('/').next().unwrap_or("")),
        format!("{head}%2F{last}"),
        format!("{head}%2f{last}"),
        format!("/%{:02X}{}", first.as_bytes()[0], &path[2..]),
        format!("{head}/{}", last.chars().map(|c| format!("%{:02x}", c as u32)).collect::<String>()),
        path.replace('/', "\\"),
        format!("{}{path}", "/a/..".repeat(500)),
        format!("{path};x=1"),
        format!("{path}%00"),
        format!("{path}%3Fx"),
    ]
}

#[tokio::test]
async fn no_spelling_of_refresh_lets_an_ended_sessions_refresh_token_reach_the_backend() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    gw.post("/api/auth/logout").bearer(&s.jwt).send().await;
    let refreshes = || backend.seen().iter().filter(|r| backend_route(&r.path) == "/api/auth/refresh").count();
    let before = refreshes();
    let mut tried = 0;
    for path in spellings("/api/auth/refresh") {
        let (status, _) = send(gw.addr, "POST", &path, None, Some(json!({"refreshToken": s.refresh}))).await;
        assert_ne!(status, 200, "{path}: refreshed an ended session");
        tried += 1;
    }
    // Absolute-form request targets (RFC 9112 §3.2.2), which proxies must accept.
    for target in ["http://evil.example/api/auth/refresh", "http://evil.example/API/AUTH/REFRESH/"] {
        let body = json!({"refreshToken": s.refresh}).to_string();
        let req = format!(
            "POST {target} HTTP/1.1\r\nhost: evil.example\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let res = raw(gw.addr, req.as_bytes()).await;
        assert_eq!(status_of(&res), 401, "{target}: {res}");
        assert!(res.contains("session_terminated"), "{target}: {res}");
        tried += 1;
    }
    // HTTP/2 `:path` spellings.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for path in ["/API/AUTH/REFRESH", "//api//auth//refresh/", "/api/auth/./refresh", "/api/auth/%72efresh"] {
        let req = http::Request::post(format!("http://{}{path}", gw.addr))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(json!({"refreshToken": s.refresh}).to_string())))
            .expect("request");
        let res = h2.request(req).await.expect("h2 request");
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.status(), 401, "h2 {path}");
        tried += 1;
    }
    assert_eq!(refreshes(), before, "an ended session's refresh token reached the backend's refresh route");
    eprintln!("{tried} refresh spellings refused");
}

#[tokio::test]
async fn every_logout_and_credential_change_spelling_the_backend_honours_is_seen_by_the_gateway() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    for path in spellings("/api/auth/logout") {
        let s = gw.login("alice").await;
        let (status, _) = send(gw.addr, "POST", &path, Some(&s.jwt), Some(json!({"refreshToken": s.refresh}))).await;
        let backend_logged_out = status == 200 && backend_route(&path) == "/api/auth/logout";
        let ended = gw.get("/api/articles").bearer(&s.jwt).send().await.status == 401;
        assert!(!backend_logged_out || ended, "{path}: the backend logged out, the gateway kept the session");
    }
    let alice_id = gw.login("alice").await.user_id;
    for (i, tail) in
        [format!("/api/users/{alice_id}"), format!("/API/Users/{alice_id}/"), format!("/api/users/{alice_id}?x=1")]
            .into_iter()
            .enumerate()
    {
        let s = gw.login("alice").await;
        let password = format!("{PASSWORD}{i}");
        let res = gw.put(&tail).bearer(&s.jwt).json(json!({"password": password})).send().await;
        if res.status == 200 {
            assert_eq!(
                gw.get("/api/articles").bearer(&s.jwt).send().await.reason().as_deref(),
                Some("session_terminated"),
                "{tail}: the password changed at the backend, the old session survived"
            );
        }
        backend.with(|st| {
            if let Some(u) = st.users.iter_mut().find(|u| u.username == "alice") {
                u.password = PASSWORD.to_string();
            }
        });
    }
}

#[tokio::test]
async fn user_api_spellings_and_other_users_ids_never_reach_another_users_sessions() {
    let backend = MockStrapi::start().await;
    // Room for the admin-route probes below before the brute-force limit answers 429.
    let gw = Gateway::start(&backend.url(), "[admin]\nauth_failures_per_minute = 100\n").await;
    let alice = gw.login("alice").await;
    let bob = gw.login("bob").await;
    let list = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&alice.jwt).send().await.json();
    let a = &list["data"][0];
    let ids = [
        a["sessionId"].as_str().expect("sid").to_string(),
        a["documentId"].as_str().expect("documentId").to_string(),
        a["id"].to_string(),
    ];
    for id in &ids {
        for path in spellings(&format!("/api/magic-sessionmanager/my-sessions/{id}")) {
            let (status, _) = send(gw.addr, "DELETE", &path, Some(&bob.jwt), None).await;
            assert_ne!(status, 200, "bob ended alice's session through {path}");
        }
        let res = gw.get(&format!("/api/magic-sessionmanager/my-sessions/{id}")).bearer(&bob.jwt).send().await;
        assert_ne!(res.status, 200);
    }
    assert_eq!(gw.get("/api/articles").bearer(&alice.jwt).send().await.status, 200, "alice's session is untouched");
    for path in spellings("/api/magic-sessionmanager/my-sessions") {
        let (status, body) = send(gw.addr, "GET", &path, Some(&bob.jwt), None).await;
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            for s in v["data"].as_array().expect("data") {
                assert!(
                    !ids.contains(&s["sessionId"].as_str().unwrap_or("").to_string()),
                    "{path} listed alice's session to bob"
                );
            }
        }
    }
    // A user's token is never an admin credential, on any admin route.
    for (m, p) in [
        (Method::GET, "/magic-sessionmanager/sessions"),
        (Method::GET, &format!("/magic-sessionmanager/sessions/{}", ids[0]) as &str),
        (Method::POST, &format!("/magic-sessionmanager/sessions/{}/terminate", ids[0])),
        (Method::POST, "/magic-sessionmanager/user/1/terminate-all"),
        (Method::POST, "/magic-sessionmanager/user/1/toggle-block"),
        (Method::GET, "/magic-sessionmanager/stats"),
        (Method::GET, "/magic-sessionmanager/audit"),
        (Method::GET, "/magic-sessionmanager/export"),
        (Method::POST, "/magic-sessionmanager/import"),
        (Method::POST, "/magic-sessionmanager/keys/rotate"),
        (Method::POST, "/reload"),
        (Method::GET, "/admin/api/sessions"),
    ] {
        let res = support::Req::new(m.clone(), &format!("http://{}{p}", gw.admin_addr)).bearer(&bob.jwt).send().await;
        assert_eq!(res.status, 401, "{m} {p}");
        assert_eq!(res.reason().as_deref(), Some("admin_unauthorized"), "{m} {p}");
    }
    assert_eq!(gw.get("/api/articles").bearer(&alice.jwt).send().await.status, 200);
}

#[tokio::test]
async fn smuggling_and_malformed_heads_are_refused_before_the_backend() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let smuggled = "GET /api/smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "Content-Length and Transfer-Encoding together",
            format!("POST /api/articles HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "two different Content-Lengths",
            format!("POST /api/articles HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 45\r\n\r\nabcd{smuggled}"),
        ),
        (
            "an unknown transfer coding",
            format!("POST /api/articles HTTP/1.1\r\nhost: x\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "chunked not last",
            format!("POST /api/articles HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        ("obs-fold", format!("GET /api/articles HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n b\r\n\r\n{smuggled}")),
        ("whitespace before the colon", format!("GET /api/articles HTTP/1.1\r\nhost: x\r\ncontent-length : 0\r\n\r\n{smuggled}")),
        ("a NUL in a header value", format!("GET /api/articles HTTP/1.1\r\nhost: x\r\nx-a: a\0b\r\n\r\n{smuggled}")),
        ("a bad chunk size", format!("POST /api/articles HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n\r\n{smuggled}")),
        ("a space in the target", format!("GET /api/arti cles HTTP/1.1\r\nhost: x\r\n\r\n{smuggled}")),
    ];
    for (what, req) in cases {
        let res = raw(gw.addr, req.as_bytes()).await;
        let status = status_of(&res);
        assert!((400..500).contains(&status) || res.is_empty(), "{what}: answered {status}:\n{res}");
        assert!(!res.contains("HTTP/1.1 200"), "{what}: {res}");
    }
    assert!(!backend.seen().iter().any(|r| r.path.contains("smuggled")), "a smuggled request reached the backend");
    let direct = support::direct(&backend, Method::GET, "/api/articles").send().await.status;
    assert_eq!(gw.get("/api/articles").send().await.status, direct, "the gateway still serves");
}

#[tokio::test]
async fn header_limits_and_slowloris_are_cut_off() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(
        &backend.url(),
        "[server]\nmax_headers = 50\nmax_header_bytes = 8192\nheader_read_timeout = \"1s\"\n",
    )
    .await;
    let many: String = (0..80).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let res = raw(gw.addr, format!("GET /api/articles HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes()).await;
    assert_eq!(status_of(&res), 431, "too many headers: {res}");
    let big = "a".repeat(10_000);
    let res = raw(gw.addr, format!("GET /api/articles HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes()).await;
    assert_eq!(status_of(&res), 431, "a head over max_header_bytes: {res}");
    let res = raw(gw.addr, format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "p".repeat(20_000)).as_bytes()).await;
    assert!(matches!(status_of(&res), 414 | 431), "an overlong target: {res}");

    // Slowloris: a head trickling in one byte every 200 ms is cut at header_read_timeout.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let started = Instant::now();
    let head = b"GET /api/articles HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_after = None;
    for b in head.iter() {
        if s.write_all(&[*b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Err(_) => {}
        }
    }
    let t = closed_after.expect("the slow head was never cut off");
    assert!(t >= Duration::from_millis(900) && t < Duration::from_millis(2500), "cut after {t:?}");
    assert!(!backend.seen().iter().any(|r| r.headers.contains_key("x-slow")));
}
