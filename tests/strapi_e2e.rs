//! End to end, against a real Strapi 5.54 (`tests/strapi-app`, started by
//! `support/real_strapi.rs`), not the mock: the session lifecycle, the user API, force logout,
//! password change, cookie mode, Strapi's own session routes and a sample of the fail-closed
//! variants — and, with the real Strapi's `qs` and Node itself, a differential test of the
//! parsers the gateway (and the test backend) use to read requests like Strapi.

mod support;

use http::Method;
use serde_json::{json, Value};
use std::io::Write;
use support::real_strapi::{self, RealStrapi, PASSWORD};
use support::{Gateway, Login, Req};

const ADMIN: &str = "/magic-sessionmanager";

async fn gateway(strapi: &RealStrapi, extra: &str) -> Gateway {
    Gateway::start(&strapi.url, extra).await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

fn login_of(v: &Value) -> Login {
    Login {
        jwt: v["jwt"].as_str().expect("jwt").to_string(),
        refresh: v["refreshToken"].as_str().unwrap_or_default().to_string(),
        user_id: v["user"]["id"].as_u64().unwrap_or(0),
    }
}

/// Registers a fresh user through the gateway (its first session).
async fn register(gw: &Gateway, name: &str) -> Login {
    let r = gw
        .post("/api/auth/local/register")
        .json(json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}))
        .send()
        .await;
    assert_eq!(r.status, 200, "register: {}", r.text());
    login_of(&r.json())
}

async fn login(gw: &Gateway, name: &str) -> Login {
    let r = gw.post("/api/auth/local").json(json!({"identifier": name, "password": PASSWORD})).send().await;
    assert_eq!(r.status, 200, "login: {}", r.text());
    login_of(&r.json())
}

fn direct(strapi: &RealStrapi, method: Method, path: &str) -> Req {
    Req::new(method, &format!("{}{path}", strapi.url))
}

async fn direct_refresh_status(strapi: &RealStrapi, refresh: &str) -> u16 {
    direct(strapi, Method::POST, "/api/auth/refresh")
        .json(json!({"refreshToken": refresh}))
        .send()
        .await
        .status
        .as_u16()
}

async fn gateway_sid(gw: &Gateway, jwt: &str) -> String {
    let r = gw.get("/api/magic-sessionmanager/current-session").bearer(jwt).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"]["sessionId"].as_str().expect("sessionId").to_string()
}

fn backend_sid(token: &str) -> String {
    support::strapi::backend_sid(token)
}

#[tokio::test]
async fn session_lifecycle_against_real_strapi() {
    let strapi = real_strapi::shared_async().await;
    let gw = gateway(strapi, "").await;
    let name = unique("life");
    let s = register(&gw, &name).await;
    let articles = gw.get("/api/articles").bearer(&s.jwt).send().await;
    assert_eq!(articles.status, 200, "{}", articles.text());
    assert_eq!(articles.json()["data"][0]["title"], "Hello from a real Strapi");
    let rotated = gw.refresh(&s.refresh).await;
    assert_ne!(backend_sid(&rotated.jwt), backend_sid(&s.jwt), "Strapi rotates the backend session");
    let old = gw.post("/api/auth/refresh").json(json!({"refreshToken": s.refresh})).send().await;
    assert_eq!(old.status, 401, "Strapi refuses a rotated-out refresh token: {}", old.text());
    let out =
        gw.post("/api/auth/logout").bearer(&rotated.jwt).json(json!({"refreshToken": rotated.refresh})).send().await;
    assert_eq!((out.status.as_u16(), out.json()), (200, json!({"ok": true})));
    let after = gw.get("/api/articles").bearer(&rotated.jwt).send().await;
    assert_eq!((after.status.as_u16(), after.reason().as_deref()), (401, Some("session_terminated")));
    // The gap the gateway closes: Strapi itself still takes the logged-out access jwt.
    assert_eq!(direct(strapi, Method::GET, "/api/articles").bearer(&rotated.jwt).send().await.status, 200);
    assert_eq!(direct_refresh_status(strapi, &rotated.refresh).await, 401, "the backend session is revoked too");
    let again = gw.post("/api/auth/refresh").json(json!({"refreshToken": rotated.refresh})).send().await;
    assert_eq!(again.reason().as_deref(), Some("session_terminated"));
}

#[tokio::test]
async fn user_api_and_force_logout_against_real_strapi() {
    let strapi = real_strapi::shared_async().await;
    let gw = gateway(strapi, "").await;
    let name = unique("uapi");
    let a = register(&gw, &name).await;
    let b = login(&gw, &name).await;
    let mine = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&a.jwt).send().await.json();
    assert_eq!(mine["meta"]["count"], 2, "{mine}");
    let b_sid = gateway_sid(&gw, &b.jwt).await;
    let r = gw.delete(&format!("/api/magic-sessionmanager/my-sessions/{b_sid}")).bearer(&a.jwt).send().await;
    assert_eq!(r.json()["success"], true, "{}", r.text());
    assert_eq!(gw.get("/api/articles").bearer(&b.jwt).send().await.status, 401);
    let b_refresh = b.refresh.clone();
    assert!(
        eventually_async(15, || async { direct_refresh_status(strapi, &b_refresh).await == 401 }).await,
        "the gateway revoked the ended session at Strapi"
    );
    // Force logout by an admin.
    let a_sid = gateway_sid(&gw, &a.jwt).await;
    let r = gw
        .admin(Method::POST, &format!("{ADMIN}/sessions/{a_sid}/terminate"))
        .json(json!({"reason": "e2e"}))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.get("/api/articles").bearer(&a.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    let a_refresh = a.refresh.clone();
    assert!(eventually_async(15, || async { direct_refresh_status(strapi, &a_refresh).await == 401 }).await);
    // Strapi answers for the dead token a moment before the worker's audit event is written.
    let audited = || async {
        let audit = gw.admin(Method::GET, &format!("{ADMIN}/audit?type=backend_revoked")).send().await.json();
        audit["data"].as_array().is_some_and(|a| a.len() >= 2 && a.iter().all(|e| e["details"]["outcome"] == "revoked"))
    };
    assert!(eventually_async(10, audited).await, "both revocations are audited");
}

#[tokio::test]
async fn password_change_ends_every_session_against_real_strapi() {
    let strapi = real_strapi::shared_async().await;
    let gw = gateway(strapi, "").await;
    let name = unique("pw");
    let a = register(&gw, &name).await;
    let b = login(&gw, &name).await;
    let r = gw
        .post("/api/auth/change-password")
        .bearer(&a.jwt)
        .json(json!({"currentPassword": PASSWORD, "password": "Changed-pass1!", "passwordConfirmation": "Changed-pass1!"}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let c = login_of(&r.json());
    for old in [&a.jwt, &b.jwt] {
        assert_eq!(gw.get("/api/articles").bearer(old).send().await.reason().as_deref(), Some("session_terminated"));
    }
    // Strapi revoked the refresh tokens, but its access jwts still work there until `exp`.
    assert_eq!(direct_refresh_status(strapi, &b.refresh).await, 401);
    assert_eq!(direct(strapi, Method::GET, "/api/articles").bearer(&b.jwt).send().await.status, 200);
    assert_eq!(gw.get("/api/articles").bearer(&c.jwt).send().await.status, 200, "the new session works");
}

#[tokio::test]
async fn cookie_mode_against_real_strapi() {
    let strapi = real_strapi::shared_async().await;
    let gw = gateway(strapi, "").await;
    let name = unique("cookie");
    register(&gw, &name).await;
    let cookie_of = |r: &support::Resp| {
        r.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("strapi_up_refresh=").map(|v| v.split(';').next().unwrap_or("").to_string()))
            .filter(|v| !v.is_empty())
            .expect("a refresh cookie")
    };
    let r = gw
        .post("/api/auth/local")
        .header("x-strapi-refresh-cookie", "httpOnly")
        .json(json!({"identifier": name, "password": PASSWORD}))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("refreshToken").is_none(), "cookie mode answers no refreshToken");
    let jwt = r.json()["jwt"].as_str().expect("jwt").to_string();
    let first = cookie_of(&r);
    // Strapi reads the cookie without its signature cookie.
    let r = gw
        .post("/api/auth/refresh")
        .header("x-strapi-refresh-cookie", "httpOnly")
        .header("cookie", &format!("strapi_up_refresh={first}"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = cookie_of(&r);
    let jwt2 = r.json()["jwt"].as_str().expect("jwt").to_string();
    assert_eq!(gw.get("/api/articles").bearer(&jwt2).send().await.status, 200);
    let r = gw
        .post("/api/auth/logout")
        .bearer(&jwt2)
        .header("x-strapi-refresh-cookie", "httpOnly")
        .header("cookie", &format!("strapi_up_refresh={second}"))
        .send()
        .await;
    assert_eq!(r.status, 200);
    for t in [&jwt, &jwt2] {
        assert_eq!(gw.get("/api/articles").bearer(t).send().await.status, 401);
    }
    let r = gw.post("/api/auth/refresh").header("cookie", &format!("strapi_up_refresh={second}")).send().await;
    assert_eq!(r.reason().as_deref(), Some("session_terminated"));
    assert_eq!(
        direct(strapi, Method::POST, "/api/auth/refresh")
            .header("cookie", &format!("strapi_up_refresh={second}"))
            .send()
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn strapis_own_session_routes_through_the_gateway() {
    let strapi = real_strapi::shared_async().await;
    let gw = gateway(strapi, "").await;
    let name = unique("native");
    let a = register(&gw, &name).await;
    let b = login(&gw, &name).await;
    let list = gw.get("/api/auth/sessions").bearer(&a.jwt).send().await;
    assert_eq!(list.status, 200, "{}", list.text());
    let ids: Vec<String> = list.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    assert!(ids.contains(&backend_sid(&b.jwt)), "{ids:?}");
    let r = gw.delete(&format!("/api/auth/sessions/{}", backend_sid(&b.jwt))).bearer(&a.jwt).send().await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"data": {}})));
    assert_eq!(gw.get("/api/articles").bearer(&b.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    let mine = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&a.jwt).send().await.json();
    assert_eq!(mine["meta"]["count"], 1, "the revoked session is no longer listed as active: {mine}");
    assert_eq!(gw.get("/api/articles").bearer(&a.jwt).send().await.status, 200);
}

/// Request headers of one variant.
type Headers = Vec<(&'static str, String)>;

/// A sample of the fail-closed matrix (`tests/fail_closed.rs`), against the real parser.
#[tokio::test]
async fn ended_sessions_stay_out_in_every_spelling_against_real_strapi() {
    let strapi = real_strapi::shared_async().await;
    let gw = gateway(strapi, "").await;
    let name = unique("diff");
    let live = register(&gw, &name).await;
    let ended = login(&gw, &name).await;
    let r = gw.post("/api/auth/logout").bearer(&ended.jwt).json(json!({"refreshToken": ended.refresh})).send().await;
    assert_eq!(r.status, 200);
    let sessions_at_strapi = || async {
        direct(strapi, Method::GET, "/api/auth/sessions").bearer(&live.jwt).send().await.json()["data"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(usize::MAX)
    };
    let before = sessions_at_strapi().await;
    let mut sent = 0;
    // Authorization spellings Strapi reads as the token (checked against the real server below).
    for v in [
        format!("Bearer\t{}", ended.jwt).into_bytes(),
        [b"Bearer\xa0".as_slice(), ended.jwt.as_bytes()].concat(),
        format!("bearer   {}", ended.jwt).into_bytes(),
        format!("Bearer\u{3000}{}", ended.jwt).into_bytes(),
    ] {
        let r = gw.get("/api/articles").header_bytes("authorization", &v).send().await;
        assert!(!r.status.is_success(), "{}", r.text());
        let r = gw.get("/api/articles").header_bytes("authorization", &v).http2().send().await;
        assert!(!r.status.is_success(), "{}", r.text());
        sent += 2;
    }
    // Refresh bodies in every form Strapi reads.
    let t = &ended.refresh;
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).expect("gzip");
        e.finish().expect("gzip")
    };
    let json_body = format!(r#"{{"refreshToken":"{t}"}}"#);
    let multipart = format!("--B\r\nContent-Disposition: form-data; name=\"refreshToken\"\r\n\r\n{t}\r\n--B--\r\n");
    let variants: Vec<(Headers, Vec<u8>)> = vec![
        (vec![("content-type", "application/x-www-form-urlencoded".into())], format!("refreshToken={t}").into_bytes()),
        (vec![("content-type", "multipart/form-data; boundary=B".into())], multipart.into_bytes()),
        (
            vec![("content-type", "application/json".into()), ("content-encoding", "gzip".into())],
            gz(json_body.as_bytes()),
        ),
        (
            vec![("content-type", "application/json".into())],
            [b"\xef\xbb\xbf".as_slice(), json_body.as_bytes()].concat(),
        ),
        (vec![("content-type", "application/vnd.api+json".into())], json_body.clone().into_bytes()),
        (vec![("cookie", format!("strapi_up_refresh={t}"))], Vec::new()),
        (
            vec![("cookie", format!("strapi_up_refresh={t}")), ("content-type", "application/json".into())],
            format!(r#"{{"refreshToken":"{}"}}"#, live.refresh).into_bytes(),
        ),
    ];
    for (headers, body) in &variants {
        let mut req = gw.post("/api/auth/refresh").body(body.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await;
        assert!(!r.status.is_success(), "{headers:?}: {}", r.text());
        sent += 1;
    }
    // Each variant is one Strapi itself accepts: shown on a fresh session, directly.
    let probe = login(&gw, &name).await;
    let r = direct(strapi, Method::POST, "/api/auth/refresh")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("refreshToken={}", probe.refresh))
        .send()
        .await;
    assert_eq!(r.status, 200, "Strapi reads form refreshes: {}", r.text());
    let fresh = login_of(&json!({"jwt": r.json()["jwt"], "refreshToken": r.json()["refreshToken"]}));
    let r = direct(strapi, Method::GET, "/api/articles")
        .header_bytes("authorization", format!("Bearer\t{}", fresh.jwt).as_bytes())
        .send()
        .await;
    assert_eq!(r.status, 200, "Strapi reads Bearer<TAB>");
    // Nothing was minted for the ended session: Strapi lists the same sessions (plus the probe).
    assert_eq!(sessions_at_strapi().await, before + 1, "no session was created from the ended one");
    assert_eq!(direct_refresh_status(strapi, &ended.refresh).await, 401);
    eprintln!("{sent} variants against the real Strapi: all refused");
}

/// `{"deviceId": 123}` is ignored by Strapi (only strings count); so by the gateway.
#[tokio::test]
async fn a_numeric_device_id_is_ignored_at_both_ends() {
    let strapi = real_strapi::shared_async().await;
    let gw = gateway(strapi, "").await;
    let name = unique("dev");
    register(&gw, &name).await;
    let r = gw
        .post("/api/auth/local")
        .json(json!({"identifier": name, "password": PASSWORD, "deviceId": "phone"}))
        .send()
        .await;
    let phone = login_of(&r.json());
    let other = login(&gw, &name).await;
    let r = gw.post("/api/auth/logout").bearer(&other.jwt).json(json!({"deviceId": 123})).send().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.get("/api/articles").bearer(&other.jwt).send().await.status, 401);
    assert_eq!(gw.get("/api/articles").bearer(&phone.jwt).send().await.status, 200);
    let other_refresh = other.refresh.clone();
    assert!(eventually_async(15, || async { direct_refresh_status(strapi, &other_refresh).await == 401 }).await);
    assert_eq!(gw.post("/api/auth/refresh").json(json!({"refreshToken": phone.refresh})).send().await.status, 200);
}

/// The gateway's readers (and the test backend's) against Node and the real `qs`: Node reads
/// `Authorization` with `split(/\s+/)` over latin-1; co-body parses forms with `qs`
/// (`allowDots`) and JSON with `JSON.parse`. Where Node finds a token, the gateway finds the
/// same one; where the gateway accepts a form or JSON body, it builds the object Strapi builds;
/// the test backend always builds it.
#[tokio::test]
async fn the_gateways_parsers_agree_with_node_and_qs() {
    let modules = tokio::task::spawn_blocking(real_strapi::node_modules).await.expect("node_modules");
    let mut rng: u64 = 0x5eed_1234_abcd_0042;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    // Form bodies.
    let keys = [
        "a",
        "b",
        "refreshToken",
        "x.y",
        "a.b",
        "a[b]",
        "a[]",
        "a[0]",
        "a[1]",
        "a[b][c]",
        "__proto__",
        "constructor[x]",
        "[a]",
        "a[",
        "a]b",
        "0",
        "",
        "a%5Bb%5D",
        "a[b]c",
        "a.b.c",
    ];
    let vals = ["1", "2", "", "x+y", "%41", "%E2%82%AC", "%zz", "a%3Db", "%", "t%20k"];
    // Realistic forms: the fields of auth routes, each once (lists appended with `[]`), with any
    // valid encoding. These must never be refused.
    let fields = ["identifier", "password", "refreshToken", "deviceId", "scope", "user[name]", "user.email", "tags[]"];
    let safe_vals = ["alice%40example.com", "P%40ss+w%C3%B6rd", "eyJ.eyJ.sig", "all", "", "x%26y%3Dz", "%E2%82%AC"];
    let mut realistic = Vec::new();
    for _ in 0..1000 {
        let mut names: Vec<&str> = fields.iter().copied().filter(|_| next(2) == 0).collect();
        if names.is_empty() {
            names.push("refreshToken");
        }
        if names.contains(&"tags[]") {
            names.push("tags[]");
        }
        let parts: Vec<String> = names.iter().map(|k| format!("{k}={}", safe_vals[next(safe_vals.len())])).collect();
        realistic.push(parts.join("&"));
    }
    let mut forms = realistic.clone();
    for _ in 0..3000 {
        let n = 1 + next(4);
        let parts: Vec<String> = (0..n)
            .map(|_| {
                let k = keys[next(keys.len())];
                if next(7) == 0 {
                    k.to_string()
                } else {
                    format!("{k}={}", vals[next(vals.len())])
                }
            })
            .collect();
        forms.push(parts.join("&"));
    }
    // Authorization values, as bytes.
    let seps: [&[u8]; 9] =
        [b" ", b"\t", b"  ", b"\xa0", b" \t", "\u{3000}".as_bytes(), "\u{2002}".as_bytes(), "\u{feff}".as_bytes(), b""];
    let schemes: [&[u8]; 5] = [b"Bearer", b"bearer", b"BEARER", b"Basic", b"Bearer:"];
    let around: [&[u8]; 5] = [b"", b" ", b"\t", b"\xa0", "\u{3000}".as_bytes()];
    let toks: [&[u8]; 4] = [b"tok.en.sig", b"a b", b"t\xe9k", b""];
    let mut auths: Vec<Vec<u8>> = Vec::new();
    for _ in 0..3000 {
        let v = [around[next(5)], schemes[next(5)], seps[next(9)], toks[next(4)], around[next(5)]].concat();
        if http::HeaderValue::from_bytes(&v).is_ok() {
            auths.push(v);
        }
    }
    // JSON bodies.
    let jsons = [
        r#"{"a":1,"a":2}"#,
        r#"{"a":"x","a":"x"}"#,
        r#"{"n":9007199254740993}"#,
        r#"{"n":1e400}"#,
        r#"{"n":0.1,"m":-0}"#,
        r#"{"s":"\u00e9\ud83d\ude00"}"#,
        r#"[1,2,3]"#,
        r#" {"a" : [ {"b":null} ] } "#,
        r#"{"a":1,}"#,
        r#"{"__proto__":1}"#,
        r#""str""#,
        r#"{"a":"\ud800"}"#,
        r#"{"big":123456789012345678901234567890}"#,
        r#"{"t":true,"f":false}"#,
    ];
    let cases: Vec<Value> = forms
        .iter()
        .map(|f| json!({"kind": "qs", "input": f}))
        .chain(auths.iter().map(|a| json!({"kind": "bearer", "bytes": a})))
        .chain(jsons.iter().map(|j| json!({"kind": "json", "input": j})))
        .collect();
    let script = format!(
        r#"const qs = require({qs:?});
const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter(Boolean);
const out = lines.map((l) => {{
  const c = JSON.parse(l);
  try {{
    if (c.kind === 'qs') return {{ ok: qs.parse(c.input, {{ allowDots: true }}) }};
    if (c.kind === 'json') return {{ ok: JSON.parse(c.input) }};
    const v = String.fromCharCode(...c.bytes).replace(/^[ \t]+|[ \t]+$/g, '');
    const parts = v.split(/\s+/);
    return {{ ok: v && parts[0].toLowerCase() === 'bearer' && parts.length === 2 ? parts[1] : null }};
  }} catch (e) {{ return {{ err: String(e) }}; }}
}});
process.stdout.write(out.map((o) => JSON.stringify(o)).join('\n'));
"#,
        qs = modules.join("qs").display().to_string()
    );
    let input: String = cases.iter().map(|c| format!("{c}\n")).collect();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new("node")
            .args(["-e", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("node");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        child.wait_with_output().expect("node output")
    })
    .await
    .expect("join");
    assert!(output.status.success());
    // A lone surrogate (`"\ud800"`) is a JavaScript string but not Unicode: serde refuses it.
    let answers: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| json!({"unicode_escape_only_js_reads": l})))
        .collect();
    assert_eq!(answers.len(), cases.len());
    let (mut refused, mut agreed) = (0, 0);
    for (case, node) in cases.iter().zip(&answers) {
        match case["kind"].as_str() {
            Some("qs") => {
                let input = case["input"].as_str().expect("input");
                let want = &node["ok"];
                assert_eq!(
                    &support::strapi::qs::parse(input, true),
                    want,
                    "the test backend's qs differs on {input:?}"
                );
                match sessiongate::proxy::form::parse_urlencoded(input) {
                    Ok(got) => {
                        assert_eq!(&got, want, "the gateway reads {input:?} differently from qs");
                        agreed += 1;
                    }
                    Err(why) => {
                        assert!(
                            !realistic.iter().any(|r| r == input),
                            "a plain auth form was refused ({why}): {input:?}"
                        );
                        refused += 1
                    }
                }
            }
            Some("bearer") => {
                let bytes: Vec<u8> =
                    case["bytes"].as_array().expect("bytes").iter().map(|b| b.as_u64().unwrap_or(0) as u8).collect();
                let mut h = http::HeaderMap::new();
                h.insert("authorization", http::HeaderValue::from_bytes(&bytes).expect("value"));
                let gateway = sessiongate::proxy::credentials::bearer(&h).expect("one header").map(|t| t.text);
                let mock = support::strapi::strapi_bearer(&h);
                let node_token = node["ok"].as_str().map(str::to_string);
                assert_eq!(
                    mock,
                    node_token,
                    "the test backend reads {:?} differently from Node",
                    String::from_utf8_lossy(&bytes)
                );
                // An empty token ("Bearer\t\u{a0}") is no credential at either end: Node's verify
                // fails it (401), the gateway drops the header (403).
                if let Some(t) = node_token.as_ref().filter(|t| !t.is_empty()) {
                    assert_eq!(
                        gateway.as_ref(),
                        Some(t),
                        "the gateway misses a token Node reads in {:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
            _ => {
                let input = case["input"].as_str().expect("input");
                let gateway = sessiongate::proxy::body::json(input.as_bytes());
                if node.get("unicode_escape_only_js_reads").is_some() {
                    assert!(
                        gateway.is_err(),
                        "the gateway must refuse {input:?}: it cannot hold what JavaScript reads"
                    );
                }
                if let Ok(got) = gateway {
                    let want = node
                        .get("ok")
                        .unwrap_or_else(|| panic!("the gateway accepts {input:?}, which JSON.parse refuses"));
                    assert!(js_equal(&got, want), "the gateway reads {input:?} as {got} where JSON.parse reads {want}");
                }
            }
        }
    }
    eprintln!(
        "{} forms ({} realistic, all read): {agreed} read exactly as qs reads them, {refused} adversarial ones refused as ambiguous; {} Authorization values; {} JSON bodies",
        forms.len(),
        realistic.len(),
        auths.len(),
        jsons.len()
    );
}

/// Equality as JavaScript sees values: numbers by value (JSON.stringify prints -0 as 0).
fn js_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| js_equal(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| js_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Polls an async condition.
async fn eventually_async<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if f().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
