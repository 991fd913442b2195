//! Health, readiness and Prometheus metrics.

use super::{json, AdminState};
use crate::error::Body;
use http::{header, HeaderValue, Request, Response, StatusCode};
use serde_json::json;
use std::time::Duration;

/// Liveness for load balancers that expect a plain `OK` (oauth2-proxy's `/ping`).
pub(crate) fn ping() -> Response<Body> {
    let mut res = Response::new(crate::error::full("OK"));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}

pub(super) async fn readyz(st: &AdminState) -> Response<Body> {
    let app = &st.app;
    let store_ok = app.sessions.store().size_on_disk().await.is_ok();
    let upstream_ok = if app.cfg().admin.ready_requires_upstream { upstream_reachable(app).await } else { true };
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
pub(crate) async fn upstream_reachable(app: &crate::state::AppState) -> bool {
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

pub(super) async fn metrics(st: &AdminState) -> Response<Body> {
    let app = &st.app;
    let o = app.sessions.overview();
    let (total, active, online) = (o.total, o.active, o.online);
    let m = &app.metrics;
    m.sessions.with_label_values(&["total"]).set(total as i64);
    m.sessions.with_label_values(&["active"]).set(active as i64);
    m.sessions.with_label_values(&["online"]).set(online as i64);
    let mem = app.sessions.index().memory();
    for (part, bytes) in mem.parts() {
        m.index_bytes.with_label_values(&[part]).set(bytes as i64);
    }
    if let Some(log) = &app.log {
        m.log_lines_dropped.set(log.dropped_lines() as i64);
    }
    m.alerts_queued.set(app.alert_worker.queued() as i64);
    for (source, age) in app.geo.ages(std::time::SystemTime::now()) {
        m.geo_data_age.with_label_values(&[source]).set(age);
    }
    if let Ok(size) = app.sessions.store().size_on_disk().await {
        m.store_size.set(size as i64);
    }
    let mut res = Response::new(crate::error::full(m.render()));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    res
}
