//! The admin API's router: every admin path and method, and the parameter readers they share.
//! The plugin's admin paths, the node-auth admin shape, reports, maintenance and probes are
//! answered by the modules next to this one.

use super::{maintenance, not_found, ok, AdminState};
use super::{probes::*, reports::*, sessions::*};
use crate::error::{Body, GatewayError};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;

pub(super) const MAX_ADMIN_BODY: usize = 64 * 1024;

/// An import call carries up to `maintenance::MAX_IMPORT_ROWS` rows with their tokens.
pub(super) const MAX_IMPORT_BODY: usize = 8 * 1024 * 1024;

pub(super) const MAX_PAGE_SIZE: usize = 500;

/// Decoded query parameters (`+` is a space, percent-escapes decoded).
pub(super) fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().to_string();
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A time parameter: ISO-8601 / RFC 3339, or unix milliseconds.
pub(super) fn time_param(q: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>, GatewayError> {
    let Some(v) = q.get(key).filter(|v| !v.is_empty()) else { return Ok(None) };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    humantime::parse_rfc3339_weak(v)
        .map(|t| Some(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)))
        .map_err(|_| {
            GatewayError::InvalidParameter(format!("{key}: expected an ISO-8601 time or unix milliseconds, got {v:?}"))
        })
}

pub(super) fn bool_param(q: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, GatewayError> {
    match q.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(v) => Err(GatewayError::InvalidParameter(format!("{key}: expected true or false, got {v:?}"))),
    }
}

pub(super) fn usize_param(
    q: &BTreeMap<String, String>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, GatewayError> {
    match q.get(key).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 && n <= max => Ok(n),
            _ => Err(GatewayError::InvalidParameter(format!("{key}: expected a number from 1 to {max}, got {v:?}"))),
        },
    }
}

/// Optional JSON body of a POST (e.g. `{"reason": "…"}`).
pub(super) async fn body_json(req: Request<Incoming>) -> Result<Value, GatewayError> {
    body_json_limited(req, MAX_ADMIN_BODY).await
}

pub(super) async fn body_json_limited(req: Request<Incoming>, limit: usize) -> Result<Value, GatewayError> {
    let bytes = http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|_| GatewayError::BadRequest("request body too large or unreadable"))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|_| GatewayError::BadRequest("request body is not JSON"))
}

pub(super) fn reason_of(body: &Value, default: &str) -> String {
    body.get("reason")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(200).collect())
        .unwrap_or_else(|| default.to_string())
}

/// How a user is blocked or unblocked.
#[derive(Clone, Copy)]
enum BlockOp {
    Block,
    Unblock,
    Toggle,
}

/// An admin route, resolved from the method and path before anyone is authenticated, so that a
/// load balancer's probe of an unknown path gets 404 (or 405) and never counts as a failed login.
enum Resolved<'a> {
    /// Probes and scraping: no token.
    Open(Probe),
    /// Everything else: behind a token.
    Api(Route<'a>),
}

enum Probe {
    Healthz,
    Ping,
    Readyz,
    Metrics,
}

enum Route<'a> {
    List(Option<bool>),
    CleanInactive,
    Detail(&'a str),
    Terminate(&'a str),
    TerminateAll(&'a str),
    Block(&'a str, BlockOp),
    UserSessions(&'a str),
    Blocked,
    Stats,
    Events,
    Settings,
    Cluster,
    Audit,
    Alerts,
    AlertsTest,
    AlertRetry(&'a str),
    Reload,
    Keys,
    RotateKeys,
    Import,
    Export,
    NodeAuthList,
    NodeAuthDelete(&'a str),
    Cleanup,
}

/// The route for a method (HEAD already read as GET) and decoded path segments.
fn resolve<'a>(method: &Method, segs: &[&'a str]) -> Option<Resolved<'a>> {
    use Route::*;
    const MSM: &str = "magic-sessionmanager";
    let (get, post, delete) = (method == Method::GET, method == Method::POST, method == Method::DELETE);
    let probe = match segs {
        ["healthz"] => Some(Probe::Healthz),
        ["ping"] => Some(Probe::Ping),
        ["readyz"] => Some(Probe::Readyz),
        ["metrics"] => Some(Probe::Metrics),
        _ => None,
    };
    if let Some(p) = probe {
        return get.then_some(Resolved::Open(p));
    }
    Some(Resolved::Api(match segs {
        [MSM, "sessions"] if get => List(None),
        [MSM, "sessions", "active"] if get => List(Some(true)),
        [MSM, "sessions", "clean-inactive"] if post => CleanInactive,
        [MSM, "sessions", id] if get => Detail(id),
        [MSM, "sessions", id, "terminate"] if post => Terminate(id),
        [MSM, "user", user, "terminate-all"] if post => TerminateAll(user),
        [MSM, "user", user, "block"] if post => Block(user, BlockOp::Block),
        [MSM, "user", user, "unblock"] if post => Block(user, BlockOp::Unblock),
        [MSM, "user", user, "toggle-block"] if post => Block(user, BlockOp::Toggle),
        [MSM, "users", user, "sessions"] if get => UserSessions(user),
        [MSM, "blocked"] if get => Blocked,
        [MSM, "stats"] if get => Stats,
        [MSM, "events"] if get => Events,
        [MSM, "settings"] if get => Settings,
        [MSM, "cluster"] if get => Cluster,
        [MSM, "audit"] if get => Audit,
        [MSM, "alerts"] if get => Alerts,
        [MSM, "alerts", "test"] if post => AlertsTest,
        [MSM, "alerts", id, "retry"] if post => AlertRetry(id),
        ["reload"] if post => Reload,
        [MSM, "keys"] if get => Keys,
        [MSM, "keys", "rotate"] if post => RotateKeys,
        [MSM, "import"] if post => Import,
        [MSM, "export"] if get => Export,
        ["admin", "api", "sessions"] if get => NodeAuthList,
        ["admin", "api", "sessions", handle] if delete => NodeAuthDelete(handle),
        ["auth", "sessions", "cleanup"] if post => Cleanup,
        _ => return None,
    }))
}

/// The methods a path answers to, for a 405's `Allow` header; empty for an unknown path.
fn allowed(segs: &[&str]) -> Vec<&'static str> {
    let mut allow: Vec<&'static str> = [(Method::GET, "GET, HEAD"), (Method::POST, "POST"), (Method::DELETE, "DELETE")]
        .into_iter()
        .filter(|(m, _)| resolve(m, segs).is_some())
        .map(|(_, name)| name)
        .collect();
    if !allow.is_empty() {
        allow.push("OPTIONS");
    }
    allow
}

pub async fn route(st: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, GatewayError> {
    // HEAD is answered as GET; hyper sends the headers without the body.
    let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
    let decoded: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().to_string())
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    // The dashboard's static files hold no data and need no token.
    if method == Method::GET {
        if let Some(res) = super::dashboard::serve(&segs, req.uri().path().ends_with('/')) {
            return Ok(res);
        }
    }
    let Some(route) = resolve(&method, &segs) else {
        let allow = allowed(&segs);
        if allow.is_empty() {
            return Err(not_found());
        }
        let mut res = if method == Method::OPTIONS {
            let mut r = Response::new(crate::error::full(""));
            *r.status_mut() = http::StatusCode::NO_CONTENT;
            r
        } else {
            GatewayError::MethodNotAllowed.into_response(crate::config::ErrorShape::Plain)
        };
        if let Ok(v) = http::HeaderValue::from_str(&allow.join(", ")) {
            res.headers_mut().insert(http::header::ALLOW, v);
        }
        return Ok(res);
    };
    let route = match route {
        Resolved::Open(Probe::Healthz) => return Ok(ok(json!({"status": "ok"}))),
        Resolved::Open(Probe::Ping) => return Ok(ping()),
        Resolved::Open(Probe::Readyz) => return Ok(readyz(st).await),
        Resolved::Open(Probe::Metrics) => return Ok(metrics(st).await),
        Resolved::Api(route) => route,
    };
    let who = st.auth.check(
        req.headers(),
        peer.ip(),
        req.method().as_str(),
        req.uri().path(),
        &st.app.audit,
        &st.app.metrics,
    )?;
    let actor = format!("admin:{who}");
    let q = query(&req);
    use Route::*;
    match route {
        List(active) => list(st, &q, active).await,
        CleanInactive => clean_inactive(st, &actor).await,
        Detail(id) => detail(st, id).await,
        Terminate(id) => {
            let body = body_json(req).await?;
            terminate(st, id, &reason_of(&body, "admin_terminated"), &actor).await
        }
        TerminateAll(user) => {
            let body = body_json(req).await?;
            let except = body.get("except").and_then(Value::as_str).filter(|s| !s.is_empty());
            terminate_all(st, user, except, &reason_of(&body, "admin_terminated"), &actor).await
        }
        Block(user, op) => {
            let body = body_json(req).await?;
            let block = match op {
                BlockOp::Block => true,
                BlockOp::Unblock => false,
                BlockOp::Toggle => !st.app.sessions.is_blocked(user),
            };
            let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
            let reason = body.get("reason").and_then(Value::as_str).map(str::to_string);
            set_block(st, user, block, force, reason, &actor).await
        }
        UserSessions(user) => user_sessions(st, user).await,
        Blocked => Ok(blocked(st)),
        Stats => Ok(stats(st)),
        Events => Ok(events(st)),
        Settings => Ok(ok(json!({"data": {
            "effective": crate::config::describe(&st.app.cfg()),
            "version": env!("CARGO_PKG_VERSION"),
        }}))),
        Cluster => Ok(match &st.app.cluster {
            Some(c) => ok(json!({"enabled": true, "data": c.status()})),
            None => ok(json!({"enabled": false})),
        }),
        Audit => audit_export(st, &q).await,
        Alerts => alerts_list(st, &q).await,
        AlertsTest => {
            let body = body_json(req).await?;
            alerts_test(st, &body, &actor)
        }
        AlertRetry(id) => {
            let id = id.parse::<u64>().map_err(|_| not_found())?;
            if st.app.alert_worker.retry(id).await? {
                Ok(ok(json!({"success": true, "id": id, "status": "pending"})))
            } else {
                Err(not_found())
            }
        }
        Reload => Ok(match crate::reload::reload(&st.app, &actor).await {
            Ok(r) => ok(json!({"data": r})),
            Err(e) => super::json(
                http::StatusCode::BAD_REQUEST,
                json!({"error": {"status": 400, "reason": "invalid_config", "message": "configuration refused; the previous one stays in force", "errors": e.messages()}}),
            ),
        }),
        Keys => Ok(maintenance::keys(st)),
        RotateKeys => maintenance::rotate(st, &actor),
        Import => {
            let body = body_json_limited(req, MAX_IMPORT_BODY).await?;
            maintenance::import(st, &body, &actor).await
        }
        Export => maintenance::export(st, &q),
        NodeAuthList => node_auth_list(st, &q).await,
        NodeAuthDelete(handle) => {
            terminate(st, handle, "admin_terminated", &actor).await.map(|_| ok(json!({"success": true})))
        }
        Cleanup => cleanup(st, &actor).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_and_methods_resolve_to_nothing() {
        assert!(matches!(resolve(&Method::GET, &["ping"]), Some(Resolved::Open(Probe::Ping))));
        assert!(matches!(resolve(&Method::GET, &["magic-sessionmanager", "stats"]), Some(Resolved::Api(Route::Stats))));
        assert!(resolve(&Method::GET, &["nope"]).is_none());
        assert!(resolve(&Method::POST, &["healthz"]).is_none());
        assert!(allowed(&["nope"]).is_empty());
        assert_eq!(allowed(&["healthz"]), ["GET, HEAD", "OPTIONS"]);
        assert_eq!(allowed(&["admin", "api", "sessions", "7"]), ["DELETE", "OPTIONS"]);
        // `sessions/<id>` is GET; `sessions/clean-inactive` is POST, and also reads as an id.
        assert_eq!(allowed(&["magic-sessionmanager", "sessions", "clean-inactive"]), ["GET, HEAD", "POST", "OPTIONS"]);
    }
}
