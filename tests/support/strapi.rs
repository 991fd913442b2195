//! A Strapi v5 (users-permissions, `jwtManagement: 'refresh'`) look-alike for tests and for
//! trying the gateway by hand (`cargo run --example mock-backend`). It follows
//! `shared/strapi-v5.md` and the 5.54 sources: the same routes, status codes, JSON shapes,
//! HS256 claims, refresh rotation, httpOnly cookie mode, logout rules, its own session routes,
//! provider callbacks — and, the gap sessiongate closes, access tokens that stay valid after
//! logout until they expire.
//!
//! It **reads requests exactly as Strapi does**, not as the gateway would like: the bearer is
//! `authorization.split(/\s+/)` over latin-1 header bytes (first `Authorization` header only, as
//! Node keeps it); POST/PUT/PATCH bodies go through koa-body's rules (JSON types, strict mode,
//! BOM, lossy UTF-8, `__proto__` refused; urlencoded through qs with `allowDots`; multipart
//! fields through qs; `text/*` as a string) after `Content-Encoding` gzip/deflate/br; the
//! refresh cookie is read with the `cookies` package's pattern, before the body; request fields
//! count only as strings. A test that passes against this backend has been read the way the
//! real one reads.
//!
//! It records every request, every token it **accepts** (a valid access jwt, a refresh token it
//! validated) and every token it **mints**, with the time and whether the request came through a
//! gateway (`x-forwarded-host` names which) or was the gateway's own revocation call. The test
//! harness uses that to assert that no token of an ended session was accepted after its ending.
#![allow(dead_code)]

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "qs.rs"]
pub mod qs;

pub const JWT_SECRET: &[u8] = b"mock-strapi-jwt-secret";
pub const PASSWORD: &str = "Password1!";
pub const REFRESH_COOKIE: &str = "strapi_up_refresh";
/// A Strapi API token with read access to users (for role look-ups).
pub const API_TOKEN: &str = "mock-api-token-read-users-0123456789";
/// The OAuth provider the mock enables (`GET /api/auth/github/callback?access_token=…`).
pub const PROVIDER: &str = "github";

/// The provider access token that logs `username` in through [`PROVIDER`].
pub fn provider_token(username: &str) -> String {
    format!("gho_{username}")
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub document_id: String,
    pub username: String,
    pub email: String,
    pub password: String,
    pub role: String,
    pub blocked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Rotated,
    /// Strapi deletes revoked session rows; the mock keeps them, marked, for tests to look at.
    Revoked,
}

#[derive(Debug, Clone)]
pub struct BackendSession {
    pub user_id: u64,
    pub status: Status,
    pub device_id: Option<String>,
    pub login_at: u64,
}

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Sent to the backend directly (a test showing what the backend itself accepts).
    Direct,
    /// Forwarded by a gateway for a client; the gateway's public address (`x-forwarded-host`).
    Gateway(String),
    /// The gateway's own call (`x-sessiongate-internal`, e.g. revoking an ended session).
    Internal,
}

/// A token the backend accepted as a credential.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub hash: [u8; 32],
    pub kind: &'static str,
    pub at_ms: i64,
    pub via: Via,
    pub route: String,
}

/// Tokens the backend issued.
#[derive(Debug, Clone)]
pub struct Minted {
    pub access: String,
    pub refresh: String,
    /// The refresh token that was exchanged for them (refresh), if any.
    pub parent: Option<String>,
    pub at_ms: i64,
    pub via: Via,
}

/// How the login route misbehaves, for bad-input tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMode {
    Normal,
    /// 200 with an HTML body.
    NonJson,
    /// 200 JSON without a jwt.
    NoToken,
    /// Tokens without a `sessionId` claim (as a backend without sessions of its own issues).
    NoSessionId,
}

pub struct MockState {
    pub users: Vec<User>,
    pub sessions: HashMap<String, BackendSession>,
    pub access_lifespan: u64,
    pub refresh_lifespan: u64,
    pub http_only: bool,
    pub seen: Vec<Seen>,
    pub accepted: Vec<Accepted>,
    pub minted: Vec<Minted>,
    pub login_mode: LoginMode,
    pub delay: Option<Duration>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn iso_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn hex32() -> String {
    (0..16).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET))
        .expect("HS256 signing cannot fail")
}

/// Verifies an HS256 token of the given `type`; returns (userId, sessionId).
pub fn verify(token: &str, kind: &str) -> Option<(u64, String)> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims.clear();
    v.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET), &v).ok()?;
    let c = data.claims;
    if c["type"] != kind {
        return None;
    }
    Some((c["userId"].as_str()?.parse().ok()?, c["sessionId"].as_str()?.to_string()))
}

/// What the request is, as Strapi reads it.
struct StrapiRequest {
    method: Method,
    path: String,
    uri: http::Uri,
    headers: HeaderMap,
    /// `ctx.request.body` (an object, a string for text bodies, or `{}`).
    body: Value,
    /// Size of the body as received.
    raw_len: usize,
    via: Via,
}

impl StrapiRequest {
    /// `body[key]` if it is a string (Strapi's `typeof x === 'string'` checks).
    fn string(&self, key: &str) -> Option<String> {
        self.body.get(key).and_then(Value::as_str).map(str::to_string)
    }
    /// `body[key]` if it is a non-empty string.
    fn nonempty(&self, key: &str) -> Option<String> {
        self.string(key).filter(|s| !s.is_empty())
    }
}

impl MockState {
    fn user_json(u: &User) -> Value {
        json!({
            "id": u.id, "documentId": u.document_id, "username": u.username, "email": u.email,
            "provider": "local", "confirmed": true, "blocked": u.blocked,
            "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z", "publishedAt": "2026-01-01T00:00:00.000Z",
        })
    }

    /// Creates a backend session and its (access, refresh) tokens.
    fn issue(
        &mut self,
        user_id: u64,
        device_id: Option<String>,
        parent: Option<&str>,
        via: &Via,
    ) -> (String, String, String) {
        let sid = hex32();
        self.sessions
            .insert(sid.clone(), BackendSession { user_id, status: Status::Active, device_id, login_at: now() });
        let t = now();
        let mut access_claims = json!({"userId": user_id.to_string(), "sessionId": sid, "type": "access", "iat": t, "exp": t + self.access_lifespan});
        if self.login_mode == LoginMode::NoSessionId {
            access_claims.as_object_mut().map(|c| c.remove("sessionId"));
        }
        let access = sign(&access_claims);
        let refresh = sign(
            &json!({"userId": user_id.to_string(), "sessionId": sid, "type": "refresh", "iat": t, "exp": t + self.refresh_lifespan}),
        );
        self.minted.push(Minted {
            access: access.clone(),
            refresh: refresh.clone(),
            parent: parent.map(str::to_string),
            at_ms: now_ms(),
            via: via.clone(),
        });
        (sid, access, refresh)
    }

    fn accept(&mut self, token: &str, kind: &'static str, req: &StrapiRequest) {
        self.accepted.push(Accepted {
            hash: hash(token),
            kind,
            at_ms: now_ms(),
            via: req.via.clone(),
            route: req.path.clone(),
        });
    }

    fn user(&self, id: u64) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    /// `invalidateRefreshToken(userId, deviceId?)`.
    fn revoke_user(&mut self, user_id: u64, device: Option<&str>) {
        for s in self.sessions.values_mut().filter(|s| {
            s.user_id == user_id
                && s.status == Status::Active
                && device.is_none_or(|d| s.device_id.as_deref() == Some(d))
        }) {
            s.status = Status::Revoked;
        }
    }

    /// `validateRefreshToken`: signature, type, an active session of that user.
    fn valid_refresh(&self, token: &str) -> Option<(u64, String)> {
        let (user, sid) = verify(token, "refresh")?;
        let s = self.sessions.get(&sid)?;
        (s.status == Status::Active && s.user_id == user).then_some((user, sid))
    }

    /// The users-permissions strategy: a valid access jwt of an existing, unblocked user.
    /// `Err` is the response (no token: 403 from the public role; a bad one: 401).
    #[allow(clippy::result_large_err)] // a test double; the response is the natural error here
    fn authenticate(&mut self, req: &StrapiRequest) -> Result<(u64, String), Response<Full<Bytes>>> {
        let Some(token) = strapi_bearer(&req.headers) else { return Err(forbidden()) };
        let (user, sid) = verify(&token, "access").ok_or_else(unauthorized)?;
        if self.user(user).is_none_or(|u| u.blocked) {
            return Err(unauthorized());
        }
        self.accept(&token, "access", req);
        Ok((user, sid))
    }
}

fn json_res(status: u16, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().expect("hv"));
    r
}

fn error(status: u16, name: &str, message: &str) -> Response<Full<Bytes>> {
    json_res(
        status,
        json!({"data": null, "error": {"status": status, "name": name, "message": message, "details": {}}}),
    )
}

fn unauthorized() -> Response<Full<Bytes>> {
    error(401, "UnauthorizedError", "Missing or invalid credentials")
}

fn forbidden() -> Response<Full<Bytes>> {
    error(403, "ForbiddenError", "Forbidden")
}

/// JavaScript's `\s`.
fn js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
    )
}

/// `String.prototype.split(/\s+/)`.
pub fn js_split_ws(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut in_space = false;
    for c in s.chars() {
        if js_space(c) {
            if !in_space {
                parts.push(String::new());
            }
            in_space = true;
        } else {
            in_space = false;
            if let Some(p) = parts.last_mut() {
                p.push(c);
            }
        }
    }
    parts
}

/// Node's view of a header: the first one (Node discards duplicate `authorization`), its bytes
/// as latin-1, spaces and tabs around it trimmed.
fn node_header(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let v = h.get(name)?;
    let s: String = v.as_bytes().iter().map(|&b| b as char).collect();
    Some(s.trim_matches([' ', '\t']).to_string())
}

/// users-permissions `getToken`: `split(/\s+/)`, two parts, the first `bearer` in any case.
pub fn strapi_bearer(h: &HeaderMap) -> Option<String> {
    let v = node_header(h, header::AUTHORIZATION).filter(|v| !v.is_empty())?;
    let parts = js_split_ws(&v);
    (parts.len() == 2 && parts[0].to_lowercase() == "bearer").then(|| parts[1].clone())
}

/// koa's `ctx.cookies.get(name)` (cookies 0.9, no signature check without options): the first
/// match of `(?:^|;) *name=([^;]*)` in the joined `Cookie` header, one pair of quotes off.
pub fn strapi_cookie(h: &HeaderMap, name: &str) -> Option<String> {
    let joined: Vec<String> =
        h.get_all(header::COOKIE).iter().map(|v| v.as_bytes().iter().map(|&b| b as char).collect()).collect();
    let header = joined.join("; ");
    let mut start = 0;
    while start <= header.len() {
        let at_boundary = start == 0 || header[..start].ends_with(';');
        if at_boundary {
            let rest = header[start..].trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                let value = after.split(';').next().unwrap_or("");
                let value = if value.starts_with('"') && value.len() >= 2 { &value[1..value.len() - 1] } else { value };
                return Some(value.to_string()).filter(|v| !v.is_empty());
            }
        }
        match header[start..].find(';') {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    None
}

/// Strapi's body middleware (koa-body 6, co-body, inflation, qs, formidable). `Err` is the
/// response it answers (400 / 415).
#[allow(clippy::result_large_err)]
async fn strapi_body(method: &Method, headers: &HeaderMap, raw: &Bytes) -> Result<Value, Response<Full<Bytes>>> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(Value::Object(Map::new()));
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim().to_string();
    let json_type = [
        "application/json",
        "application/json-patch+json",
        "application/vnd.api+json",
        "application/csp-report",
        "application/reports+json",
    ]
    .contains(&essence.as_str());
    let form = essence == "application/x-www-form-urlencoded";
    let text = essence.starts_with("text/");
    let multipart = essence.starts_with("multipart/");
    if !(json_type || form || text || multipart) {
        return Ok(Value::Object(Map::new()));
    }
    if multipart {
        // formidable reads the raw request: no Content-Encoding handling.
        return Ok(multipart_fields(&ct, raw.clone()).await);
    }
    // inflation: exactly one of these codings, compared as sent.
    let coding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let decoded: Vec<u8> = match coding {
        "identity" => raw.to_vec(),
        "gzip" | "deflate" => {
            let mut out = Vec::new();
            let ok = if raw.starts_with(&[0x1f, 0x8b]) {
                flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).is_ok()
            } else {
                flate2::read::ZlibDecoder::new(&raw[..]).read_to_end(&mut out).is_ok()
            };
            if !ok {
                return Err(error(400, "BadRequestError", "incorrect header check"));
            }
            out
        }
        "br" => {
            let mut out = Vec::new();
            if brotli_decompressor::Decompressor::new(&raw[..], 4096).read_to_end(&mut out).is_err() {
                return Err(error(400, "BadRequestError", "Decompression failed"));
            }
            out
        }
        other => {
            return Err(error(415, "UnsupportedMediaTypeError", &format!("Unsupported Content-Encoding: {other}")))
        }
    };
    // raw-body + iconv-lite: UTF-8, BOM stripped, invalid bytes replaced.
    let s = String::from_utf8_lossy(decoded.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&decoded)).into_owned();
    if json_type {
        if s.is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        let strict = s.trim_start_matches([' ', '\t', '\n', '\r']).starts_with(['{', '[']);
        let bad = || error(400, "BadRequestError", "Invalid JSON");
        if !strict {
            return Err(bad());
        }
        // JSON.parse: duplicate keys, the last wins (serde_json's Map does the same).
        let v: Value = serde_json::from_str(&s).map_err(|_| bad())?;
        if has_proto(&v) {
            return Err(error(400, "BadRequestError", "Object contains forbidden prototype property"));
        }
        return Ok(v);
    }
    if form {
        return Ok(qs::parse(&s, true));
    }
    Ok(Value::String(s))
}

fn has_proto(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("__proto__") || m.values().any(has_proto),
        Value::Array(a) => a.iter().any(has_proto),
        _ => false,
    }
}

/// formidable with `multiples`: parts without a `Content-Type` are fields, named like qs keys.
async fn multipart_fields(ct: &str, body: Bytes) -> Value {
    let Ok(boundary) = multer::parse_boundary(ct) else { return Value::Object(Map::new()) };
    let stream = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(body)]);
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut pairs = Vec::new();
    while let Ok(Some(field)) = parts.next_field().await {
        if field.content_type().is_some() {
            continue;
        }
        let name = field.name().unwrap_or_default().to_string();
        if let Ok(b) = field.bytes().await {
            pairs.push((name, String::from_utf8_lossy(&b).into_owned()));
        }
    }
    qs::parse_pairs(&pairs, false)
}

/// Strapi's router: case-insensitive, one trailing slash ignored, query ignored. No other
/// normalisation (`//`, `%72`, `./` do not match).
fn route_path(uri: &http::Uri) -> String {
    let p = uri.path().to_ascii_lowercase();
    match p.strip_suffix('/') {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => p,
    }
}

fn with_refresh(state: &MockState, headers: &HeaderMap, mut body: Value, refresh: &str) -> Response<Full<Bytes>> {
    let cookie_mode = state.http_only || headers.get("x-strapi-refresh-cookie").is_some_and(|v| v == "httpOnly");
    if cookie_mode {
        let mut r = json_res(200, body);
        r.headers_mut().append(
            header::SET_COOKIE,
            format!("{REFRESH_COOKIE}={refresh}; path=/; samesite=lax; httponly").parse().expect("hv"),
        );
        r.headers_mut().append(
            header::SET_COOKIE,
            format!("{REFRESH_COOKIE}.sig={}; path=/; samesite=lax; httponly", hex32()).parse().expect("hv"),
        );
        r
    } else {
        body["refreshToken"] = Value::String(refresh.to_string());
        json_res(200, body)
    }
}

fn handle(state: &Mutex<MockState>, req: &StrapiRequest) -> Response<Full<Bytes>> {
    let mut st = state.lock().expect("mock state");
    let headers = &req.headers;
    let s = |k: &str| req.string(k);
    match (req.method.clone(), req.path.as_str()) {
        (Method::GET, "/_health") => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        (Method::POST, "/api/auth/local") => {
            match st.login_mode {
                LoginMode::NonJson => {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"<html>maintenance</html>")));
                    r.headers_mut().insert(header::CONTENT_TYPE, "text/html".parse().expect("hv"));
                    return r;
                }
                LoginMode::NoToken => return json_res(200, json!({"user": {"id": 1}})),
                LoginMode::Normal | LoginMode::NoSessionId => {}
            }
            let (Some(ident), Some(pass)) = (s("identifier"), s("password")) else {
                return error(400, "ValidationError", "identifier and password are required");
            };
            let ident = ident.to_lowercase();
            let Some(u) = st
                .users
                .iter()
                .find(|u| (u.email == ident || u.username.to_lowercase() == ident) && u.password == pass)
                .cloned()
            else {
                return error(400, "ValidationError", "Invalid identifier or password");
            };
            if u.blocked {
                return error(400, "ApplicationError", "Your account has been blocked by an administrator");
            }
            let (_, access, refresh) = st.issue(u.id, req.nonempty("deviceId"), None, &req.via);
            let body = json!({"jwt": access, "user": MockState::user_json(&u)});
            with_refresh(&st, headers, body, &refresh)
        }
        (Method::POST, "/api/auth/local/register") => {
            let (Some(username), Some(email), Some(password)) = (s("username"), s("email"), s("password")) else {
                return error(400, "ValidationError", "username, email and password are required");
            };
            if st.users.iter().any(|u| u.email == email || u.username == username) {
                return error(400, "ApplicationError", "Email or Username are already taken");
            }
            let id = st.users.iter().map(|u| u.id).max().unwrap_or(0) + 1;
            let u = User {
                id,
                document_id: format!("doc{}", &hex32()[..20]),
                username,
                email,
                password,
                role: "Authenticated".into(),
                blocked: false,
            };
            st.users.push(u.clone());
            let (_, access, refresh) = st.issue(u.id, req.nonempty("deviceId"), None, &req.via);
            let body = json!({"jwt": access, "user": MockState::user_json(&u)});
            with_refresh(&st, headers, body, &refresh)
        }
        (Method::GET, p) if p.starts_with("/api/auth/") && p.ends_with("/callback") => {
            // A provider login: the provider's access token names the user (no network here).
            let provider = &p["/api/auth/".len()..p.len() - "/callback".len()];
            if provider != PROVIDER {
                return error(400, "ApplicationError", "This provider is disabled");
            }
            let token = req
                .uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")))
                .unwrap_or("")
                .to_string();
            let Some(u) = st.users.iter().find(|u| provider_token(&u.username) == token).cloned() else {
                return error(400, "ApplicationError", "Invalid provider token");
            };
            let (_, access, refresh) = st.issue(u.id, None, None, &req.via);
            with_refresh(&st, headers, json!({"jwt": access, "user": MockState::user_json(&u)}), &refresh)
        }
        (Method::POST, "/api/auth/refresh") => {
            // Cookie first, then the body; only a string counts.
            let token = strapi_cookie(headers, REFRESH_COOKIE).or_else(|| s("refreshToken"));
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                return error(400, "BadRequestError", "Missing refresh token");
            };
            let invalid = || error(401, "UnauthorizedError", "Invalid refresh token");
            let Some((user_id, sid)) = st.valid_refresh(&token) else { return invalid() };
            st.accept(&token, "refresh", req);
            let device = match st.sessions.get_mut(&sid) {
                Some(sess) => {
                    sess.status = Status::Rotated;
                    sess.device_id.clone()
                }
                None => return invalid(),
            };
            let (_, access, refresh) = st.issue(user_id, device, Some(&token), &req.via);
            with_refresh(&st, headers, json!({"jwt": access}), &refresh)
        }
        (Method::POST, "/api/auth/logout") => {
            let (user_id, bearer_sid) = match st.authenticate(req) {
                Ok(x) => x,
                Err(r) => return r,
            };
            // revokeLogoutSessions, in its order.
            if s("scope").as_deref() == Some("all") {
                st.revoke_user(user_id, None);
            } else if let Some(dev) = req.nonempty("deviceId") {
                st.revoke_user(user_id, Some(&dev));
            } else {
                let mut current = Some(bearer_sid);
                let refresh = strapi_cookie(headers, REFRESH_COOKIE).or_else(|| s("refreshToken"));
                if let Some(t) = refresh.filter(|t| !t.is_empty()) {
                    if let Some((_, sid)) = st.valid_refresh(&t) {
                        st.accept(&t, "refresh", req);
                        current = Some(sid);
                    }
                }
                match current {
                    // revokeSessionById: only the user's own session.
                    Some(sid) => {
                        if let Some(sess) = st.sessions.get_mut(&sid).filter(|x| x.user_id == user_id) {
                            sess.status = Status::Revoked;
                        }
                    }
                    None => st.revoke_user(user_id, None),
                }
            }
            let mut r = json_res(200, json!({"ok": true}));
            r.headers_mut().append(
                header::SET_COOKIE,
                format!("{REFRESH_COOKIE}=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT").parse().expect("hv"),
            );
            r
        }
        (Method::GET, "/api/auth/sessions") => {
            let (user_id, current) = match st.authenticate(req) {
                Ok(x) => x,
                Err(r) => return r,
            };
            let data: Vec<Value> = st
                .sessions
                .iter()
                .filter(|(_, x)| x.user_id == user_id && x.status == Status::Active)
                .map(|(id, x)| json!({"id": id, "deviceId": x.device_id, "current": *id == current, "loginAt": iso_now(), "lastActiveAt": iso_now()}))
                .collect();
            json_res(200, json!({"data": data}))
        }
        (Method::DELETE, p) if p.starts_with("/api/auth/sessions/") => {
            let (user_id, _) = match st.authenticate(req) {
                Ok(x) => x,
                Err(r) => return r,
            };
            // The route parameter as Strapi's router decodes it.
            let raw = &req.uri.path()["/api/auth/sessions/".len()..];
            let sid = percent_encoding::percent_decode_str(raw.trim_end_matches('/')).decode_utf8_lossy().into_owned();
            match st.sessions.get_mut(&sid).filter(|x| x.user_id == user_id && x.status != Status::Revoked) {
                Some(sess) => {
                    sess.status = Status::Revoked;
                    json_res(200, json!({"data": {}}))
                }
                None => error(404, "NotFoundError", "Session not found"),
            }
        }
        (Method::POST, "/api/auth/change-password") => {
            let (user_id, _) = match st.authenticate(req) {
                Ok(x) => x,
                Err(r) => return r,
            };
            let (Some(cur), Some(new), Some(conf)) = (s("currentPassword"), s("password"), s("passwordConfirmation"))
            else {
                return error(
                    400,
                    "ValidationError",
                    "currentPassword, password and passwordConfirmation are required",
                );
            };
            if new != conf {
                return error(400, "ValidationError", "Passwords do not match");
            }
            let Some(u) = st.users.iter_mut().find(|u| u.id == user_id) else { return unauthorized() };
            if u.password != cur {
                return error(400, "ValidationError", "The provided current password is invalid");
            }
            if cur == new {
                return error(400, "ValidationError", "Your new password must be different than your current password");
            }
            u.password = new;
            let u = u.clone();
            // reissueTokensAfterPasswordChange: every session of the user goes, a new one opens.
            st.revoke_user(user_id, None);
            let device = req.nonempty("deviceId").unwrap_or_else(hex32);
            let (_, access, refresh) = st.issue(user_id, Some(device), None, &req.via);
            json_res(200, json!({"jwt": access, "refreshToken": refresh, "user": MockState::user_json(&u)}))
        }
        (Method::POST, "/api/auth/reset-password") => {
            let (Some(code), Some(new), Some(conf)) = (s("code"), s("password"), s("passwordConfirmation")) else {
                return error(400, "ValidationError", "code, password and passwordConfirmation are required");
            };
            if new != conf {
                return error(400, "ValidationError", "Passwords do not match");
            }
            let Some(u) = st.users.iter_mut().find(|u| code == format!("reset-{}", u.username)) else {
                return error(400, "ValidationError", "Incorrect code provided");
            };
            u.password = new;
            let u = u.clone();
            st.revoke_user(u.id, None);
            let device = req.nonempty("deviceId").unwrap_or_else(hex32);
            let (_, access, refresh) = st.issue(u.id, Some(device), None, &req.via);
            json_res(200, json!({"jwt": access, "refreshToken": refresh, "user": MockState::user_json(&u)}))
        }
        (Method::GET, "/api/users/me") => match st.authenticate(req) {
            Ok((user_id, _)) => match st.user(user_id) {
                Some(u) => json_res(200, MockState::user_json(u)),
                None => unauthorized(),
            },
            Err(r) => r,
        },
        (Method::GET, p) if p.starts_with("/api/users/") && p["/api/users/".len()..].parse::<u64>().is_ok() => {
            // Only an API token may read other users (as a Strapi API token with users read).
            if strapi_bearer(headers).as_deref() != Some(API_TOKEN) {
                return forbidden();
            }
            let id: u64 = p["/api/users/".len()..].parse().unwrap_or(0);
            let Some(u) = st.user(id) else { return error(404, "NotFoundError", "Not Found") };
            let mut v = MockState::user_json(u);
            if req.uri.query().is_some_and(|q| q.contains("populate=role")) {
                v["role"] = json!({"id": 1, "name": u.role, "type": u.role.to_lowercase()});
            }
            json_res(200, v)
        }
        (Method::PUT, p) if p.starts_with("/api/users/") => {
            if let Err(r) = st.authenticate(req) {
                return r;
            }
            let Ok(id) = p["/api/users/".len()..].parse::<u64>() else {
                return error(404, "NotFoundError", "Not Found");
            };
            let password = s("password");
            let Some(u) = st.users.iter_mut().find(|u| u.id == id) else {
                return error(404, "NotFoundError", "Not Found");
            };
            if let Some(pw) = password {
                u.password = pw;
            }
            let u = u.clone();
            json_res(200, MockState::user_json(&u))
        }
        (Method::POST, "/api/upload") => match st.authenticate(req) {
            Ok(_) => json_res(200, json!({"received": req.raw_len})),
            Err(r) => r,
        },
        (Method::GET, "/api/test-hooks/forged-denial") => {
            // Not Strapi: a backend that answers in the gateway's header namespace, to show the
            // gateway never lets a backend speak for it.
            let mut r = error(401, "UnauthorizedError", "forged");
            r.headers_mut().insert("x-sessiongate-reason", "session_terminated".parse().expect("hv"));
            r.headers_mut().insert("x-sessiongate-internal", "revocation".parse().expect("hv"));
            r
        }
        (Method::GET, "/api/echo") => {
            // Shows the backend's view of the request: headers as received.
            let h: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").to_string())))
                .collect();
            json_res(200, json!({"headers": h, "query": req.uri.query()}))
        }
        (Method::GET, p) if p.starts_with("/api/") && p != "/api/" => match st.authenticate(req) {
            Ok(_) => json_res(
                200,
                json!({"data": [{"id": 1, "documentId": "art1", "title": "Hello"}], "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 1, "total": 1}}}),
            ),
            Err(r) => r,
        },
        _ => error(404, "NotFoundError", "Not Found"),
    }
}

fn via(h: &HeaderMap) -> Via {
    if h.contains_key("x-sessiongate-internal") {
        Via::Internal
    } else if let Some(host) = h.get("x-forwarded-host").and_then(|v| v.to_str().ok()) {
        Via::Gateway(host.to_string())
    } else if h.contains_key("x-forwarded-for") {
        Via::Gateway(String::new())
    } else {
        Via::Direct
    }
}

/// Every running mock, by address (the test harness finds a gateway's backend here).
static REGISTRY: Mutex<Vec<(SocketAddr, Weak<Mutex<MockState>>)>> = Mutex::new(Vec::new());

/// The state of the mock listening on `addr`, if one runs.
pub fn lookup(addr: SocketAddr) -> Option<Arc<Mutex<MockState>>> {
    let reg = REGISTRY.lock().ok()?;
    reg.iter().rev().find(|(a, _)| *a == addr).and_then(|(_, w)| w.upgrade())
}

/// A running mock backend.
pub struct MockStrapi {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MockState>>,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for MockStrapi {
    /// Stops accepting and closes every open connection, like a backend process that died.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

impl MockStrapi {
    /// Starts on `addr` (port 0 for an ephemeral port) with users alice, bob and carol.
    pub async fn start_on(addr: SocketAddr) -> MockStrapi {
        let users = ["alice", "bob", "carol"]
            .iter()
            .enumerate()
            .map(|(i, n)| User {
                id: i as u64 + 1,
                document_id: format!("{n}docid000000000000000"),
                username: n.to_string(),
                email: format!("{n}@example.com"),
                password: PASSWORD.to_string(),
                role: if *n == "carol" { "Editor".into() } else { "Authenticated".into() },
                blocked: false,
            })
            .collect();
        let state = Arc::new(Mutex::new(MockState {
            users,
            sessions: HashMap::new(),
            access_lifespan: 600,
            refresh_lifespan: 1_209_600,
            http_only: false,
            seen: Vec::new(),
            accepted: Vec::new(),
            minted: Vec::new(),
            login_mode: LoginMode::Normal,
            delay: None,
        }));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind mock backend");
        let addr = listener.local_addr().expect("addr");
        if let Ok(mut reg) = REGISTRY.lock() {
            reg.retain(|(_, w)| w.strong_count() > 0);
            reg.push((addr, Arc::downgrade(&state)));
        }
        let st = state.clone();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let st = st.clone();
                let mut stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |mut req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            if let Some(res) = long_lived(&st, &mut req).await {
                                return Ok::<_, std::convert::Infallible>(res);
                            }
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let delay = {
                                let mut s = st.lock().expect("mock state");
                                s.seen.push(Seen {
                                    method: parts.method.clone(),
                                    path: parts.uri.to_string(),
                                    headers: parts.headers.clone(),
                                    body: body.clone(),
                                });
                                s.delay
                            };
                            if let Some(d) = delay {
                                tokio::time::sleep(d).await;
                            }
                            let res = match strapi_body(&parts.method, &parts.headers, &body).await {
                                Err(r) => r,
                                Ok(parsed) => {
                                    let req = StrapiRequest {
                                        method: parts.method.clone(),
                                        path: route_path(&parts.uri),
                                        uri: parts.uri.clone(),
                                        via: via(&parts.headers),
                                        headers: parts.headers,
                                        body: parsed,
                                        raw_len: body.len(),
                                    };
                                    handle(&st, &req)
                                }
                            };
                            Ok::<_, std::convert::Infallible>(res.map(|b| b.boxed()))
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop_rx.changed() => {}
                    }
                });
            }
        });
        MockStrapi { addr, state, task, stop }
    }

    pub async fn start() -> MockStrapi {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Adds users (password [`PASSWORD`], role Authenticated).
    pub fn add_users<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) {
        self.with(|s| {
            for n in names {
                let n = n.as_ref();
                let id = s.users.len() as u64 + 1;
                s.users.push(User {
                    id,
                    document_id: format!("{n:0<24}").chars().take(24).collect(),
                    username: n.to_string(),
                    email: format!("{n}@example.com"),
                    password: PASSWORD.to_string(),
                    role: "Authenticated".into(),
                    blocked: false,
                });
            }
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut MockState) -> R) -> R {
        f(&mut self.state.lock().expect("mock state"))
    }

    /// How many requests whose path (without query) matches `path` exactly reached the backend.
    pub fn count(&self, method: &Method, path: &str) -> usize {
        self.count_where(method, path, |_| true)
    }

    /// Like [`MockStrapi::count`], without the gateway's own calls (revocations).
    pub fn count_from_clients(&self, method: &Method, path: &str) -> usize {
        self.count_where(method, path, |r| via(&r.headers) != Via::Internal)
    }

    fn count_where(&self, method: &Method, path: &str, keep: impl Fn(&Seen) -> bool) -> usize {
        self.with(|s| {
            s.seen.iter().filter(|r| r.method == *method && r.path.split('?').next() == Some(path) && keep(r)).count()
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    pub fn session_status(&self, sid: &str) -> Option<Status> {
        self.with(|s| s.sessions.get(sid).map(|x| x.status))
    }

    /// Whether the backend accepted `token` (as any credential) at or after `since_ms`.
    pub fn accepted_since(&self, token: &str, since_ms: i64) -> bool {
        let h = hash(token);
        self.with(|s| s.accepted.iter().any(|a| a.hash == h && a.at_ms >= since_ms && a.via != Via::Internal))
    }

    /// Tokens minted at or after `since_ms` from refreshing one of `parents`.
    pub fn minted_from(&self, parents: &[String], since_ms: i64) -> usize {
        self.with(|s| {
            s.minted
                .iter()
                .filter(|m| m.at_ms >= since_ms && m.via != Via::Internal)
                .filter(|m| m.parent.as_ref().is_some_and(|p| parents.contains(p)))
                .count()
        })
    }

    /// Logs in directly at the backend (bypassing the gateway): (jwt, refreshToken).
    pub fn issue_direct(&self, user_id: u64) -> (String, String) {
        self.with(|s| {
            let (_, a, r) = s.issue(user_id, None, None, &Via::Direct);
            (a, r)
        })
    }
}

type MockBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// Routes of an app's plugins that hold a connection open, as a Strapi app with a WebSocket or
/// event-stream plugin would (Strapi itself has none): `GET /ws/echo` switches to an echo of
/// raw bytes, `GET /api/events` streams `data: <n>` every 100 ms, `GET /api/poll` answers after
/// 30 s. Each records the request as seen; none looks at tokens (the gateway does).
async fn long_lived(state: &Mutex<MockState>, req: &mut Request<Incoming>) -> Option<Response<MockBody>> {
    let path = req.uri().path().to_string();
    if req.method() != Method::GET || !["/ws/echo", "/api/events", "/api/poll"].contains(&path.as_str()) {
        return None;
    }
    if let Ok(mut s) = state.lock() {
        s.seen.push(Seen {
            method: req.method().clone(),
            path: req.uri().to_string(),
            headers: req.headers().clone(),
            body: Bytes::new(),
        });
    }
    let mut res = Response::new(Full::new(Bytes::new()).boxed());
    match path.as_str() {
        "/ws/echo" => {
            if req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()) != Some("websocket") {
                *res.status_mut() = StatusCode::BAD_REQUEST;
                return Some(res);
            }
            let on = hyper::upgrade::on(req);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(up) = on.await else { return };
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = res.headers_mut();
            h.insert(header::UPGRADE, "websocket".parse().expect("hv"));
            h.insert(header::CONNECTION, "Upgrade".parse().expect("hv"));
            h.insert("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().expect("hv"));
        }
        "/api/events" => {
            let ticks = futures_util::stream::unfold(0u64, |n| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let frame = hyper::body::Frame::data(Bytes::from(format!("data: {n}\n\n")));
                Some((Ok::<_, std::convert::Infallible>(frame), n + 1))
            });
            *res.body_mut() = http_body_util::StreamBody::new(ticks).boxed();
            res.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().expect("hv"));
        }
        _ => {
            // A long poll: the answer (its head) comes when there is news — here, in 30 s.
            tokio::time::sleep(Duration::from_secs(30)).await;
            *res.body_mut() = Full::new(Bytes::from_static(b"{}")).boxed();
        }
    }
    Some(res)
}

/// The backend session id inside a token (unverified; test helper).
pub fn backend_sid(token: &str) -> String {
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).expect("jwt");
    claims["sessionId"].as_str().expect("sessionId").to_string()
}
