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

pub async fn route(st: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, GatewayError> {
    let method = req.method().clone();
    let decoded: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().to_string())
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    // Unauthenticated: probes, scraping and the dashboard's static files (they hold no data).
    if method == Method::GET {
        if let Some(res) = super::dashboard::serve(&segs, req.uri().path().ends_with('/')) {
            return Ok(res);
        }
    }
    match (&method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => return Ok(ok(json!({"status": "ok"}))),
        (&Method::GET, ["readyz"]) => return Ok(readyz(st).await),
        (&Method::GET, ["metrics"]) => return Ok(metrics(st).await),
        _ => {}
    }
    let actor = format!("admin:{}", st.auth.check(req.headers(), peer.ip(), &st.app.audit, &st.app.metrics)?);
    let q = query(&req);
    match (&method, segs.as_slice()) {
        (&Method::GET, ["magic-sessionmanager", "sessions"]) => list(st, &q, None).await,
        (&Method::GET, ["magic-sessionmanager", "sessions", "active"]) => list(st, &q, Some(true)).await,
        (&Method::POST, ["magic-sessionmanager", "sessions", "clean-inactive"]) => clean_inactive(st, &actor).await,
        (&Method::GET, ["magic-sessionmanager", "sessions", id]) => detail(st, id).await,
        (&Method::POST, ["magic-sessionmanager", "sessions", id, "terminate"]) => {
            let id = id.to_string();
            let body = body_json(req).await?;
            terminate(st, &id, &reason_of(&body, "admin_terminated"), &actor).await
        }
        (&Method::POST, ["magic-sessionmanager", "user", user, "terminate-all"]) => {
            let user = user.to_string();
            let body = body_json(req).await?;
            terminate_all(st, &user, &reason_of(&body, "admin_terminated"), &actor).await
        }
        (&Method::POST, ["magic-sessionmanager", "user", user, op @ ("toggle-block" | "block" | "unblock")]) => {
            let (user, op) = (user.to_string(), op.to_string());
            let body = body_json(req).await?;
            let block = match op.as_str() {
                "block" => true,
                "unblock" => false,
                _ => !st.app.sessions.is_blocked(&user),
            };
            set_block(st, &user, block, body.get("reason").and_then(Value::as_str).map(str::to_string), &actor).await
        }
        (&Method::GET, ["magic-sessionmanager", "users", user, "sessions"]) => user_sessions(st, user).await,
        (&Method::GET, ["magic-sessionmanager", "blocked"]) => Ok(blocked(st)),
        (&Method::GET, ["magic-sessionmanager", "stats"]) => Ok(stats(st)),
        (&Method::GET, ["magic-sessionmanager", "events"]) => Ok(events(st)),
        (&Method::GET, ["magic-sessionmanager", "settings"]) => Ok(ok(json!({"data": {
            "effective": crate::config::describe(&st.app.cfg()),
            "version": env!("CARGO_PKG_VERSION"),
        }}))),
        (&Method::GET, ["magic-sessionmanager", "cluster"]) => Ok(match &st.app.cluster {
            Some(c) => ok(json!({"enabled": true, "data": c.status()})),
            None => ok(json!({"enabled": false})),
        }),
        (&Method::GET, ["magic-sessionmanager", "audit"]) => audit_export(st, &q).await,
        (&Method::GET, ["magic-sessionmanager", "alerts"]) => alerts_list(st, &q).await,
        (&Method::POST, ["magic-sessionmanager", "alerts", "test"]) => {
            let body = body_json(req).await?;
            alerts_test(st, &body, &actor)
        }
        (&Method::POST, ["magic-sessionmanager", "alerts", id, "retry"]) => {
            let id = id.parse::<u64>().map_err(|_| not_found())?;
            if st.app.alert_worker.retry(id).await? {
                Ok(ok(json!({"success": true, "id": id, "status": "pending"})))
            } else {
                Err(not_found())
            }
        }
        (&Method::POST, ["reload"]) => Ok(match crate::reload::reload(&st.app, &actor).await {
            Ok(r) => ok(json!({"data": r})),
            Err(e) => super::json(
                http::StatusCode::BAD_REQUEST,
                json!({"error": {"status": 400, "reason": "invalid_config", "message": "configuration refused; the previous one stays in force", "errors": e.messages()}}),
            ),
        }),
        (&Method::GET, ["magic-sessionmanager", "keys"]) => Ok(maintenance::keys(st)),
        (&Method::POST, ["magic-sessionmanager", "keys", "rotate"]) => maintenance::rotate(st, &actor),
        (&Method::POST, ["magic-sessionmanager", "import"]) => {
            let body = body_json_limited(req, MAX_IMPORT_BODY).await?;
            maintenance::import(st, &body, &actor).await
        }
        (&Method::GET, ["magic-sessionmanager", "export"]) => maintenance::export(st, &q),
        (&Method::GET, ["admin", "api", "sessions"]) => node_auth_list(st).await,
        (&Method::DELETE, ["admin", "api", "sessions", handle]) => {
            terminate(st, handle, "admin_terminated", &actor).await.map(|_| ok(json!({"success": true})))
        }
        (&Method::POST, ["auth", "sessions", "cleanup"]) => cleanup(st, &actor).await,
        _ => Err(not_found()),
    }
}
