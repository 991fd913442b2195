//! A Strapi v5 (users-permissions, `jwtManagement: 'refresh'`) look-alike for tests and for
//! trying the gateway by hand (`cargo run --example mock-backend`). It follows
//! `shared/strapi-v5.md`: the same routes, status codes, JSON shapes, HS256 claims, refresh
//! rotation, httpOnly cookie mode, and — the gap sessiongate closes — access tokens that stay
//! valid after logout until they expire.
//!
//! It records every request it receives so tests can prove what never reached the backend.
#![allow(dead_code)]

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const JWT_SECRET: &[u8] = b"mock-strapi-jwt-secret";
pub const PASSWORD: &str = "Password1!";
pub const REFRESH_COOKIE: &str = "strapi_up_refresh";
/// A Strapi API token with read access to users (for role look-ups).
pub const API_TOKEN: &str = "mock-api-token-read-users-0123456789";

#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub document_id: String,
    pub username: String,
    pub email: String,
    pub password: String,
    pub role: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Rotated,
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

/// How the login route misbehaves, for bad-input tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMode {
    Normal,
    /// 200 with an HTML body.
    NonJson,
    /// 200 JSON without a jwt.
    NoToken,
}

pub struct MockState {
    pub users: Vec<User>,
    pub sessions: HashMap<String, BackendSession>,
    pub access_lifespan: u64,
    pub refresh_lifespan: u64,
    pub http_only: bool,
    pub seen: Vec<Seen>,
    pub login_mode: LoginMode,
    pub delay: Option<Duration>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn iso_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn hex32() -> String {
    (0..16).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
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

impl MockState {
    fn user_json(u: &User) -> Value {
        json!({
            "id": u.id, "documentId": u.document_id, "username": u.username, "email": u.email,
            "provider": "local", "confirmed": true, "blocked": false,
            "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-01-01T00:00:00.000Z", "publishedAt": "2026-01-01T00:00:00.000Z",
        })
    }

    /// Creates a backend session and its (access, refresh) tokens.
    fn issue(&mut self, user_id: u64, device_id: Option<String>) -> (String, String, String) {
        let sid = hex32();
        self.sessions
            .insert(sid.clone(), BackendSession { user_id, status: Status::Active, device_id, login_at: now() });
        let t = now();
        let access = sign(
            &json!({"userId": user_id.to_string(), "sessionId": sid, "type": "access", "iat": t, "exp": t + self.access_lifespan}),
        );
        let refresh = sign(
            &json!({"userId": user_id.to_string(), "sessionId": sid, "type": "refresh", "exp": t + self.refresh_lifespan}),
        );
        (sid, access, refresh)
    }

    fn user(&self, id: u64) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn revoke_user(&mut self, user_id: u64) {
        for s in self.sessions.values_mut().filter(|s| s.user_id == user_id && s.status == Status::Active) {
            s.status = Status::Revoked;
        }
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

fn bearer(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, tok) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim().to_string())
}

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Access-token authentication as Strapi does it: signature, `exp` and `type` only — stateless.
/// `Err` is the response to send.
#[allow(clippy::result_large_err)] // a test double; the response is the natural error here
fn authenticate(h: &HeaderMap) -> Result<(u64, String), Response<Full<Bytes>>> {
    match bearer(h) {
        None => Err(forbidden()),
        Some(t) => verify(&t, "access").ok_or_else(unauthorized),
    }
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

fn handle(
    state: &Mutex<MockState>,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let mut st = state.lock().expect("mock state");
    let path = route_path(uri);
    let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let s = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    match (method.clone(), path.as_str()) {
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
                LoginMode::Normal => {}
            }
            let ident = s("identifier").unwrap_or_default().to_lowercase();
            let pass = s("password").unwrap_or_default();
            let Some(u) = st
                .users
                .iter()
                .find(|u| (u.email == ident || u.username.to_lowercase() == ident) && u.password == pass)
                .cloned()
            else {
                return error(400, "ValidationError", "Invalid identifier or password");
            };
            let (_, access, refresh) = st.issue(u.id, s("deviceId"));
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
            };
            st.users.push(u.clone());
            let (_, access, refresh) = st.issue(u.id, None);
            let body = json!({"jwt": access, "user": MockState::user_json(&u)});
            with_refresh(&st, headers, body, &refresh)
        }
        (Method::POST, "/api/auth/refresh") => {
            let Some(token) = cookie(headers, REFRESH_COOKIE).or_else(|| s("refreshToken")) else {
                return error(400, "BadRequestError", "Missing refresh token");
            };
            let invalid = || error(401, "UnauthorizedError", "Invalid refresh token");
            let Some((user_id, sid)) = verify(&token, "refresh") else { return invalid() };
            let device = match st.sessions.get_mut(&sid) {
                Some(sess) if sess.status == Status::Active => {
                    sess.status = Status::Rotated;
                    sess.device_id.clone()
                }
                _ => return invalid(),
            };
            let (_, access, refresh) = st.issue(user_id, device);
            with_refresh(&st, headers, json!({"jwt": access}), &refresh)
        }
        (Method::POST, "/api/auth/logout") => {
            let (user_id, bearer_sid) = match authenticate(headers) {
                Ok(x) => x,
                Err(r) => return r,
            };
            if s("scope").as_deref() == Some("all") {
                st.revoke_user(user_id);
            } else if let Some(dev) = s("deviceId") {
                for sess in st
                    .sessions
                    .values_mut()
                    .filter(|x| x.user_id == user_id && x.device_id.as_deref() == Some(dev.as_str()))
                {
                    sess.status = Status::Revoked;
                }
            } else {
                let target = s("refreshToken")
                    .or_else(|| cookie(headers, REFRESH_COOKIE))
                    .and_then(|t| verify(&t, "refresh"))
                    .filter(|(u, _)| *u == user_id)
                    .map(|(_, sid)| sid)
                    .unwrap_or(bearer_sid);
                if let Some(sess) = st.sessions.get_mut(&target) {
                    sess.status = Status::Revoked;
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
            let (user_id, current) = match authenticate(headers) {
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
        (Method::POST, "/api/auth/change-password") => {
            let (user_id, _) = match authenticate(headers) {
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
            u.password = new;
            let u = u.clone();
            st.revoke_user(user_id);
            let (_, access, refresh) = st.issue(user_id, None);
            with_refresh(&st, headers, json!({"jwt": access, "user": MockState::user_json(&u)}), &refresh)
        }
        (Method::POST, "/api/auth/reset-password") => {
            let code = s("code").unwrap_or_default();
            let (Some(new), Some(conf)) = (s("password"), s("passwordConfirmation")) else {
                return error(400, "ValidationError", "password and passwordConfirmation are required");
            };
            if new != conf {
                return error(400, "ValidationError", "Passwords do not match");
            }
            let Some(u) = st.users.iter_mut().find(|u| code == format!("reset-{}", u.username)) else {
                return error(400, "ValidationError", "Incorrect code provided");
            };
            u.password = new;
            let u = u.clone();
            st.revoke_user(u.id);
            let (_, access, refresh) = st.issue(u.id, None);
            with_refresh(&st, headers, json!({"jwt": access, "user": MockState::user_json(&u)}), &refresh)
        }
        (Method::GET, "/api/users/me") => match authenticate(headers) {
            Ok((user_id, _)) => match st.user(user_id) {
                Some(u) => json_res(200, MockState::user_json(u)),
                None => unauthorized(),
            },
            Err(r) => r,
        },
        (Method::GET, p) if p.starts_with("/api/users/") && p["/api/users/".len()..].parse::<u64>().is_ok() => {
            // Only an API token may read other users (as a Strapi API token with users read).
            if bearer(headers).as_deref() != Some(API_TOKEN) {
                return forbidden();
            }
            let id: u64 = p["/api/users/".len()..].parse().unwrap_or(0);
            let Some(u) = st.user(id) else { return error(404, "NotFoundError", "Not Found") };
            let mut v = MockState::user_json(u);
            if uri.query().is_some_and(|q| q.contains("populate=role")) {
                v["role"] = json!({"id": 1, "name": u.role, "type": u.role.to_lowercase()});
            }
            json_res(200, v)
        }
        (Method::PUT, p) if p.starts_with("/api/users/") => {
            if let Err(r) = authenticate(headers) {
                return r;
            }
            let Ok(id) = p["/api/users/".len()..].parse::<u64>() else {
                return error(404, "NotFoundError", "Not Found");
            };
            let Some(u) = st.users.iter_mut().find(|u| u.id == id) else {
                return error(404, "NotFoundError", "Not Found");
            };
            if let Some(pw) = s("password") {
                u.password = pw;
            }
            let u = u.clone();
            json_res(200, MockState::user_json(&u))
        }
        (Method::POST, "/api/upload") => match authenticate(headers) {
            Ok(_) => json_res(200, json!({"received": body.len()})),
            Err(r) => r,
        },
        (Method::GET, "/api/echo") => {
            // Shows the backend's view of the request: headers as received.
            let h: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").to_string())))
                .collect();
            json_res(200, json!({"headers": h, "query": uri.query()}))
        }
        (Method::GET, p) if p.starts_with("/api/") && p != "/api/" => match authenticate(headers) {
            Ok(_) => json_res(
                200,
                json!({"data": [{"id": 1, "documentId": "art1", "title": "Hello"}], "meta": {"pagination": {"page": 1, "pageSize": 25, "pageCount": 1, "total": 1}}}),
            ),
            Err(r) => r,
        },
        _ => error(404, "NotFoundError", "Not Found"),
    }
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
    /// Starts on `addr` (port 0 for an ephemeral port) with users alice and bob.
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
            })
            .collect();
        let state = Arc::new(Mutex::new(MockState {
            users,
            sessions: HashMap::new(),
            access_lifespan: 600,
            refresh_lifespan: 1_209_600,
            http_only: false,
            seen: Vec::new(),
            login_mode: LoginMode::Normal,
            delay: None,
        }));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind mock backend");
        let addr = listener.local_addr().expect("addr");
        let st = state.clone();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let st = st.clone();
                let mut stop_rx = stop_rx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
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
                            Ok::<_, std::convert::Infallible>(handle(
                                &st,
                                &parts.method,
                                &parts.uri,
                                &parts.headers,
                                &body,
                            ))
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
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
        self.with(|s| s.seen.iter().filter(|r| r.method == *method && r.path.split('?').next() == Some(path)).count())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    pub fn session_status(&self, sid: &str) -> Option<Status> {
        self.with(|s| s.sessions.get(sid).map(|x| x.status))
    }

    /// Logs in directly at the backend (bypassing the gateway): (jwt, refreshToken).
    pub fn issue_direct(&self, user_id: u64) -> (String, String) {
        self.with(|s| {
            let (_, a, r) = s.issue(user_id, None);
            (a, r)
        })
    }
}

/// The backend session id inside a token (unverified; test helper).
pub fn backend_sid(token: &str) -> String {
    let claims = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).expect("jwt");
    claims["sessionId"].as_str().expect("sessionId").to_string()
}
