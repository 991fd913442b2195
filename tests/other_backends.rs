//! The generic configuration in front of a backend that is not Strapi: the Directus look-alike
//! (`support::directus`, pinned to a real 11.3.5 by `tests/directus_mock.rs`) in json and
//! session mode, with its query-string token transport and its error shape.

mod support;

use http::Method;
use serde_json::{json, Value};
use support::directus::{MockDirectus, PASSWORD};
use support::Gateway;

/// Directus's REST auth (json and session mode), described by hand (no preset).
const DIRECTUS: &str = r#"
[routes]
login = ["POST /auth/login"]
refresh = ["POST /auth/refresh"]
logout = ["POST /auth/logout"]
credential_change = [
  "PATCH /users/me if /password",
  "PATCH /users/:id if /password",
  "PATCH /users/:id if /status != active",
]
[extract]
access_token = "/data/access_token"
refresh_token = "/data/refresh_token"
user_id_claim = "id"
request_refresh_token = "/refresh_token"
request_identifier = "/email"
refresh_precedence = "body"
refresh_cookie = "directus_refresh_token"
access_cookie = "directus_session_token"
access_query = "access_token"
refresh_claim = "session"
[upstream]
health_path = "/server/health"
[backend]
error_shape = "directus"
body_formats = ["json"]
revoke_logout = "POST /auth/logout"
revoke_refresh = "POST /auth/refresh"
"#;

async fn login(gw: &Gateway) -> (String, String) {
    login_as(gw, "reader@example.com").await
}

async fn login_as(gw: &Gateway, email: &str) -> (String, String) {
    let res = gw.post("/auth/login").json(json!({"email": email, "password": PASSWORD})).send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    let d = res.json()["data"].clone();
    (d["access_token"].as_str().expect("at").into(), d["refresh_token"].as_str().expect("rt").into())
}

fn code_and_reason(v: &Value) -> (Value, Value) {
    let e = &v["errors"][0]["extensions"];
    (e["code"].clone(), e["reason"].clone())
}

#[tokio::test]
async fn a_query_token_of_an_ended_session_is_refused_in_every_spelling() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), DIRECTUS).await;
    let (access, refresh) = login(&gw).await;
    // The query token is checked and forwarded as checked.
    let ok = gw.get(&format!("/users/me?access_token={access}")).send().await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let (_, path, _) = d.with(|s| s.seen.last().cloned()).expect("seen");
    assert_eq!(path, format!("/users/me?access_token={access}"));
    let out = gw.post("/auth/logout").json(json!({"refresh_token": refresh})).send().await;
    assert_eq!(out.status, 204);
    let ended_at = support::strapi_now_ms();
    // Directus alone would still accept it (json mode): the gateway refuses every spelling.
    for q in [
        format!("access_token={access}"),
        format!("x=1&%61ccess_token={access}"),
        format!("access_token={}", access.replace('.', "%2E")),
    ] {
        let r = gw.get(&format!("/items/articles?{q}")).send().await;
        assert_eq!(r.status, 401, "{q}: {}", r.text());
        assert_eq!(code_and_reason(&r.json()), (json!("INVALID_CREDENTIALS"), json!("session_terminated")), "{q}");
    }
    for q in [format!("access_token={access}&access_token=x"), format!("access_token[]={access}")] {
        let r = gw.get(&format!("/items/articles?{q}")).send().await;
        assert_eq!((r.status.as_u16(), r.reason().as_deref()), (400, Some("ambiguous_credentials")), "{q}");
    }
    let both = gw.get(&format!("/items/articles?access_token={access}")).bearer("other").send().await;
    assert_eq!(both.reason().as_deref(), Some("ambiguous_credentials"));
    assert!(!d.accepted_since(&access, ended_at), "the backend never accepted the ended session's token");
    // The bearer and the session cookie are refused too.
    let bearer = gw.get("/items/articles").bearer(&access).send().await;
    assert_eq!(bearer.reason().as_deref(), Some("session_terminated"));
    let cookie = gw.get("/items/articles").header("cookie", &format!("directus_session_token={access}")).send().await;
    assert_eq!(cookie.reason().as_deref(), Some("session_terminated"));
}

#[tokio::test]
async fn a_user_ended_by_an_admin_is_refused_and_revoked_at_directus() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), DIRECTUS).await;
    let (access, refresh) = login(&gw).await;
    let user = d.user("reader@example.com");
    let kicked = gw.admin(Method::POST, &format!("/magic-sessionmanager/user/{}/terminate-all", user.id)).send().await;
    assert_eq!(kicked.status, 200, "{}", kicked.text());
    assert_eq!(gw.get("/users/me").bearer(&access).send().await.reason().as_deref(), Some("session_terminated"));
    // The gateway logged the session out at Directus with its stored refresh token.
    let revoked = support::eventually(5, || d.with(|s| !s.sessions.contains_key(&refresh))).await;
    assert!(revoked, "the refresh token's row is gone at the backend");
}

/// Directus revokes nothing when a password changes or a user is suspended (their tokens live on
/// until `exp`); with the rules above, the gateway ends the user's sessions.
#[tokio::test]
async fn a_password_change_or_a_suspension_ends_the_users_sessions() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), DIRECTUS).await;
    let reader = d.user("reader@example.com");
    let (admin, _) = login_as(&gw, "admin@example.com").await;
    let patch = |body: Value| gw.patch(&format!("/users/{}", reader.id)).bearer(&admin).json(body).send();
    let gw = &gw;
    let articles = |t: String| async move { gw.get("/items/articles").bearer(&t).send().await };

    let (before, _) = login(gw).await;
    assert_eq!(patch(json!({"first_name": "R"})).await.status, 200);
    assert_eq!(patch(json!({"status": "active"})).await.status, 200);
    assert_eq!(articles(before.clone()).await.status, 200, "neither a name nor `active` ends anything");

    assert_eq!(patch(json!({"status": "suspended"})).await.status, 200);
    let r = articles(before.clone()).await;
    assert_eq!((r.status.as_u16(), r.reason().as_deref()), (401, Some("session_terminated")), "suspended: ended");
    assert_eq!(articles(admin.clone()).await.status, 200, "only that user's sessions");

    assert_eq!(patch(json!({"status": "active"})).await.status, 200);
    let (again, _) = login(gw).await;
    assert_eq!(patch(json!({"password": "Changed1!"})).await.status, 200);
    assert_eq!(articles(again).await.reason().as_deref(), Some("session_terminated"), "password changed: ended");

    // The user's own password change, on /users/me.
    let res = gw.post("/auth/login").json(json!({"email": "reader@example.com", "password": "Changed1!"})).send().await;
    let own = res.json()["data"]["access_token"].as_str().expect("at").to_string();
    let mine = gw.patch("/users/me").bearer(&own).json(json!({"password": PASSWORD})).send().await;
    assert_eq!(mine.status, 200);
    assert_eq!(articles(own).await.reason().as_deref(), Some("session_terminated"));
}

/// Session mode: the session cookie is the access token, and its `session` claim the refresh
/// token. A refresh rotates the same session; after a logout the cookie from before the refresh
/// — which Directus still accepts for its 10 s grace — is refused too.
#[tokio::test]
async fn session_mode_rotates_one_session_and_a_logout_closes_the_grace() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), DIRECTUS).await;
    let cookie_of = |r: &support::Resp| {
        format!("directus_session_token={}", r.set_cookie("directus_session_token").expect("session cookie"))
    };
    let res = gw
        .post("/auth/login")
        .json(json!({"email": "reader@example.com", "password": PASSWORD, "mode": "session"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let first = cookie_of(&res);
    assert_eq!(gw.get("/users/me").header("cookie", &first).send().await.status, 200);
    let r = gw.post("/auth/refresh").header("cookie", &first).json(json!({"mode": "session"})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = cookie_of(&r);
    let user = d.user("reader@example.com");
    let list = gw.admin(Method::GET, &format!("/magic-sessionmanager/sessions?user={}", user.id)).send().await.json();
    assert_eq!(list["meta"]["pagination"]["total"], 1, "one session, rotated: {list}");
    let out = gw.post("/auth/logout").header("cookie", &second).json(json!({"mode": "session"})).send().await;
    assert_eq!(out.status, 204);
    let since = support::strapi_now_ms();
    for c in [&first, &second] {
        let r = gw.get("/items/articles").header("cookie", c).send().await;
        assert_eq!(r.reason().as_deref(), Some("session_terminated"), "{c}");
    }
    let jwt = first.trim_start_matches("directus_session_token=");
    assert!(!d.accepted_since(jwt, since), "the pre-refresh cookie never reached Directus again");
}

/// The README's worked example: a plain OAuth2 server (password and refresh-token grants on one
/// path, told apart by `grant_type`; RFC 7009 revocation), described with generic keys only.
const OAUTH2: &str = r#"
preset = "none"
[routes]
login = ["POST /oauth/token if /grant_type == password"]
refresh = ["POST /oauth/token if /grant_type == refresh_token"]
logout = ["POST /oauth/revoke reads /token"]
[extract]
access_token = "/access_token"
refresh_token = "/refresh_token"
user_id_claim = "sub"
request_refresh_token = "/refresh_token"
request_identifier = "/username"
[upstream]
health_path = "/health"
[backend]
error_shape = "plain"
body_formats = ["urlencoded"]
revoke_on_end = true
revoke_logout = "POST /oauth/revoke reads /token"
revoke_fields = { client_id = "demo", token_type_hint = "refresh_token" }
"#;

fn form_post(gw: &Gateway, path: &str, body: &str) -> support::Req {
    gw.post(path).header("content-type", "application/x-www-form-urlencoded").body(body.as_bytes().to_vec())
}

#[tokio::test]
async fn an_oauth2_password_grant_server_described_by_hand() {
    use support::oauth2::{MockOAuth2, PASSWORD as PW};
    let o = MockOAuth2::start().await;
    let gw = Gateway::start(&o.url(), OAUTH2).await;
    let login = |user: &'static str| {
        let gw = &gw;
        async move {
            let r = form_post(
                gw,
                "/oauth/token",
                &format!("grant_type=password&username={user}&password={PW}&client_id=demo"),
            )
            .send()
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            let j = r.json();
            (j["access_token"].as_str().expect("at").to_string(), j["refresh_token"].as_str().expect("rt").to_string())
        }
    };
    let (access, refresh) = login("alice").await;
    // Forwarded as the form the server reads, with the fields the gateway checked.
    let (_, _, ct, body) = o.with(|s| s.seen.last().cloned()).expect("seen");
    assert_eq!(ct, "application/x-www-form-urlencoded");
    assert!(body.contains("grant_type=password") && body.contains("client_id=demo"), "{body}");
    let list = gw.admin(Method::GET, "/magic-sessionmanager/sessions?user=alice").send().await.json();
    assert_eq!(list["meta"]["pagination"]["total"], 1, "{list}");
    // A refresh grant rotates the same session.
    let r = form_post(&gw, "/oauth/token", &format!("grant_type=refresh_token&refresh_token={refresh}&client_id=demo"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (access2, refresh2) = (
        r.json()["access_token"].as_str().expect("at").to_string(),
        r.json()["refresh_token"].as_str().expect("rt").to_string(),
    );
    let list = gw.admin(Method::GET, "/magic-sessionmanager/sessions?user=alice").send().await.json();
    assert_eq!(list["meta"]["pagination"]["total"], 1, "rotated: {list}");
    // Another grant type is not a session route; a second grant_type is refused, not guessed.
    let cc = form_post(&gw, "/oauth/token", "grant_type=client_credentials&client_id=demo").send().await;
    assert_eq!(cc.json()["error"], "unsupported_grant_type", "passed through: {}", cc.text());
    let two = form_post(
        &gw,
        "/oauth/token",
        &format!("grant_type=password&grant_type=refresh_token&refresh_token={refresh2}"),
    )
    .send()
    .await;
    assert_eq!(two.status, 400);
    // RFC 7009 revocation ends the session: the server alone would still take the access token.
    let out =
        form_post(&gw, "/oauth/revoke", &format!("token={refresh2}&token_type_hint=refresh_token&client_id=demo"))
            .send()
            .await;
    assert_eq!(out.status, 200, "{}", out.text());
    let direct = support::Req::new(Method::GET, &format!("{}/api/me", o.url())).bearer(&access2).send().await;
    assert_eq!(direct.status, 200, "the gap: the server alone still takes it");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let since = support::strapi_now_ms();
    for t in [&access, &access2] {
        let r = gw.get("/api/me").bearer(t).send().await;
        assert_eq!((r.status.as_u16(), r.reason().as_deref()), (401, Some("session_terminated")));
    }
    let again =
        form_post(&gw, "/oauth/token", &format!("grant_type=refresh_token&refresh_token={refresh2}&client_id=demo"))
            .send()
            .await;
    assert_eq!(again.reason().as_deref(), Some("session_terminated"));
    assert!(o.with(|s| s.accepted.iter().all(|(t, at)| *at < since || (t != &access && t != &access2))));
    // An admin termination is revoked at the server with the gateway's own RFC 7009 call.
    let (_, bob_refresh) = login("bob").await;
    let kicked = gw.admin(Method::POST, "/magic-sessionmanager/user/bob/terminate-all").send().await;
    assert_eq!(kicked.status, 200, "{}", kicked.text());
    let revoked = support::eventually(5, || o.with(|s| !s.grants.contains_key(&bob_refresh))).await;
    assert!(revoked, "the gateway revoked bob's grant at the server");
    let call = o.with(|s| s.seen.iter().rev().find(|(_, p, _, _)| p == "/oauth/revoke").cloned()).expect("revoke call");
    assert_eq!(call.2, "application/x-www-form-urlencoded");
    assert!(call.3.contains("client_id=demo") && call.3.contains("token_type_hint=refresh_token"), "{}", call.3);
}
