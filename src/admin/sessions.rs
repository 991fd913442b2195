//! Sessions and users as admins see and end them (the plugin's admin paths, node-auth's shape),
//! and the live event stream the dashboard follows.

use super::router::*;
use super::{not_found, ok, AdminState};
use crate::alerts::Trigger;
use crate::audit::{self, Event, Kind};
use crate::clock::iso;
use crate::error::{Body, GatewayError};
use crate::proxy::user_api::session_json;
use crate::session::index::SortKey;
use crate::session::{Audit, EndReason, Ending};
use crate::store::SessionRecord;
use http::{header, Response};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Server-Sent Events: one `session` event per notice (created, rotated, ended, blocked,
/// unblocked), `resync` when this client fell behind, a comment every 15 s to keep proxies from
/// closing an idle stream. Ends at shutdown.
pub(super) fn events(st: &AdminState) -> Response<Body> {
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

/// A session as admins see it: the plugin's fields plus who, where from and why it ended.
pub(super) fn admin_json(st: &AdminState, rec: &SessionRecord, now: i64) -> Value {
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

pub(super) async fn list(
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
    // Filter and order the index's listing columns; read only the requested page from the
    // store, so a page costs a scan of a few columns however many sessions there are.
    let query = crate::session::index::Query {
        active,
        user: user.cloned(),
        ip: ip.cloned(),
        device: device.cloned(),
        country: country.cloned(),
        since,
        until,
        min_threat,
        sort: match field {
            "lastActive" => SortKey::LastActive,
            "id" => SortKey::Id,
            "userId" => SortKey::UserId,
            _ => SortKey::LoginTime,
        },
        desc,
        offset: (page - 1).saturating_mul(page_size),
        limit: page_size,
    };
    let (total, ids) = st.app.sessions.select(&query);
    let now = st.app.sessions.clock().now_ms();
    let mut recs = st.app.sessions.records(ids.clone()).await?;
    recs.sort_by_key(|r| ids.iter().position(|i| *i == r.id));
    let data: Vec<Value> = recs.iter().map(|r| admin_json(st, r, now)).collect();
    Ok(ok(json!({
        "data": data,
        "meta": {"pagination": {"page": page, "pageSize": page_size, "pageCount": total.div_ceil(page_size), "total": total}}
    })))
}

pub(super) async fn detail(st: &AdminState, id: &str) -> Result<Response<Body>, GatewayError> {
    let live = st.app.sessions.find(id).await?.ok_or_else(not_found)?;
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
pub(super) fn admin_end_reason(reason: &str) -> EndReason {
    // Only reasons that revoke the backend session: an admin's "expired" must not skip that.
    EndReason::parse(reason).filter(|r| r.revokes_backend()).unwrap_or(EndReason::AdminTerminated)
}

pub(super) async fn terminate(
    st: &AdminState,
    id: &str,
    reason: &str,
    actor: &str,
) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let live = app.sessions.find(id).await?.ok_or_else(not_found)?;
    let ending = Ending::new(admin_end_reason(reason), Audit::EachSession(Kind::Terminate), actor)
        .details(json!({"reason": reason}))
        .alert(Trigger::AdminTermination, format!("terminated by {actor}: {reason}"));
    let already = app.sessions.end(&[live.id], &ending).await?.is_empty();
    tracing::info!(session = %live.sid, %actor, reason, "session terminated by an admin");
    Ok(ok(
        json!({"success": true, "sessionId": live.sid.to_string(), "alreadyEnded": already, "message": "Session terminated"}),
    ))
}

/// Ends every session of a user, or all but `except` (a session id, `sessionId` or
/// `documentId` of that user's; another user's answers 404).
pub(super) async fn terminate_all(
    st: &AdminState,
    user: &str,
    except: Option<&str>,
    reason: &str,
    actor: &str,
) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let keep = match except {
        Some(id) => Some(app.sessions.find_for_user(user, id).await?.ok_or_else(not_found)?.id),
        None => None,
    };
    let ending = Ending::new(admin_end_reason(reason), Audit::Once(Kind::TerminateAll), actor)
        .user(user)
        .details(json!({"reason": reason, "except": except}))
        .alert(Trigger::AdminTermination, format!("all sessions terminated by {actor}: {reason}"));
    let n = match keep {
        Some(keep) => app.sessions.end_user_except(user, keep, &ending).await?.len(),
        None => app.sessions.end_user(user, &ending).await?.len(),
    };
    Ok(ok(json!({"success": true, "userId": user, "terminated": n})))
}

pub(super) async fn set_block(
    st: &AdminState,
    user: &str,
    block: bool,
    force: bool,
    reason: Option<String>,
    actor: &str,
) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    if block {
        // A user the gateway has never seen a session of is most likely a typo (a username
        // where the id was meant): blocking it would answer "blocked" and protect nothing.
        if !force && app.sessions.user_session_ids(user).is_empty() && !app.sessions.is_blocked(user) {
            return Err(GatewayError::UnknownUser(user.chars().take(200).collect()));
        }
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

pub(super) async fn user_sessions(st: &AdminState, user: &str) -> Result<Response<Body>, GatewayError> {
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

pub(super) fn blocked(st: &AdminState) -> Response<Body> {
    let mut b = st.app.sessions.blocked_users();
    b.sort_by_key(|r| r.blocked_at);
    let data: Vec<Value> = b
        .iter()
        .map(|r| json!({"userId": r.user_id, "blockedAt": iso(r.blocked_at), "actor": r.actor, "reason": r.reason}))
        .collect();
    ok(json!({"data": data, "meta": {"count": data.len()}}))
}

pub(super) async fn clean_inactive(st: &AdminState, actor: &str) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let now = app.sessions.clock().now_ms();
    let idle = app.sessions.index().idle(now, app.sessions.config().inactivity_timeout.as_millis() as i64);
    let ending = Ending::new(EndReason::Inactive, Audit::Once(Kind::Cleanup), actor);
    let ended = app.sessions.end(&idle, &ending).await?;
    Ok(ok(json!({"success": true, "terminated": ended.len()})))
}

/// node-auth `SessionInfo` list of the active sessions.
/// The node-auth listing of active sessions, newest first, a page at a time: `limit` (100,
/// at most 500) from `offset` (0); `nextOffset` is null on the last page.
pub(super) async fn node_auth_list(
    st: &AdminState,
    q: &BTreeMap<String, String>,
) -> Result<Response<Body>, GatewayError> {
    let limit = usize_param(q, "limit", 100, MAX_PAGE_SIZE)?;
    let offset = match q.get("offset").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| GatewayError::InvalidParameter(format!("offset: expected a number from 0, got {v:?}")))?,
    };
    let query = crate::session::index::Query { active: Some(true), offset, limit, ..Default::default() };
    let (total, ids) = st.app.sessions.select(&query);
    let mut recs = st.app.sessions.records(ids.clone()).await?;
    recs.sort_by_key(|r| ids.iter().position(|i| *i == r.id));
    let data: Vec<Value> = recs
        .iter()
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
    let next = (offset + data.len() < total).then_some(offset + data.len());
    Ok(ok(json!({"sessions": data, "total": total, "offset": offset, "limit": limit, "nextOffset": next})))
}
