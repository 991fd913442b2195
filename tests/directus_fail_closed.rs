//! Fail-closed enforcement for `preset = "directus"`: the backend only ever sees credentials the
//! gateway has checked.
//!
//! The backend is the Directus look-alike (`support::directus`, reading requests as Directus
//! 11.3.5 does; GraphQL with another parser than the gateway's). Sessions are ended in each way
//! that matters for Directus — a REST and a GraphQL logout, an admin termination, a password
//! change over GraphQL, a suspension in a REST batch, a session-mode logout — with backend
//! revocation off, so that Directus itself would still honour what the gateway must refuse.
//! Then every spelling of their credentials is sent: `Authorization` spellings, the query
//! token, the session cookie, over HTTP/1.1 and HTTP/2; refreshes in every mode and place, JSON
//! plain, gzip and deflate, route spellings; GraphQL refreshes as literals, variables, escapes,
//! block strings, aliases, fragments and named operations. The invariant: Directus never
//! accepts an ended session's access token and never mints tokens from its refresh token.

mod support;

use http::Method;
use serde_json::{json, Value};
use std::io::Write;
use support::directus::{MockDirectus, PASSWORD};
use support::{Gateway, Req, Resp};

/// Backend revocation off: the look-alike keeps every row the gateway ended.
const SETUP: &str = "preset = \"directus\"\n[backend]\nrevoke_on_end = false\n";

/// A session the gateway has ended.
struct Ended {
    how: &'static str,
    access: String,
    refresh: String,
    /// Session mode: the session cookie (its JWT is the access token, its claim the refresh).
    session_mode: bool,
}

fn add_user(d: &MockDirectus, email: &str, admin: bool) -> String {
    let id = format!("{:08x}-0000-4000-8000-{:012x}", rand::random::<u32>(), rand::random::<u64>() & 0xffff_ffff_ffff);
    d.with(|s| {
        s.users.push(support::directus::User {
            id: id.clone(),
            email: email.into(),
            password: PASSWORD.into(),
            role: Some("r".into()),
            status: "active".into(),
            admin,
            token: None,
        })
    });
    id
}

async fn login(gw: &Gateway, email: &str) -> (String, String) {
    let r = gw.post("/auth/login").json(json!({"email": email, "password": PASSWORD})).send().await;
    assert_eq!(r.status, 200, "{email}: {}", r.text());
    let d = &r.json()["data"];
    (d["access_token"].as_str().expect("at").into(), d["refresh_token"].as_str().expect("rt").into())
}

fn set_cookie(r: &Resp, name: &str) -> String {
    r.set_cookie(name).unwrap_or_else(|| panic!("no {name} cookie"))
}

fn claim(jwt: &str, name: &str) -> String {
    let c = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(jwt).expect("jwt");
    c[name].as_str().expect("claim").to_string()
}

async fn end_in_every_way(gw: &Gateway, d: &MockDirectus) -> Vec<Ended> {
    let admin_id = add_user(d, "fc-admin@example.com", true);
    let _ = admin_id;
    let (admin, _) = login(gw, "fc-admin@example.com").await;
    let mut out = Vec::new();
    let plain = |how, (access, refresh): (String, String)| Ended { how, access, refresh, session_mode: false };

    add_user(d, "fc-logout@example.com", false);
    let s = login(gw, "fc-logout@example.com").await;
    let r = gw.post("/auth/logout").json(json!({"refresh_token": s.1})).send().await;
    assert_eq!(r.status, 204);
    out.push(plain("rest_logout", s));

    add_user(d, "fc-gql@example.com", false);
    let s = login(gw, "fc-gql@example.com").await;
    let q = "mutation($t: String) { ...L } fragment L on Mutation { out: auth_logout(refresh_token: $t) }";
    let r = gw.post("/graphql/system").json(json!({"query": q, "variables": {"t": s.1}})).send().await;
    assert_eq!(r.json()["data"]["out"], true, "{}", r.text());
    out.push(plain("graphql_logout", s));

    let kicked = add_user(d, "fc-kick@example.com", false);
    let s = login(gw, "fc-kick@example.com").await;
    let r = gw.admin(Method::POST, &format!("/magic-sessionmanager/user/{kicked}/terminate-all")).send().await;
    assert_eq!(r.status, 200);
    out.push(plain("admin_terminate", s));

    add_user(d, "fc-pw@example.com", false);
    let s = login(gw, "fc-pw@example.com").await;
    let q = "mutation { update_users_me(data: {password: \"N3w-pass!\"}) { id } }";
    let r = gw.post("/graphql/system").bearer(&s.0).json(json!({"query": q})).send().await;
    assert!(r.json()["data"]["update_users_me"]["id"].is_string(), "{}", r.text());
    // Directus itself would go on refreshing this session: the password change revoked nothing.
    out.push(plain("graphql_password_change", s));

    let suspended = add_user(d, "fc-suspend@example.com", false);
    let s = login(gw, "fc-suspend@example.com").await;
    let r = gw
        .patch("/users")
        .bearer(&admin)
        .json(json!({"keys": [suspended], "data": {"status": "suspended"}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Re-activated behind the gateway's back: Directus would honour the old tokens again.
    d.with(|st| st.users.iter_mut().filter(|u| u.id == suspended).for_each(|u| u.status = "active".into()));
    out.push(plain("rest_batch_suspension", s));

    add_user(d, "fc-session@example.com", false);
    let r = gw
        .post("/auth/login")
        .json(json!({"email": "fc-session@example.com", "password": PASSWORD, "mode": "session"}))
        .send()
        .await;
    let jwt = set_cookie(&r, "directus_session_token");
    let refreshed = gw
        .post("/auth/refresh")
        .header("cookie", &format!("directus_session_token={jwt}"))
        .json(json!({"mode": "session"}))
        .send()
        .await;
    let jwt2 = set_cookie(&refreshed, "directus_session_token");
    let r = gw
        .post("/graphql/system")
        .header("cookie", &format!("directus_session_token={jwt2}"))
        .json(json!({"query": "mutation { auth_logout(mode: session) }"}))
        .send()
        .await;
    assert_eq!(r.json()["data"]["auth_logout"], true, "{}", r.text());
    // The pre-refresh cookie: Directus keeps its row for the 10 s grace.
    out.push(Ended { how: "session_mode_logout", refresh: claim(&jwt, "session"), access: jwt, session_mode: true });

    for e in &out {
        let r = gw.get("/users/me").bearer(&e.access).send().await;
        assert_eq!(r.status, 401, "{}: {}", e.how, r.text());
    }
    out
}

/// `Authorization` values; Directus reads `trim().split(' ')` with two parts.
fn bearers(t: &str) -> Vec<String> {
    vec![
        format!("Bearer {t}"),
        format!("bearer {t}"),
        format!("BEARER {t}"),
        format!("  Bearer {t}  "),
        format!("Bearer  {t}"),
    ]
}

fn queries(t: &str) -> Vec<String> {
    vec![
        format!("access_token={t}"),
        format!("%61ccess_token={t}"),
        format!("access_token={}", t.replace('.', "%2E")),
        format!("x=1&access_token={t}&y=2"),
    ]
}

fn cookies(name: &str, t: &str) -> Vec<String> {
    let first = t.as_bytes()[0];
    vec![
        format!("{name}={t}"),
        format!("a=1; {name}=\"{t}\""),
        format!("{name}=%{first:02X}{}", &t[1..]),
        format!("other=x;{name}={t}"),
    ]
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

fn deflate(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("deflate");
    e.finish().expect("deflate")
}

/// A JSON POST in each content coding Directus reads.
fn codings(gw: &Gateway, path: &str, body: &Value) -> Vec<(&'static str, Req)> {
    let raw = body.to_string().into_bytes();
    let post =
        |bytes: Vec<u8>| Req::new(Method::POST, &gw.url(path)).header("content-type", "application/json").body(bytes);
    vec![
        ("identity", post(raw.clone())),
        ("gzip", post(gzip(&raw)).header("content-encoding", "gzip")),
        ("deflate", post(deflate(&raw)).header("content-encoding", "DEFLATE")),
    ]
}

/// GraphQL refreshes carrying `t`, in every spelling a GraphQL document allows.
fn graphql_refreshes(t: &str) -> Vec<Value> {
    let escaped = format!("\\u{:04x}{}", t.as_bytes()[0], &t[1..]);
    vec![
        json!({"query": format!("mutation {{ auth_refresh(refresh_token: \"{t}\") {{ access_token }} }}")}),
        json!({"query": format!("mutation {{ auth_refresh(refresh_token: \"{escaped}\", mode: json) {{ access_token }} }}")}),
        json!({"query": format!("mutation {{ r: auth_refresh(refresh_token: \"\"\"{t}\"\"\") {{ expires }} }}")}),
        json!({"query": "mutation($t: String) { auth_refresh(refresh_token: $t) { access_token } }", "variables": {"t": t}}),
        json!({"query": "mutation($t: String = \"x\") { auth_refresh(refresh_token: $t) { access_token } }", "variables": {"t": t}}),
        json!({"query": format!("mutation($t: String = \"{t}\") {{ auth_refresh(refresh_token: $t) {{ access_token }} }}")}),
        json!({"query": format!("mutation {{ ...F }} fragment F on Mutation {{ ... on Mutation {{ auth_refresh(refresh_token: \"{t}\") {{ expires }} }} }}")}),
        json!({"query": format!("query A {{ __typename }} mutation B {{ auth_refresh(refresh_token: \"{t}\") {{ expires }} }}"), "operationName": "B"}),
    ]
}

#[tokio::test]
async fn no_transport_mode_spelling_or_graphql_document_lets_an_ended_session_through() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), SETUP).await;
    let ended = end_in_every_way(&gw, &d).await;
    add_user(&d, "fc-live@example.com", false);
    let attack_start = support::strapi_now_ms();
    let mut sent = 0usize;
    let mut check = |what: String, r: Resp| {
        sent += 1;
        assert!(!r.status.is_success(), "{what} was answered {}: {}", r.status, r.text());
    };
    for (i, e) in ended.iter().enumerate() {
        let (live_access, live_refresh) = login(&gw, "fc-live@example.com").await;
        let h2 = |req: Req, n: usize| if (i + n) % 2 == 1 { req.http2() } else { req };
        // Access tokens, in every transport, on REST and GraphQL.
        for (j, b) in bearers(&e.access).iter().enumerate() {
            for path in ["/users/me", "/USERS//Me/"] {
                check(
                    format!("{} GET {path} bearer #{j}", e.how),
                    h2(gw.get(path).header("authorization", b), j).send().await,
                );
            }
            let r = gw
                .post("/graphql/system")
                .header("authorization", b)
                .json(json!({"query": "{ users_me { id } }"}))
                .send()
                .await;
            check(format!("{} graphql bearer #{j}", e.how), r);
        }
        for (j, q) in queries(&e.access).iter().enumerate() {
            check(format!("{} query {q}", e.how), h2(gw.get(&format!("/users/me?{q}")), j).send().await);
        }
        for c in cookies("directus_session_token", &e.access) {
            check(format!("{} cookie {c}", e.how), gw.get("/users/me").header("cookie", &c).send().await);
        }
        // Refresh tokens, in every mode and place, over REST.
        let rc = |t: &str| format!("directus_refresh_token={t}");
        let mut rest: Vec<(String, Value, Option<String>)> = vec![
            ("body".into(), json!({"refresh_token": e.refresh}), None),
            ("body json mode".into(), json!({"refresh_token": e.refresh, "mode": "json"}), None),
            ("cookie mode".into(), json!({"mode": "cookie"}), Some(rc(&e.refresh))),
            ("cookie default".into(), json!({}), Some(rc(&e.refresh))),
            (
                "cookie + live body, json".into(),
                json!({"mode": "json", "refresh_token": live_refresh}),
                Some(rc(&e.refresh)),
            ),
            (
                "body + live cookie, cookie".into(),
                json!({"mode": "cookie", "refresh_token": e.refresh}),
                Some(rc(&live_refresh)),
            ),
            (
                "quoted cookie".into(),
                json!({"mode": "cookie"}),
                Some(format!("a=1;directus_refresh_token=\"{}\"", e.refresh)),
            ),
        ];
        if e.session_mode {
            rest.push((
                "session cookie".into(),
                json!({"mode": "session"}),
                Some(format!("directus_session_token={}", e.access)),
            ));
        }
        for (what, body, cookie) in &rest {
            for path in ["/auth/refresh", "/AUTH/Refresh/", "/auth//refresh"] {
                for (k, (coding, req)) in codings(&gw, path, body).into_iter().enumerate() {
                    let req = match cookie {
                        Some(c) => req.header("cookie", c),
                        None => req,
                    };
                    check(format!("{} refresh {what} {path} {coding}", e.how), h2(req, k).send().await);
                }
            }
            // A logout by a live session that carries the ended refresh credential.
            let mut req = gw.post("/auth/logout").bearer(&live_access).json(body.clone());
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            check(format!("{} logout {what}", e.how), req.send().await);
        }
        // Refresh tokens in GraphQL documents.
        for (j, body) in graphql_refreshes(&e.refresh).into_iter().enumerate() {
            for path in ["/graphql/system", "/GRAPHQL/system/x"] {
                let r = h2(gw.post(path).json(body.clone()), j).send().await;
                check(format!("{} graphql refresh #{j} {path}", e.how), r);
            }
        }
        let cookie_mode = json!({"query": "mutation { auth_refresh(mode: cookie) { access_token } }"});
        let r = gw.post("/graphql/system").header("cookie", &rc(&e.refresh)).json(cookie_mode).send().await;
        check(format!("{} graphql refresh cookie mode", e.how), r);
        if e.session_mode {
            let r = gw
                .post("/graphql/system")
                .header("cookie", &format!("directus_session_token={}", e.access))
                .json(json!({"query": "mutation { auth_refresh(mode: session) { expires } }"}))
                .send()
                .await;
            check(format!("{} graphql refresh session mode", e.how), r);
        }
        // The live session was never touched by any refused request.
        assert_eq!(gw.get("/users/me").bearer(&live_access).send().await.status, 200, "{}", e.how);
    }
    for e in &ended {
        assert!(!d.accepted_since(&e.access, attack_start), "an access token of the {} session was accepted", e.how);
        assert!(!d.minted_since(&e.refresh, attack_start), "tokens were minted for the {} session", e.how);
    }
    eprintln!(
        "{sent} requests with credentials of {} ended sessions: none reached Directus as a credential",
        ended.len()
    );
}

/// The invariant above can fail: without the gateway's check, the same requests get through.
#[tokio::test]
async fn the_look_alike_alone_honours_the_ended_sessions() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), SETUP).await;
    let ended = end_in_every_way(&gw, &d).await;
    let direct = |path: &str| Req::new(Method::POST, &format!("{}{path}", d.url()));
    let mut honoured = 0;
    for e in &ended {
        let me = Req::new(Method::GET, &format!("{}/users/me", d.url())).bearer(&e.access).send().await;
        let body = if e.session_mode {
            json!({"query": "mutation { auth_refresh(mode: session) { expires } }"})
        } else {
            json!({"query": format!("mutation {{ auth_refresh(refresh_token: \"{}\") {{ access_token }} }}", e.refresh)})
        };
        let mut req = direct("/graphql/system").json(body);
        if e.session_mode {
            req = req.header("cookie", &format!("directus_session_token={}", e.access));
        }
        let minted = req.send().await.json()["data"]["auth_refresh"].is_object();
        eprintln!("{}: /users/me {} refresh minted {minted}", e.how, me.status);
        honoured += usize::from(me.status == 200 || minted);
    }
    assert_eq!(honoured, ended.len(), "Directus alone honours every one of them");
}
