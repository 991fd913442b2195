//! `[policies]` through the real gateway: the session limit per user (evicting the oldest, or
//! refusing the login), the absolute lifetime (on the next request and by the sweeper), idle
//! sessions ended by the sweeper, and mid-session change detection (another country, network
//! or browser family), each per role where a role is known.

mod support;

use http::Method;
use serde_json::{json, Value};
use std::time::Duration;
use support::strapi::{backend_sid, Status, API_TOKEN};
use support::{eventually, Gateway, MockStrapi, PASSWORD};

const ADMIN: &str = "/magic-sessionmanager";
const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:130.0) Gecko/20100101 Firefox/130.0";
const LONDON: &str = "81.2.69.142"; // GB
const MILTON: &str = "216.160.83.56"; // US
const TELSTRA_A: &str = "1.128.0.1"; // AU, AS1221
const TELSTRA_B: &str = "1.128.0.2"; // the same network

/// Waits until the audit log holds `n` events of `kind`, and returns them.
async fn audit_of(gw: &Gateway, kind: &str, n: usize) -> Vec<Value> {
    let mut last = Value::Null;
    let found = eventually(5, || {
        let gw_url = gw.admin(Method::GET, &format!("{ADMIN}/audit?type={kind}"));
        last = futures_block(gw_url);
        last["data"].as_array().is_some_and(|d| d.len() >= n)
    })
    .await;
    assert!(found, "expected {n} {kind} events: {last}");
    let data = last["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), n, "{last}");
    data
}

/// Runs one admin request to completion from inside a synchronous check.
fn futures_block(req: support::Req) -> Value {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(req.send())).json()
}

async fn metrics(gw: &Gateway) -> String {
    gw.admin_anon(Method::GET, "/metrics").send().await.text()
}

async fn login_from(gw: &Gateway, user: &str, ip: &str, ua: &str) -> support::Resp {
    gw.post("/api/auth/local")
        .header("x-forwarded-for", ip)
        .header("user-agent", ua)
        .json(json!({"identifier": user, "password": PASSWORD}))
        .send()
        .await
}

async fn articles(gw: &Gateway, jwt: &str, ip: &str, ua: &str) -> support::Resp {
    gw.get("/api/articles").bearer(jwt).header("x-forwarded-for", ip).header("user-agent", ua).send().await
}

fn jwt(res: &support::Resp) -> String {
    res.json()["jwt"].as_str().expect("jwt").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_over_the_limit_evicts_the_oldest_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[policies]\nmax_sessions_per_user = 2\n").await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let b = gw.login("bob").await;
    let a3 = gw.login("alice").await;
    let refused = gw.get("/api/articles").bearer(&a1.jwt).send().await;
    assert_eq!((refused.status.as_u16(), refused.reason().as_deref()), (401, Some("session_terminated")));
    let refresh = gw.post("/api/auth/refresh").json(json!({"refreshToken": a1.refresh})).send().await;
    assert_eq!(refresh.status, 401, "the evicted session's refresh token too");
    for t in [&a2.jwt, &a3.jwt, &b.jwt] {
        assert_eq!(gw.get("/api/articles").bearer(t).send().await.status, 200);
    }
    // Ended like an admin termination: revoked at the backend, audited, counted.
    let s1 = backend_sid(&a1.jwt);
    assert!(eventually(5, || backend.session_status(&s1) == Some(Status::Revoked)).await);
    let ev = audit_of(&gw, "session_evicted", 1).await;
    assert_eq!(ev[0]["user"], a1.user_id.to_string());
    assert_eq!(ev[0]["details"]["limit"], 2);
    let m = metrics(&gw).await;
    assert!(m.contains("sessiongate_terminations_total{reason=\"session_limit\"} 1"), "{m}");
    let s = gw.admin(Method::GET, &format!("{ADMIN}/sessions?user=alice&active=false")).send().await.json();
    assert_eq!(s["data"][0]["endReason"], "session_limit", "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusing_over_the_limit_answers_in_the_backend_shape_and_revokes_the_new_backend_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[policies]\nmax_sessions_per_user = 1\non_exceed = \"refuse\"\n").await;
    let first = gw.login("alice").await;
    let all = || backend.with(|s| s.sessions.keys().cloned().collect::<Vec<String>>());
    let before = all();
    let res = login_from(&gw, "alice", "127.0.0.1", CHROME).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.reason().as_deref(), Some("session_limit"));
    let body = res.json();
    assert_eq!(body["error"]["status"], 403, "Strapi's error shape: {body}");
    assert_eq!(body["error"]["name"], "ForbiddenError");
    assert!(body.get("jwt").is_none(), "no token handed out: {body}");
    // The backend session the refused login opened is revoked; the first one is not.
    let opened: Vec<String> = all().into_iter().filter(|s| !before.contains(s)).collect();
    assert_eq!(opened.len(), 1, "the backend opened one session for the refused login");
    assert!(eventually(5, || backend.session_status(&opened[0]) == Some(Status::Revoked)).await);
    assert_eq!(gw.get("/api/articles").bearer(&first.jwt).send().await.status, 200);
    assert_eq!(backend.session_status(&backend_sid(&first.jwt)), Some(Status::Active));
    // Once the first session ends, the user may log in again; another user was never limited.
    assert_eq!(gw.post("/api/auth/logout").bearer(&first.jwt).json(json!({})).send().await.status, 200);
    assert_eq!(login_from(&gw, "alice", "127.0.0.1", CHROME).await.status, 200);
    gw.login("bob").await;
    let m = metrics(&gw).await;
    assert!(m.contains("sessiongate_logins_total{result=\"session_limit\"} 1"), "{m}");
    let denied = audit_of(&gw, "login_denied", 1).await;
    assert_eq!(denied[0]["details"]["reason"], "session_limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_gets_its_own_limit_and_lifetime() {
    let backend = MockStrapi::start().await;
    std::env::set_var("SG_TEST_POLICY_ROLES_TOKEN", API_TOKEN);
    let cfg = "[roles]\nlookup = \"GET /api/users/:id?populate=role\"\ntoken_env = \"SG_TEST_POLICY_ROLES_TOKEN\"\n\
               [policies]\nmax_sessions_per_user = 3\n\
               [policies.roles.Editor]\nmax_sessions_per_user = 1\nmax_session_age = \"10m\"\n";
    let gw = Gateway::start(&backend.url(), cfg).await;
    // carol is an Editor: one session, ten minutes.
    let c1 = gw.login("carol").await;
    let c2 = gw.login("carol").await;
    assert_eq!(gw.get("/api/articles").bearer(&c1.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    // alice (Authenticated) has the global limit of three and no lifetime.
    let a: Vec<_> = [gw.login("alice").await, gw.login("alice").await, gw.login("alice").await].into();
    gw.advance(Duration::from_secs(601));
    let old = gw.get("/api/articles").bearer(&c2.jwt).send().await;
    assert_eq!((old.status.as_u16(), old.reason().as_deref()), (401, Some("session_max_age")));
    assert_eq!(gw.get("/api/articles").bearer(&c2.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    for l in &a {
        assert_eq!(gw.get("/api/articles").bearer(&l.jwt).send().await.status, 200, "no lifetime for this role");
    }
    // Revoked at the backend (its access token expired meanwhile: through a refresh, then logout).
    let revoked = audit_of(&gw, "backend_revoked", 2).await;
    assert!(revoked.iter().any(|e| e["details"]["reason"] == "max_age" && e["details"]["outcome"] == "revoked"));
    let ev = audit_of(&gw, "session_max_age", 1).await;
    assert_eq!(ev[0]["user"], c2.user_id.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_ends_sessions_past_their_age_and_idle_ones() {
    let backend = MockStrapi::start().await;
    let cfg =
        "[store]\nsweep_interval = \"100ms\"\n[sessions]\nidle_policy = \"terminate\"\ninactivity_timeout = \"10m\"\n\
               [policies]\nmax_session_age = \"30m\"\n";
    let gw = Gateway::start(&backend.url(), cfg).await;
    // alice is used every four minutes (never idle) and reaches 30 minutes; bob logs in at 24
    // and is used too; carol logs in at 24 and goes idle.
    let old = gw.login("alice").await;
    let mut busy = None;
    for step in 1..=9 {
        gw.advance(Duration::from_secs(240));
        if step == 6 {
            busy = Some(gw.login("bob").await);
            gw.login("carol").await;
        }
        for t in std::iter::once(&old).chain(busy.as_ref()) {
            let _ = gw.get("/api/articles").bearer(&t.jwt).send().await;
        }
    }
    let reason_of = |user: &str| {
        futures_block(gw.admin(Method::GET, &format!("{ADMIN}/sessions?user={user}")))["data"][0]["endReason"].clone()
    };
    assert!(eventually(5, || reason_of("alice") == json!("max_age")).await, "alice: {}", reason_of("alice"));
    assert!(eventually(5, || reason_of("carol") == json!("idle_timeout")).await, "carol: {}", reason_of("carol"));
    assert_eq!(reason_of("bob"), Value::Null, "bob is neither old nor idle");
    let revoked = audit_of(&gw, "backend_revoked", 2).await;
    let reasons: Vec<&Value> = revoked.iter().map(|e| &e["details"]["reason"]).collect();
    assert!(reasons.contains(&&json!("max_age")) && reasons.contains(&&json!("idle_timeout")), "{revoked:?}");
}

fn geo_config(extra: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[geo]\ncity_db = \"{}\"\nasn_db = \"{}\"\n{extra}",
        support::geoip_test_db("GeoIP2-City-Test.mmdb"),
        support::geoip_test_db("GeoLite2-ASN-Test.mmdb"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_used_from_another_country_is_rescored_and_alerted() {
    let backend = MockStrapi::start().await;
    let hook = support::receivers::HttpReceiver::start().await;
    let alerting = format!(
        "[alerts.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n[alerts.triggers]\nsession_changed = [\"hook\"]\n",
        hook.url("/hook")
    );
    let gw = Gateway::start(&backend.url(), &geo_config(&alerting)).await;
    let login = login_from(&gw, "alice", MILTON, CHROME).await;
    let token = jwt(&login);
    // The same place, and a new address on the same network: no change.
    let bob = jwt(&login_from(&gw, "bob", TELSTRA_A, CHROME).await);
    assert_eq!(articles(&gw, &token, MILTON, CHROME).await.status, 200);
    assert_eq!(articles(&gw, &bob, TELSTRA_B, CHROME).await.status, 200);
    // alice's token from London: another country, and the request still goes through.
    assert_eq!(articles(&gw, &token, LONDON, CHROME).await.status, 200);
    let ev = audit_of(&gw, "session_changed", 1).await;
    assert_eq!(ev[0]["ip"], LONDON);
    assert_eq!(ev[0]["details"]["what"], json!(["country"]), "{}", ev[0]);
    assert_eq!(ev[0]["details"]["from"]["country"], "US");
    assert_eq!(ev[0]["details"]["to"]["country"], "GB");
    assert_eq!(ev[0]["details"]["action"], "alert");
    // Re-scored: the session now carries the score of a login from there; the alert went out.
    let score = ev[0]["details"]["score"].clone();
    assert!(score.as_u64().is_some_and(|s| s > 0), "{score}");
    let sid = ev[0]["session"].as_str().expect("session").to_string();
    let threat =
        || futures_block(gw.admin(Method::GET, &format!("{ADMIN}/sessions/{sid}")))["data"]["threatScore"].clone();
    assert!(eventually(5, || threat() == score).await, "{} vs {score}", threat());
    assert!(eventually(5, || !hook.hits().is_empty()).await, "the session_changed alert is delivered");
    let alert = hook.hits()[0].json();
    assert_eq!(alert["type"], "session_changed", "{alert}");
    // The user API shows where it was last used from next to the login address.
    let me = |t: &str| {
        let req = gw.get("/api/magic-sessionmanager/current-session").bearer(t).header("x-forwarded-for", LONDON);
        futures_block(req.header("user-agent", CHROME))
    };
    assert!(eventually(5, || me(&token)["data"]["lastIpAddress"] == LONDON).await, "{}", me(&token));
    let cur = me(&token)["data"].clone();
    assert_eq!(cur["ipAddress"], MILTON);
    assert_eq!(cur["lastSeenFrom"]["countryCode"], "GB");
    assert_eq!(cur["lastSeenFrom"]["changes"], 1);
    assert_eq!(cur["lastSeenFrom"]["browser"], "Chrome");
    // Back and forth counts each time; a new browser too.
    assert_eq!(articles(&gw, &token, LONDON, FIREFOX).await.status, 200);
    let ev = audit_of(&gw, "session_changed", 2).await;
    let whats: Vec<&Value> = ev.iter().map(|e| &e["details"]["what"]).collect();
    assert!(whats.contains(&&json!(["browser"])), "{whats:?}");
    let req = gw.get("/api/magic-sessionmanager/current-session").bearer(&bob).header("x-forwarded-for", TELSTRA_B);
    let bob_seen = futures_block(req.header("user-agent", CHROME))["data"].clone();
    assert_eq!(bob_seen["lastSeenFrom"], Value::Null, "a move within one network is not a change: {bob_seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_terminate_a_replayed_token_from_elsewhere_ends_the_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), &geo_config("[policies]\non_change = \"terminate\"\n")).await;
    let login = login_from(&gw, "alice", MILTON, CHROME).await;
    let token = jwt(&login);
    let refresh = login.json()["refreshToken"].as_str().expect("refresh").to_string();
    assert_eq!(articles(&gw, &token, MILTON, CHROME).await.status, 200);
    // The stolen token, replayed by a script from another country.
    let replay = articles(&gw, &token, LONDON, "python-requests/2.32").await;
    assert_eq!((replay.status.as_u16(), replay.reason().as_deref()), (401, Some("session_changed")));
    // Ended everywhere: the owner's next request and the refresh token are refused too.
    assert_eq!(articles(&gw, &token, MILTON, CHROME).await.reason().as_deref(), Some("session_terminated"));
    let r = gw
        .post("/api/auth/refresh")
        .header("x-forwarded-for", MILTON)
        .json(json!({"refreshToken": refresh}))
        .send()
        .await;
    assert_eq!(r.status, 401);
    let sid = backend_sid(&token);
    assert!(eventually(5, || backend.session_status(&sid) == Some(Status::Revoked)).await);
    let ev = audit_of(&gw, "session_changed", 1).await;
    assert_eq!(ev[0]["details"]["what"], json!(["country", "browser"]), "{}", ev[0]);
    assert_eq!(ev[0]["details"]["action"], "terminate");
    let m = metrics(&gw).await;
    assert!(m.contains("sessiongate_terminations_total{reason=\"session_changed\"} 1"), "{m}");
    // A fresh login from the new place is a new session, and fine.
    let again = login_from(&gw, "alice", LONDON, CHROME).await;
    assert_eq!(articles(&gw, &jwt(&again), LONDON, CHROME).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_change_off_looks_for_nothing() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), &geo_config("[policies]\non_change = \"off\"\n")).await;
    let token = jwt(&login_from(&gw, "alice", MILTON, CHROME).await);
    assert_eq!(articles(&gw, &token, LONDON, FIREFOX).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ev = futures_block(gw.admin(Method::GET, &format!("{ADMIN}/audit?type=session_changed")));
    assert_eq!(ev["data"], json!([]));
}
