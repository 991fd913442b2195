//! The admin port: authentication, every route, filters and errors, blocking, audit export,
//! metrics, health and readiness.

mod support;

use http::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use support::strapi::{backend_sid, Status};
use support::{eventually, Gateway, MockStrapi};

const ADMIN: &str = "/magic-sessionmanager";

/// Polls the audit log (JSON) until `pred` holds for the returned events.
async fn audit_until(gw: &Gateway, query: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let v = gw.admin(Method::GET, &format!("{ADMIN}/audit?{query}")).send().await.json();
        let events = v["data"].as_array().cloned().unwrap_or_default();
        if pred(&events) || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Parses the Prometheus text format into `name{labels}` → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn the_admin_api_needs_a_token_and_limits_failures() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[admin]\nauth_failures_per_minute = 3\n").await;
    assert_eq!(gw.admin_anon(Method::GET, "/healthz").send().await.status, 200, "probes need no token");
    let res = gw.admin_anon(Method::GET, &format!("{ADMIN}/sessions")).send().await;
    assert_eq!(res.status, 401);
    assert_eq!(res.reason().as_deref(), Some("admin_unauthorized"));
    assert_eq!(res.json()["error"]["reason"], "admin_unauthorized");
    for _ in 0..2 {
        let r = gw.admin_anon(Method::GET, &format!("{ADMIN}/sessions")).bearer("wrong-token-wrong-token").send().await;
        assert_eq!(r.status, 401);
    }
    let limited =
        gw.admin_anon(Method::GET, &format!("{ADMIN}/sessions")).bearer("wrong-token-wrong-token").send().await;
    assert_eq!(limited.status, 429, "after 3 failures guessing waits");
    assert_eq!(limited.reason().as_deref(), Some("rate_limited"));
    let ok = gw.admin(Method::GET, &format!("{ADMIN}/sessions")).send().await;
    assert_eq!(ok.status, 200, "a valid token is never limited, even from a limited address");
    let st = gw.state().clone();
    let failures = eventually(5, || st.metrics.admin_auth_failures.get() == 3).await;
    assert!(failures);
    let events = audit_until(&gw, "type=admin_auth_failed", |e| e.len() >= 2).await;
    let first = events.iter().find(|e| e["details"]["failuresThisMinute"] == 1).expect("first failure audited");
    assert_eq!(first["details"]["method"], "GET");
    assert_eq!(first["details"]["path"], format!("{ADMIN}/sessions"));
}

/// A load balancer's probes of paths the admin port does not have (its defaults: `GET /`,
/// `HEAD /healthz`, `OPTIONS *`, `/ping`) must never count as failed logins and lock out the
/// operator's address.
#[tokio::test]
async fn probes_of_unknown_paths_never_lock_the_admin_out() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[admin]\nauth_failures_per_minute = 3\n").await;
    for _ in 0..5 {
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/nope"),
            (Method::OPTIONS, "/"),
            (Method::GET, "/admin/api/nope"),
            (Method::DELETE, "/magic-sessionmanager/nope/1"),
        ] {
            let res = gw.admin_anon(method.clone(), path).send().await;
            assert_eq!(res.status, 404, "{method} {path}");
            assert_eq!(res.reason().as_deref(), Some("not_found"), "{method} {path}");
        }
    }
    let ping = gw.admin_anon(Method::GET, "/ping").send().await;
    assert_eq!(ping.status, 200);
    assert_eq!(ping.text(), "OK");
    for path in ["/healthz", "/readyz", "/ping", "/metrics"] {
        let head = gw.admin_anon(Method::HEAD, path).send().await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.text().is_empty(), "HEAD {path} has no body");
    }
    let wrong = gw.admin_anon(Method::POST, "/healthz").send().await;
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.reason().as_deref(), Some("method_not_allowed"));
    assert_eq!(wrong.headers["allow"], "GET, HEAD, OPTIONS");
    let options = gw.admin_anon(Method::OPTIONS, &format!("{ADMIN}/sessions/1/terminate")).send().await;
    assert_eq!(options.status, 204);
    assert_eq!(options.headers["allow"], "POST, OPTIONS");
    // HEAD works wherever GET does, behind the token too.
    let head = gw.admin(Method::HEAD, &format!("{ADMIN}/stats")).send().await;
    assert_eq!(head.status, 200);
    assert_eq!(gw.state().metrics.admin_auth_failures.get(), 0, "no probe counted as a failed login");
    let res = gw.admin(Method::GET, &format!("{ADMIN}/sessions")).send().await;
    assert_eq!(res.status, 200, "the operator is not locked out");
}

#[tokio::test]
async fn admin_routes_do_not_exist_on_the_public_port() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    gw.login("alice").await;
    for path in [
        format!("{ADMIN}/sessions"),
        format!("{ADMIN}/stats"),
        "/metrics".into(),
        "/admin/api/sessions".into(),
        "/readyz".into(),
    ] {
        let res = gw.get(&path).bearer(support::ADMIN_TOKEN).send().await;
        assert_eq!(res.status, 404, "{path} reached the backend, which does not know it");
        assert_eq!(res.json()["error"]["name"], "NotFoundError");
    }
    assert!(backend.seen().iter().any(|r| r.path == "/metrics"), "forwarded, not answered by the gateway");
}

#[tokio::test]
async fn listing_filters_paginates_sorts_and_rejects_bad_filters() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let _a2 = gw.login("alice").await;
    // `since` is inclusive and a2's login time can fall in the same millisecond as its answer.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mid = sessiongate::clock::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let b = gw
        .post("/api/auth/local")
        .header("user-agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
        .json(json!({"identifier": "bob", "password": support::PASSWORD}))
        .send()
        .await;
    assert_eq!(b.status, 200);
    gw.post("/api/auth/logout").bearer(&a1.jwt).send().await;

    let list = |q: &str| gw.admin(Method::GET, &format!("{ADMIN}/sessions{q}")).send();
    let all = list("").await.json();
    assert_eq!(all["meta"]["pagination"]["total"], 3);
    assert_eq!(all["data"][0]["user"]["username"], "bob", "newest first by default");
    assert_eq!(list("?user=1").await.json()["meta"]["pagination"]["total"], 2);
    assert_eq!(list("?user=alice@example.com").await.json()["meta"]["pagination"]["total"], 2);
    assert_eq!(list("?active=true").await.json()["meta"]["pagination"]["total"], 2);
    assert_eq!(list("?active=false").await.json()["data"][0]["endReason"], "logout");
    assert_eq!(
        gw.admin(Method::GET, &format!("{ADMIN}/sessions/active")).send().await.json()["meta"]["pagination"]["total"],
        2
    );
    assert_eq!(list("?device=mobile").await.json()["data"][0]["user"]["username"], "bob");
    assert_eq!(list("?ip=127.0.0.1").await.json()["meta"]["pagination"]["total"], 3);
    assert_eq!(list("?ip=10.9.9.9").await.json()["meta"]["pagination"]["total"], 0);
    assert_eq!(list(&format!("?since={mid}")).await.json()["meta"]["pagination"]["total"], 1);
    let until = sessiongate::clock::iso(mid);
    assert_eq!(list(&format!("?until={until}")).await.json()["meta"]["pagination"]["total"], 2);
    let page = list("?pageSize=2&page=2&sort=id").await.json();
    assert_eq!(page["meta"]["pagination"], json!({"page": 2, "pageSize": 2, "pageCount": 2, "total": 3}));
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["data"][0]["user"]["username"], "bob", "ascending id: bob's is the third");
    for bad in ["?active=maybe", "?since=yesterday", "?pageSize=0", "?pageSize=100000", "?sort=ip", "?page=x"] {
        let r = list(bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.reason().as_deref(), Some("invalid_parameter"), "{bad}");
    }
    assert_eq!(gw.admin(Method::GET, &format!("{ADMIN}/nope")).send().await.status, 404);
}

#[tokio::test]
async fn session_detail_shows_history_but_never_tokens() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let r = gw.refresh(&s.refresh).await;
    let cur = gw.get("/api/magic-sessionmanager/current-session").bearer(&r.jwt).send().await.json();
    let sid = cur["data"]["sessionId"].as_str().expect("sid").to_string();
    audit_until(&gw, &format!("session={sid}"), |e| e.len() >= 2).await;
    for key in
        [sid.clone(), cur["data"]["documentId"].as_str().expect("doc").to_string(), cur["data"]["id"].to_string()]
    {
        let res = gw.admin(Method::GET, &format!("{ADMIN}/sessions/{key}")).send().await;
        assert_eq!(res.status, 200, "{key}");
        let d = res.json()["data"].clone();
        assert_eq!(d["tokens"]["rotationCount"], 1);
        assert_eq!(d["tokens"]["backendSessionIds"], json!([backend_sid(&s.jwt), backend_sid(&r.jwt)]));
        let kinds: Vec<&str> =
            d["audit"].as_array().expect("audit").iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(kinds, vec!["login", "refresh"]);
        for t in [&s.jwt, &s.refresh, &r.jwt, &r.refresh] {
            assert!(!res.text().contains(t.rsplit('.').next().expect("sig")), "raw token in the detail");
        }
    }
    assert_eq!(gw.admin(Method::GET, &format!("{ADMIN}/sessions/unknown")).send().await.status, 404);
}

#[tokio::test]
async fn terminate_is_durable_audited_and_revoked_at_the_backend() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let keep = gw.login("alice").await;
    let sid = gw.get("/api/magic-sessionmanager/current-session").bearer(&s.jwt).send().await.json()["data"]
        ["sessionId"]
        .as_str()
        .expect("sid")
        .to_string();
    let res = gw
        .admin(Method::POST, &format!("{ADMIN}/sessions/{sid}/terminate"))
        .json(json!({"reason": "stolen laptop"}))
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["success"], true);
    assert_eq!(gw.get("/api/articles").bearer(&s.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    assert_eq!(gw.get("/api/articles").bearer(&keep.jwt).send().await.status, 200);
    let bsid = backend_sid(&s.jwt);
    assert!(eventually(5, || backend.session_status(&bsid) == Some(Status::Revoked)).await);
    let events = audit_until(&gw, "type=terminate", |e| !e.is_empty()).await;
    assert_eq!(events[0]["actor"], "admin:test");
    assert_eq!(events[0]["details"]["reason"], "stolen laptop");
    assert_eq!(events[0]["session"], sid.as_str());
    gw.restart().await;
    assert_eq!(gw.get("/api/articles").bearer(&s.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    let detail = gw.admin(Method::GET, &format!("{ADMIN}/sessions/{sid}")).send().await.json();
    // The record's reason is from the closed set; the admin's words are in the audit log only.
    assert_eq!(detail["data"]["endReason"], "admin_terminated");
    assert_eq!(
        detail["data"]["audit"]
            .as_array()
            .expect("audit")
            .iter()
            .find(|e| e["type"] == "terminate")
            .map(|e| e["details"]["reason"].clone()),
        Some(json!("stolen laptop"))
    );
    assert_eq!(gw.admin(Method::POST, &format!("{ADMIN}/sessions/nope/terminate")).send().await.status, 404);
    let bad = gw.admin(Method::POST, &format!("{ADMIN}/sessions/{sid}/terminate")).body("not json").send().await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn terminate_all_ends_every_session_of_one_user() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let b = gw.login("bob").await;
    let res = gw.admin(Method::POST, &format!("{ADMIN}/user/1/terminate-all")).send().await.json();
    assert_eq!(res["terminated"], 2);
    for t in [&a1.jwt, &a2.jwt] {
        assert_eq!(gw.get("/api/articles").bearer(t).send().await.status, 401);
    }
    assert_eq!(gw.get("/api/articles").bearer(&b.jwt).send().await.status, 200);
    let user = gw.admin(Method::GET, &format!("{ADMIN}/users/1/sessions")).send().await.json();
    assert_eq!(user["meta"]["count"], 2);
    assert_eq!(user["meta"]["active"], 0);
    assert_eq!(user["data"][0]["endReason"], "admin_terminated");
}

#[tokio::test]
async fn terminate_all_can_keep_one_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let b = gw.login("bob").await;
    let current = gw.get("/api/magic-sessionmanager/current-session").bearer(&a2.jwt).send().await.json();
    let keep = current["data"]["sessionId"].as_str().expect("sessionId").to_string();
    // Another user's session cannot be the one kept.
    let bobs = gw.get("/api/magic-sessionmanager/current-session").bearer(&b.jwt).send().await.json();
    let theirs = json!({"except": bobs["data"]["sessionId"]});
    let res = gw.admin(Method::POST, &format!("{ADMIN}/user/1/terminate-all")).json(theirs).send().await;
    assert_eq!(res.status, 404);
    let res =
        gw.admin(Method::POST, &format!("{ADMIN}/user/1/terminate-all")).json(json!({"except": keep})).send().await;
    assert_eq!(res.json()["terminated"], 1);
    assert_eq!(gw.get("/api/articles").bearer(&a1.jwt).send().await.status, 401);
    assert_eq!(gw.get("/api/articles").bearer(&a2.jwt).send().await.status, 200, "kept");
    assert_eq!(gw.get("/api/articles").bearer(&b.jwt).send().await.status, 200);
}

#[tokio::test]
async fn blocked_users_cannot_log_in_until_unblocked_even_across_restarts() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("bob").await;
    let res = gw.admin(Method::POST, &format!("{ADMIN}/user/{}/toggle-block", s.user_id)).send().await.json();
    assert_eq!((res["blocked"].clone(), res["terminated"].clone()), (json!(true), json!(1)));
    assert_eq!(gw.get("/api/articles").bearer(&s.jwt).send().await.status, 401);

    fn attempt(gw: &Gateway) -> impl std::future::Future<Output = support::Resp> {
        gw.post("/api/auth/local").json(json!({"identifier": "bob", "password": support::PASSWORD})).send()
    }
    let denied = attempt(&gw).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.reason().as_deref(), Some("user_blocked"));
    assert!(denied.json().get("jwt").is_none(), "the tokens never reach the client");
    // The session the backend opened for that login was revoked at once.
    assert!(
        eventually(5, || backend
            .with(|st| !st.sessions.values().any(|x| x.user_id == 2 && x.status == Status::Active)))
        .await,
        "bob's swallowed backend session is still active"
    );
    let listed = gw.admin(Method::GET, &format!("{ADMIN}/blocked")).send().await.json();
    assert_eq!(listed["data"][0]["userId"], "2");
    assert_eq!(listed["data"][0]["actor"], "admin:test");

    gw.restart().await;
    assert_eq!(attempt(&gw).await.status, 403, "the block survives a restart");
    assert_eq!(
        gw.admin(Method::GET, &format!("{ADMIN}/users/2/sessions")).send().await.json()["meta"]["blocked"],
        true
    );
    let res = gw.admin(Method::POST, &format!("{ADMIN}/user/2/toggle-block")).send().await.json();
    assert_eq!(res["blocked"], false);
    assert_eq!(attempt(&gw).await.status, 200, "unblocking restores logins");
    let kinds: Vec<String> = audit_until(&gw, "user=2", |e| e.iter().any(|x| x["type"] == "user_unblocked"))
        .await
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect();
    for k in ["login", "user_blocked", "login_blocked", "user_unblocked"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    // A user no session was ever seen of is refused (a typo, or a username for the id)…
    let unknown = gw.admin(Method::POST, &format!("{ADMIN}/user/3/block")).send().await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.reason().as_deref(), Some("unknown_user"));
    assert!(!gw.state().sessions.is_blocked("3"));
    // …unless forced, to block before a first login. Explicit block / unblock are idempotent.
    let force = json!({"force": true});
    assert_eq!(
        gw.admin(Method::POST, &format!("{ADMIN}/user/3/block")).json(force.clone()).send().await.json()["blocked"],
        true
    );
    assert_eq!(
        gw.admin(Method::POST, &format!("{ADMIN}/user/3/block")).send().await.json()["blocked"],
        true,
        "a blocked user is known"
    );
    assert_eq!(gw.admin(Method::POST, &format!("{ADMIN}/user/3/unblock")).send().await.json()["blocked"], false);
}

#[tokio::test]
async fn stats_count_online_sessions_logins_and_devices() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a = gw.login("alice").await;
    gw.login("bob").await;
    gw.post("/api/auth/local").json(json!({"identifier": "bob", "password": "wrong"})).send().await;
    gw.post("/api/auth/logout").bearer(&a.jwt).send().await;
    let s = gw.admin(Method::GET, &format!("{ADMIN}/stats")).send().await.json();
    assert_eq!(s["online"], 1);
    assert_eq!(s["activeSessions"], 1);
    assert_eq!(s["loginsLast24h"], 2);
    assert_eq!(s["failedLoginsLast24h"], 1);
    assert_eq!(s["loginsPerHour"].as_array().map(Vec::len), Some(24));
    assert_eq!(s["loginsPerHour"][23]["logins"], 2);
    assert_eq!(s["activeSessionsByDevice"]["desktop"], 1);
    assert_eq!(s["threatScoreDistribution"]["80-100"], 0);
    assert_eq!(s["vpnLoginsLast24h"], 0);
    assert!(s["loginsByCountry"].is_object());
}

#[tokio::test]
async fn login_statistics_are_rebuilt_from_the_audit_log_after_a_restart() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    gw.login("alice").await;
    gw.post("/api/auth/local").json(json!({"identifier": "alice", "password": "nope"})).send().await;
    audit_until(&gw, "", |e| e.len() >= 2).await;
    gw.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = gw.admin(Method::GET, &format!("{ADMIN}/stats")).send().await.json();
        if s["loginsLast24h"] == 1 && s["failedLoginsLast24h"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "stats not rebuilt: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_audit_log_exports_csv_and_json_with_filters() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    gw.post("/api/auth/local").json(json!({"identifier": "mallory, \"the\" guesser", "password": "x"})).send().await;
    gw.post("/api/auth/logout").bearer(&s.jwt).send().await;
    audit_until(&gw, "", |e| e.len() >= 3).await;
    let res = gw.admin(Method::GET, &format!("{ADMIN}/audit?format=csv")).send().await;
    assert_eq!(res.status, 200);
    assert!(res.headers["content-type"].to_str().expect("ct").starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(res.body.as_ref());
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        vec!["time", "type", "user", "session", "ip", "actor", "details"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("valid CSV");
    let kinds: Vec<&str> = rows.iter().map(|r| &r[1]).collect();
    assert_eq!(kinds, vec!["login", "login_failed", "logout"]);
    let failed = &rows[1];
    let details: Value = serde_json::from_str(&failed[6]).expect("details JSON");
    assert_eq!(details["identifier"], "mallory, \"the\" guesser", "quoted fields round-trip");
    assert_eq!(&failed[4], "127.0.0.1");
    assert!(humantime::parse_rfc3339(&rows[0][0]).is_ok());

    let only_failed = gw.admin(Method::GET, &format!("{ADMIN}/audit?format=csv&type=login_failed")).send().await;
    assert_eq!(csv::Reader::from_reader(only_failed.body.as_ref()).records().count(), 1);
    let json = gw.admin(Method::GET, &format!("{ADMIN}/audit?user=1")).send().await.json();
    assert_eq!(json["meta"]["count"], 2, "login and logout of user 1: {json}");
    let future = gw.admin(Method::GET, &format!("{ADMIN}/audit?since=2999-01-01T00:00:00Z")).send().await.json();
    assert_eq!(future["meta"]["count"], 0);
    assert_eq!(gw.admin(Method::GET, &format!("{ADMIN}/audit?format=xml")).send().await.status, 400);
}

#[tokio::test]
async fn metrics_count_the_scripted_flow() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[sessions]\nrefresh_reuse_grace = \"0s\"\n").await;
    let a = gw.login("alice").await;
    gw.login("bob").await;
    gw.post("/api/auth/local").json(json!({"identifier": "bob", "password": "wrong"})).send().await;
    let r = gw.refresh(&a.refresh).await;
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    gw.post("/api/auth/refresh").json(json!({"refreshToken": a.refresh})).send().await; // reuse
    gw.get("/api/articles").bearer(&r.jwt).send().await; // refused
    let res = gw.admin_anon(Method::GET, "/metrics").send().await;
    assert_eq!(res.status, 200);
    let m = parse_metrics(&res.text());
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("{k} missing:\n{}", res.text()));
    assert_eq!(get("sessiongate_logins_total{result=\"success\"}"), 2.0);
    assert_eq!(get("sessiongate_logins_total{result=\"failed\"}"), 1.0);
    assert_eq!(get("sessiongate_refreshes_total{result=\"rotated\"}"), 1.0);
    assert_eq!(get("sessiongate_refresh_reuse_detected_total"), 1.0);
    assert_eq!(get("sessiongate_terminations_total{reason=\"refresh_token_reuse\"}"), 1.0);
    assert_eq!(get("sessiongate_requests_total{decision=\"session_terminated\",route=\"other\",status=\"4xx\"}"), 1.0);
    assert_eq!(get("sessiongate_requests_total{decision=\"allow\",route=\"login\",status=\"2xx\"}"), 2.0);
    assert_eq!(get("sessiongate_sessions{state=\"active\"}"), 1.0);
    assert_eq!(get("sessiongate_sessions{state=\"total\"}"), 2.0);
    assert!(get("sessiongate_upstream_latency_seconds_count{route=\"login\"}") >= 3.0);
    assert!(get("sessiongate_gateway_added_latency_seconds_count{route=\"other\"}") >= 1.0);
    assert!(get("sessiongate_store_size_bytes") > 0.0);
    assert_eq!(get("sessiongate_store_operation_seconds_count{op=\"create\"}"), 2.0);
    assert_eq!(get("sessiongate_store_operation_seconds_count{op=\"rotate\"}"), 1.0);
    assert_eq!(get("sessiongate_store_operation_seconds_count{op=\"end\"}"), 1.0);
    assert_eq!(get("sessiongate_build_info{version=\"0.1.0\"}"), 1.0);
    // Bounded labels: no path, user, IP or token ever appears.
    for l in res.text().lines().filter(|l| !l.starts_with('#')) {
        assert!(!l.contains("/api/") && !l.contains("127.0.0.1") && !l.contains("alice") && !l.contains("eyJ"), "{l}");
    }
}

#[tokio::test]
async fn readiness_follows_the_backend() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let ready = gw.admin_anon(Method::GET, "/readyz").send().await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["checks"], json!({"store": true, "upstream": true}));
    assert!(backend.seen().iter().any(|r| r.path == "/_health"));
    drop(backend);
    let down = gw.admin_anon(Method::GET, "/readyz").send().await;
    assert_eq!(down.status, 503);
    assert_eq!(down.json()["checks"]["upstream"], false);
    assert_eq!(gw.admin_anon(Method::GET, "/healthz").send().await.status, 200, "alive though not ready");
}

#[tokio::test]
async fn node_auth_admin_shape_and_cleanup() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a = gw.login("alice").await;
    gw.login("bob").await;
    let list = gw.admin(Method::GET, "/admin/api/sessions").send().await.json();
    assert_eq!(list["total"], 2);
    let mine =
        list["sessions"].as_array().expect("sessions").iter().find(|s| s["userId"] == "1").expect("alice").clone();
    for k in [
        "sessionHandle",
        "userId",
        "tenantId",
        "createdAt",
        "expiresAt",
        "lastActiveAt",
        "userAgent",
        "ipAddress",
        "data",
    ] {
        assert!(mine.get(k).is_some(), "{k}");
    }
    let handle = mine["sessionHandle"].as_str().expect("handle");
    assert_eq!(gw.admin(Method::DELETE, &format!("/admin/api/sessions/{handle}")).send().await.json()["success"], true);
    assert_eq!(gw.get("/api/articles").bearer(&a.jwt).send().await.status, 401);
    assert_eq!(gw.admin(Method::DELETE, "/admin/api/sessions/nope").send().await.status, 404);
    assert_eq!(gw.admin(Method::GET, "/admin/api/sessions").send().await.json()["total"], 1);
    // Paginated, newest first: `limit` from `offset`, `nextOffset` null on the last page.
    gw.login("carol").await;
    gw.login("alice").await;
    let first = gw.admin(Method::GET, "/admin/api/sessions?limit=2").send().await.json();
    assert_eq!((first["total"].as_u64(), first["nextOffset"].as_u64()), (Some(3), Some(2)), "{first}");
    let users: Vec<&str> =
        first["sessions"].as_array().expect("page").iter().filter_map(|s| s["userId"].as_str()).collect();
    assert_eq!(users.len(), 2);
    let last = gw.admin(Method::GET, "/admin/api/sessions?limit=2&offset=2").send().await.json();
    assert_eq!(last["sessions"].as_array().map(Vec::len), Some(1));
    assert!(last["nextOffset"].is_null());
    assert_eq!(last["sessions"][0]["userId"], "2", "bob's is the oldest active one");
    let bad = gw.admin(Method::GET, "/admin/api/sessions?limit=0").send().await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.reason().as_deref(), Some("invalid_parameter"));
    let clean = gw.admin(Method::POST, "/auth/sessions/cleanup").send().await;
    assert_eq!(clean.status, 200);
    assert_eq!(clean.json()["success"], true);
}

#[tokio::test]
async fn clean_inactive_ends_idle_sessions() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[sessions]\ninactivity_timeout = \"1s\"\n").await;
    let idle = gw.login("alice").await;
    gw.advance(std::time::Duration::from_secs(2));
    let fresh = gw.login("bob").await;
    let res = gw.admin(Method::POST, &format!("{ADMIN}/sessions/clean-inactive")).send().await.json();
    assert_eq!(res["terminated"], 1);
    assert_eq!(gw.get("/api/articles").bearer(&idle.jwt).send().await.status, 401);
    assert_eq!(gw.get("/api/articles").bearer(&fresh.jwt).send().await.status, 200);
}

/// A stored session as a bulk import would write it.
fn bulk_record(id: u64) -> sessiongate::store::SessionRecord {
    let user = format!("{}", id % 1000);
    let ended = id % 4 == 0;
    sessiongate::store::SessionRecord {
        username: Some(format!("user{user}")),
        ip: format!("10.0.{}.{}", (id / 256) % 256, id % 256),
        login_time: 1_700_000_000_000 + id as i64,
        last_active: 1_700_000_000_000 + id as i64,
        logout_time: ended.then_some(1_700_000_100_000),
        end_reason: ended.then_some(sessiongate::store::EndReason::Logout),
        threat_score: Some((id % 101) as u32),
        ..sessiongate::store::SessionRecord::blank(id, &user)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_pages_through_100k_sessions() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    gw.stop().await;
    {
        let store = sessiongate::store::Store::open(&gw.data_dir(), 64 << 20).await.expect("open store");
        for chunk in (1..=100_000u64).collect::<Vec<_>>().chunks(10_000) {
            let put_sessions = chunk.iter().map(|id| bulk_record(*id)).collect();
            store
                .apply(sessiongate::store::Changes { put_sessions, ..Default::default() }, false)
                .await
                .expect("bulk write");
        }
        store.flush().await.expect("flush");
    }
    gw.restart().await;
    assert_eq!(gw.state().sessions.counts().0, 100_000);
    let started = std::time::Instant::now();
    let v = gw
        .admin(Method::GET, &format!("{ADMIN}/sessions?active=true&minThreat=90&sort=-id&page=3&pageSize=50"))
        .send()
        .await
        .json();
    let took = started.elapsed();
    // Active: id % 4 != 0; threat id % 101 >= 90: 11 of every 101 ids, 3/4 of those active.
    let expected = (1..=100_000u64).filter(|i| i % 4 != 0 && i % 101 >= 90).count();
    assert_eq!(v["meta"]["pagination"]["total"], expected);
    let ids: Vec<u64> = v["data"].as_array().expect("data").iter().filter_map(|s| s["id"].as_u64()).collect();
    let want: Vec<u64> = (1..=100_000u64).rev().filter(|i| i % 4 != 0 && i % 101 >= 90).skip(100).take(50).collect();
    assert_eq!(ids, want, "the right page, in order");
    println!("one filtered, sorted page of 100 000 sessions: {took:?}");
    let user = gw.admin(Method::GET, &format!("{ADMIN}/sessions?user=user7&pageSize=5")).send().await.json();
    assert_eq!(user["meta"]["pagination"]["total"], 100, "by username");
}

#[tokio::test]
async fn the_event_stream_reports_changes_and_ends_at_shutdown() {
    use http_body_util::BodyExt;
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://{}{ADMIN}/events", gw.admin_addr))
        .header("authorization", format!("Bearer {}", support::ADMIN_TOKEN))
        .body(http_body_util::Empty::new())
        .expect("request");
    let res = client.request(req).await.expect("stream opens");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut seen = String::new();
    let mut next_until = async |seen: &mut String, needle: &str| {
        while !seen.contains(needle) {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"))
                .expect("stream open")
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    next_until(&mut seen, "event: hello").await;
    let s = gw.login("alice").await;
    next_until(&mut seen, "\"kind\":\"created\"").await;
    let sid = gw.get("/api/magic-sessionmanager/current-session").bearer(&s.jwt).send().await.json()["data"]
        ["sessionId"]
        .as_str()
        .expect("sid")
        .to_string();
    assert!(seen.contains(&sid), "the event names the session: {seen}");
    assert_eq!(gw.admin(Method::POST, &format!("{ADMIN}/sessions/{sid}/terminate")).send().await.status, 200);
    next_until(&mut seen, "\"kind\":\"ended\"").await;
    assert!(!seen.contains(&s.jwt), "never a token");

    let started = std::time::Instant::now();
    gw.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "an open stream does not hold the drain");
}

/// While the session index loads, the admin port answers liveness and says "not ready"; the
/// listener is handed back once the index is in.
#[tokio::test]
async fn the_admin_port_is_live_but_not_ready_while_the_index_loads() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (loaded, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(sessiongate::admin::while_loading(listener, rx));
    let get = |path: &'static str| async move {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).await.expect("read");
        out
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains(r#""index":"loading""#), "{ready}");
    let api = get("/magic-sessionmanager/sessions").await;
    assert!(api.starts_with("HTTP/1.1 503") && api.contains("starting"), "{api}");
    loaded.send(()).expect("send");
    let back = task.await.expect("handed back");
    assert_eq!(back.local_addr().expect("addr"), addr);
}

/// The operational series: open connections, cap rejections, in-flight requests, reloads, the
/// alert queue, geo data age, and the process metrics under their standard names.
#[tokio::test]
async fn metrics_show_connections_in_flight_reloads_queues_and_data_age() {
    let backend = MockStrapi::start().await;
    let city = support::geoip_test_db("GeoIP2-City-Test.mmdb");
    let gw =
        Gateway::start(&backend.url(), &format!("[server]\nmax_connections = 2\n[geo]\ncity_db = \"{city}\"\n")).await;
    let a = gw.login("alice").await;
    let scrape = || async {
        let res = gw.admin_anon(Method::GET, "/metrics").send().await;
        (parse_metrics(&res.text()), res.text())
    };
    // A request held by a slow backend is in flight, its connection open.
    backend.with(|s| s.delay = Some(std::time::Duration::from_millis(800)));
    let slow = {
        let req = gw.get("/api/articles").bearer(&a.jwt);
        tokio::spawn(async move { req.send().await.status })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (m, text) = scrape().await;
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("{k} missing:\n{text}"));
    assert_eq!(get("sessiongate_requests_in_flight{listener=\"public\"}"), 1.0);
    assert_eq!(get("sessiongate_connections_open{listener=\"public\"}"), 1.0);
    assert!(get("sessiongate_connections_open{listener=\"admin\"}") >= 1.0, "the scrape's own");
    // The cap: two open, the third is closed at accept and counted.
    let held = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let mut buf = [0u8; 1];
    use tokio::io::AsyncReadExt;
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), third.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection over the cap is closed");
    drop(held);
    assert_eq!(slow.await.expect("join"), 200);
    backend.with(|s| s.delay = None);
    let (m, text) = scrape().await;
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("{k} missing:\n{text}"));
    assert_eq!(get("sessiongate_connections_rejected_total{listener=\"public\",reason=\"max_connections\"}"), 1.0);
    assert_eq!(get("sessiongate_requests_in_flight{listener=\"public\"}"), 0.0);
    assert_eq!(get("sessiongate_config_reloads_total{result=\"applied\"}"), 0.0);
    let started = get("sessiongate_config_last_reload_success_timestamp_seconds");
    assert!(started > 1.7e9, "the start counts as the first application: {started}");
    assert_eq!(gw.admin(Method::POST, "/reload").send().await.status, 200);
    let (m, text) = scrape().await;
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("{k} missing:\n{text}"));
    assert_eq!(get("sessiongate_config_reloads_total{result=\"applied\"}"), 1.0);
    assert!(get("sessiongate_config_last_reload_success_timestamp_seconds") >= started);
    assert_eq!(get("sessiongate_alerts_queued"), 0.0);
    // MaxMind's test database was built years ago.
    assert!(get("sessiongate_geo_data_age_seconds{source=\"geo.city_db\"}") > 86400.0 * 30.0);
    assert!(get("process_resident_memory_bytes") > 0.0, "standard process_* names");
    assert!(!text.contains("sessiongate_process_"), "not namespaced");
}
