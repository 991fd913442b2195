//! The Directus test backend against the protocol observed on a real Directus 11.3.5
//! (`shared/directus-11.md`): each case is a row of those tables. These pin the mock, so that
//! the gateway's Directus tests run against a backend that reads requests as Directus does.

mod support;

use http::Method;
use serde_json::{json, Value};
use support::directus::{self, MockDirectus, QueryToken, PASSWORD};
use support::{Req, Resp};

fn req(d: &MockDirectus, method: Method, path: &str) -> Req {
    Req::new(method, &format!("{}{path}", d.url()))
}

async fn login(d: &MockDirectus, mode: &str) -> Resp {
    req(d, Method::POST, "/auth/login")
        .json(json!({"email": "reader@example.com", "password": PASSWORD, "mode": mode}))
        .send()
        .await
}

fn code(r: &Resp) -> Value {
    r.json()["errors"][0]["extensions"]["code"].clone()
}

fn set_cookie(r: &Resp, name: &str) -> Option<String> {
    r.set_cookie(name)
}

#[tokio::test]
async fn logins_in_each_mode_answer_as_directus_does() {
    let d = MockDirectus::start().await;
    let j = login(&d, "json").await;
    assert_eq!(j.status, 200);
    let data = j.json()["data"].clone();
    assert_eq!(data["expires"], 900_000);
    assert_eq!(data["refresh_token"].as_str().map(str::len), Some(64));
    assert!(set_cookie(&j, directus::REFRESH_COOKIE).is_none());
    let c = login(&d, "cookie").await;
    assert!(c.json()["data"].get("refresh_token").is_none());
    assert_eq!(set_cookie(&c, directus::REFRESH_COOKIE).map(|t| t.len()), Some(64));
    let s = login(&d, "session").await;
    assert_eq!(s.json(), json!({"data": {"expires": 86_400_000}}));
    let jwt = set_cookie(&s, directus::SESSION_COOKIE).expect("session cookie");
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(&jwt).expect("jwt");
    assert_eq!(claims["session"].as_str().map(str::len), Some(64), "the row's token is the session claim");
    let bad =
        req(&d, Method::POST, "/auth/login").json(json!({"email": "reader@example.com", "password": "x"})).send().await;
    assert_eq!((bad.status.as_u16(), code(&bad)), (401, json!("INVALID_CREDENTIALS")));
    let form = req(&d, Method::POST, "/auth/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=reader%40example.com&password=Password1!")
        .send()
        .await;
    assert_eq!((form.status.as_u16(), code(&form)), (400, json!("INVALID_PAYLOAD")), "only JSON is read");
    let mode = req(&d, Method::POST, "/auth/login").json(json!({"email": "a@b.c", "mode": "bogus"})).send().await;
    assert_eq!(mode.status, 400);
    let get = req(&d, Method::GET, "/auth/login").send().await;
    assert_eq!((get.status.as_u16(), code(&get)), (404, json!("ROUTE_NOT_FOUND")));
}

#[tokio::test]
async fn a_json_access_token_outlives_its_logout_and_a_rotation_leaves_no_grace() {
    let d = MockDirectus::start().await;
    let data = login(&d, "json").await.json()["data"].clone();
    let (access, refresh) = (data["access_token"].as_str().expect("at"), data["refresh_token"].as_str().expect("rt"));
    let me = |t: &str| req(&d, Method::GET, "/users/me").bearer(t).send();
    assert_eq!(me(access).await.status, 200);
    let r = req(&d, Method::POST, "/auth/refresh").json(json!({"refresh_token": refresh})).send().await;
    assert_eq!(r.status, 200);
    let next = r.json()["data"]["refresh_token"].as_str().expect("rotated").to_string();
    let old = req(&d, Method::POST, "/auth/refresh").json(json!({"refresh_token": refresh})).send().await;
    assert_eq!((old.status.as_u16(), code(&old)), (401, json!("INVALID_CREDENTIALS")), "no grace");
    let out = req(&d, Method::POST, "/auth/logout").json(json!({"refresh_token": next})).send().await;
    assert_eq!(out.status, 204);
    assert_eq!(me(access).await.status, 200, "THE GAP: the access token still works after logout");
    let again = req(&d, Method::POST, "/auth/logout").json(json!({"refresh_token": next})).send().await;
    assert_eq!(again.status, 204, "an unknown token also gets 204");
    let none = req(&d, Method::POST, "/auth/logout").json(json!({})).send().await;
    assert_eq!(none.status, 400);
}

#[tokio::test]
async fn session_mode_is_checked_server_side_with_a_grace_after_refresh() {
    let d = MockDirectus::start().await;
    let jwt = set_cookie(&login(&d, "session").await, directus::SESSION_COOKIE).expect("cookie");
    let cookie = format!("{}={jwt}", directus::SESSION_COOKIE);
    let me = |c: &str| req(&d, Method::GET, "/users/me").header("cookie", c).send();
    assert_eq!(me(&cookie).await.status, 200);
    let r =
        req(&d, Method::POST, "/auth/refresh").header("cookie", &cookie).json(json!({"mode": "session"})).send().await;
    let next = set_cookie(&r, directus::SESSION_COOKIE).expect("rotated cookie");
    assert_eq!(me(&cookie).await.status, 200, "the old session JWT works within the grace");
    let no_mode = req(&d, Method::POST, "/auth/refresh").header("cookie", &cookie).json(json!({})).send().await;
    assert_eq!(no_mode.status, 400, "without mode: cookie mode, which has no refresh cookie here");
    let next_cookie = format!("{}={next}", directus::SESSION_COOKIE);
    let out = req(&d, Method::POST, "/auth/logout")
        .header("cookie", &next_cookie)
        .json(json!({"mode": "session"}))
        .send()
        .await;
    assert_eq!(out.status, 204);
    let after = me(&next_cookie).await;
    assert_eq!((after.status.as_u16(), code(&after)), (401, json!("INVALID_CREDENTIALS")), "enforced");
    assert!(set_cookie(&after, directus::SESSION_COOKIE).is_some(), "a failed session cookie is cleared");
}

#[tokio::test]
async fn token_transports_and_their_precedence() {
    let d = MockDirectus::start().await;
    let access = login(&d, "json").await.json()["data"]["access_token"].as_str().expect("at").to_string();
    let me = |r: Req| async move { r.send().await.status.as_u16() };
    let get = || req(&d, Method::GET, "/users/me");
    assert_eq!(me(get().header("authorization", &format!("bearer {access}"))).await, 200, "scheme in any case");
    assert_eq!(me(get().header("authorization", &format!("  Bearer {access} "))).await, 200, "trimmed");
    assert_eq!(me(get().header("authorization", &format!("Bearer  {access}"))).await, 401, "two spaces: ignored");
    assert_eq!(me(get().header("authorization", &format!("Bearer\t{access}"))).await, 401, "a tab: ignored");
    assert_eq!(me(req(&d, Method::GET, &format!("/users/me?access_token={access}"))).await, 200);
    let twice = format!("/users/me?access_token={access}&access_token={access}");
    assert_eq!(me(req(&d, Method::GET, &twice)).await, 401, "an array never authenticates");
    assert_eq!(me(req(&d, Method::GET, &format!("/users/me?ACCESS_TOKEN={access}"))).await, 401);
    let both = req(&d, Method::GET, &format!("/users/me?access_token={access}")).bearer(&access).send().await;
    assert_eq!((both.status.as_u16(), code(&both)), (400, json!("INVALID_PAYLOAD")));
    let cookie = format!("{}={access}", directus::SESSION_COOKIE);
    assert_eq!(me(get().header("cookie", &cookie)).await, 200, "any access JWT in the session cookie");
    assert_eq!(me(get().header("cookie", &cookie).bearer("junk")).await, 401, "the cookie is ignored beside a bearer");
    let junk = format!("{}=junk", directus::SESSION_COOKIE);
    assert_eq!(me(get().header("cookie", &junk).bearer(&access)).await, 200);
    let quoted = format!("{}=\"{access}\"", directus::SESSION_COOKIE);
    assert_eq!(me(get().header("cookie", &quoted)).await, 200, "quotes undone");
    assert_eq!(directus::query_token(Some("access_token[]=x")), QueryToken::Many);
    assert_eq!(directus::query_token(Some("a=1&access_token=x%2By")), QueryToken::One("x+y".into()));
}

#[test]
fn routes_match_as_express_matches_them() {
    for (path, routed) in [
        ("/auth/logout", Some("/auth/logout")),
        ("/AUTH/LOGOUT", Some("/auth/logout")),
        ("/auth/logout/", Some("/auth/logout")),
        ("/auth//logout", Some("/auth/logout")),
        ("//auth/logout", None),
        ("/auth/%6cogout", None),
        ("/auth/./logout", None),
        ("/auth/x/../logout", None),
        ("/auth/logout;x", None),
    ] {
        assert_eq!(directus::route_of(path).as_deref(), routed, "{path}");
    }
}

#[tokio::test]
async fn bodies_are_json_only_with_gzip_or_deflate() {
    use std::io::Write;
    let d = MockDirectus::start().await;
    let body = json!({"email": "reader@example.com", "password": PASSWORD}).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let post = |ct: &str, ce: Option<&str>, b: Vec<u8>| {
        let mut r = req(&d, Method::POST, "/auth/login").header("content-type", ct).body(b);
        if let Some(ce) = ce {
            r = r.header("content-encoding", ce);
        }
        r.send()
    };
    assert_eq!(post("application/json", Some("GZIP"), gz.clone()).await.status, 200);
    assert_eq!(post("Application/JSON; charset=utf-8", None, body.clone().into_bytes()).await.status, 200);
    assert_eq!(post("application/json; charset=latin1", None, body.clone().into_bytes()).await.status, 400);
    assert_eq!(post("application/json", Some("br"), gz).await.status, 400);
    assert_eq!(post("application/json", Some("gzip"), body.clone().into_bytes()).await.status, 400, "not gzip");
    assert_eq!(post("text/plain", None, body.into_bytes()).await.status, 400, "read as {{}}: no email");
}

#[tokio::test]
async fn a_password_change_or_suspension_revokes_nothing_until_a_refresh() {
    let d = MockDirectus::start().await;
    let admin = req(&d, Method::POST, "/auth/login")
        .json(json!({"email": "admin@example.com", "password": PASSWORD}))
        .send()
        .await
        .json()["data"]["access_token"]
        .as_str()
        .expect("admin")
        .to_string();
    let data = login(&d, "json").await.json()["data"].clone();
    let (access, refresh) = (data["access_token"].as_str().expect("at"), data["refresh_token"].as_str().expect("rt"));
    let reader = d.user("reader@example.com");
    let patch = |b: Value| req(&d, Method::PATCH, &format!("/users/{}", reader.id)).bearer(&admin).json(b).send();
    assert_eq!(patch(json!({"password": "Changed1!"})).await.status, 200);
    assert_eq!(req(&d, Method::GET, "/items/articles").bearer(access).send().await.status, 200, "still valid");
    assert_eq!(patch(json!({"status": "suspended"})).await.status, 200);
    assert_eq!(req(&d, Method::GET, "/items/articles").bearer(access).send().await.status, 200, "suspended lives on");
    let r = req(&d, Method::POST, "/auth/refresh").json(json!({"refresh_token": refresh})).send().await;
    assert_eq!((r.status.as_u16(), code(&r)), (401, json!("USER_SUSPENDED")));
    let anon = req(&d, Method::GET, "/items/articles").send().await;
    assert_eq!((anon.status.as_u16(), code(&anon)), (403, json!("FORBIDDEN")));
}

async fn gql(d: &MockDirectus, query: &str, variables: Value) -> Resp {
    req(d, Method::POST, "/graphql/system").json(json!({"query": query, "variables": variables})).send().await
}

/// `## GraphQL auth (POST /graphql/system)`, and graphql-js's execution rules the gateway
/// must read alike (operation selection, directives, fragments).
#[tokio::test]
async fn graphql_auth_answers_as_directus_does() {
    let d = MockDirectus::start().await;
    let q = format!("mutation {{ auth_login(email: \"reader@example.com\", password: \"{PASSWORD}\") {{ access_token refresh_token expires }} }}");
    let r = gql(&d, &q, json!({})).await;
    assert_eq!(r.status, 200);
    let t = r.json()["data"]["auth_login"].clone();
    assert_eq!(t["expires"], "900000", "a string");
    let refresh = t["refresh_token"].as_str().expect("rt").to_string();
    let q = "mutation($t: String) { auth_refresh(refresh_token: $t) { refresh_token } }";
    let next = gql(&d, q, json!({"t": refresh})).await.json()["data"]["auth_refresh"]["refresh_token"].clone();
    let reuse = gql(&d, q, json!({"t": refresh})).await;
    assert_eq!(reuse.status, 200, "reuse: HTTP 200");
    assert_eq!(reuse.json()["data"]["auth_refresh"], Value::Null);
    assert_eq!(reuse.json()["errors"][0]["extensions"]["code"], "INVALID_CREDENTIALS");
    assert_eq!(reuse.json()["errors"][0]["path"], json!(["auth_refresh"]));
    let out = gql(&d, "mutation($t: String) { auth_logout(refresh_token: $t) }", json!({"t": next})).await;
    assert_eq!(out.json(), json!({"data": {"auth_logout": true}}));
    let rest = req(&d, Method::POST, "/auth/refresh").json(json!({"refresh_token": next})).send().await;
    assert_eq!(rest.status, 401, "revoked for REST too");
    let session = format!("mutation {{ auth_login(email: \"reader@example.com\", password: \"{PASSWORD}\", mode: session) {{ access_token refresh_token expires }} }}");
    let s = gql(&d, &session, json!({})).await;
    assert_eq!(
        s.json()["data"]["auth_login"],
        json!({"access_token": null, "refresh_token": null, "expires": "86400000"})
    );
    assert!(set_cookie(&s, directus::SESSION_COOKIE).is_some());
    let get = req(&d, Method::GET, "/graphql/system?query=mutation%20%7B%20auth_logout%20%7D").send().await;
    assert_eq!(get.status, 405, "mutations are POST only");
}

#[tokio::test]
async fn graphql_runs_the_operation_and_fields_graphql_js_would() {
    let d = MockDirectus::start().await;
    let login = |mode: &str| {
        format!("auth_login(email: \"reader@example.com\", password: \"{PASSWORD}\", mode: {mode}) {{ expires }}")
    };
    let rows = || d.with(|s| s.sessions.len());
    // Two operations and no name: nothing runs (HTTP 200, errors only).
    let r = gql(&d, &format!("mutation A {{ {} }} mutation B {{ {} }}", login("json"), login("json")), json!({})).await;
    assert_eq!((r.status.as_u16(), r.json().get("data").is_none(), rows()), (200, true, 0));
    let r = req(&d, Method::POST, "/graphql/system")
        .json(json!({"query": format!("query A {{ users_me {{ id }} }} mutation B {{ {} }}", login("json")), "operationName": "B"}))
        .send()
        .await;
    assert_eq!((r.status.as_u16(), rows()), (200, 1), "the named one runs");
    // Directives are evaluated, with variables; fragments are followed.
    let q = format!("mutation($s: Boolean!) {{ ...F @skip(if: $s) }} fragment F on Mutation {{ {} }}", login("json"));
    gql(&d, &q, json!({"s": true})).await;
    assert_eq!(rows(), 1, "skipped");
    gql(&d, &q, json!({"s": false})).await;
    assert_eq!(rows(), 2, "run");
    // What validation rejects is 400 and runs nothing.
    for bad in [
        format!("mutation {{ {} }} {{ users_me {{ id }} }}", login("json")),
        format!("mutation A {{ {} }} mutation A {{ {} }}", login("json"), login("json")),
        format!("mutation {{ {} @deprecated }}", login("json")),
        format!("mutation {{ nope {} }}", login("json")),
        "mutation { auth_login(".to_string(),
    ] {
        let r = gql(&d, &bad, json!({})).await;
        assert_eq!((r.status.as_u16(), rows()), (400, 2), "{bad}: {}", r.text());
    }
}
