//! Admin API routes: the session-manager plugin's admin paths, the node-auth admin shape,
//! the audit export, statistics, health, readiness and metrics.

use super::{json, maintenance, not_found, ok, stream_body, AdminState};
use crate::alerts::Trigger;
use crate::audit::{self, Event, Kind};
use crate::clock::iso;
use crate::error::{Body, GatewayError};
use crate::proxy::user_api::session_json;
use crate::session::{sweeper, Audit, EndReason, Ending};
use crate::store::{AlertStatus, SessionRecord};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const MAX_ADMIN_BODY: usize = 64 * 1024;
/// An import call carries up to `maintenance::MAX_IMPORT_ROWS` rows with their tokens.
const MAX_IMPORT_BODY: usize = 8 * 1024 * 1024;
const MAX_PAGE_SIZE: usize = 500;

/// Decoded query parameters (`+` is a space, percent-escapes decoded).
fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
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
fn time_param(q: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>, GatewayError> {
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

fn bool_param(q: &BTreeMap<String, String>, key: &str) -> Result<Option<bool>, GatewayError> {
    match q.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some("true" | "1") => Ok(Some(true)),
        Some("false" | "0") => Ok(Some(false)),
        Some(v) => Err(GatewayError::InvalidParameter(format!("{key}: expected true or false, got {v:?}"))),
    }
}

fn usize_param(q: &BTreeMap<String, String>, key: &str, default: usize, max: usize) -> Result<usize, GatewayError> {
    match q.get(key).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 && n <= max => Ok(n),
            _ => Err(GatewayError::InvalidParameter(format!("{key}: expected a number from 1 to {max}, got {v:?}"))),
        },
    }
}

/// Optional JSON body of a POST (e.g. `{"reason": "…"}`).
async fn body_json(req: Request<Incoming>) -> Result<Value, GatewayError> {
    body_json_limited(req, MAX_ADMIN_BODY).await
}

async fn body_json_limited(req: Request<Incoming>, limit: usize) -> Result<Value, GatewayError> {
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

fn reason_of(body: &Value, default: &str) -> String {
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

/// Server-Sent Events: one `session` event per notice (created, rotated, ended, blocked,
/// unblocked), `resync` when this client fell behind, a comment every 15 s to keep proxies from
/// closing an idle stream. Ends at shutdown.
fn events(st: &AdminState) -> Response<Body> {
    use tokio::sync::broadcast::error::RecvError;
    struct S {
        rx: tokio::sync::broadcast::Receiver<crate::session::Notice>,
        shutdown: tokio::sync::watch::Receiver<bool>,
        hello: bool,
    }
    let init = S { rx: st.app.sessions.subscribe(), shutdown: st.shutdown.clone(), hello: true };
    let stream = futures_util::stream::unfold(init, |mut s| async move {
        if std::mem::take(&mut s.hello) {
            return Some((
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from("retry: 2000\nevent: hello\ndata: {}\n\n")),
                s,
            ));
        }
        let text = tokio::select! {
            n = s.rx.recv() => match n {
                Ok(n) => format!("event: session\ndata: {}\n\n", serde_json::to_string(&n).unwrap_or_default()),
                Err(RecvError::Lagged(_)) => "event: resync\ndata: {}\n\n".to_string(),
                Err(RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(Duration::from_secs(15)) => ": ping\n\n".to_string(),
            _ = s.shutdown.changed() => return None,
        };
        Some((Ok(bytes::Bytes::from(text)), s))
    });
    let mut res = Response::new(super::stream_body(stream));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    res
}

async fn readyz(st: &AdminState) -> Response<Body> {
    let app = &st.app;
    let store_ok = app.sessions.store().size_on_disk().await.is_ok();
    let upstream_ok = if app.cfg().admin.ready_requires_upstream { upstream_reachable(st).await } else { true };
    // An isolated instance still enforces everything it knows; whether it should take traffic
    // is the operator's choice (`cluster.ready_when_isolated`).
    let cluster = app.cluster.as_ref().map(|c| (c.is_connected(), c.config().ready_when_isolated));
    let cluster_ok = cluster.is_none_or(|(connected, tolerate)| connected || tolerate);
    let ready = store_ok && upstream_ok && cluster_ok;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut checks = json!({"store": store_ok, "upstream": upstream_ok});
    if let Some((connected, _)) = cluster {
        checks["cluster"] = json!(if connected { "connected" } else { "isolated" });
    }
    json(status, json!({"ready": ready, "checks": checks}))
}

/// The backend answers its health path (any status below 500), or accepts a TCP connection.
async fn upstream_reachable(st: &AdminState) -> bool {
    let app = &st.app;
    let probe = async {
        match &app.cfg().upstream.health_path {
            Some(p) => {
                let Ok(uri) = app.upstream.uri(p) else { return false };
                let req = Request::get(uri)
                    .header(header::HOST, app.upstream.authority().as_str())
                    .header(header::USER_AGENT, concat!("sessiongate/", env!("CARGO_PKG_VERSION"), " readiness"))
                    .body(crate::error::full(""));
                match req {
                    Ok(req) => app.upstream.send(req).await.is_ok_and(|r| r.status().as_u16() < 500),
                    Err(_) => false,
                }
            }
            None => {
                let a = app.upstream.authority();
                let port =
                    a.port_u16().unwrap_or(if app.cfg().upstream.url.scheme_str() == Some("https") { 443 } else { 80 });
                tokio::net::TcpStream::connect((a.host(), port)).await.is_ok()
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), probe).await.unwrap_or(false)
}

async fn metrics(st: &AdminState) -> Response<Body> {
    let app = &st.app;
    let (total, active, _) = app.sessions.counts();
    let now = app.sessions.clock().now_ms();
    let online = app.sessions.all_live().iter().filter(|l| !l.is_ended() && !app.sessions.is_idle(l, now)).count();
    let m = &app.metrics;
    m.sessions.with_label_values(&["total"]).set(total as i64);
    m.sessions.with_label_values(&["active"]).set(active as i64);
    m.sessions.with_label_values(&["online"]).set(online as i64);
    if let Ok(size) = app.sessions.store().size_on_disk().await {
        m.store_size.set(size as i64);
    }
    let mut res = Response::new(crate::error::full(m.render()));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    res
}

/// Every stored session record, with in-memory last-active applied.
async fn all_records(st: &AdminState) -> Result<Vec<SessionRecord>, GatewayError> {
    let store = st.app.sessions.store();
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.scan(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        out.extend(page);
    }
    for r in &mut out {
        if let Some(l) = st.app.sessions.live(r.id) {
            r.last_active = r.last_active.max(l.last_active());
        }
    }
    Ok(out)
}

/// A session as admins see it: the plugin's fields plus who, where from and why it ended.
fn admin_json(st: &AdminState, rec: &SessionRecord, now: i64) -> Value {
    let mut v = session_json(rec, None, now, st.app.sessions.config().inactivity_timeout);
    if let Value::Object(m) = &mut v {
        m.remove("isCurrentSession");
        m.insert("userId".into(), json!(rec.user_id));
        m.insert("user".into(), json!({"id": rec.user_id, "username": rec.username, "email": rec.email}));
        m.insert("tenantId".into(), json!(rec.tenant_id));
        m.insert("deviceId".into(), json!(rec.device_id));
        m.insert("endReason".into(), json!(rec.end_reason));
        m.insert("origin".into(), json!(rec.origin));
        m.insert("userBlocked".into(), json!(st.app.sessions.is_blocked(&rec.user_id)));
        m.insert("threatScore".into(), json!(rec.threat_score));
        m.insert("riskSignals".into(), json!(rec.risk_signals));
        m.insert("tags".into(), json!(rec.tags));
        m.insert("role".into(), json!(rec.role));
    }
    v
}

async fn list(
    st: &AdminState,
    q: &BTreeMap<String, String>,
    force_active: Option<bool>,
) -> Result<Response<Body>, GatewayError> {
    let active = match force_active {
        Some(a) => Some(a),
        None => bool_param(q, "active")?,
    };
    let since = time_param(q, "since")?;
    let until = time_param(q, "until")?;
    let page = usize_param(q, "page", 1, usize::MAX)?;
    let page_size = usize_param(q, "pageSize", 25, MAX_PAGE_SIZE)?;
    let sort = q.get("sort").map(String::as_str).unwrap_or("-loginTime");
    let (desc, field) = match sort.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, sort),
    };
    if !matches!(field, "loginTime" | "lastActive" | "id" | "userId") {
        return Err(GatewayError::InvalidParameter(format!(
            "sort: expected loginTime, lastActive, id or userId (prefix - for descending), got {sort:?}"
        )));
    }
    let user = q.get("user").filter(|s| !s.is_empty());
    let ip = q.get("ip").filter(|s| !s.is_empty());
    let device = q.get("device").filter(|s| !s.is_empty());
    let country = q.get("country").filter(|s| !s.is_empty());
    let min_threat = match q.get("minThreat").filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<u32>().ok().filter(|n| *n <= 100).ok_or_else(|| {
            GatewayError::InvalidParameter(format!("minThreat: expected a number from 0 to 100, got {v:?}"))
        })?),
    };
    // Filter and sort the in-memory index; read only the requested page from the store, so a
    // page costs the same with 100 000 sessions as with 100.
    let mut lives = st.app.sessions.all_live();
    lives.retain(|l| {
        active.is_none_or(|a| l.is_ended() != a)
            && user.is_none_or(|u| l.user_id == *u || l.username.as_ref() == Some(u) || l.email.as_ref() == Some(u))
            && ip.is_none_or(|i| l.ip == *i)
            && device.is_none_or(|d| l.device_type == *d)
            && country.is_none_or(|c| l.country.as_deref().is_some_and(|lc| lc.eq_ignore_ascii_case(c)))
            && since.is_none_or(|s| l.login_time >= s)
            && until.is_none_or(|u| l.login_time < u)
            && min_threat.is_none_or(|m| l.threat_score.is_some_and(|t| t >= m))
    });
    lives.sort_by(|a, b| {
        let o = match field {
            "lastActive" => a.last_active().cmp(&b.last_active()),
            "id" => a.id.cmp(&b.id),
            "userId" => a.user_id.cmp(&b.user_id),
            _ => a.login_time.cmp(&b.login_time),
        }
        .then(a.id.cmp(&b.id));
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    let total = lives.len();
    let now = st.app.sessions.clock().now_ms();
    let ids: Vec<u64> = lives.iter().skip((page - 1).saturating_mul(page_size)).take(page_size).map(|l| l.id).collect();
    let mut recs = st.app.sessions.records(ids.clone()).await?;
    recs.sort_by_key(|r| ids.iter().position(|i| *i == r.id));
    let data: Vec<Value> = recs.iter().map(|r| admin_json(st, r, now)).collect();
    Ok(ok(json!({
        "data": data,
        "meta": {"pagination": {"page": page, "pageSize": page_size, "pageCount": total.div_ceil(page_size), "total": total}}
    })))
}

async fn detail(st: &AdminState, id: &str) -> Result<Response<Body>, GatewayError> {
    let live = st.app.sessions.find(id).ok_or_else(not_found)?;
    let rec = st.app.sessions.records(vec![live.id]).await?.pop().ok_or_else(not_found)?;
    let mut v = admin_json(st, &rec, st.app.sessions.clock().now_ms());
    let events = audit::query(
        st.app.sessions.store(),
        &audit::Filter { session: Some(rec.sid.clone()), ..Default::default() },
        200,
    )
    .await?;
    if let Value::Object(m) = &mut v {
        m.insert(
            "tokens".into(),
            json!({
                "accessExpiresAt": rec.access_exp.map(|s| iso(s * 1000)),
                "refreshExpiresAt": rec.refresh_exp.map(|s| iso(s * 1000)),
                "rotationCount": rec.rotation_count,
                "rotations": rec.rotations.iter().map(|t| iso(*t)).collect::<Vec<_>>(),
                "backendSessionIds": rec.aliases,
            }),
        );
        m.insert("audit".into(), serde_json::to_value(&events).unwrap_or(Value::Null));
        // The backend revocation still to be done for this session, if any.
        let pending = st.app.sessions.store().revocations_of(vec![rec.id]).await?.pop();
        m.insert(
            "backendRevocation".into(),
            pending.map_or(Value::Null, |r| {
                json!({"pending": true, "attempts": r.attempts, "nextAttempt": iso(r.due), "lastError": r.last_error})
            }),
        );
    }
    Ok(ok(json!({"data": v})))
}

/// The end reason an admin's free-text reason maps to: a known reason name as it is, anything
/// else `admin_terminated` (the text itself goes to the audit log only).
fn admin_end_reason(reason: &str) -> EndReason {
    // Only reasons that revoke the backend session: an admin's "expired" must not skip that.
    EndReason::parse(reason).filter(|r| r.revokes_backend()).unwrap_or(EndReason::AdminTerminated)
}

async fn terminate(st: &AdminState, id: &str, reason: &str, actor: &str) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let live = app.sessions.find(id).ok_or_else(not_found)?;
    let ending = Ending::new(admin_end_reason(reason), Audit::EachSession(Kind::Terminate), actor)
        .details(json!({"reason": reason}))
        .alert(Trigger::AdminTermination, format!("terminated by {actor}: {reason}"));
    let already = app.sessions.end(&[live.id], &ending).await?.is_empty();
    tracing::info!(session = %live.sid, %actor, reason, "session terminated by an admin");
    Ok(ok(json!({"success": true, "sessionId": live.sid, "alreadyEnded": already, "message": "Session terminated"})))
}

async fn terminate_all(st: &AdminState, user: &str, reason: &str, actor: &str) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let ending = Ending::new(admin_end_reason(reason), Audit::Once(Kind::TerminateAll), actor)
        .user(user)
        .details(json!({"reason": reason}))
        .alert(Trigger::AdminTermination, format!("all sessions terminated by {actor}: {reason}"));
    let n = app.sessions.end_user(user, None, &ending).await?.len();
    Ok(ok(json!({"success": true, "userId": user, "terminated": n})))
}

async fn set_block(
    st: &AdminState,
    user: &str,
    block: bool,
    reason: Option<String>,
    actor: &str,
) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    if block {
        let ending = Ending::new(EndReason::UserBlocked, Audit::Once(Kind::UserBlocked), actor)
            .user(user)
            .details(json!({"reason": reason}))
            .alert(Trigger::AdminTermination, format!("user blocked by {actor}"));
        let n = app.sessions.block(user, Some(actor.to_string()), reason.clone(), &ending).await?.len();
        Ok(ok(json!({"success": true, "userId": user, "blocked": true, "terminated": n})))
    } else {
        app.sessions.unblock(user).await?;
        app.audit.record(Event::new(Kind::UserUnblocked).user(user).actor(actor));
        Ok(ok(json!({"success": true, "userId": user, "blocked": false, "terminated": 0})))
    }
}

async fn user_sessions(st: &AdminState, user: &str) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let mut recs = app.sessions.records(app.sessions.user_session_ids(user)).await?;
    recs.sort_by(|a, b| b.login_time.cmp(&a.login_time).then(b.id.cmp(&a.id)));
    let now = app.sessions.clock().now_ms();
    let data: Vec<Value> = recs.iter().map(|r| admin_json(st, r, now)).collect();
    let active = data.iter().filter(|v| v["isTrulyActive"] == true).count();
    Ok(ok(
        json!({"data": data, "meta": {"count": data.len(), "active": active, "blocked": app.sessions.is_blocked(user)}}),
    ))
}

fn blocked(st: &AdminState) -> Response<Body> {
    let mut b = st.app.sessions.blocked_users();
    b.sort_by_key(|r| r.blocked_at);
    let data: Vec<Value> = b
        .iter()
        .map(|r| json!({"userId": r.user_id, "blockedAt": iso(r.blocked_at), "actor": r.actor, "reason": r.reason}))
        .collect();
    ok(json!({"data": data, "meta": {"count": data.len()}}))
}

fn stats(st: &AdminState) -> Response<Body> {
    let app = &st.app;
    let now = app.sessions.clock().now_ms();
    let lives = app.sessions.all_live();
    let mut online = 0;
    let mut active = 0;
    let mut by_device: BTreeMap<String, u64> = BTreeMap::new();
    for l in lives.iter().filter(|l| !l.is_ended()) {
        active += 1;
        if !app.sessions.is_idle(l, now) {
            online += 1;
        }
        *by_device.entry(l.device_type.clone()).or_default() += 1;
    }
    let day = app.logins.last_24h(now);
    let hours: Vec<Value> = day
        .iter()
        .map(|h| json!({"hour": iso(h.start), "logins": h.logins, "failedLogins": h.failed, "vpnLogins": h.vpn}))
        .collect();
    let logins_24h: u64 = day.iter().map(|h| h.logins).sum();
    let failed_24h: u64 = day.iter().map(|h| h.failed).sum();
    let vpn_24h: u64 = day.iter().map(|h| h.vpn).sum();
    let mut by_country: BTreeMap<String, u64> = BTreeMap::new();
    for h in &day {
        for (c, n) in &h.countries {
            *by_country.entry(c.clone()).or_default() += n;
        }
    }
    let mut buckets: BTreeMap<&str, u64> =
        [("0-20", 0), ("20-40", 0), ("40-60", 0), ("60-80", 0), ("80-100", 0)].into_iter().collect();
    for score in lives.iter().filter(|l| !l.is_ended()).filter_map(|l| l.threat_score) {
        let b = match score {
            0..20 => "0-20",
            20..40 => "20-40",
            40..60 => "40-60",
            60..80 => "60-80",
            _ => "80-100",
        };
        *buckets.entry(b).or_default() += 1;
    }
    ok(json!({
        "online": online,
        "activeSessions": active,
        "totalSessions": lives.len(),
        "blockedUsers": app.sessions.blocked_users().len(),
        "threatScoreDistribution": buckets,
        "vpnLoginsLast24h": vpn_24h,
        "loginsByCountry": by_country,
        "loginsLast24h": logins_24h,
        "failedLoginsLast24h": failed_24h,
        "loginsPerHour": hours,
        "activeSessionsByDevice": by_device,
    }))
}

async fn audit_export(st: &AdminState, q: &BTreeMap<String, String>) -> Result<Response<Body>, GatewayError> {
    let filter = audit::Filter {
        since_ms: time_param(q, "since")?,
        until_ms: time_param(q, "until")?,
        kind: q.get("type").filter(|s| !s.is_empty()).cloned(),
        user: q.get("user").filter(|s| !s.is_empty()).cloned(),
        session: q.get("session").filter(|s| !s.is_empty()).cloned(),
    };
    match q.get("format").map(String::as_str).unwrap_or("json") {
        "csv" => {
            let mut res = Response::new(stream_body(audit::csv_stream(st.app.sessions.store().clone(), filter)));
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"sessiongate-audit.csv\""),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        "json" => {
            let limit = usize_param(q, "limit", 1000, 100_000)?;
            let events = audit::query(st.app.sessions.store(), &filter, limit).await?;
            Ok(ok(json!({"data": events, "meta": {"count": events.len()}})))
        }
        other => Err(GatewayError::InvalidParameter(format!("format: expected json or csv, got {other:?}"))),
    }
}

async fn clean_inactive(st: &AdminState, actor: &str) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let now = app.sessions.clock().now_ms();
    let idle: Vec<u64> = app
        .sessions
        .all_live()
        .iter()
        .filter(|l| !l.is_ended() && app.sessions.is_idle(l, now))
        .map(|l| l.id)
        .collect();
    let ending = Ending::new(EndReason::Inactive, Audit::Once(Kind::Cleanup), actor);
    let ended = app.sessions.end(&idle, &ending).await?;
    Ok(ok(json!({"success": true, "terminated": ended.len()})))
}

/// Recent alerts with their delivery status, newest first.
async fn alerts_list(st: &AdminState, q: &BTreeMap<String, String>) -> Result<Response<Body>, GatewayError> {
    let limit = usize_param(q, "limit", 100, 10_000)?;
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(AlertStatus::parse(s).ok_or_else(|| {
            GatewayError::InvalidParameter(format!("status: expected pending, delivered or dead, got {s:?}"))
        })?),
    };
    let mut all = st.app.sessions.store().alerts().await?;
    all.retain(|a| status.is_none_or(|s| a.status == s));
    all.reverse();
    all.truncate(limit);
    let data: Vec<Value> = all
        .iter()
        .map(|a| {
            json!({
                "id": a.id, "trigger": a.trigger, "channel": a.channel, "status": a.status, "attempts": a.attempts,
                "createdAt": iso(a.created), "nextAttemptAt": (a.status == AlertStatus::Pending).then(|| iso(a.next_attempt)),
                "deliveredAt": a.delivered_at.map(iso), "lastError": a.last_error, "event": a.event,
            })
        })
        .collect();
    Ok(ok(json!({"data": data, "meta": {"count": data.len()}})))
}

/// Sends a test alert to one channel (no deduplication).
fn alerts_test(st: &AdminState, body: &Value, actor: &str) -> Result<Response<Body>, GatewayError> {
    let channel = body
        .get("channel")
        .and_then(Value::as_str)
        .ok_or(GatewayError::BadRequest("body must name a channel: {\"channel\": \"…\"}"))?;
    if !st.app.alert_worker.has_channel(channel) {
        return Err(GatewayError::InvalidParameter(format!("channel: no channel named {channel:?}")));
    }
    let facts = crate::alerts::Facts {
        summary: format!("Test alert from sessiongate, sent by {actor}"),
        reasons: vec!["test".into()],
        ..Default::default()
    };
    st.app.alerts.raise_to(crate::alerts::Trigger::Test, vec![channel.to_string()], &facts, false);
    Ok(json(StatusCode::ACCEPTED, json!({"success": true, "channel": channel, "status": "queued"})))
}

/// node-auth `SessionInfo` list of the active sessions.
async fn node_auth_list(st: &AdminState) -> Result<Response<Body>, GatewayError> {
    let recs = all_records(st).await?;
    let data: Vec<Value> = recs
        .iter()
        .filter(|r| r.is_active())
        .map(|r| {
            json!({
                "sessionHandle": r.sid,
                "userId": r.user_id,
                "tenantId": r.tenant_id,
                "createdAt": iso(r.login_time),
                "expiresAt": r.refresh_exp.max(r.access_exp).map(|s| iso(s * 1000)),
                "lastActiveAt": iso(r.last_active),
                "userAgent": r.user_agent,
                "ipAddress": r.ip,
                "data": {"id": r.id, "documentId": r.document_id, "deviceType": r.device_type, "browserName": r.browser_name, "osName": r.os_name},
            })
        })
        .collect();
    Ok(ok(json!({"sessions": data, "total": data.len()})))
}

async fn cleanup(st: &AdminState, actor: &str) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let policy = sweeper::SweepPolicy {
        retention: app.cfg().store.terminated_retention,
        expired_token_grace: app.cfg().store.expired_token_grace,
        batch: app.cfg().store.sweep_batch,
        audit_retention: app.cfg().admin.audit_retention,
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let r = sweeper::sweep_once(&app.sessions, policy, &rx).await;
    app.audit.record(
        Event::new(Kind::Cleanup)
            .actor(actor)
            .details(json!({"expired": r.expired_sessions, "deleted": r.purged_sessions})),
    );
    Ok(ok(
        json!({"success": true, "expired": r.expired_sessions, "deleted": r.purged_sessions, "tokensDropped": r.dropped_tokens}),
    ))
}
