//! The user API, answered by the gateway on the public port and compatible with the
//! session-manager plugin: users list and end their *own* sessions, authenticated by the
//! request's own tracked token. Another user's session is answered 404, never 403, so ids
//! cannot be probed.

use crate::audit::Kind;
use crate::clock::iso;
use crate::error::{full, Body, GatewayError};
use crate::session::{Audit, EndReason, Ending, Live};
use crate::state::AppState;
use crate::store::SessionRecord;
use http::{header, HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// One session in the plugin's JSON shape.
pub fn session_json(rec: &SessionRecord, current: Option<u64>, now: i64, inactivity: Duration) -> Value {
    let idle_ms = now - rec.last_active;
    let truly_active = rec.is_active() && idle_ms <= inactivity.as_millis() as i64;
    let geo = rec.geo.as_ref();
    let geo_location = geo.map(|g| {
        json!({
            "country": if g.local { Some("Local".to_string()) } else { g.country.clone() },
            "countryCode": g.country_code,
            "flag": g.flag(),
            "city": g.city,
            "lat": g.lat,
            "lon": g.lon,
            "timezone": g.timezone,
            "asn": g.asn,
            "isp": g.isp,
        })
    });
    let flag = |f: fn(&crate::geo::GeoInfo) -> bool| geo.map(f);
    json!({
        "id": rec.id,
        "documentId": rec.document_id,
        "sessionId": rec.sid,
        "ipAddress": rec.ip,
        // Where it was last used from (the login's address until another was seen).
        "lastIpAddress": rec.seen.as_ref().map_or(&rec.ip, |s| &s.ip),
        "lastSeenFrom": rec.seen.as_ref().map(|s| json!({
            "ipAddress": s.ip,
            "at": iso(s.at),
            "countryCode": s.country_code,
            "asn": s.asn,
            "browser": s.family,
            "changes": s.changes,
        })),
        "userAgent": rec.user_agent,
        "loginTime": iso(rec.login_time),
        "lastActive": iso(rec.last_active),
        "logoutTime": rec.logout_time.map(iso),
        "isActive": rec.is_active(),
        "deviceType": rec.device_type,
        "browserName": rec.browser_name,
        "osName": rec.os_name,
        "geoLocation": geo_location,
        "securityScore": rec.threat_score.map(|t| 100u32.saturating_sub(t)),
        "isVpn": flag(|g| g.is_vpn),
        "isProxy": flag(|g| g.is_proxy || g.is_residential_proxy),
        "isTor": flag(|g| g.is_tor),
        "isDatacenter": flag(|g| g.is_datacenter),
        "isCurrentSession": Some(rec.id) == current,
        "isTrulyActive": truly_active,
        "minutesSinceActive": (idle_ms.max(0) / 60_000),
    })
}

fn ok(value: Value) -> Response<Body> {
    let mut res = Response::new(full(value.to_string()));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Answers a user API request. `rest` is the normalised path after the prefix; `current` is
/// the live session of the presented token (enforcement already refused ended ones).
pub async fn handle(
    st: &AppState,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    current: Option<Live>,
) -> Result<Response<Body>, GatewayError> {
    let Some(current) = current else { return Err(GatewayError::Unauthenticated) };
    let sessions = &st.sessions;
    let inactivity = sessions.config().inactivity_timeout;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["my-sessions"]) => {
            let include_ended = query.is_some_and(|q| q.split('&').any(|kv| kv.eq_ignore_ascii_case("all=true")));
            let mut recs = sessions.records(sessions.user_session_ids(&current.user_id)).await?;
            recs.retain(|r| include_ended || r.is_active());
            recs.sort_by(|a, b| b.login_time.cmp(&a.login_time).then(b.id.cmp(&a.id)));
            let now = sessions.clock().now_ms();
            let data: Vec<Value> = recs.iter().map(|r| session_json(r, Some(current.id), now, inactivity)).collect();
            let active = data.iter().filter(|v| v["isTrulyActive"] == Value::Bool(true)).count();
            Ok(ok(json!({ "data": data, "meta": { "count": data.len(), "active": active } })))
        }
        (&Method::GET, ["current-session"]) => {
            let rec = sessions.records(vec![current.id]).await?.pop().ok_or(GatewayError::Unauthenticated)?;
            Ok(ok(json!({ "data": session_json(&rec, Some(current.id), sessions.clock().now_ms(), inactivity) })))
        }
        (&Method::POST, ["logout"]) => {
            sessions
                .end(&[current.id], &Ending::new(EndReason::Logout, Audit::EachSession(Kind::Logout), "user"))
                .await?;
            Ok(ok(json!({ "message": "Logged out successfully" })))
        }
        (&Method::POST, ["logout-all"]) => {
            let ending = Ending::new(EndReason::LogoutAll, Audit::EachSession(Kind::LogoutAll), "user");
            sessions.end_user(&current.user_id, &ending).await?;
            Ok(ok(json!({ "message": "Logged out from all devices successfully" })))
        }
        (&Method::POST, ["logout-others"]) => {
            let ending = Ending::new(EndReason::UserTerminated, Audit::EachSession(Kind::Terminate), "user");
            let n = sessions.end_user_except(&current.user_id, current.id, &ending).await?.len();
            Ok(ok(json!({ "message": "Logged out from all other devices successfully", "terminated": n })))
        }
        (&Method::DELETE, ["my-sessions", id]) => {
            let target = sessions.find_for_user(&current.user_id, id).await?.ok_or(GatewayError::NotFound)?;
            if target.id == current.id {
                return Err(GatewayError::CannotTerminateCurrent);
            }
            let ending = Ending::new(EndReason::UserTerminated, Audit::EachSession(Kind::Terminate), "user");
            sessions.end(&[target.id], &ending).await?;
            Ok(ok(json!({ "message": format!("Session {id} terminated successfully"), "success": true })))
        }
        _ => Err(GatewayError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_match_the_plugin() {
        let mut rec = crate::store::contract::record(41, "1");
        rec.login_time = 0;
        rec.last_active = 0;
        let v = session_json(&rec, Some(41), 3 * 60_000, Duration::from_secs(900));
        for key in [
            "id",
            "documentId",
            "sessionId",
            "ipAddress",
            "userAgent",
            "loginTime",
            "lastActive",
            "logoutTime",
            "isActive",
            "deviceType",
            "browserName",
            "osName",
            "geoLocation",
            "securityScore",
            "isCurrentSession",
            "isTrulyActive",
            "minutesSinceActive",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["minutesSinceActive"], 3);
        assert_eq!(v["isTrulyActive"], true);
        let v = session_json(&rec, None, 16 * 60_000, Duration::from_secs(900));
        assert_eq!((v["isTrulyActive"].clone(), v["isCurrentSession"].clone()), (json!(false), json!(false)));
    }
}
