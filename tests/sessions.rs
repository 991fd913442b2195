//! Session lifecycle through real sockets: the gateway in front of the Strapi-like backend.

mod support;

use http::Method;
use serde_json::json;
use support::strapi::{backend_sid, LoginMode, Status};
use support::{direct, eventually, Gateway, MockStrapi};

const ARTICLES: &str = "/api/articles";

#[tokio::test]
async fn access_token_is_refused_after_logout_although_backend_would_accept_it() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    assert_eq!(gw.get(ARTICLES).bearer(&s.jwt).send().await.status, 200);

    let out = gw.post("/api/auth/logout").bearer(&s.jwt).json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(out.status, 200);
    assert_eq!(out.json(), json!({"ok": true}), "the backend's logout answer passes through");

    let denied = gw.get(ARTICLES).bearer(&s.jwt).send().await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.reason().as_deref(), Some("session_terminated"));
    let body = denied.json();
    assert_eq!(body["data"], serde_json::Value::Null);
    assert_eq!(body["error"]["name"], "UnauthorizedError");
    assert_eq!(body["error"]["details"]["reason"], "session_terminated");
    // The gap sessiongate closes: Strapi's access tokens are stateless.
    assert_eq!(direct(&backend, Method::GET, ARTICLES).bearer(&s.jwt).send().await.status, 200);
}

#[tokio::test]
async fn refresh_token_of_an_ended_session_never_reaches_the_backend() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    gw.post("/api/auth/logout").bearer(&s.jwt).send().await;
    let before = backend.count(&Method::POST, "/api/auth/refresh");
    let res = gw.post("/api/auth/refresh").json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(res.status, 401);
    assert_eq!(res.reason().as_deref(), Some("session_terminated"));
    assert_eq!(backend.count(&Method::POST, "/api/auth/refresh"), before, "the backend must not see it");
}

#[tokio::test]
async fn refresh_rotates_tokens_within_one_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let r1 = gw.refresh(&s.refresh).await;
    let r2 = gw.refresh(&r1.refresh).await;
    assert_ne!(backend_sid(&r2.jwt), backend_sid(&s.jwt), "Strapi gives every refresh a new sessionId");
    let list = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&r2.jwt).send().await.json();
    assert_eq!(list["meta"]["count"], 1, "rotation must not create sessions: {list}");
    assert_eq!(list["data"][0]["isCurrentSession"], true);
    // Older access tokens of the same live session remain what the backend says they are.
    assert_eq!(gw.get(ARTICLES).bearer(&s.jwt).send().await.status, 200);
    // Ending the session kills every token it ever had.
    gw.post("/api/magic-sessionmanager/logout").bearer(&r2.jwt).send().await;
    for t in [&s.jwt, &r1.jwt, &r2.jwt] {
        assert_eq!(gw.get(ARTICLES).bearer(t).send().await.status, 401);
    }
    let res = gw.post("/api/auth/refresh").json(json!({"refreshToken": r2.refresh})).send().await;
    assert_eq!(res.reason().as_deref(), Some("session_terminated"));
}

#[tokio::test]
async fn reused_refresh_token_ends_the_whole_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[sessions]\nrefresh_reuse_grace = \"0s\"\n").await;
    let s = gw.login("alice").await;
    let r1 = gw.refresh(&s.refresh).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let replay = gw.post("/api/auth/refresh").json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(replay.status, 401);
    assert_eq!(replay.reason().as_deref(), Some("refresh_token_reuse"));
    // The thief's replay ended the session for the legitimate holder of the newer tokens too.
    let res = gw.get(ARTICLES).bearer(&r1.jwt).send().await;
    assert_eq!(res.reason().as_deref(), Some("session_terminated"));
    // And the backend session was revoked as well (best effort, in the background).
    let live_sid = backend_sid(&r1.jwt);
    assert!(eventually(5, || backend.session_status(&live_sid) == Some(Status::Revoked)).await);
}

#[tokio::test]
async fn a_rotated_refresh_token_within_the_grace_period_is_not_reuse() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[sessions]\nrefresh_reuse_grace = \"1m\"\n").await;
    let s = gw.login("alice").await;
    let r1 = gw.refresh(&s.refresh).await;
    // A parallel refresh with the old token: the backend decides (Strapi: 401), session lives.
    let res = gw.post("/api/auth/refresh").json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(res.status, 401);
    assert_eq!(res.reason(), None, "answered by the backend, not the gateway");
    assert_eq!(gw.get(ARTICLES).bearer(&r1.jwt).send().await.status, 200);
}

#[tokio::test]
async fn logout_with_scope_all_ends_every_session_of_the_user() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let b = gw.login("bob").await;
    let res = gw.post("/api/auth/logout").bearer(&a1.jwt).json(json!({"scope": "all"})).send().await;
    assert_eq!(res.status, 200);
    assert_eq!(gw.get(ARTICLES).bearer(&a1.jwt).send().await.status, 401);
    assert_eq!(gw.get(ARTICLES).bearer(&a2.jwt).send().await.status, 401);
    assert_eq!(gw.get(ARTICLES).bearer(&b.jwt).send().await.status, 200, "other users keep their sessions");
}

#[tokio::test]
async fn logout_holds_even_when_the_backend_is_down() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let addr = backend.addr;
    drop(backend);
    let res = gw.post("/api/auth/logout").bearer(&s.jwt).send().await;
    assert_eq!(res.status, 502);
    assert_eq!(res.reason().as_deref(), Some("upstream_unavailable"));
    let _backend = MockStrapi::start_on(addr).await;
    assert_eq!(gw.get(ARTICLES).bearer(&s.jwt).send().await.reason().as_deref(), Some("session_terminated"));
}

#[tokio::test]
async fn httponly_cookie_mode_is_tracked_through_refresh_and_logout() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let login = gw
        .post("/api/auth/local")
        .header("x-strapi-refresh-cookie", "httpOnly")
        .json(json!({"identifier": "alice@example.com", "password": support::PASSWORD}))
        .send()
        .await;
    assert_eq!(login.status, 200);
    let v = login.json();
    assert!(v.get("refreshToken").is_none(), "cookie mode: no refresh token in the body");
    let jwt = v["jwt"].as_str().expect("jwt").to_string();
    let cookie = support::strapi::REFRESH_COOKIE;
    let set = |r: &support::Resp| {
        r.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                c.strip_prefix(&format!("{cookie}=")).map(|rest| rest.split(';').next().unwrap_or("").to_string())
            })
            .expect("refresh cookie set")
    };
    let rt0 = set(&login);
    let refreshed = gw
        .post("/api/auth/refresh")
        .header("x-strapi-refresh-cookie", "httpOnly")
        .header("cookie", &format!("{cookie}={rt0}"))
        .send()
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text());
    let rt1 = set(&refreshed);
    let jwt1 = refreshed.json()["jwt"].as_str().expect("jwt").to_string();
    let list = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&jwt1).send().await.json();
    assert_eq!(list["meta"]["count"], 1, "{list}");

    let out = gw.post("/api/auth/logout").bearer(&jwt1).header("cookie", &format!("{cookie}={rt1}")).send().await;
    assert_eq!(out.status, 200);
    let before = backend.count(&Method::POST, "/api/auth/refresh");
    let again = gw.post("/api/auth/refresh").header("cookie", &format!("{cookie}={rt1}")).send().await;
    assert_eq!(again.reason().as_deref(), Some("session_terminated"));
    assert_eq!(backend.count(&Method::POST, "/api/auth/refresh"), before);
    assert_eq!(gw.get(ARTICLES).bearer(&jwt).send().await.status, 401);
}

#[tokio::test]
async fn password_change_ends_every_session_and_starts_a_new_one() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a1 = gw.login("alice").await;
    let a2 = gw.login("alice").await;
    let res = gw
        .post("/api/auth/change-password")
        .bearer(&a1.jwt)
        .json(
            json!({"currentPassword": support::PASSWORD, "password": "N3w-pass!", "passwordConfirmation": "N3w-pass!"}),
        )
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let fresh = res.json()["jwt"].as_str().expect("jwt").to_string();
    for old in [&a1.jwt, &a2.jwt] {
        assert_eq!(gw.get(ARTICLES).bearer(old).send().await.reason().as_deref(), Some("session_terminated"));
        // Strapi itself would still accept these access tokens.
        assert_eq!(direct(&backend, Method::GET, ARTICLES).bearer(old).send().await.status, 200);
    }
    assert_eq!(gw.get(ARTICLES).bearer(&fresh).send().await.status, 200);
    let all = gw.get("/api/magic-sessionmanager/my-sessions?all=true").bearer(&fresh).send().await.json();
    assert_eq!(all["meta"]["count"], 3, "{all}");
    let live = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&fresh).send().await.json();
    assert_eq!(live["meta"]["count"], 1, "{live}");
}

#[tokio::test]
async fn failed_password_change_ends_nothing() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let a = gw.login("alice").await;
    let res = gw
        .post("/api/auth/change-password")
        .bearer(&a.jwt)
        .json(json!({"currentPassword": "wrong", "password": "x", "passwordConfirmation": "x"}))
        .send()
        .await;
    assert_eq!(res.status, 400);
    assert_eq!(gw.get(ARTICLES).bearer(&a.jwt).send().await.status, 200);
}

#[tokio::test]
async fn updating_a_users_password_ends_that_users_sessions_only_when_a_password_is_sent() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let admin = gw.login("carol").await;
    let bob = gw.login("bob").await;
    let res = gw
        .put(&format!("/api/users/{}", bob.user_id))
        .bearer(&admin.jwt)
        .json(json!({"username": "bobby"}))
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(gw.get(ARTICLES).bearer(&bob.jwt).send().await.status, 200, "no password, no termination");
    let res = gw
        .put(&format!("/API/Users/{}/", bob.user_id))
        .bearer(&admin.jwt)
        .json(json!({"password": "Other-pass1"}))
        .send()
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(gw.get(ARTICLES).bearer(&bob.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    assert_eq!(gw.get(ARTICLES).bearer(&admin.jwt).send().await.status, 200, "the editor keeps their session");
}

#[tokio::test]
async fn reset_password_ends_sessions_and_tracks_the_new_one() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let old = gw.login("bob").await;
    let res = gw
        .post("/api/auth/reset-password")
        .json(json!({"code": "reset-bob", "password": "Reset-pass1", "passwordConfirmation": "Reset-pass1"}))
        .send()
        .await;
    assert_eq!(res.status, 200);
    let fresh = res.json()["jwt"].as_str().expect("jwt").to_string();
    assert_eq!(gw.get(ARTICLES).bearer(&old.jwt).send().await.status, 401);
    let cur = gw.get("/api/magic-sessionmanager/current-session").bearer(&fresh).send().await;
    assert_eq!(cur.status, 200, "the reset's new session is tracked: {}", cur.text());
}

#[tokio::test]
async fn sessions_from_before_the_gateway_are_adopted_at_their_next_refresh() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let (old_jwt, old_refresh) = backend.issue_direct(1);
    // Unknown tokens pass by default.
    assert_eq!(gw.get(ARTICLES).bearer(&old_jwt).send().await.status, 200);
    assert_eq!(gw.get("/api/magic-sessionmanager/current-session").bearer(&old_jwt).send().await.status, 401);
    let r = gw.refresh(&old_refresh).await;
    let cur = gw.get("/api/magic-sessionmanager/current-session").bearer(&r.jwt).send().await;
    assert_eq!(cur.status, 200, "{}", cur.text());
    gw.post("/api/magic-sessionmanager/logout").bearer(&r.jwt).send().await;
    assert_eq!(gw.get(ARTICLES).bearer(&r.jwt).send().await.status, 401);
}

#[tokio::test]
async fn unknown_tokens_can_be_rejected() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[sessions]\nunknown_tokens = \"reject\"\n").await;
    let (jwt, _) = backend.issue_direct(1);
    let res = gw.get(ARTICLES).bearer(&jwt).send().await;
    assert_eq!(res.status, 401);
    assert_eq!(res.reason().as_deref(), Some("unknown_token"));
    let s = gw.login("alice").await;
    assert_eq!(gw.get(ARTICLES).bearer(&s.jwt).send().await.status, 200);
    // Non-JWT tokens (Strapi API tokens) are the backend's business.
    assert_eq!(gw.get(ARTICLES).bearer("0123456789abcdef").send().await.reason(), None);
}

#[tokio::test]
async fn requests_without_a_token_pass_untouched() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let res = gw.get(ARTICLES).send().await;
    assert_eq!(res.status, 403, "the backend decides");
    assert_eq!(res.reason(), None);
    assert_eq!(res.json()["error"]["name"], "ForbiddenError");
}

#[tokio::test]
async fn route_spellings_the_backend_accepts_cannot_slip_past() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    // Logout through an odd spelling still ends the session at the gateway.
    let out = gw.post("/Api/Auth/Logout/?via=variant").bearer(&s.jwt).send().await;
    assert_eq!(out.status, 200);
    assert_eq!(gw.get(ARTICLES).bearer(&s.jwt).send().await.status, 401);
    let before = backend.count(&Method::POST, "/api/auth/refresh");
    for path in [
        "/API/AUTH/REFRESH",
        "/Api/Auth/Refresh",
        "/api/auth/refresh/",
        "/api/auth/refresh?x=1",
        "/api//auth/refresh",
        "/api/auth/%72efresh",
        "/api/./auth/refresh",
    ] {
        let res = gw.post(path).json(json!({"refreshToken": s.refresh})).send().await;
        assert_eq!(res.status, 401, "{path}");
        assert_eq!(res.reason().as_deref(), Some("session_terminated"), "{path}");
    }
    let seen = backend.seen().iter().filter(|r| r.path.to_ascii_lowercase().contains("refresh")).count();
    assert_eq!(seen, before, "no refresh variant reached the backend");
}

#[tokio::test]
async fn ended_sessions_stay_ended_across_a_restart() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    let ended = gw.login("alice").await;
    let kept = gw.login("bob").await;
    let r = gw.refresh(&kept.refresh).await;
    gw.post("/api/auth/logout").bearer(&ended.jwt).json(json!({"refreshToken": ended.refresh})).send().await;
    gw.restart().await;
    assert_eq!(gw.get(ARTICLES).bearer(&ended.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    let res = gw.post("/api/auth/refresh").json(json!({"refreshToken": ended.refresh})).send().await;
    assert_eq!(res.reason().as_deref(), Some("session_terminated"));
    assert_eq!(gw.get(ARTICLES).bearer(&r.jwt).send().await.status, 200);
    let list = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&r.jwt).send().await.json();
    assert_eq!(list["meta"]["count"], 1);
    // The rotation history survived too: the old refresh token is known as rotated, not unknown.
    let r2 = gw.refresh(&r.refresh).await;
    assert_eq!(gw.get(ARTICLES).bearer(&r2.jwt).send().await.status, 200);
}

#[tokio::test]
async fn no_raw_token_is_written_to_the_data_directory() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    let r = gw.refresh(&s.refresh).await;
    gw.post("/api/auth/logout").bearer(&r.jwt).json(json!({"refreshToken": r.refresh})).send().await;
    gw.stop().await;
    let secrets: Vec<&str> =
        [&s.jwt, &s.refresh, &r.jwt, &r.refresh].iter().map(|t| t.rsplit('.').next().expect("sig")).collect();
    let mut files = 0;
    let mut stack = vec![gw.data_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&p).expect("read");
            for sig in &secrets {
                assert!(!bytes.windows(sig.len()).any(|w| w == sig.as_bytes()), "raw token found in {}", p.display());
            }
        }
    }
    assert!(files > 0);
}

#[tokio::test]
async fn idle_sessions_end_when_the_policy_says_terminate() {
    let backend = MockStrapi::start().await;
    let gw =
        Gateway::start(&backend.url(), "[sessions]\ninactivity_timeout = \"1s\"\nidle_policy = \"terminate\"\n").await;
    let s = gw.login("alice").await;
    assert_eq!(gw.get(ARTICLES).bearer(&s.jwt).send().await.status, 200);
    gw.advance(std::time::Duration::from_secs(2));
    let res = gw.get(ARTICLES).bearer(&s.jwt).send().await;
    assert_eq!(res.status, 401);
    assert_eq!(res.reason().as_deref(), Some("session_inactive"));
    assert_eq!(gw.get(ARTICLES).bearer(&s.jwt).send().await.reason().as_deref(), Some("session_terminated"));
}

#[tokio::test]
async fn idle_sessions_are_only_marked_inactive_by_default() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[sessions]\ninactivity_timeout = \"1s\"\n").await;
    let idle = gw.login("alice").await;
    gw.advance(std::time::Duration::from_secs(2));
    let fresh = gw.login("alice").await;
    let list = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&fresh.jwt).send().await.json();
    assert_eq!((list["meta"]["count"].clone(), list["meta"]["active"].clone()), (json!(2), json!(1)), "{list}");
    assert_eq!(gw.get(ARTICLES).bearer(&idle.jwt).send().await.status, 200);
}

#[tokio::test]
async fn unreadable_login_responses_are_a_clear_502_and_create_no_session() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    for (mode, why) in [(LoginMode::NonJson, "non-JSON"), (LoginMode::NoToken, "no token")] {
        backend.with(|s| s.login_mode = mode);
        let res =
            gw.post("/api/auth/local").json(json!({"identifier": "alice", "password": support::PASSWORD})).send().await;
        assert_eq!(res.status, 502, "{why}");
        assert_eq!(res.reason().as_deref(), Some("bad_auth_response"), "{why}");
        assert_eq!(res.json()["error"]["name"], "BadGatewayError");
    }
    backend.with(|s| s.login_mode = LoginMode::Normal);
    let wrong = gw.post("/api/auth/local").json(json!({"identifier": "alice", "password": "nope"})).send().await;
    assert_eq!(wrong.status, 400, "failed logins pass through");
    assert_eq!(wrong.json()["error"]["message"], "Invalid identifier or password");
    let s = gw.login("alice").await;
    let list = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&s.jwt).send().await.json();
    assert_eq!(list["meta"]["count"], 1, "only the good login made a session: {list}");
}

#[tokio::test]
async fn a_stale_token_sent_with_a_new_login_does_not_block_it() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let s = gw.login("alice").await;
    gw.post("/api/auth/logout").bearer(&s.jwt).send().await;
    let res = gw
        .post("/api/auth/local")
        .bearer(&s.jwt)
        .json(json!({"identifier": "alice", "password": support::PASSWORD}))
        .send()
        .await;
    assert_eq!(res.status, 200);
}

fn sign(claims: serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        .expect("sign")
}

#[tokio::test]
async fn verified_tokens_of_an_ended_backend_session_are_refused_but_forged_claims_are_not_trusted() {
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("jwt_secret");
    std::fs::write(&secret_file, support::strapi::JWT_SECRET).expect("write");
    let gw = Gateway::start(
        &backend.url(),
        &format!("[jwt]\nalgorithm = \"HS256\"\nsecret_file = \"{}\"\n", secret_file.display()),
    )
    .await;
    let s = gw.login("alice").await;
    let sid = backend_sid(&s.jwt);
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs() + 600;
    // A token the gateway never saw, for the same backend session (minted by the backend).
    let unseen = sign(
        json!({"userId": "1", "sessionId": sid, "type": "access", "iat": exp - 600, "exp": exp}),
        support::strapi::JWT_SECRET,
    );
    let forged =
        sign(json!({"userId": "1", "sessionId": sid, "type": "access", "iat": exp - 600, "exp": exp}), b"attacker");
    assert_eq!(gw.get("/api/magic-sessionmanager/current-session").bearer(&unseen).send().await.status, 200);
    assert_eq!(gw.get("/api/magic-sessionmanager/current-session").bearer(&forged).send().await.status, 401);
    gw.post("/api/auth/logout").bearer(&s.jwt).send().await;
    let res = gw.get(ARTICLES).bearer(&unseen).send().await;
    assert_eq!(res.reason().as_deref(), Some("session_terminated"));
    let res = gw.get(ARTICLES).bearer(&forged).send().await;
    assert_eq!(res.status, 401);
    assert_eq!(res.reason(), None, "forged claims are not relied on; the backend rejects the signature");
}

#[tokio::test]
async fn the_sweeper_purges_ended_sessions_only_once_their_tokens_are_dead() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(
        &backend.url(),
        "[store]\nterminated_retention = \"1s\"\nsweep_interval = \"200ms\"\nexpired_token_grace = \"0s\"\n",
    )
    .await;
    // Session A: short-lived tokens. Session B: a refresh token valid for 14 days.
    backend.with(|s| {
        s.access_lifespan = 1;
        s.refresh_lifespan = 1;
    });
    let a = gw.login("alice").await;
    backend.with(|s| {
        s.access_lifespan = 600;
        s.refresh_lifespan = 1_209_600;
    });
    let b = gw.login("alice").await;
    let keeper = gw.login("alice").await;
    gw.post("/api/auth/logout").bearer(&a.jwt).send().await;
    gw.post("/api/auth/logout").bearer(&b.jwt).send().await;
    let all = |gw: &Gateway, t: String| {
        let req = gw.get("/api/magic-sessionmanager/my-sessions?all=true").bearer(&t);
        async move { req.send().await.json()["meta"]["count"].as_u64().unwrap_or(0) }
    };
    assert_eq!(all(&gw, keeper.jwt.clone()).await, 3);
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    assert_eq!(all(&gw, keeper.jwt.clone()).await, 2, "A is purged: retention passed and its tokens are dead");
    // B is past retention too, but its refresh token is alive: it must stay refused.
    let res = gw.post("/api/auth/refresh").json(json!({"refreshToken": b.refresh})).send().await;
    assert_eq!(res.reason().as_deref(), Some("session_terminated"));
}

#[tokio::test]
async fn the_sweeper_ends_live_sessions_whose_tokens_all_expired() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), "[store]\nsweep_interval = \"200ms\"\n").await;
    backend.with(|s| {
        s.access_lifespan = 1;
        s.refresh_lifespan = 1;
    });
    let old = gw.login("alice").await;
    backend.with(|s| {
        s.access_lifespan = 600;
        s.refresh_lifespan = 600;
    });
    let fresh = gw.login("alice").await;
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let list = gw.get("/api/magic-sessionmanager/my-sessions?all=true").bearer(&fresh.jwt).send().await.json();
    let ended: Vec<_> = list["data"].as_array().expect("data").iter().filter(|s| s["isActive"] == false).collect();
    assert_eq!(ended.len(), 1, "{list}");
    assert!(ended[0]["logoutTime"].is_string());
    assert_eq!(gw.get(ARTICLES).bearer(&old.jwt).send().await.reason().as_deref(), Some("session_terminated"));
}
