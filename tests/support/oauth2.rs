//! A plain OAuth2 authorization server with the password and refresh-token grants (RFC 6749
//! §4.3, §6) and token revocation (RFC 7009), as the common servers implement them:
//! - `POST /oauth/token` reads `application/x-www-form-urlencoded` only (anything else: 400
//!   `invalid_request`); the public client `demo` names itself with `client_id` (or Basic
//!   `demo:`); `grant_type=password` with `username` / `password`, `grant_type=refresh_token`
//!   with `refresh_token`, which rotates (the old one is `invalid_grant` at once); errors are
//!   `{"error": …}` with 400 (401 `invalid_client`);
//! - access tokens are JWTs (`sub`, `jti`, `exp`), checked by signature only — the gap: a
//!   revoked grant's access token works until `exp`;
//! - `POST /oauth/revoke` (form: `token`, optional `token_type_hint`, client auth) revokes a
//!   refresh token and answers 200 whatever the token (RFC 7009 §2.2);
//! - `GET /api/me` with a bearer access token.
#![allow(dead_code)]
#![allow(clippy::result_large_err)]

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub const SECRET: &str = "oauth2-mock-signing-secret-0123456789";
pub const CLIENT_ID: &str = "demo";
pub const PASSWORD: &str = "Password1!";

#[derive(Default)]
pub struct State {
    /// username → password.
    pub users: HashMap<String, String>,
    /// refresh token → username.
    pub grants: HashMap<String, String>,
    pub accepted: Vec<(String, i64)>,
    pub minted: Vec<(String, i64)>,
    /// Every request: (method, path, content type, body).
    pub seen: Vec<(Method, String, String, String)>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn res(status: u16, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("hv"));
    r.headers_mut().insert(header::CACHE_CONTROL, "no-store".parse().expect("hv"));
    r
}

fn oauth_error(status: u16, code: &str) -> Response<Full<Bytes>> {
    res(status, json!({ "error": code }))
}

fn form(headers: &HeaderMap, body: &[u8]) -> Option<HashMap<String, String>> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        // RFC 6749 §3.2: a parameter sent twice is an invalid request.
        if out.insert(dec(k), dec(v)).is_some() {
            return Some(HashMap::from([("__duplicate".to_string(), String::new())]));
        }
    }
    Some(out)
}

fn client_ok(headers: &HeaderMap, f: &HashMap<String, String>) -> bool {
    use base64::Engine;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|raw| raw.starts_with(format!("{CLIENT_ID}:").as_bytes()));
    basic || f.get("client_id").map(String::as_str) == Some(CLIENT_ID)
}

impl State {
    fn issue(&mut self, user: &str) -> Response<Full<Bytes>> {
        let iat = now_ms() / 1000;
        let claims = json!({"sub": user, "jti": format!("{:016x}", rand::random::<u64>()), "iat": iat, "exp": iat + 3600, "client_id": CLIENT_ID});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let access = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("jwt");
        let refresh: String = (0..40).map(|_| format!("{:x}", rand::random::<u8>() % 16)).collect();
        self.grants.insert(refresh.clone(), user.to_string());
        res(200, json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh}))
    }

    fn token(&mut self, headers: &HeaderMap, body: &[u8]) -> Response<Full<Bytes>> {
        let Some(f) = form(headers, body) else { return oauth_error(400, "invalid_request") };
        if f.contains_key("__duplicate") {
            return oauth_error(400, "invalid_request");
        }
        if !client_ok(headers, &f) {
            return oauth_error(401, "invalid_client");
        }
        match f.get("grant_type").map(String::as_str) {
            Some("password") => {
                let (Some(u), Some(p)) = (f.get("username"), f.get("password")) else {
                    return oauth_error(400, "invalid_request");
                };
                if self.users.get(u) != Some(p) {
                    return oauth_error(400, "invalid_grant");
                }
                let u = u.clone();
                self.issue(&u)
            }
            Some("refresh_token") => {
                let Some(r) = f.get("refresh_token") else { return oauth_error(400, "invalid_request") };
                let Some(user) = self.grants.remove(r) else { return oauth_error(400, "invalid_grant") };
                self.minted.push((r.clone(), now_ms()));
                self.issue(&user)
            }
            Some(_) => oauth_error(400, "unsupported_grant_type"),
            None => oauth_error(400, "invalid_request"),
        }
    }

    fn revoke(&mut self, headers: &HeaderMap, body: &[u8]) -> Response<Full<Bytes>> {
        let Some(f) = form(headers, body) else { return oauth_error(400, "invalid_request") };
        if !client_ok(headers, &f) {
            return oauth_error(401, "invalid_client");
        }
        let Some(t) = f.get("token") else { return oauth_error(400, "invalid_request") };
        self.grants.remove(t);
        res(200, json!({}))
    }

    fn me(&mut self, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let token =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = token else { return oauth_error(401, "invalid_token") };
        let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
        match jsonwebtoken::decode::<Value>(token, &key, &jsonwebtoken::Validation::default()) {
            Ok(d) => {
                self.accepted.push((token.to_string(), now_ms()));
                res(200, json!({ "sub": d.claims["sub"] }))
            }
            Err(_) => oauth_error(401, "invalid_token"),
        }
    }
}

pub struct MockOAuth2 {
    pub state: Arc<Mutex<State>>,
    server: super::Served,
}

impl MockOAuth2 {
    /// Users `alice` and `bob`, password [`PASSWORD`].
    pub async fn start() -> MockOAuth2 {
        let mut st = State::default();
        for u in ["alice", "bob"] {
            st.users.insert(u.into(), PASSWORD.into());
        }
        let state = Arc::new(Mutex::new(st));
        let st = state.clone();
        let server = super::Served::start(move |req: Request<Incoming>| {
            let st = st.clone();
            async move {
                let (parts, body) = req.into_parts();
                let raw = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                let mut s = st.lock().expect("state");
                let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
                s.seen.push((
                    parts.method.clone(),
                    parts.uri.path().to_string(),
                    ct.to_string(),
                    String::from_utf8_lossy(&raw).into_owned(),
                ));
                match (parts.method.clone(), parts.uri.path()) {
                    (Method::POST, "/oauth/token") => s.token(&parts.headers, &raw),
                    (Method::POST, "/oauth/revoke") => s.revoke(&parts.headers, &raw),
                    (Method::GET, "/api/me") => s.me(&parts.headers),
                    (Method::GET, "/health") => res(200, json!({"ok": true})),
                    _ => oauth_error(404, "not_found"),
                }
            }
        })
        .await;
        MockOAuth2 { state, server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().expect("state"))
    }
}
