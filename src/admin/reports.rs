//! Reports: statistics, the audit export, alerts (list, test) and the clean-up.

use super::router::*;
use super::{json, ok, stream_body, AdminState};
use crate::audit::{self, Event, Kind};
use crate::clock::iso;
use crate::error::{Body, GatewayError};
use crate::session::sweeper;
use crate::store::AlertStatus;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(super) fn stats(st: &AdminState) -> Response<Body> {
    let app = &st.app;
    let now = app.sessions.clock().now_ms();
    let o = app.sessions.overview();
    let mem = app.sessions.index().memory();
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
    let buckets: BTreeMap<&str, u64> =
        ["0-20", "20-40", "40-60", "60-80", "80-100"].into_iter().zip(o.threat).collect();
    ok(json!({
        "online": o.online,
        "activeSessions": o.active,
        "totalSessions": o.total,
        "blockedUsers": app.sessions.blocked_users().len(),
        "threatScoreDistribution": buckets,
        "vpnLoginsLast24h": vpn_24h,
        "loginsByCountry": by_country,
        "loginsLast24h": logins_24h,
        "failedLoginsLast24h": failed_24h,
        "loginsPerHour": hours,
        "activeSessionsByDevice": o.by_device,
        "index": {"bytes": mem, "totalBytes": mem.total(), "tokens": app.sessions.index().len().1},
    }))
}

pub(super) async fn audit_export(
    st: &AdminState,
    q: &BTreeMap<String, String>,
) -> Result<Response<Body>, GatewayError> {
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

/// Recent alerts with their delivery status, newest first.
pub(super) async fn alerts_list(st: &AdminState, q: &BTreeMap<String, String>) -> Result<Response<Body>, GatewayError> {
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
pub(super) fn alerts_test(st: &AdminState, body: &Value, actor: &str) -> Result<Response<Body>, GatewayError> {
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

pub(super) async fn cleanup(st: &AdminState, actor: &str) -> Result<Response<Body>, GatewayError> {
    let app = &st.app;
    let policy = sweeper::SweepPolicy::of(&app.cfg());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let r = sweeper::sweep_once(&app.sessions, &policy, &rx).await;
    app.audit.record(
        Event::new(Kind::Cleanup)
            .actor(actor)
            .details(json!({"expired": r.expired_sessions, "deleted": r.purged_sessions})),
    );
    Ok(ok(
        json!({"success": true, "expired": r.expired_sessions, "deleted": r.purged_sessions, "tokensDropped": r.dropped_tokens}),
    ))
}
