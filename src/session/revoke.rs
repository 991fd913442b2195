//! Best-effort revocation of an ended session at the backend, so the backend's own session row
//! dies too (Strapi: `POST /api/auth/logout` with the session's jwt and refresh token). Runs in
//! a background task; the gateway already refuses the tokens whatever happens here.
//!
//! If the stored access token has expired (Strapi answers the logout 401), the stored refresh
//! token is exchanged once for a fresh pair, and the logout is sent with that pair.

use crate::config::Config;
use crate::error::full;
use crate::proxy::upstream::Upstream;
use crate::routes::RouteRule;
use http::{header, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;

/// Builds `{"a":{"b":value}}` for pointer `/a/b`.
pub fn json_at(pointer: &str, value: &str) -> Value {
    let keys: Vec<&str> = pointer.split('/').skip(1).collect();
    keys.into_iter().rev().fold(Value::String(value.to_string()), |inner, key| {
        let mut m = serde_json::Map::new();
        m.insert(key.replace("~1", "/").replace("~0", "~"), inner);
        Value::Object(m)
    })
}

async fn call(
    up: &Upstream,
    rule: &RouteRule,
    cfg: &Config,
    access: Option<&str>,
    refresh: Option<&str>,
) -> Option<(u16, Value, http::HeaderMap)> {
    let body = match (refresh, cfg.extract.request_refresh_token.as_deref()) {
        (Some(r), Some(ptr)) => json_at(ptr, r),
        _ => Value::Object(Default::default()),
    };
    let mut req = Request::builder()
        .method(rule.method.clone())
        .uri(up.uri(rule.path()).ok()?)
        .header(header::HOST, up.authority().as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, concat!("sessiongate/", env!("CARGO_PKG_VERSION")));
    if let Some(a) = access {
        req = req.header(header::AUTHORIZATION, format!("Bearer {a}"));
    }
    if let (Some(r), Some(name)) = (refresh, cfg.extract.refresh_cookie.as_deref()) {
        req = req.header(header::COOKIE, format!("{name}={r}"));
    }
    let req = req.body(full(body.to_string())).ok()?;
    let res = up.send(req).await.ok()?;
    let status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    let bytes =
        http_body_util::Limited::new(body, cfg.upstream.max_response_body_bytes).collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), parts.headers))
}

/// Revokes one session's tokens at the backend. Returns whether the backend confirmed it.
pub async fn revoke(
    up: Arc<Upstream>,
    cfg: Arc<Config>,
    sid: String,
    access: Option<String>,
    refresh: Option<String>,
) -> bool {
    let Some(logout) = cfg.backend.revoke_logout.as_ref().filter(|_| cfg.backend.revoke_on_end) else { return false };
    let first = call(&up, logout, &cfg, access.as_deref(), refresh.as_deref()).await;
    let ok = match first {
        Some((s, _, _)) if (200..300).contains(&s) => true,
        Some((401, _, _)) | Some((403, _, _)) => match (&cfg.backend.revoke_refresh, refresh.as_deref()) {
            (Some(rule), Some(r)) => match call(&up, rule, &cfg, None, Some(r)).await {
                Some((s, json, headers)) if (200..300).contains(&s) => {
                    let fresh_access = super::tokens::pointer_str(&json, &cfg.extract.access_token);
                    let fresh_refresh = cfg
                        .extract
                        .refresh_token
                        .as_deref()
                        .and_then(|p| super::tokens::pointer_str(&json, p))
                        .or_else(|| {
                            cfg.extract.refresh_cookie.as_deref().and_then(|n| super::tokens::set_cookie(&headers, n))
                        });
                    matches!(
                        call(&up, logout, &cfg, fresh_access.as_deref(), fresh_refresh.as_deref().or(Some(r))).await,
                        Some((s, _, _)) if (200..300).contains(&s)
                    )
                }
                _ => false,
            },
            _ => false,
        },
        _ => false,
    };
    if ok {
        tracing::info!(session = %sid, "session revoked at the backend");
    } else {
        tracing::warn!(session = %sid, "could not revoke session at the backend (the gateway still refuses its tokens)");
    }
    ok
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_at_builds_nested_objects() {
        assert_eq!(super::json_at("/refreshToken", "t"), serde_json::json!({"refreshToken": "t"}));
        assert_eq!(super::json_at("/a/b~1c", "t"), serde_json::json!({"a": {"b/c": "t"}}));
    }
}
