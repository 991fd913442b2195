//! `preset = "directus"` in front of the Directus look-alike (`support::directus`, pinned to a
//! real 11.3.5 by `tests/directus_mock.rs`): GraphQL auth learned and enforced, the refresh
//! place chosen by the request's mode, and every user change Directus does not revoke on —
//! one user, a batch by key or by item, over REST and GraphQL — ending the user's sessions.

mod support;

use http::Method;
use serde_json::{json, Value};
use support::directus::{MockDirectus, PASSWORD};
use support::{Gateway, Resp};

const PRESET: &str = "preset = \"directus\"\n";

/// Builds a request from the acting user's access token.
type MakeReq<'a> = Box<dyn Fn(&str) -> support::Req + 'a>;

/// A json-mode login through GraphQL: (access, refresh).
async fn gql_login(gw: &Gateway, email: &str) -> (String, String) {
    let r = gw.graphql(None,
        "mutation L($e: String!, $p: String!) { tokens: auth_login(email: $e, password: $p) { access_token refresh_token expires } }",
        json!({"e": email, "p": PASSWORD}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["data"]["tokens"].clone();
    assert_eq!(t["expires"], "900000", "a BigInt: {t}");
    (t["access_token"].as_str().expect("at").into(), t["refresh_token"].as_str().expect("rt").into())
}

async fn rest_login(gw: &Gateway, email: &str) -> (String, String) {
    let r = gw.post("/auth/login").json(json!({"email": email, "password": PASSWORD})).send().await;
    assert_eq!(r.status, 200, "{email}: {}", r.text());
    let d = r.json()["data"].clone();
    (d["access_token"].as_str().expect("at").into(), d["refresh_token"].as_str().expect("rt").into())
}

async fn sessions_of(gw: &Gateway, user: &str) -> Value {
    gw.admin(Method::GET, &format!("/magic-sessionmanager/sessions?user={user}&status=active")).send().await.json()
}

fn reason(r: &Resp) -> Option<String> {
    r.reason()
}

async fn articles(gw: &Gateway, token: &str) -> Resp {
    gw.get("/items/articles").bearer(token).send().await
}

#[tokio::test]
async fn graphql_logins_refreshes_and_logouts_are_learned_and_enforced() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), PRESET).await;
    let reader = d.user("reader@example.com");
    let (access, refresh) = gql_login(&gw, "reader@example.com").await;
    assert_eq!(sessions_of(&gw, &reader.id).await["meta"]["pagination"]["total"], 1);
    assert_eq!(articles(&gw, &access).await.status, 200);

    // A refresh by fragment and variable rotates the same session.
    let r = gw.graphql(None,
        "mutation R($t: String) { ...F } fragment F on Mutation { fresh: auth_refresh(refresh_token: $t, mode: json) { access_token refresh_token } }",
        json!({"t": refresh}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = r.json()["data"]["fresh"].clone();
    let (access2, refresh2) =
        (fresh["access_token"].as_str().expect("at"), fresh["refresh_token"].as_str().expect("rt"));
    let list = sessions_of(&gw, &reader.id).await;
    assert_eq!(list["meta"]["pagination"]["total"], 1, "rotated, not a new session: {list}");

    // A refused refresh (HTTP 200, a null field) teaches nothing and is passed back as it came.
    let bogus =
        gw.graphql(None, "mutation { auth_refresh(refresh_token: \"nope\") { access_token } }", json!({})).await;
    assert_eq!(bogus.status, 200);
    assert_eq!(bogus.json()["data"]["auth_refresh"], Value::Null);
    assert_eq!(bogus.json()["errors"][0]["extensions"]["code"], "INVALID_CREDENTIALS");

    // Logout through an alias, with the refresh token escaped in the GraphQL string.
    let escaped = format!("\\u{:04x}{}", refresh2.as_bytes()[0], &refresh2[1..]);
    let out = gw
        .graphql(Some(access2), &format!("mutation {{ bye: auth_logout(refresh_token: \"{escaped}\") }}"), json!({}))
        .await;
    assert_eq!(out.status, 200, "{}", out.text());
    assert_eq!(out.json()["data"]["bye"], true);
    let since = support::strapi_now_ms();
    // Directus alone would still take both access tokens (json mode): the gateway refuses them,
    // over REST and over GraphQL, and the refresh token in every GraphQL spelling.
    for t in [&access, access2] {
        assert_eq!(reason(&articles(&gw, t).await).as_deref(), Some("session_terminated"));
        let me = gw.graphql(Some(t), "{ users_me { id } }", json!({})).await;
        assert_eq!(reason(&me).as_deref(), Some("session_terminated"));
    }
    for (q, v) in [
        (format!("mutation {{ auth_refresh(refresh_token: \"{refresh2}\") {{ access_token }} }}"), json!({})),
        ("mutation($t: String) { auth_refresh(refresh_token: $t) { access_token } }".to_string(), json!({"t": refresh2})),
        (format!("mutation {{ ... on Mutation {{ a: auth_refresh(refresh_token: \"\"\"{refresh2}\"\"\") {{ expires }} }} }}"), json!({})),
    ] {
        let r = gw.graphql(None, &q, v).await;
        assert_eq!((r.status.as_u16(), reason(&r).as_deref()), (401, Some("session_terminated")), "{q}");
        assert_eq!(r.json()["errors"][0]["extensions"]["code"], "INVALID_CREDENTIALS", "Directus's error shape");
    }
    for t in [&access, access2] {
        assert!(!d.accepted_since(t, since), "an ended access token reached Directus");
    }
}

#[tokio::test]
async fn graphql_the_gateway_cannot_read_as_directus_does_is_refused() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), PRESET).await;
    let (access, refresh) = gql_login(&gw, "reader@example.com").await;
    let seen_before = d.with(|s| s.seen.len());
    for (what, body) in [
        (
            "a directive decides",
            json!({"query": format!("mutation {{ auth_logout(refresh_token: \"{refresh}\") @include(if: true) }}")}),
        ),
        (
            "two watched mutations",
            json!({"query": format!("mutation {{ a: auth_refresh(refresh_token: \"{refresh}\") {{ expires }} b: auth_logout(refresh_token: \"x\") }}")}),
        ),
        ("a syntax error", json!({"query": "mutation { auth_logout(refresh_token: \"x\" }"})),
        (
            "a non-string operationName",
            json!({"query": "mutation A { auth_logout(refresh_token: \"x\") }", "operationName": ["A"]}),
        ),
        (
            "variables not an object",
            json!({"query": "mutation { auth_logout(refresh_token: \"x\") }", "variables": [1]}),
        ),
        ("a batch", json!([{"query": "mutation { auth_logout(refresh_token: \"x\") }"}])),
    ] {
        let r = gw.post("/graphql/system").bearer(&access).json(body).send().await;
        assert_eq!(
            (r.status.as_u16(), reason(&r).as_deref()),
            (400, Some("unreadable_graphql")),
            "{what}: {}",
            r.text()
        );
    }
    assert_eq!(d.with(|s| s.seen.len()), seen_before, "none of them reached Directus");
    // `router.use('/system')`: below the endpoint is the endpoint too.
    let below = gw
        .post("/GraphQL/System/x/")
        .json(json!({"query": format!("mutation {{ auth_logout(refresh_token: \"{refresh}\") }}")}))
        .send()
        .await;
    assert_eq!(below.status, 200, "{}", below.text());
    assert_eq!(reason(&articles(&gw, &access).await).as_deref(), Some("session_terminated"), "the logout was seen");
    // Plain queries and unwatched mutations pass untouched.
    let (other, _) = rest_login(&gw, "admin@example.com").await;
    let me = gw.graphql(Some(&other), "{ users_me { id email } }", json!({})).await;
    assert_eq!(me.json()["data"]["users_me"]["email"], "admin@example.com");
}

#[tokio::test]
async fn the_refresh_place_is_the_one_the_mode_names_and_every_place_is_checked() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), PRESET).await;
    let (_, ended) = rest_login(&gw, "reader@example.com").await;
    let out = gw.post("/auth/logout").json(json!({"refresh_token": ended})).send().await;
    assert_eq!(out.status, 204);
    let (_, live) = rest_login(&gw, "reader@example.com").await;
    let cookie = |t: &str| format!("directus_refresh_token={t}");
    // The ended token in a place the mode does not read is still refused.
    for (body, c) in [
        (json!({"mode": "cookie", "refresh_token": ended}), cookie(&live)),
        (json!({"mode": "json", "refresh_token": live}), cookie(&ended)),
        (json!({"refresh_token": live}), cookie(&ended)),
    ] {
        let r = gw.post("/auth/refresh").header("cookie", &c).json(body.clone()).send().await;
        assert_eq!(reason(&r).as_deref(), Some("session_terminated"), "{body} {c}");
    }
    let r = gw
        .graphql(
            None,
            &format!("mutation {{ auth_refresh(refresh_token: \"{ended}\", mode: cookie) {{ access_token }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(reason(&r).as_deref(), Some("session_terminated"), "the unread argument is checked too");
    // A mode that names no place is refused, as Directus refuses it.
    let r = gw.post("/auth/refresh").json(json!({"mode": "header", "refresh_token": live})).send().await;
    assert_eq!((r.status.as_u16(), reason(&r).as_deref()), (400, Some("malformed_body")));
    // Cookie mode: the cookie is the credential, forwarded alone; the body's token is not.
    let r = gw.post("/auth/refresh").header("cookie", &cookie(&live)).json(json!({"mode": "cookie"})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, _, headers) = d.with(|s| s.seen.last().cloned()).expect("seen");
    assert_eq!(headers.get("cookie").and_then(|v| v.to_str().ok()), Some(cookie(&live).as_str()));
}

#[tokio::test]
async fn user_changes_over_graphql_and_in_batches_end_the_users_sessions() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), PRESET).await;
    let reader = d.user("reader@example.com");
    let (admin, _) = rest_login(&gw, "admin@example.com").await;

    // Not a credential change: a name, an `active` status.
    let (before, _) = rest_login(&gw, "reader@example.com").await;
    let r = gw
        .graphql(
            Some(&admin),
            "mutation($id: ID!) { update_users_item(id: $id, data: {first_name: \"R\", status: active}) { id } }",
            json!({"id": reader.id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(articles(&gw, &before).await.status, 200);

    // Each of these ends the reader's sessions (Directus alone revokes nothing).
    let id = reader.id.clone();
    let cases: Vec<(&str, MakeReq<'_>)> = vec![
        (
            "graphql update_users_item status",
            Box::new(|_| {
                gw.post("/graphql/system").bearer(&admin).json(json!({"query": "mutation($id: ID!) { update_users_item(id: $id, data: {status: \"suspended\"}) { id } }", "variables": {"id": id}}))
            }),
        ),
        (
            "graphql update_users_items password",
            Box::new(|_| {
                gw.post("/graphql/system").bearer(&admin).json(json!({"query": "mutation($ids: [ID]!) { update_users_items(ids: $ids, data: {password: \"Other1!\", status: active}) { id } }", "variables": {"ids": id}}))
            }),
        ),
        (
            "graphql update_users_batch role",
            Box::new(|_| {
                gw.post("/graphql/system").bearer(&admin).json(json!({"query": "mutation($d: [update_directus_users_input!]) { update_users_batch(data: $d) { id } }", "variables": {"d": [{"id": id, "role": null, "status": "active"}]}}))
            }),
        ),
        (
            "graphql update_users_me password",
            Box::new(|own| {
                gw.post("/graphql/system").bearer(own).json(json!({"query": format!("mutation {{ update_users_me(data: {{password: \"{PASSWORD}\"}}) {{ id }} }}")}))
            }),
        ),
        (
            "rest PATCH /users keys",
            Box::new(|_| {
                gw.patch("/users").bearer(&admin).json(json!({"keys": [id], "data": {"status": "suspended"}}))
            }),
        ),
        (
            "rest PATCH /users items",
            Box::new(|_| gw.patch("/users").bearer(&admin).json(json!([{"id": id, "password": "Other2!"}]))),
        ),
    ];
    for (what, req) in &cases {
        // Re-activate and log in again (the previous case suspended or re-passworded the user).
        d.with(|s| {
            let u = s.users.iter_mut().find(|u| u.id == reader.id).expect("reader");
            u.status = "active".into();
            u.password = PASSWORD.into();
        });
        let (own, _) = rest_login(&gw, "reader@example.com").await;
        let r = req(&own).send().await;
        assert!(r.status.is_success(), "{what}: {}", r.text());
        assert_eq!(reason(&articles(&gw, &own).await).as_deref(), Some("session_terminated"), "{what}");
        assert_eq!(articles(&gw, &admin).await.status, 200, "{what}: only the reader's sessions");
    }
    // A batch by filter names nobody: refused, not guessed.
    let r = gw
        .patch("/users")
        .bearer(&admin)
        .json(json!({"query": {"filter": {}}, "data": {"status": "suspended"}}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), reason(&r).as_deref()), (400, Some("users_unnamed")), "{}", r.text());
    assert!(d.with(|s| s.users.iter().all(|u| u.status == "active")), "it never reached Directus");
    // A refused GraphQL update (HTTP 200, a null field) ends nothing.
    d.with(|s| s.users.iter_mut().filter(|u| u.id == reader.id).for_each(|u| u.password = PASSWORD.into()));
    let (own, _) = rest_login(&gw, "reader@example.com").await;
    let r = gw
        .graphql(
            Some(&own),
            "mutation($id: ID!) { update_users_item(id: $id, data: {password: \"x\"}) { id } }",
            json!({"id": d.user("admin@example.com").id}),
        )
        .await;
    assert_eq!(r.json()["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert_eq!(articles(&gw, &admin).await.status, 200, "the admin's session lives on");
    // A deleted user's tokens live on at Directus; not through the gateway.
    let r = gw.delete(&format!("/users/{}", reader.id)).bearer(&admin).send().await;
    assert_eq!(r.status, 204);
    assert_eq!(reason(&articles(&gw, &own).await).as_deref(), Some("session_terminated"));
}

#[tokio::test]
async fn graphql_session_mode_rotates_one_session_and_its_logout_ends_it() {
    let d = MockDirectus::start().await;
    let gw = Gateway::start(&d.url(), PRESET).await;
    let reader = d.user("reader@example.com");
    let cookie_of = |r: &Resp| {
        format!("directus_session_token={}", r.set_cookie("directus_session_token").expect("session cookie"))
    };
    let q = format!("mutation {{ auth_login(email: \"reader@example.com\", password: \"{PASSWORD}\", mode: session) {{ access_token expires }} }}");
    let r = gw.graphql(None, &q, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["auth_login"], json!({"access_token": null, "expires": "86400000"}));
    let first = cookie_of(&r);
    assert_eq!(gw.get("/users/me").header("cookie", &first).send().await.status, 200);
    let r = gw
        .post("/graphql/system")
        .header("cookie", &first)
        .json(json!({"query": "mutation($m: auth_mode) { auth_refresh(mode: $m) { expires } }", "variables": {"m": "session"}}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = cookie_of(&r);
    assert_eq!(sessions_of(&gw, &reader.id).await["meta"]["pagination"]["total"], 1, "one session, rotated");
    let out = gw
        .post("/graphql/system")
        .header("cookie", &second)
        .json(json!({"query": "mutation { auth_logout(mode: session) }"}))
        .send()
        .await;
    assert_eq!(out.json()["data"]["auth_logout"], true, "{}", out.text());
    for c in [&first, &second] {
        let r = gw.get("/items/articles").header("cookie", c).send().await;
        assert_eq!(reason(&r).as_deref(), Some("session_terminated"), "{c}");
    }
}
