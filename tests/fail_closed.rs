//! Fail-closed enforcement: the backend only ever sees credentials the gateway has checked.
//!
//! The backend here parses requests exactly as Strapi 5.54 does (`support/strapi.rs`) and
//! records every token it accepts and mints. Sessions are ended in every way the gateway ends
//! them; then every spelling of their credentials is generated — `Authorization` spellings over
//! HTTP/1.1 and HTTP/2, refresh bodies in every format and content coding Strapi reads, cookie
//! and body in every precedence, route spellings — and sent through the gateway. The invariant:
//! the backend never accepts a token of an ended session and never mints tokens for one. (The
//! harness asserts the same invariant when any test's gateway is dropped.)

mod support;

use http::Method;
use serde_json::{json, Value};
use std::io::Write;
use support::strapi::{self, backend_sid, MockStrapi, Status};
use support::{eventually, Gateway, Login, Req};

const ADMIN: &str = "/magic-sessionmanager";

/// A session the gateway has ended, with all its tokens.
struct Ended {
    how: &'static str,
    jwt: String,
    refresh: String,
    /// Every token the session ever had (rotations included).
    tokens: Vec<String>,
}

fn jwt_secret_file(dir: &std::path::Path) -> String {
    let p = dir.join("jwt-secret");
    std::fs::write(&p, strapi::JWT_SECRET).expect("write jwt secret");
    p.display().to_string()
}

/// The gateway setups the matrix runs under: plain, with `[jwt]` verification, and refusing
/// unknown tokens.
fn setup(kind: &str, dir: &std::path::Path) -> String {
    let base = "[sessions]\nrefresh_reuse_grace = \"0s\"\n";
    match kind {
        "jwt" => format!("{base}[jwt]\nsecret_file = \"{}\"\n", jwt_secret_file(dir)),
        "reject" => format!("{base}unknown_tokens = \"reject\"\n"),
        _ => base.to_string(),
    }
}

async fn login(gw: &Gateway, user: &str) -> Login {
    gw.login(user).await
}

async fn gateway_sid(gw: &Gateway, jwt: &str) -> String {
    let res = gw.get("/api/magic-sessionmanager/current-session").bearer(jwt).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["data"]["sessionId"].as_str().expect("sessionId").to_string()
}

/// Ends one session in each way the gateway ends sessions; returns them.
async fn end_in_every_way(gw: &Gateway, backend: &MockStrapi) -> Vec<Ended> {
    backend.add_users(["u_logout", "u_admin", "u_block", "u_reuse", "u_pw", "u_api", "u_native", "u_all"]);
    let mut out = Vec::new();
    let ended = |how, s: &Login, extra: Vec<String>| {
        let mut tokens = vec![s.jwt.clone(), s.refresh.clone()];
        tokens.extend(extra);
        Ended { how, jwt: s.jwt.clone(), refresh: s.refresh.clone(), tokens }
    };

    let s = login(gw, "u_logout").await;
    let r = gw.post("/api/auth/logout").bearer(&s.jwt).json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(r.status, 200);
    out.push(ended("logout", &s, vec![]));

    let s = login(gw, "u_admin").await;
    let sid = gateway_sid(gw, &s.jwt).await;
    let r = gw.admin(Method::POST, &format!("{ADMIN}/sessions/{sid}/terminate")).send().await;
    assert_eq!(r.status, 200);
    out.push(ended("admin_terminate", &s, vec![]));

    let s = login(gw, "u_block").await;
    let r = gw.admin(Method::POST, &format!("{ADMIN}/user/{}/block", s.user_id)).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    out.push(ended("block", &s, vec![]));

    let s = login(gw, "u_reuse").await;
    let rotated = gw.refresh(&s.refresh).await;
    let r = gw.post("/api/auth/refresh").json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(r.reason().as_deref(), Some("refresh_token_reuse"));
    out.push(Ended {
        how: "refresh_reuse",
        jwt: rotated.jwt.clone(),
        refresh: rotated.refresh.clone(),
        tokens: vec![s.jwt.clone(), s.refresh.clone(), rotated.jwt, rotated.refresh],
    });

    let s = login(gw, "u_pw").await;
    let r = gw
        .post("/api/auth/change-password")
        .bearer(&s.jwt)
        .json(
            json!({"currentPassword": support::PASSWORD, "password": "N3w-pass!", "passwordConfirmation": "N3w-pass!"}),
        )
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    out.push(ended("password_change", &s, vec![]));

    let s = login(gw, "u_api").await;
    assert_eq!(gw.post("/api/magic-sessionmanager/logout").bearer(&s.jwt).send().await.status, 200);
    out.push(ended("user_api_logout", &s, vec![]));

    let s = login(gw, "u_native").await;
    let r = gw.delete(&format!("/api/auth/sessions/{}", backend_sid(&s.jwt))).bearer(&s.jwt).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    out.push(ended("backend_session_route", &s, vec![]));

    let a = login(gw, "u_all").await;
    let b = login(gw, "u_all").await;
    let r = gw
        .post("/api/auth/logout")
        .bearer(&a.jwt)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("scope=all")
        .send()
        .await;
    assert_eq!(r.status, 200);
    out.push(ended("logout_all_form", &a, vec![]));
    out.push(ended("logout_all_form_other", &b, vec![]));

    // Every one of them is refused in its plain spelling before the variants start.
    for e in &out {
        let r = gw.get("/api/articles").bearer(&e.jwt).send().await;
        assert_eq!(r.status, 401, "{}: {}", e.how, r.text());
    }
    out
}

/// `Authorization` values that Strapi reads as a bearer token (`split(/\s+/)`, two parts).
fn spellings(t: &str) -> Vec<Vec<u8>> {
    let b = t.as_bytes();
    let join = |pre: &[u8], post: &[u8]| [pre, b, post].concat();
    vec![
        join(b"Bearer ", b""),
        join(b"bearer ", b""),
        join(b"BEARER ", b""),
        join(b"bEaReR ", b""),
        join(b"Bearer\t", b""),
        join(b"Bearer  ", b""),
        join(b"Bearer \t ", b""),
        join(b"Bearer\xa0", b""),
        join(b"Bearer \xa0", b""),
        join(b"  Bearer ", b"  "),
        join(b"\tBearer\t", b"\t"),
        join("Bearer\u{3000}".as_bytes(), b""),
        join("Bearer\u{2002}".as_bytes(), b""),
        join("Bearer\u{feff}".as_bytes(), b""),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Json,
    JsonBom,
    JsonCharset,
    VndApiJson,
    Form,
    Multipart,
}

const FORMATS: [Format; 6] =
    [Format::Json, Format::JsonBom, Format::JsonCharset, Format::VndApiJson, Format::Form, Format::Multipart];

#[derive(Debug, Clone, Copy)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
    Br,
}

const CODINGS: [Coding; 4] = [Coding::Identity, Coding::Gzip, Coding::Deflate, Coding::Br];

/// A body with `fields` in `format`: (content type, bytes).
fn body(format: Format, fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let obj: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let json = Value::Object(obj).to_string().into_bytes();
    match format {
        Format::Json => ("application/json".into(), json),
        Format::JsonBom => ("application/json".into(), [b"\xef\xbb\xbf".as_slice(), &json].concat()),
        Format::JsonCharset => ("Application/JSON; charset=UTF-8".into(), json),
        Format::VndApiJson => ("application/vnd.api+json".into(), json),
        Format::Form => {
            let enc =
                |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
            ("application/x-www-form-urlencoded".into(), parts.join("&").into_bytes())
        }
        Format::Multipart => {
            let mut b = Vec::new();
            for (k, v) in fields {
                write!(b, "--XbOuNdArY\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").expect("write");
            }
            b.extend_from_slice(b"--XbOuNdArY--\r\n");
            ("multipart/form-data; boundary=XbOuNdArY".into(), b)
        }
    }
}

fn encode(coding: Coding, raw: Vec<u8>) -> (Option<&'static str>, Vec<u8>) {
    match coding {
        Coding::Identity => (None, raw),
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&raw).expect("gzip");
            (Some("gzip"), e.finish().expect("gzip"))
        }
        Coding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&raw).expect("zlib");
            (Some("deflate"), e.finish().expect("zlib"))
        }
        Coding::Br => {
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &raw[..], &mut out, &brotli_params()).expect("br");
            (Some("br"), out)
        }
    }
}

/// Where the refresh token of the ended session travels, and what else comes with it.
#[derive(Debug, Clone, Copy)]
enum Placement {
    Body,
    Cookie,
    /// The ended cookie, and a decoy token in the body (the gateway once read only the body).
    CookieAndDecoyBody,
    /// The ended cookie, and a live refresh token in the body.
    CookieAndLiveBody,
    /// The ended token in the body, a live one in the cookie.
    BodyAndLiveCookie,
    /// The ended cookie, quoted and after another cookie without a space.
    QuotedCookie,
}

const PLACEMENTS: [Placement; 6] = [
    Placement::Body,
    Placement::Cookie,
    Placement::CookieAndDecoyBody,
    Placement::CookieAndLiveBody,
    Placement::BodyAndLiveCookie,
    Placement::QuotedCookie,
];

/// How one refresh credential is sent.
struct Attack<'a> {
    path: &'a str,
    bearer: Option<&'a str>,
    placement: Placement,
    format: Format,
    coding: Coding,
    h2: bool,
}

/// One POST carrying `ended` as a refresh credential, with `live` where the placement wants it.
fn refresh_attack(gw: &Gateway, a: &Attack<'_>, ended: &str, live: &str) -> Req {
    let Attack { path, bearer, placement, format, coding, h2 } = *a;
    let (cookie, fields): (Option<String>, Vec<(&str, &str)>) = match placement {
        Placement::Body => (None, vec![("refreshToken", ended)]),
        Placement::Cookie => (Some(format!("strapi_up_refresh={ended}")), vec![("x", "1")]),
        Placement::CookieAndDecoyBody => (Some(format!("strapi_up_refresh={ended}")), vec![("refreshToken", "decoy")]),
        Placement::CookieAndLiveBody => (Some(format!("strapi_up_refresh={ended}")), vec![("refreshToken", live)]),
        Placement::BodyAndLiveCookie => (Some(format!("strapi_up_refresh={live}")), vec![("refreshToken", ended)]),
        Placement::QuotedCookie => (Some(format!("a=1;strapi_up_refresh=\"{ended}\"")), vec![("x", "1")]),
    };
    let (ct, raw) = body(format, &fields);
    let (ce, bytes) = encode(coding, raw);
    let mut req = Req::new(Method::POST, &gw.url(path)).header("content-type", &ct).body(bytes);
    if let Some(ce) = ce {
        req = req.header("content-encoding", ce);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", &c);
    }
    if let Some(b) = bearer {
        req = req.bearer(b);
    }
    if h2 {
        req = req.http2();
    }
    req
}

/// Sends every variant against every ended session and asserts none got through.
async fn run_matrix(kind: &str) {
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(&backend.url(), &setup(kind, dir.path())).await;
    let ended = end_in_every_way(&gw, &backend).await;
    backend.add_users(["u_live"]);
    let attack_start = support::strapi_now_ms();
    let mut sent = 0usize;
    let mut check = |what: String, r: support::Resp| {
        sent += 1;
        assert!(!r.status.is_success(), "[{kind}] {what} was answered {}: {}", r.status, r.text());
    };
    for (i, e) in ended.iter().enumerate() {
        let live = login(&gw, "u_live").await;
        for (j, spelling) in spellings(&e.jwt).iter().enumerate() {
            for path in ["/api/articles", "/api/users/me", "/api/auth/sessions"] {
                let h2 = (i + j) % 2 == 1;
                let mut req = gw.get(path).header_bytes("authorization", spelling);
                if h2 {
                    req = req.http2();
                }
                check(format!("{} GET {path} spelling #{j} h2={h2}", e.how), req.send().await);
            }
            let r = gw
                .post("/api/auth/change-password")
                .header_bytes("authorization", spelling)
                .json(json!({"currentPassword": "x", "password": "y", "passwordConfirmation": "y"}))
                .send()
                .await;
            check(format!("{} change-password spelling #{j}", e.how), r);
            let r =
                gw.get("/api/magic-sessionmanager/my-sessions").header_bytes("authorization", spelling).send().await;
            check(format!("{} user API spelling #{j}", e.how), r);
            let r = gw.post("/api/auth/logout").header_bytes("authorization", spelling).json(json!({})).send().await;
            check(format!("{} logout spelling #{j}", e.how), r);
        }
        // Two Authorization headers, whichever comes first.
        for (first, second) in [(&e.jwt, &live.jwt), (&live.jwt, &e.jwt)] {
            let r = gw
                .get("/api/articles")
                .header("authorization", &format!("Bearer {first}"))
                .header("authorization", &format!("Bearer {second}"))
                .send()
                .await;
            assert_eq!(r.status, 400, "{}", r.text());
            check(format!("{} two Authorization headers", e.how), r);
        }
        for (k, (format, coding)) in FORMATS.iter().flat_map(|f| CODINGS.iter().map(move |c| (*f, *c))).enumerate() {
            for placement in PLACEMENTS {
                for path in ["/api/auth/refresh", "/API/Auth/Refresh/"] {
                    let h2 = (k + path.len()) % 2 == 0;
                    let a = Attack { path, bearer: None, placement, format, coding, h2 };
                    let req = refresh_attack(&gw, &a, &e.refresh, &live.refresh);
                    check(
                        format!("{} refresh {placement:?} {format:?} {coding:?} {path} h2={h2}", e.how),
                        req.send().await,
                    );
                }
                // A logout by a live session that carries the ended refresh token too.
                let a =
                    Attack { path: "/api/auth/logout", bearer: Some(&live.jwt), placement, format, coding, h2: false };
                let req = refresh_attack(&gw, &a, &e.refresh, &live.refresh);
                check(format!("{} logout {placement:?} {format:?} {coding:?}", e.how), req.send().await);
            }
        }
        // The live session was never touched by any refused request.
        assert_eq!(gw.get("/api/articles").bearer(&live.jwt).send().await.status, 200);
    }
    for e in &ended {
        for t in &e.tokens {
            assert!(!backend.accepted_since(t, attack_start), "[{kind}] a token of the {} session was accepted", e.how);
        }
        let refreshes: Vec<String> = e.tokens.clone();
        assert_eq!(
            backend.minted_from(&refreshes, attack_start),
            0,
            "[{kind}] tokens were minted for the {} session",
            e.how
        );
    }
    eprintln!(
        "[{kind}] {sent} requests with credentials of {} ended sessions: none reached the backend as a credential",
        ended.len()
    );
}

#[tokio::test]
async fn no_spelling_format_coding_or_precedence_lets_an_ended_session_through() {
    run_matrix("plain").await;
}

#[tokio::test]
async fn the_same_holds_with_jwt_verification() {
    run_matrix("jwt").await;
}

#[tokio::test]
async fn the_same_holds_when_unknown_tokens_are_rejected() {
    run_matrix("reject").await;
}

/// The harness's teardown check is a real check: a token of an ended session that reached the
/// backend through this gateway makes it fail.
#[tokio::test]
async fn the_teardown_check_fails_when_an_ended_token_got_through() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    gw.post("/api/auth/logout").bearer(&s.jwt).json(json!({"refreshToken": s.refresh})).send().await;
    gw.assert_nothing_ended_got_through();
    // Pretend the backend accepted the ended jwt through this gateway a second later.
    let host = gw.addr.to_string();
    backend.with(|st| {
        st.accepted.push(strapi::Accepted {
            hash: strapi::hash(&s.jwt),
            kind: "access",
            at_ms: support::strapi_now_ms() + 1_000,
            via: strapi::Via::Gateway(host),
            route: "/api/articles".into(),
        })
    });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gw.assert_nothing_ended_got_through()));
    assert!(caught.is_err(), "the teardown check must fail");
    backend.with(|st| st.accepted.clear());
}

/// A refresh token presented as the bearer is not an access credential (Strapi answers 401),
/// so the user API does not take it — and does not judge expiry by its lifetime.
#[tokio::test]
async fn the_user_api_takes_access_tokens_only() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let r = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&s.refresh).send().await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.reason().as_deref(), Some("unauthenticated"));
    assert_eq!(gw.get("/api/magic-sessionmanager/my-sessions").bearer(&s.jwt).send().await.status, 200);
    // Spelled with a tab, the access token is still the user's.
    let r = gw
        .get("/api/magic-sessionmanager/current-session")
        .header("authorization", &format!("Bearer\t{}", s.jwt))
        .send()
        .await;
    assert_eq!(r.status, 200);
}

/// The backend gets exactly the credential that was checked.
#[tokio::test]
async fn the_backend_receives_the_canonical_credentials() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let r =
        gw.get("/api/echo").header_bytes("authorization", format!("bEaReR\u{a0}\t{}", s.jwt).as_bytes()).send().await;
    assert_eq!(r.json()["headers"]["authorization"], format!("Bearer {}", s.jwt));
    let r = gw.get("/api/echo").header("authorization", "Basic YWxpY2U6cGFzcw==").send().await;
    assert!(r.json()["headers"].get("authorization").is_none(), "an unreadable Authorization is not forwarded");
    // A form refresh reaches the backend as JSON.
    let before = backend.seen().len();
    let res = gw
        .post("/api/auth/refresh")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-encoding", "gzip")
        .body(encode(Coding::Gzip, format!("refreshToken={}", s.refresh).into_bytes()).1)
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let seen = backend.seen().split_off(before);
    let req = seen.iter().find(|r| r.path == "/api/auth/refresh").expect("forwarded");
    assert_eq!(req.headers["content-type"], "application/json");
    assert!(req.headers.get("content-encoding").is_none());
    assert_eq!(serde_json::from_slice::<Value>(&req.body).expect("json"), json!({"refreshToken": s.refresh}));
    // The rotation was learnt: the old refresh token is now reuse.
    let again = gw.post("/api/auth/refresh").json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(again.status, 401);
}

/// A refresh carrying a token in both the cookie and the body reaches the backend with only the
/// one the backend reads (`extract.refresh_precedence`): the cookie for Strapi, the body when
/// configured so.
#[tokio::test]
async fn only_the_refresh_credential_the_backend_reads_is_forwarded() {
    for (precedence, cookie_wins) in [("cookie", true), ("body", false)] {
        let backend = MockStrapi::start().await;
        let gw = Gateway::start(&backend.url(), &format!("[extract]\nrefresh_precedence = \"{precedence}\"\n")).await;
        let a = gw.login("alice").await;
        let b = gw.login("alice").await;
        let before = backend.seen().len();
        let r = gw
            .post("/api/auth/refresh")
            .header("cookie", &format!("theme=dark; strapi_up_refresh={}", a.refresh))
            .json(json!({"refreshToken": b.refresh, "other": 1}))
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = backend.seen().split_off(before);
        let req = seen.iter().find(|r| r.path == "/api/auth/refresh").expect("forwarded");
        let cookie = req.headers.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body: Value = serde_json::from_slice(&req.body).expect("json");
        if cookie_wins {
            assert_eq!(cookie, format!("theme=dark; strapi_up_refresh={}", a.refresh));
            assert_eq!(body, json!({"other": 1}), "the body's token is not forwarded");
        } else {
            assert_eq!(cookie, "theme=dark", "the cookie's token is not forwarded");
            assert_eq!(body, json!({"refreshToken": b.refresh, "other": 1}));
        }
        // The session whose token was forwarded is the one that rotated.
        let (rotated, kept) = if cookie_wins { (&a, &b) } else { (&b, &a) };
        let again = gw.post("/api/auth/refresh").json(json!({"refreshToken": rotated.refresh})).send().await;
        assert_eq!(again.status, 401, "[{precedence}] the forwarded token was rotated");
        assert_eq!(gw.post("/api/auth/refresh").json(json!({"refreshToken": kept.refresh})).send().await.status, 200);
    }
}

/// What cannot be read unambiguously is refused in the backend's error shape, with a reason.
#[tokio::test]
async fn ambiguous_or_unreadable_auth_requests_are_refused() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let cases: Vec<(Req, u16, &str)> = vec![
        (
            gw.post("/api/auth/refresh")
                .header("content-type", "application/json")
                .body(format!(r#"{{"refreshToken":"{}","refreshToken":"x"}}"#, s.refresh)),
            400,
            "malformed_body",
        ),
        (
            gw.post("/api/auth/refresh")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("refreshToken={}&refreshToken=x", s.refresh)),
            400,
            "malformed_body",
        ),
        (
            gw.post("/api/auth/refresh")
                .header("content-type", "text/plain")
                .body(format!(r#"{{"refreshToken":"{}"}}"#, s.refresh)),
            415,
            "unsupported_media_type",
        ),
        (
            gw.post("/api/auth/refresh")
                .header("content-type", "application/json")
                .header("content-encoding", "compress")
                .body("x"),
            415,
            "unsupported_media_type",
        ),
        (
            gw.post("/api/auth/refresh")
                .header("content-type", "application/json")
                .body(b"{\"refreshToken\":\"\xff\"}".to_vec()),
            400,
            "malformed_body",
        ),
        (
            gw.post("/api/auth/refresh")
                .header("cookie", &format!("strapi_up_refresh={}; strapi_up_refresh=other", s.refresh)),
            400,
            "ambiguous_credentials",
        ),
    ];
    for (req, status, reason) in cases {
        let r = req.send().await;
        assert_eq!((r.status.as_u16(), r.reason().as_deref()), (status, Some(reason)), "{}", r.text());
        assert_eq!(r.json()["error"]["details"]["reason"], reason);
        assert_eq!(r.json()["data"], Value::Null);
    }
    assert_eq!(backend.count(&Method::POST, "/api/auth/refresh"), 0, "nothing unreadable reached the backend");
}

/// Strapi reads the refresh cookie before the body; a logout carrying session A's refresh token
/// in the body and session B's cookie ends B at both ends — not A at one and B at the other.
#[tokio::test]
async fn logout_ends_the_session_the_backend_reads_first() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a = gw.login("alice").await;
    let b = gw.login("alice").await;
    let r = gw
        .post("/api/auth/logout")
        .bearer(&a.jwt)
        .header("cookie", &format!("strapi_up_refresh={}", b.refresh))
        .json(json!({"refreshToken": a.refresh}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.session_status(&backend_sid(&b.jwt)), Some(Status::Revoked));
    assert_eq!(backend.session_status(&backend_sid(&a.jwt)), Some(Status::Active));
    assert_eq!(gw.get("/api/articles").bearer(&b.jwt).send().await.status, 401);
    assert_eq!(gw.get("/api/articles").bearer(&a.jwt).send().await.status, 200);
    gw.refresh(&a.refresh).await;
    // Proven by the backend's own answer: no revocation call of the gateway's.
    assert_eq!(
        backend.count_from_clients(&Method::POST, "/api/auth/logout"),
        backend.count(&Method::POST, "/api/auth/logout")
    );
}

/// Strapi ignores a `deviceId` that is not a string and logs out the bearer's session; so does
/// the gateway.
#[tokio::test]
async fn a_device_id_of_another_type_is_ignored_like_strapi() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let on_device = gw
        .post("/api/auth/local")
        .json(json!({"identifier": "bob", "password": support::PASSWORD, "deviceId": "phone"}))
        .send()
        .await
        .json();
    let other = gw.login("bob").await;
    let r = gw.post("/api/auth/logout").bearer(&other.jwt).json(json!({"deviceId": 123})).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.get("/api/articles").bearer(&other.jwt).send().await.status, 401);
    let phone_jwt = on_device["jwt"].as_str().expect("jwt");
    assert_eq!(gw.get("/api/articles").bearer(phone_jwt).send().await.status, 200);
    assert_eq!(backend.session_status(&backend_sid(phone_jwt)), Some(Status::Active));
    assert_eq!(backend.session_status(&backend_sid(&other.jwt)), Some(Status::Revoked));
}

/// Strapi's logout revokes every session of the user when it finds no session of its own (the
/// bearer names none); the gateway follows.
#[tokio::test]
async fn a_logout_that_names_no_backend_session_ends_every_session_of_the_user() {
    let backend = MockStrapi::start().await;
    backend.with(|s| s.login_mode = support::strapi::LoginMode::NoSessionId);
    let gw = Gateway::with_defaults(&backend).await;
    let a = gw.login("alice").await;
    let b = gw.login("alice").await;
    let bob = gw.login("bob").await;
    gw.post("/api/auth/logout").bearer(&a.jwt).send().await;
    for t in [&a.jwt, &b.jwt] {
        assert_eq!(gw.get("/api/magic-sessionmanager/my-sessions").bearer(t).send().await.status, 401);
    }
    assert_eq!(gw.get("/api/magic-sessionmanager/my-sessions").bearer(&bob.jwt).send().await.status, 200);
}

/// A logout sent with the access jwt of before a refresh makes Strapi revoke the rotated-out
/// row and leave the live one; the gateway revokes the live one itself.
#[tokio::test]
async fn logout_with_a_rotated_out_access_jwt_still_ends_the_backend_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("carol").await;
    let rotated = gw.refresh(&s.refresh).await;
    let r = gw.post("/api/auth/logout").bearer(&s.jwt).send().await;
    assert_eq!(r.status, 200);
    let live_sid = backend_sid(&rotated.jwt);
    assert!(
        eventually(10, || backend.session_status(&live_sid) == Some(Status::Revoked)).await,
        "the gateway revokes the session's current backend session"
    );
    assert!(eventually(5, || metric(&gw, "sessiongate_backend_revocations_total{outcome=\"revoked\"}") >= 1.0).await);
    let r = gw.post("/api/auth/refresh").json(json!({"refreshToken": rotated.refresh})).send().await;
    assert_eq!(r.status, 401);
}

/// A logout after the access jwt expired is answered 401 by Strapi, which revokes nothing; the
/// gateway ended the session and revokes it with the stored refresh token.
#[tokio::test]
async fn logout_after_the_access_jwt_expired_is_completed_by_the_gateway() {
    let backend = MockStrapi::start().await;
    backend.with(|s| s.access_lifespan = 1);
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = gw.post("/api/auth/logout").bearer(&s.jwt).json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(r.status, 401, "the backend refuses the expired jwt: {}", r.text());
    assert!(
        eventually(10, || backend
            .with(|st| !st.sessions.values().any(|x| x.user_id == s.user_id && x.status == Status::Active)))
        .await,
        "no backend session of the user stays alive"
    );
    let r = gw.post("/api/auth/refresh").json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(r.reason().as_deref(), Some("session_terminated"));
}

/// Strapi's own `DELETE /api/auth/sessions/:sessionId` ends the gateway session too: its access
/// jwt is refused, and the user API lists it as ended.
#[tokio::test]
async fn strapis_own_session_route_ends_the_gateway_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let keep = gw.login("alice").await;
    let gone = gw.login("alice").await;
    let r = gw.delete(&format!("/api/auth/sessions/{}", backend_sid(&gone.jwt))).bearer(&keep.jwt).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.get("/api/articles").bearer(&gone.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    assert_eq!(gw.get("/api/articles").bearer(&keep.jwt).send().await.status, 200);
    let mine = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&keep.jwt).send().await.json();
    assert_eq!(mine["meta"]["count"], 1, "only the live session is listed: {mine}");
    // Another user's session id is answered 404 by the backend and ends nothing.
    let bob = gw.login("bob").await;
    let r = gw.delete(&format!("/api/auth/sessions/{}", backend_sid(&keep.jwt))).bearer(&bob.jwt).send().await;
    assert_eq!(r.status, 404);
    assert_eq!(gw.get("/api/articles").bearer(&keep.jwt).send().await.status, 200);
}

/// A thief's replay of a rotated-out refresh token is reuse, however it is encoded.
#[tokio::test]
async fn refresh_token_reuse_is_detected_in_a_form_body() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[sessions]\nrefresh_reuse_grace = \"0s\"\n").await;
    let s = gw.login("alice").await;
    let rotated = gw.refresh(&s.refresh).await;
    let r = gw
        .post("/api/auth/refresh")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("refreshToken={}", s.refresh))
        .send()
        .await;
    assert_eq!(r.reason().as_deref(), Some("refresh_token_reuse"));
    assert_eq!(gw.get("/api/articles").bearer(&rotated.jwt).send().await.status, 401);
}

/// Provider (social) logins are sessions like local ones.
#[tokio::test]
async fn provider_callback_logins_are_sessions() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let r = gw
        .get(&format!("/api/auth/{}/callback?access_token={}", strapi::PROVIDER, strapi::provider_token("bob")))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let jwt = r.json()["jwt"].as_str().expect("jwt").to_string();
    let refresh = r.json()["refreshToken"].as_str().expect("refresh").to_string();
    let mine = gw.get("/api/magic-sessionmanager/current-session").bearer(&jwt).send().await;
    assert_eq!(mine.status, 200, "the provider login is a tracked session");
    gw.post("/api/auth/logout").bearer(&jwt).json(json!({"refreshToken": refresh})).send().await;
    assert_eq!(gw.get("/api/articles").bearer(&jwt).send().await.status, 401);
}

/// A backend cannot speak for the gateway: its `x-sessiongate-*` headers never reach clients
/// or the `decision` label; free-text termination reasons never become label values.
#[tokio::test]
async fn gateway_headers_and_labels_cannot_be_forged_or_unbounded() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let r = gw.get("/api/test-hooks/forged-denial").send().await;
    assert_eq!(r.status, 401);
    assert!(r.headers.keys().all(|k| !k.as_str().starts_with("x-sessiongate-")), "{:?}", r.headers);
    let s = gw.login("alice").await;
    let sid = gateway_sid(&gw, &s.jwt).await;
    gw.admin(Method::POST, &format!("{ADMIN}/sessions/{sid}/terminate"))
        .json(json!({"reason": "laptop stolen at {airport}"}))
        .send()
        .await;
    let metrics = gw.admin(Method::GET, "/metrics").send().await.text();
    assert!(!metrics.contains("laptop"), "free text became a label");
    assert!(metrics.contains("sessiongate_terminations_total{reason=\"admin_terminated\"} 1"));
    for line in metrics.lines().filter(|l| l.starts_with("sessiongate_requests_total{")) {
        let decision = line.split("decision=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        assert!(decision == "allow" || decision.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{line}");
    }
    assert!(
        !metrics.contains("decision=\"session_terminated\""),
        "the forged denial was not counted as a gateway decision"
    );
}

/// An acknowledged ending is revoked at the backend even when the backend is down at the time
/// and the gateway restarts meanwhile; the pending revocation shows in the metrics.
#[tokio::test]
async fn backend_revocations_survive_a_backend_outage_and_a_restart() {
    let backend = MockStrapi::start().await;
    let addr = backend.addr;
    let mut gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let sid = gateway_sid(&gw, &s.jwt).await;
    drop(backend);
    let r = gw.admin(Method::POST, &format!("{ADMIN}/sessions/{sid}/terminate")).send().await;
    assert_eq!(r.status, 200);
    assert!(eventually(5, || metric(&gw, "sessiongate_backend_revocations_total{outcome=\"retry\"}") >= 1.0).await);
    assert!(eventually(5, || metric(&gw, "sessiongate_backend_revocations_pending") >= 1.0).await);
    let detail = gw.admin(Method::GET, &format!("{ADMIN}/sessions/{sid}")).send().await.json();
    assert_eq!(detail["data"]["backendRevocation"]["pending"], true, "{detail}");
    assert!(detail["data"]["backendRevocation"]["lastError"].is_string());
    gw.restart().await;
    // The backend comes back (a fresh process on the same address, same signing secret).
    let backend = MockStrapi::start_on(addr).await;
    assert!(
        eventually(30, || backend.count(&Method::POST, "/api/auth/logout") >= 1).await,
        "the queued revocation is carried out after the restart"
    );
    assert!(eventually(10, || metric(&gw, "sessiongate_backend_revocations_pending") == 0.0).await);
    let detail = gw.admin(Method::GET, &format!("{ADMIN}/sessions/{sid}")).send().await.json();
    assert_eq!(detail["data"]["backendRevocation"], Value::Null);
    // The audit writer is asynchronous: wait for the event.
    let mut outcome = Value::Null;
    for _ in 0..100 {
        let audit = gw.admin(Method::GET, &format!("{ADMIN}/audit?type=backend_revoked")).send().await.json();
        outcome = audit["data"][0]["details"]["outcome"].clone();
        if !outcome.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(outcome, "revoked");
}

/// A metric's current value from the admin port's exposition (0 when absent).
fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.state()
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Fast brotli settings (the defaults, quality 11 with a 4 MiB window, take milliseconds a body).
fn brotli_params() -> brotli::enc::BrotliEncoderParams {
    brotli::enc::BrotliEncoderParams { quality: 4, lgwin: 16, ..Default::default() }
}
