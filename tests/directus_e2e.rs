//! `preset = "directus"` in front of a real Directus 11.3.5 (`support::real_directus`). Each test
//! first shows the gap on Directus alone — the token still works when asked directly — and then
//! that through the gateway it does not.

mod support;

use http::Method;
use serde_json::json;
use support::real_directus::{self, RealDirectus, PASSWORD};
use support::{Gateway, Resp};

const PRESET: &str = "preset = \"directus\"\n";

async fn setup(user: &str) -> (&'static RealDirectus, Gateway, String) {
    let d = real_directus::shared_async().await;
    let id = d.create_user(user).await;
    let gw = Gateway::start(&d.url, PRESET).await;
    (d, gw, id)
}

async fn rest_login(gw: &Gateway, email: &str, mode: &str) -> Resp {
    let r = gw.post("/auth/login").json(json!({"email": email, "password": PASSWORD, "mode": mode})).send().await;
    assert_eq!(r.status, 200, "{email} {mode}: {}", r.text());
    r
}

fn tokens(r: &Resp) -> (String, String) {
    let d = &r.json()["data"];
    (d["access_token"].as_str().expect("at").into(), d["refresh_token"].as_str().expect("rt").into())
}

/// `GET /users/me` straight at Directus: its status.
async fn direct_me(d: &RealDirectus, token: &str) -> u16 {
    d.direct(Method::GET, "/users/me").bearer(token).send().await.status.as_u16()
}

async fn through_me(gw: &Gateway, token: &str) -> (u16, Option<String>) {
    let r = gw.get("/users/me").bearer(token).send().await;
    (r.status.as_u16(), r.reason())
}

fn set_cookie(r: &Resp, name: &str) -> String {
    r.set_cookie(name).unwrap_or_else(|| panic!("no {name} cookie"))
}

const ENDED: (u16, Option<&str>) = (401, Some("session_terminated"));

fn ended(got: (u16, Option<String>)) -> bool {
    (got.0, got.1.as_deref()) == ENDED
}

#[tokio::test]
async fn a_rest_logout_ends_the_access_token_in_every_transport() {
    let (d, gw, _) = setup("e2e-rest@example.com").await;
    let (access, refresh) = tokens(&rest_login(&gw, "e2e-rest@example.com", "json").await);
    assert_eq!(through_me(&gw, &access).await.0, 200);
    let out = gw.post("/auth/logout").json(json!({"refresh_token": refresh})).send().await;
    assert_eq!(out.status, 204, "{}", out.text());
    assert_eq!(direct_me(d, &access).await, 200, "the gap: Directus alone still takes it");
    assert!(ended(through_me(&gw, &access).await));
    for q in [format!("access_token={access}"), format!("%61ccess_token={access}")] {
        let r = gw.get(&format!("/users/me?{q}")).send().await;
        assert!(ended((r.status.as_u16(), r.reason())), "{q}: {}", r.text());
    }
    let c = gw.get("/users/me").header("cookie", &format!("directus_session_token={access}")).send().await;
    assert!(ended((c.status.as_u16(), c.reason())));
    let r = gw.post("/auth/refresh").json(json!({"refresh_token": refresh})).send().await;
    assert!(ended((r.status.as_u16(), r.reason())), "{}", r.text());
}

#[tokio::test]
async fn graphql_login_refresh_and_logout_are_learned_and_enforced() {
    let (d, gw, id) = setup("e2e-gql@example.com").await;
    let r = gw.graphql(None,
        "mutation L($e: String!, $p: String!) { t: auth_login(email: $e, password: $p) { access_token refresh_token expires } }",
        json!({"e": "e2e-gql@example.com", "p": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["data"]["t"].clone();
    let (access, refresh) =
        (t["access_token"].as_str().expect("at").to_string(), t["refresh_token"].as_str().expect("rt").to_string());
    let list =
        gw.admin(Method::GET, &format!("/magic-sessionmanager/sessions?user={id}&status=active")).send().await.json();
    assert_eq!(list["meta"]["pagination"]["total"], 1, "{list}");
    let r = gw.graphql(None,
        "mutation { ...R } fragment R on Mutation { n: auth_refresh(refresh_token: $t) { access_token refresh_token } }"
            .replace("mutation {", "mutation($t: String) {")
            .as_str(),
        json!({"t": refresh}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let n = r.json()["data"]["n"].clone();
    let (access2, refresh2) =
        (n["access_token"].as_str().expect("at").to_string(), n["refresh_token"].as_str().expect("rt").to_string());
    let list =
        gw.admin(Method::GET, &format!("/magic-sessionmanager/sessions?user={id}&status=active")).send().await.json();
    assert_eq!(list["meta"]["pagination"]["total"], 1, "rotated within one session: {list}");
    let out = gw
        .graphql(Some(&access2), &format!("mutation {{ bye: auth_logout(refresh_token: \"{refresh2}\") }}"), json!({}))
        .await;
    assert_eq!(out.json()["data"]["bye"], true, "{}", out.text());
    for t in [&access, &access2] {
        assert_eq!(direct_me(d, t).await, 200, "the gap: Directus alone still takes it");
        assert!(ended(through_me(&gw, t).await));
    }
    let again = gw
        .graphql(
            None,
            "mutation($t: String) { auth_refresh(refresh_token: $t) { access_token } }",
            json!({"t": refresh2}),
        )
        .await;
    assert!(ended((again.status.as_u16(), again.reason())), "{}", again.text());
    let hidden = gw
        .post("/graphql/system")
        .json(json!({"query": format!("mutation {{ auth_refresh(refresh_token: \"{refresh2}\") @skip(if: false) {{ expires }} }}")}))
        .send()
        .await;
    assert_eq!((hidden.status.as_u16(), hidden.reason().as_deref()), (400, Some("unreadable_graphql")));
}

#[tokio::test]
async fn session_mode_rotates_one_session_and_its_logout_ends_every_cookie() {
    let (d, gw, id) = setup("e2e-session@example.com").await;
    let r = rest_login(&gw, "e2e-session@example.com", "session").await;
    let first = format!("directus_session_token={}", set_cookie(&r, "directus_session_token"));
    assert_eq!(gw.get("/users/me").header("cookie", &first).send().await.status, 200);
    let r = gw.post("/auth/refresh").header("cookie", &first).json(json!({"mode": "session"})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = format!("directus_session_token={}", set_cookie(&r, "directus_session_token"));
    let list =
        gw.admin(Method::GET, &format!("/magic-sessionmanager/sessions?user={id}&status=active")).send().await.json();
    assert_eq!(list["meta"]["pagination"]["total"], 1, "{list}");
    let out = gw
        .post("/graphql/system")
        .header("cookie", &second)
        .json(json!({"query": "mutation { auth_logout(mode: session) }"}))
        .send()
        .await;
    assert_eq!(out.json()["data"]["auth_logout"], true, "{}", out.text());
    // Directus keeps the pre-refresh cookie for its 10 s grace; the gateway does not.
    let direct = d.direct(Method::GET, "/users/me").header("cookie", &first).send().await;
    assert_eq!(direct.status, 200, "the gap: the grace cookie still works at Directus");
    for c in [&first, &second] {
        let r = gw.get("/users/me").header("cookie", c).send().await;
        assert!(ended((r.status.as_u16(), r.reason())), "{c}: {}", r.text());
    }
}

#[tokio::test]
async fn a_suspension_a_password_change_a_batch_and_a_deletion_end_the_users_sessions() {
    let (d, gw, id) = setup("e2e-changes@example.com").await;
    let admin = tokens(&rest_login(&gw, real_directus::ADMIN_EMAIL, "json").await).0;
    let login = || async { tokens(&rest_login(&gw, "e2e-changes@example.com", "json").await).0 };
    let reactivate = || async {
        let a = d.admin_token().await;
        let r = d
            .direct(Method::PATCH, &format!("/users/{id}"))
            .bearer(&a)
            .json(json!({"status": "active", "password": PASSWORD}))
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    };
    // Not a credential change.
    let t = login().await;
    let r = gw.patch(&format!("/users/{id}")).bearer(&admin).json(json!({"first_name": "E"})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(through_me(&gw, &t).await.0, 200);

    // GraphQL suspension by the admin.
    let r = gw
        .graphql(
            Some(&admin),
            "mutation($id: ID!) { update_users_item(id: $id, data: {status: \"suspended\"}) { id status } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(r.json()["data"]["update_users_item"]["status"], "suspended", "{}", r.text());
    assert_eq!(direct_me(d, &t).await, 200, "the gap: a suspended user's token still works at Directus");
    assert!(ended(through_me(&gw, &t).await));
    reactivate().await;

    // REST password change by the admin.
    let t = login().await;
    let r = gw.patch(&format!("/users/{id}")).bearer(&admin).json(json!({"password": "Changed-1!"})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(direct_me(d, &t).await, 200, "the gap: the token outlives the password");
    assert!(ended(through_me(&gw, &t).await));
    reactivate().await;

    // A REST batch by key.
    let t = login().await;
    let r = gw.patch("/users").bearer(&admin).json(json!({"keys": [id], "data": {"status": "suspended"}})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(ended(through_me(&gw, &t).await));
    reactivate().await;
    // A batch by filter names nobody: refused before Directus.
    let r = gw
        .patch("/users")
        .bearer(&admin)
        .json(json!({"query": {"filter": {"id": {"_eq": id}}}, "data": {"status": "suspended"}}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), r.reason().as_deref()), (400, Some("users_unnamed")), "{}", r.text());

    // A deletion.
    let t = login().await;
    let r =
        gw.graphql(Some(&admin), "mutation($id: ID!) { delete_users_item(id: $id) { id } }", json!({"id": id})).await;
    assert_eq!(r.json()["data"]["delete_users_item"]["id"], id.as_str(), "{}", r.text());
    assert!(ended(through_me(&gw, &t).await));
    assert_eq!(through_me(&gw, &admin).await.0, 200, "only that user's sessions");
}

#[tokio::test]
async fn an_admin_termination_is_revoked_at_directus() {
    let (d, gw, id) = setup("e2e-kick@example.com").await;
    let (access, refresh) = tokens(&rest_login(&gw, "e2e-kick@example.com", "json").await);
    let r = gw.admin(Method::POST, &format!("/magic-sessionmanager/user/{id}/terminate-all")).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(ended(through_me(&gw, &access).await));
    // The gateway logged the session out at Directus: its refresh token is dead there too.
    // Once the gateway says it revoked the session at Directus, one refresh there (a live token
    // would rotate, so only the first answer counts) is refused.
    let series = "sessiongate_backend_revocations_total{outcome=\"revoked\"}";
    let revoked = support::eventually(10, || {
        let text = gw.state().metrics.render();
        text.lines().any(|l| l.strip_prefix(series).is_some_and(|v| v.trim().parse::<f64>().is_ok_and(|n| n >= 1.0)))
    })
    .await;
    assert!(revoked, "the gateway revoked the session at Directus");
    let r = d.direct(Method::POST, "/auth/refresh").json(json!({"refresh_token": refresh})).send().await;
    let dead = r.status == 401;
    assert!(dead, "the refresh token was revoked at Directus");
}
