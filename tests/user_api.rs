//! The plugin-compatible user API, answered by the gateway on the public port.

mod support;

use http::Method;
use serde_json::{json, Value};
use support::strapi::{backend_sid, Status};
use support::{eventually, Gateway, MockStrapi};

const API: &str = "/api/magic-sessionmanager";

fn is_iso_millis_z(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.' && humantime::parse_rfc3339(s).is_ok()
    })
}

#[tokio::test]
async fn my_sessions_has_the_plugin_shape() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    gw.login("bob").await;
    let res = gw.get(&format!("{API}/my-sessions")).bearer(&a2.jwt).send().await;
    assert_eq!(res.status, 200);
    let v = res.json();
    assert_eq!(v["meta"], json!({"count": 2, "active": 2}), "only alice's sessions: {v}");
    let data = v["data"].as_array().expect("data");
    let current: Vec<&Value> = data.iter().filter(|s| s["isCurrentSession"] == true).collect();
    assert_eq!(current.len(), 1);
    let s = current[0];
    assert!(s["id"].is_u64());
    assert!(s["documentId"].as_str().is_some_and(|d| d.len() == 24));
    assert!(s["sessionId"].as_str().is_some_and(|d| d.starts_with("sess_") && d.len() == 37));
    assert_eq!(s["ipAddress"], "127.0.0.1");
    assert!(s["userAgent"].as_str().is_some_and(|u| u.contains("Chrome/143")));
    assert!(is_iso_millis_z(&s["loginTime"]) && is_iso_millis_z(&s["lastActive"]), "{s}");
    assert_eq!(s["logoutTime"], Value::Null);
    assert_eq!(s["isActive"], true);
    assert_eq!(s["deviceType"], "desktop");
    assert_eq!(s["browserName"], "Chrome 143");
    assert_eq!(s["osName"], "macOS 10.15.7");
    assert_eq!(s["geoLocation"], Value::Null);
    assert_eq!(s["securityScore"], 100, "risk scoring is on by default; a clean login scores 100 (no threat)");
    assert_eq!(s["isTrulyActive"], true);
    assert_eq!(s["minutesSinceActive"], 0);
    // The other listed session is alice's first one, not current.
    let other = data.iter().find(|s| s["isCurrentSession"] == false).expect("other");
    let cur1 = gw.get(&format!("{API}/current-session")).bearer(&a1.jwt).send().await.json();
    assert_eq!(other["sessionId"], cur1["data"]["sessionId"]);
}

#[tokio::test]
async fn current_session_is_the_presenting_tokens_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let v = gw.get(&format!("{API}/current-session")).bearer(&s.jwt).send().await.json();
    assert_eq!(v["data"]["isCurrentSession"], true);
    assert_eq!(v["data"]["isActive"], true);
}

#[tokio::test]
async fn logout_ends_only_the_current_session_and_revokes_it_at_the_backend() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let res = gw.post(&format!("{API}/logout")).bearer(&a1.jwt).send().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"message": "Logged out successfully"}));
    assert_eq!(gw.get("/api/articles").bearer(&a1.jwt).send().await.status, 401);
    assert_eq!(gw.get("/api/articles").bearer(&a2.jwt).send().await.status, 200);
    let sid = backend_sid(&a1.jwt);
    assert!(eventually(5, || backend.session_status(&sid) == Some(Status::Revoked)).await, "backend session revoked");
    assert_eq!(backend.session_status(&backend_sid(&a2.jwt)), Some(Status::Active));
}

/// "Log out my other devices": every session of the user but the one asking ends, revoked at
/// the backend; the current one and other users' stay.
#[tokio::test]
async fn logout_others_keeps_the_current_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let a3 = gw.login("alice").await;
    let b = gw.login("bob").await;
    let res = gw.post(&format!("{API}/logout-others")).bearer(&a2.jwt).send().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"message": "Logged out from all other devices successfully", "terminated": 2}));
    for t in [&a1.jwt, &a3.jwt] {
        assert_eq!(gw.get("/api/articles").bearer(t).send().await.reason().as_deref(), Some("session_terminated"));
    }
    assert_eq!(gw.get("/api/articles").bearer(&a2.jwt).send().await.status, 200, "the current session stays");
    assert_eq!(gw.get("/api/articles").bearer(&b.jwt).send().await.status, 200);
    let (s1, s3) = (backend_sid(&a1.jwt), backend_sid(&a3.jwt));
    assert!(
        eventually(5, || backend.session_status(&s1) == Some(Status::Revoked)
            && backend.session_status(&s3) == Some(Status::Revoked))
        .await
    );
    assert_eq!(backend.session_status(&backend_sid(&a2.jwt)), Some(Status::Active));
    let again = gw.post(&format!("{API}/logout-others")).bearer(&a2.jwt).send().await.json();
    assert_eq!(again["terminated"], 0, "idempotent");
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let b = gw.login("bob").await;
    let res = gw.post(&format!("{API}/logout-all")).bearer(&a2.jwt).send().await;
    assert_eq!(res.json(), json!({"message": "Logged out from all devices successfully"}));
    for t in [&a1.jwt, &a2.jwt] {
        assert_eq!(gw.get("/api/articles").bearer(t).send().await.reason().as_deref(), Some("session_terminated"));
    }
    assert_eq!(gw.get("/api/articles").bearer(&b.jwt).send().await.status, 200);
    let (s1, s2) = (backend_sid(&a1.jwt), backend_sid(&a2.jwt));
    assert!(
        eventually(5, || backend.session_status(&s1) == Some(Status::Revoked)
            && backend.session_status(&s2) == Some(Status::Revoked))
        .await
    );
}

#[tokio::test]
async fn deleting_another_own_session_by_document_id_or_session_id() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let a3 = gw.login("alice").await;
    let s2 = gw.get(&format!("{API}/current-session")).bearer(&a2.jwt).send().await.json()["data"].clone();
    let s3 = gw.get(&format!("{API}/current-session")).bearer(&a3.jwt).send().await.json()["data"].clone();
    let doc = s2["documentId"].as_str().expect("doc");
    let res = gw.delete(&format!("{API}/my-sessions/{doc}")).bearer(&a1.jwt).send().await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json(), json!({"message": format!("Session {doc} terminated successfully"), "success": true}));
    let sid = s3["sessionId"].as_str().expect("sid");
    assert_eq!(gw.delete(&format!("{API}/my-sessions/{sid}")).bearer(&a1.jwt).send().await.status, 200);
    assert_eq!(gw.get("/api/articles").bearer(&a2.jwt).send().await.status, 401);
    assert_eq!(gw.get("/api/articles").bearer(&a3.jwt).send().await.status, 401);
    assert_eq!(gw.get("/api/articles").bearer(&a1.jwt).send().await.status, 200);
    let b2 = backend_sid(&a2.jwt);
    assert!(eventually(5, || backend.session_status(&b2) == Some(Status::Revoked)).await);
}

#[tokio::test]
async fn deleting_the_current_session_is_a_400_with_the_plugins_message() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let cur = gw.get(&format!("{API}/current-session")).bearer(&s.jwt).send().await.json();
    let id = cur["data"]["documentId"].as_str().expect("doc");
    let res = gw.delete(&format!("{API}/my-sessions/{id}")).bearer(&s.jwt).send().await;
    assert_eq!(res.status, 400);
    let v = res.json();
    assert_eq!(v["error"]["status"], 400);
    assert_eq!(v["error"]["message"], "Cannot terminate current session. Use /logout instead.");
    assert_eq!(gw.get("/api/articles").bearer(&s.jwt).send().await.status, 200);
}

#[tokio::test]
async fn another_users_session_is_not_found() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a = gw.login("alice").await;
    let b = gw.login("bob").await;
    let bobs = gw.get(&format!("{API}/current-session")).bearer(&b.jwt).send().await.json();
    for key in ["documentId", "sessionId"] {
        let id = bobs["data"][key].as_str().expect("id");
        let res = gw.delete(&format!("{API}/my-sessions/{id}")).bearer(&a.jwt).send().await;
        assert_eq!(res.status, 404, "{key}");
        assert_eq!(res.reason().as_deref(), Some("not_found"));
    }
    assert_eq!(gw.delete(&format!("{API}/my-sessions/nope")).bearer(&a.jwt).send().await.status, 404);
    assert_eq!(gw.get("/api/articles").bearer(&b.jwt).send().await.status, 200, "bob's session untouched");
}

#[tokio::test]
async fn the_user_api_needs_a_live_tracked_unexpired_token() {
    let backend = MockStrapi::start().await;
    backend.with(|s| s.access_lifespan = 1);
    let gw = Gateway::with_defaults(&backend).await;
    let none = gw.get(&format!("{API}/my-sessions")).send().await;
    assert_eq!(none.status, 401);
    assert_eq!(none.reason().as_deref(), Some("unauthenticated"));
    let (untracked, _) = backend.issue_direct(1);
    assert_eq!(gw.get(&format!("{API}/my-sessions")).bearer(&untracked).send().await.status, 401);
    assert_eq!(gw.get(&format!("{API}/my-sessions")).bearer("garbage").send().await.status, 401);
    let s = gw.login("alice").await;
    assert_eq!(gw.get(&format!("{API}/my-sessions")).bearer(&s.jwt).send().await.status, 200);
    // The gateway answers this API itself and judges `exp` by its own clock.
    gw.advance(std::time::Duration::from_secs(3));
    let expired = gw.get(&format!("{API}/my-sessions")).bearer(&s.jwt).send().await;
    assert_eq!(expired.status, 401, "an expired access token does not authenticate");
    // Unknown sub-paths are 404, and the API is never forwarded to the backend (bob's token
    // lives past the advanced clock).
    backend.with(|s| s.access_lifespan = 600);
    let s2 = gw.login("bob").await;
    assert_eq!(gw.get(&format!("{API}/nothing-here")).bearer(&s2.jwt).send().await.status, 404);
    assert_eq!(backend.seen().iter().filter(|r| r.path.contains("magic-sessionmanager")).count(), 0);
}

#[tokio::test]
async fn ending_a_session_whose_access_token_expired_still_revokes_it_at_the_backend() {
    let backend = MockStrapi::start().await;
    backend.with(|s| s.access_lifespan = 1);
    let gw = Gateway::with_defaults(&backend).await;
    let old = gw.login("alice").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let fresh = gw.login("alice").await;
    let res = gw.post(&format!("{API}/logout-all")).bearer(&fresh.jwt).send().await;
    assert_eq!(res.status, 200);
    // The stored access token expired, so the gateway refreshed once and logged out with the
    // fresh pair: no backend session of alice stays active.
    assert!(
        eventually(5, || backend.with(|s| !s.sessions.values().any(|x| x.user_id == 1 && x.status == Status::Active)))
            .await,
        "alice still has an active backend session"
    );
    assert_eq!(backend.session_status(&backend_sid(&old.jwt)), Some(Status::Rotated));
    assert!(backend.count(&Method::POST, "/api/auth/refresh") >= 1);
}

#[tokio::test]
async fn user_api_prefix_is_configurable_and_can_be_disabled() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[user_api]\nprefix = \"/sessions-api\"\n").await;
    let s = gw.login("alice").await;
    assert_eq!(gw.get("/sessions-api/my-sessions").bearer(&s.jwt).send().await.status, 200);
    let off = Gateway::start(&backend.url(), "[user_api]\nenabled = false\n").await;
    let s = off.login("alice").await;
    let res = off.get(&format!("{API}/my-sessions")).bearer(&s.jwt).send().await;
    assert_eq!(res.status, 200, "forwarded to the backend, which answers its own content route");
    assert_eq!(res.reason(), None);
    assert!(res.json()["data"][0]["title"].is_string());
}
