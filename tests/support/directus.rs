//! A Directus 11.3.5 look-alike (its REST auth surface) for the tests of the coming `directus`
//! preset. It follows `shared/directus-11.md`, which was observed on a real 11.3.5, and reads
//! requests **as Directus does**, not as the gateway would like:
//! - routes as Express matches them: any letter case, a trailing slash and `//` inside accepted,
//!   but not a leading `//`, `%`-escapes, dot segments or `;`;
//! - bodies through `express.json` only: `application/json` (any case; a charset other than
//!   UTF-8 is 400), `Content-Encoding` gzip or deflate (any case) or identity, anything else
//!   400; every other content type reads as `{}`; duplicate keys: the last wins;
//! - the access token from `Authorization` (trimmed, split on single spaces, two parts, scheme
//!   any case; anything else is ignored), else `?access_token` (qs: a repeated or `[]` key is
//!   an array, which never authenticates), both at once 400; the `directus_session_token` cookie
//!   only when neither is present (first occurrence wins, quotes and `%`-escapes undone);
//! - modes `json`, `cookie` and `session` for login, refresh and logout, with Directus's mode
//!   selection, in-place rotation (json, cookie) and the 10 s grace of session mode.
//!
//! The gap sessiongate closes is reproduced: in json and cookie mode an access JWT stays valid
//! after logout until `exp`, a password change revokes nothing, and a suspended user's tokens
//! live on.
//!
//! `POST /graphql/system` (and below it, as `router.use` mounts it) is modelled in `graphql`:
//! read with the `graphql-parser` crate — another parser than the gateway's — and executed as
//! graphql-js executes it (operation selection, fragments, `@skip` / `@include`, variables,
//! serial mutations, errors next to `null` fields with HTTP 200).
#![allow(dead_code)]
// A test double: the response Directus would send is the natural error of its steps.
#![allow(clippy::result_large_err)]

#[path = "directus_graphql.rs"]
mod graphql;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The signing secret (`SECRET`).
pub const SECRET: &str = "directus-mock-secret-0123456789abcdef";
pub const PASSWORD: &str = "Password1!";
pub const REFRESH_COOKIE: &str = "directus_refresh_token";
pub const SESSION_COOKIE: &str = "directus_session_token";

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password: String,
    pub role: Option<String>,
    /// `active`, `suspended`, `archived`, …
    pub status: String,
    pub admin: bool,
    /// A static token (`directus_users.token`).
    pub token: Option<String>,
}

/// A `directus_sessions` row.
#[derive(Debug, Clone)]
pub struct Row {
    pub user: String,
    /// Unix ms.
    pub expires: i64,
    pub next_token: Option<String>,
}

pub struct MockState {
    pub users: Vec<User>,
    /// Keyed by the refresh (session) token.
    pub sessions: HashMap<String, Row>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub session_ttl: Duration,
    pub grace: Duration,
    /// `LOGIN_STALL_TIME` (Directus: 500 ms; 0 here unless a test wants it).
    pub login_stall: Duration,
    /// Every request as received: (method, path and query, headers).
    pub seen: Vec<(Method, String, HeaderMap)>,
    /// Every access credential accepted: (token, unix ms).
    pub accepted: Vec<(String, i64)>,
    /// Every refresh that minted tokens: (the refresh token it was given, unix ms).
    pub minted: Vec<(String, i64)>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `nanoid(64)`.
fn nanoid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    (0..64).map(|_| ALPHABET[rand::random::<u8>() as usize % 64] as char).collect()
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The error body: `{"errors":[{"message","extensions":{"code",…}}]}`.
fn error(status: u16, code: &str, message: &str, extra: Value) -> Response<Full<Bytes>> {
    let mut ext = json!({ "code": code });
    if let (Value::Object(e), Value::Object(x)) = (&mut ext, extra) {
        for (k, v) in x {
            e.insert(k, v);
        }
    }
    json_res(status, json!({"errors": [{"message": message, "extensions": ext}]}))
}

fn forbidden() -> Response<Full<Bytes>> {
    error(403, "FORBIDDEN", "You don't have permission to access this.", Value::Null)
}

fn no_content() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// JavaScript truthiness (`req.body.mode || …`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A primary key as Directus compares it (a string, or a number's text).
fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn invalid_credentials() -> Response<Full<Bytes>> {
    error(401, "INVALID_CREDENTIALS", "Invalid user credentials.", Value::Null)
}

fn invalid_payload(reason: &str) -> Response<Full<Bytes>> {
    let message = format!("Invalid payload. {reason}.");
    error(400, "INVALID_PAYLOAD", &message, json!({ "reason": reason }))
}

fn json_res(status: u16, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, "application/json; charset=utf-8".parse().expect("hv"));
    r
}

fn cookie_header(name: &str, value: &str, max_age: u64) -> String {
    let expires = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(max_age));
    format!("{name}={value}; Max-Age={max_age}; Path=/; Expires={expires}; HttpOnly; SameSite=Lax")
}

/// The route as Express matches it: `None` for paths Directus answers 404.
pub fn route_of(path: &str) -> Option<String> {
    if path.starts_with("//") || path.contains('%') || path.contains(';') {
        return None;
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    Some(format!("/{}", segs.join("/")).to_ascii_lowercase())
}

/// `Authorization` as Directus reads it: the first header, trimmed, `split(' ')`, exactly two
/// parts with the scheme `bearer` in any case.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let parts: Vec<&str> = v.split(' ').collect();
    match parts.as_slice() {
        [scheme, token] if scheme.eq_ignore_ascii_case("bearer") => Some(token.to_string()),
        _ => None,
    }
}

/// What `?access_token` is, as qs parses it.
#[derive(Debug, PartialEq)]
pub enum QueryToken {
    None,
    One(String),
    /// Repeated, or `access_token[]`: an array (never a valid token).
    Many,
}

pub fn query_token(query: Option<&str>) -> QueryToken {
    let mut found: Vec<String> = Vec::new();
    let mut array = false;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        let key = decode(k);
        if key == "access_token" {
            found.push(decode(v));
        } else if key.starts_with("access_token[") {
            array = true;
        }
    }
    match (found.len(), array) {
        (0, false) => QueryToken::None,
        (1, false) => QueryToken::One(found.remove(0)),
        _ => QueryToken::Many,
    }
}

/// A cookie as cookie-parser reads it: the first occurrence, quotes removed, `%`-decoded.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let joined: Vec<&str> = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
    let joined = joined.join("; ");
    for part in joined.split(';') {
        let Some((k, v)) = part.split_once('=') else { continue };
        if k.trim() == name {
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
            return Some(percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned());
        }
    }
    None
}

/// The body as `express.json` leaves it: `Err` is Directus's 400.
fn body_json(headers: &HeaderMap, raw: &[u8]) -> Result<Value, Response<Full<Bytes>>> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime != "application/json" {
        return Ok(json!({}));
    }
    if let Some(cs) = ct.split(';').skip(1).filter_map(|p| p.trim().strip_prefix("charset=")).next() {
        if cs.trim_matches('"') != "utf-8" {
            return Err(error(
                400,
                "INVALID_PAYLOAD",
                &format!("unsupported charset \"{}\"", cs.to_ascii_uppercase()),
                Value::Null,
            ));
        }
    }
    let coding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let mut bytes = Vec::new();
    let decoded = match coding.to_ascii_lowercase().as_str() {
        "identity" => {
            bytes.extend_from_slice(raw);
            true
        }
        "gzip" => flate2::read::MultiGzDecoder::new(raw).read_to_end(&mut bytes).is_ok(),
        "deflate" => flate2::read::ZlibDecoder::new(raw).read_to_end(&mut bytes).is_ok(),
        other => {
            return Err(error(
                400,
                "INVALID_PAYLOAD",
                &format!("unsupported content encoding \"{other}\""),
                Value::Null,
            ))
        }
    };
    if !decoded {
        return Err(error(400, "INVALID_PAYLOAD", "incorrect header check", Value::Null));
    }
    if bytes.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| invalid_payload(&e.to_string()))
}

/// Who a request authenticates as.
enum Who {
    Anonymous,
    User(String),
}

impl MockState {
    fn user_by_id(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn access_jwt(&self, user: &User, session: Option<&str>) -> String {
        let iat = now_ms() / 1000;
        let ttl = if session.is_some() { self.session_ttl } else { self.access_ttl };
        let mut claims = json!({
            "id": user.id, "role": user.role, "app_access": user.admin, "admin_access": user.admin,
            "iat": iat, "exp": iat + ttl.as_secs() as i64, "iss": "directus",
        });
        if let Some(s) = session {
            claims["session"] = json!(s);
        }
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).expect("jwt")
    }

    /// A Directus JWT's claims: `Err` is the answer (403 `INVALID_TOKEN`, 401 `TOKEN_EXPIRED`).
    fn verify(&self, token: &str) -> Result<Map<String, Value>, Response<Full<Bytes>>> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.leeway = 0;
        v.set_issuer(&["directus"]);
        v.required_spec_claims = ["exp", "iss"].iter().map(|s| s.to_string()).collect();
        let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v) {
            Ok(d) => {
                let c = d.claims;
                let has = |k: &str| c.contains_key(k);
                if !(has("id") && has("role") && has("app_access") && has("admin_access")) {
                    return Err(error(403, "INVALID_TOKEN", "Invalid token.", Value::Null));
                }
                Ok(c)
            }
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(error(401, "TOKEN_EXPIRED", "Token expired.", Value::Null))
            }
            Err(_) => Err(error(403, "INVALID_TOKEN", "Invalid token.", Value::Null)),
        }
    }

    /// Whether a token is a Directus JWT (three parts, `iss: directus` in the unverified payload).
    fn is_directus_jwt(token: &str) -> bool {
        jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).ok().is_some_and(|c| c["iss"] == "directus")
    }

    /// `middleware/authenticate.js`.
    fn authenticate(&mut self, headers: &HeaderMap, query: Option<&str>) -> Result<Who, Response<Full<Bytes>>> {
        let bearer = bearer(headers);
        let q = query_token(query);
        let query_present = matches!(q, QueryToken::Many) || matches!(&q, QueryToken::One(t) if !t.is_empty());
        if bearer.is_some() && query_present {
            return Err(error(
                400,
                "INVALID_PAYLOAD",
                "The request uses more than one method for including an access token",
                Value::Null,
            ));
        }
        let from_cookie = bearer.is_none() && !query_present;
        let token = match (bearer, q) {
            (Some(b), _) => Some(b),
            (None, QueryToken::One(t)) if !t.is_empty() => Some(t),
            (None, QueryToken::Many) => return Err(invalid_credentials()),
            _ => cookie(headers, SESSION_COOKIE),
        };
        let Some(token) = token else { return Ok(Who::Anonymous) };
        let with_cookie = from_cookie;
        let clear = |mut r: Response<Full<Bytes>>| {
            if with_cookie {
                let v = cookie_header(SESSION_COOKIE, "", 86_400);
                r.headers_mut().append(header::SET_COOKIE, v.parse().expect("hv"));
            }
            r
        };
        if Self::is_directus_jwt(&token) {
            let claims = match self.verify(&token) {
                Ok(c) => c,
                Err(r) if r.status() == StatusCode::UNAUTHORIZED => return Err(r),
                Err(r) => return Err(clear(r)),
            };
            let id = claims.get("id").and_then(Value::as_str).unwrap_or("").to_string();
            if let Some(s) = claims.get("session").and_then(Value::as_str) {
                let ok = self.sessions.get(s).is_some_and(|row| row.user == id && row.expires >= now_ms());
                if !ok {
                    return Err(clear(invalid_credentials()));
                }
            }
            self.accepted.push((token, now_ms()));
            return Ok(Who::User(id));
        }
        // A static token, checked with the user's status.
        match self.users.iter().find(|u| u.token.as_deref() == Some(token.as_str()) && u.status == "active") {
            Some(u) => {
                let id = u.id.clone();
                self.accepted.push((token, now_ms()));
                Ok(Who::User(id))
            }
            None => Err(clear(invalid_credentials())),
        }
    }

    /// `UsersService.updateOne` as seen from the outside: an admin may change anyone, a user
    /// only themselves and not their status or role. Nothing here revokes a session.
    fn update_user(&mut self, who: &str, id: &str, data: &Value) -> Result<Value, Response<Full<Bytes>>> {
        let is_admin = self.user_by_id(who).is_some_and(|u| u.admin);
        if id != who && !is_admin {
            return Err(forbidden());
        }
        let Some(u) = self.users.iter_mut().find(|u| u.id == id) else { return Err(forbidden()) };
        if let Some(p) = data.get("password").and_then(Value::as_str) {
            u.password = p.to_string();
        }
        if let (true, Some(s)) = (is_admin, data.get("status")) {
            u.status = s.as_str().unwrap_or("").to_string();
        }
        if is_admin && data.get("role").is_some() {
            u.role = data.get("role").and_then(Value::as_str).map(str::to_string);
        }
        if let (true, Some(t)) = (is_admin, data.get("token")) {
            u.token = t.as_str().map(str::to_string);
        }
        Ok(json!({"id": u.id, "email": u.email, "status": u.status, "role": u.role}))
    }

    /// Deletes a user (admins only) and, by the foreign key's cascade, its session rows. Its
    /// access JWTs live on: Directus reads the role from the token.
    fn delete_user(&mut self, who: &str, id: &str) -> Result<(), Response<Full<Bytes>>> {
        if !self.user_by_id(who).is_some_and(|u| u.admin) || self.user_by_id(id).is_none() {
            return Err(forbidden());
        }
        self.users.retain(|u| u.id != id);
        self.sessions.retain(|_, row| row.user != id);
        Ok(())
    }

    fn issue(&mut self, user: &User, mode: &str) -> Response<Full<Bytes>> {
        let token = nanoid();
        let refresh_ms = self.refresh_ttl.as_millis() as i64;
        self.sessions
            .insert(token.clone(), Row { user: user.id.clone(), expires: now_ms() + refresh_ms, next_token: None });
        self.answer(user, mode, &token)
    }

    /// The login / refresh answer for `mode` with the row `token`.
    fn answer(&self, user: &User, mode: &str, token: &str) -> Response<Full<Bytes>> {
        match mode {
            "session" => {
                let jwt = self.access_jwt(user, Some(token));
                let ttl = self.session_ttl;
                let mut r = json_res(200, json!({"data": {"expires": ttl.as_millis() as u64}}));
                let c = cookie_header(SESSION_COOKIE, &jwt, ttl.as_secs());
                r.headers_mut().append(header::SET_COOKIE, c.parse().expect("hv"));
                r
            }
            "cookie" => {
                let jwt = self.access_jwt(user, None);
                let mut r = json_res(
                    200,
                    json!({"data": {"expires": self.access_ttl.as_millis() as u64, "access_token": jwt}}),
                );
                let c = cookie_header(REFRESH_COOKIE, token, self.refresh_ttl.as_secs());
                r.headers_mut().append(header::SET_COOKIE, c.parse().expect("hv"));
                r
            }
            _ => {
                let jwt = self.access_jwt(user, None);
                json_res(
                    200,
                    json!({"data": {"expires": self.access_ttl.as_millis() as u64, "refresh_token": token, "access_token": jwt}}),
                )
            }
        }
    }

    /// The refresh / logout token for the chosen mode (`controllers/auth.js`).
    fn mode_token(&self, headers: &HeaderMap, body: &Value) -> Result<(String, String), Response<Full<Bytes>>> {
        // `getCurrentMode`: `body.mode` if truthy, else `json` if `body.refresh_token` is truthy.
        let mode = match &body["mode"] {
            m if truthy(m) => m.as_str().unwrap_or("?").to_string(),
            _ if truthy(&body["refresh_token"]) => "json".into(),
            _ => "cookie".into(),
        };
        let missing = || invalid_payload("The refresh token is required in either the payload or cookie");
        let token = match mode.as_str() {
            "json" => body.get("refresh_token").and_then(Value::as_str).map(str::to_string),
            "cookie" => cookie(headers, REFRESH_COOKIE),
            "session" => match cookie(headers, SESSION_COOKIE) {
                Some(jwt) => {
                    let claims = self.verify(&jwt)?;
                    claims.get("session").and_then(Value::as_str).map(str::to_string)
                }
                None => None,
            },
            _ => return Err(invalid_payload("\"mode\" must be one of [cookie, json, session]")),
        };
        Ok((mode, token.ok_or_else(missing)?))
    }

    fn refresh(&mut self, headers: &HeaderMap, body: &Value) -> Response<Full<Bytes>> {
        let (mode, token) = match self.mode_token(headers, body) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let now = now_ms();
        let Some(row) = self.sessions.get(&token).filter(|r| r.expires >= now).cloned() else {
            return invalid_credentials();
        };
        let Some(user) = self.user_by_id(&row.user).cloned() else { return invalid_credentials() };
        if user.status != "active" {
            self.sessions.remove(&token);
            return if user.status == "suspended" {
                error(401, "USER_SUSPENDED", "User suspended.", Value::Null)
            } else {
                invalid_credentials()
            };
        }
        self.minted.push((token.clone(), now));
        if mode == "session" {
            if let Some(next) = row.next_token.clone() {
                return self.answer(&user, &mode, &next);
            }
            let next = nanoid();
            let grace = self.grace.as_millis() as i64;
            let ttl = self.session_ttl.as_millis() as i64;
            if let Some(r) = self.sessions.get_mut(&token) {
                r.next_token = Some(next.clone());
                r.expires = now + grace;
            }
            self.sessions.insert(next.clone(), Row { user: user.id.clone(), expires: now + ttl, next_token: None });
            return self.answer(&user, &mode, &next);
        }
        // json and cookie: the row's token is replaced in place; no grace.
        let next = nanoid();
        self.sessions.remove(&token);
        let ttl = self.refresh_ttl.as_millis() as i64;
        self.sessions.insert(next.clone(), Row { user: user.id.clone(), expires: now + ttl, next_token: None });
        self.answer(&user, &mode, &next)
    }

    fn logout(&mut self, headers: &HeaderMap, body: &Value) -> Response<Full<Bytes>> {
        let (mode, token) = match self.mode_token(headers, body) {
            Ok(x) => x,
            Err(r) => return r,
        };
        self.sessions.remove(&token);
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let (name, age) = if mode == "session" { (SESSION_COOKIE, 86_400) } else { (REFRESH_COOKIE, 604_800) };
        r.headers_mut().append(header::SET_COOKIE, cookie_header(name, "", age).parse().expect("hv"));
        r
    }

    fn login(&mut self, body: &Value) -> Response<Full<Bytes>> {
        let Some(obj) = body.as_object() else { return invalid_payload("\"value\" must be of type object") };
        let Some(email) = obj.get("email").and_then(Value::as_str) else {
            return invalid_payload("\"email\" is required");
        };
        let mode = obj.get("mode").and_then(Value::as_str).unwrap_or("json");
        if !["json", "cookie", "session"].contains(&mode) {
            return invalid_payload("\"mode\" must be one of [cookie, json, session]");
        }
        let password = obj.get("password").and_then(Value::as_str).unwrap_or("");
        let user = self
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email) && u.password == password && u.status == "active")
            .cloned();
        match user {
            Some(u) => {
                let mode = mode.to_string();
                self.issue(&u, &mode)
            }
            None => invalid_credentials(),
        }
    }

    fn handle(
        &mut self,
        method: &Method,
        route: &str,
        headers: &HeaderMap,
        query: Option<&str>,
        body: Value,
    ) -> Response<Full<Bytes>> {
        match (method.clone(), route) {
            (Method::GET, "/server/ping") => {
                let mut r = Response::new(Full::new(Bytes::from_static(b"pong")));
                r.headers_mut().insert(header::CONTENT_TYPE, "text/html; charset=utf-8".parse().expect("hv"));
                r
            }
            (Method::GET, "/server/health") => json_res(200, json!({"status": "ok"})),
            (Method::POST, "/auth/login") => self.login(&body),
            (Method::POST, "/auth/refresh") => self.refresh(headers, &body),
            (Method::POST, "/auth/logout") => self.logout(headers, &body),
            (Method::GET, "/users/me") => match self.authenticate(headers, query) {
                Ok(Who::User(id)) => {
                    let u = self.user_by_id(&id).cloned();
                    match u {
                        Some(u) => json_res(
                            200,
                            json!({"data": {"id": u.id, "email": u.email, "first_name": null, "last_name": null, "status": u.status, "role": u.role, "last_access": null}}),
                        ),
                        None => invalid_credentials(),
                    }
                }
                Ok(Who::Anonymous) => invalid_credentials(),
                Err(r) => r,
            },
            (Method::GET, "/items/articles") => match self.authenticate(headers, query) {
                Ok(Who::User(_)) => json_res(200, json!({"data": [{"id": 1, "title": "One", "body": "…"}, {"id": 2, "title": "Two", "body": "…"}]})),
                Ok(Who::Anonymous) => error(
                    403,
                    "FORBIDDEN",
                    "You don't have permission to access collection \"articles\" or it does not exist. Queried in root.",
                    json!({"reason": "You don't have permission to access collection \"articles\" or it does not exist. Queried in root."}),
                ),
                Err(r) => r,
            },
            (Method::PATCH, "/users") | (Method::DELETE, "/users") => {
                let who = match self.authenticate(headers, query) {
                    Ok(Who::User(id)) => id,
                    Ok(Who::Anonymous) => return forbidden(),
                    Err(r) => return r,
                };
                // `controllers/users.js`: an array of items, else `keys`, else `query` (Joi: keys xor query).
                let delete = *method == Method::DELETE;
                let items: Vec<(String, Value)> = if let Some(xs) = body.as_array() {
                    xs.iter()
                        .map(|x| if delete { (id_text(x), Value::Null) } else { (id_text(&x["id"]), x.clone()) })
                        .collect()
                } else if truthy(&body["keys"]) {
                    let data = body["data"].clone();
                    body["keys"].as_array().map(|ks| ks.iter().map(|k| (id_text(k), data.clone())).collect()).unwrap_or_default()
                } else if body["query"].is_object() {
                    let wanted: Option<Vec<String>> =
                        body["query"]["filter"]["id"]["_in"].as_array().map(|ks| ks.iter().map(id_text).collect());
                    let data = body["data"].clone();
                    self.users
                        .iter()
                        .filter(|u| wanted.as_ref().is_none_or(|w| w.contains(&u.id)))
                        .map(|u| (u.id.clone(), data.clone()))
                        .collect()
                } else {
                    return invalid_payload("\"keys\" or \"query\" is required");
                };
                let mut keys = Vec::new();
                for (id, data) in items {
                    let done = if delete { self.delete_user(&who, &id) } else { self.update_user(&who, &id, &data).map(drop) };
                    match done {
                        Ok(_) => keys.push(json!(id)),
                        Err(r) => return r,
                    }
                }
                if delete {
                    no_content()
                } else {
                    json_res(200, json!({ "data": keys }))
                }
            }
            (Method::PATCH, r) | (Method::DELETE, r) if r.starts_with("/users/") => {
                let who = match self.authenticate(headers, query) {
                    Ok(Who::User(id)) => id,
                    Ok(Who::Anonymous) => return forbidden(),
                    Err(r) => return r,
                };
                let target = &r["/users/".len()..];
                let id = if target == "me" { who.clone() } else { target.to_string() };
                if *method == Method::DELETE {
                    return match self.delete_user(&who, &id) {
                        Ok(()) => no_content(),
                        Err(r) => r,
                    };
                }
                match self.update_user(&who, &id, &body) {
                    Ok(v) => json_res(200, json!({ "data": v })),
                    Err(r) => r,
                }
            }
            (Method::POST, r) if r == "/graphql/system" || r.starts_with("/graphql/system/") => {
                graphql::execute(self, headers, query, &body)
            }
            (Method::GET, r) if r == "/graphql/system" || r.starts_with("/graphql/system/") => {
                error(405, "METHOD_NOT_ALLOWED", "Invalid method \"GET\" used. Should be one of POST.", Value::Null)
            }
            (_, r) => error(404, "ROUTE_NOT_FOUND", &format!("Route {r} doesn't exist."), json!({"path": r})),
        }
    }
}

/// A running mock Directus.
pub struct MockDirectus {
    pub state: Arc<Mutex<MockState>>,
    server: super::Served,
}

impl MockDirectus {
    /// Users `reader@example.com` (role reader) and `admin@example.com` (admin), password
    /// [`PASSWORD`]; Directus's default TTLs.
    pub async fn start() -> MockDirectus {
        let users = vec![
            User {
                id: uuid(),
                email: "reader@example.com".into(),
                password: PASSWORD.into(),
                role: Some(uuid()),
                status: "active".into(),
                admin: false,
                token: None,
            },
            User {
                id: uuid(),
                email: "admin@example.com".into(),
                password: PASSWORD.into(),
                role: Some(uuid()),
                status: "active".into(),
                admin: true,
                token: None,
            },
        ];
        let state = Arc::new(Mutex::new(MockState {
            users,
            sessions: HashMap::new(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(7 * 86_400),
            session_ttl: Duration::from_secs(86_400),
            grace: Duration::from_secs(10),
            login_stall: Duration::ZERO,
            seen: Vec::new(),
            accepted: Vec::new(),
            minted: Vec::new(),
        }));
        let st = state.clone();
        let server = super::Served::start(move |req| {
            let st = st.clone();
            async move { serve(&st, req).await }
        })
        .await;
        MockDirectus { state, server }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut MockState) -> R) -> R {
        f(&mut self.state.lock().expect("mock state"))
    }

    pub fn user(&self, email: &str) -> User {
        self.with(|s| s.users.iter().find(|u| u.email == email).cloned().expect("user"))
    }

    /// Whether the mock minted tokens from the refresh token `token` at or after `since`.
    pub fn minted_since(&self, token: &str, since: i64) -> bool {
        self.with(|s| s.minted.iter().any(|(t, at)| t == token && *at >= since))
    }

    /// Whether the mock accepted `token` as an access credential at or after `since` (unix ms).
    pub fn accepted_since(&self, token: &str, since: i64) -> bool {
        self.with(|s| s.accepted.iter().any(|(t, at)| t == token && *at >= since))
    }
}

async fn serve(st: &Mutex<MockState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let raw = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let stall = {
        let mut s = st.lock().expect("mock state");
        s.seen.push((parts.method.clone(), parts.uri.to_string(), parts.headers.clone()));
        s.login_stall
    };
    let Some(route) = route_of(parts.uri.path()) else {
        let p = parts.uri.path().to_string();
        return error(404, "ROUTE_NOT_FOUND", &format!("Route {p} doesn't exist."), json!({"path": p}));
    };
    let is_login = parts.method == Method::POST && route == "/auth/login";
    let body = body_json(&parts.headers, &raw);
    if is_login && !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut s = st.lock().expect("mock state");
    s.handle(&parts.method, &route, &parts.headers, parts.uri.query(), body)
}
