//! A user's role, for per-role fencing and rules: from a JSON pointer in the login response, or
//! — Strapi's login response has none — from one follow-up request to the backend with an API
//! token (`GET /api/users/:id?populate=role`), cached per user for `roles.cache_ttl`.

use crate::config::{RolesConfig, Secret};
use crate::proxy::upstream::Upstream;
use crate::routes::{RouteClass, RouteRule};
use crate::clock::now_ms;
use crate::session::tokens;
use http::{header, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Roles {
    cfg: RolesConfig,
    lookup: Option<RouteRule>,
    token: Option<Secret>,
    upstream: Arc<Upstream>,
    cache: Mutex<HashMap<String, (Option<String>, i64)>>,
}

impl Roles {
    pub fn new(cfg: RolesConfig, token: Option<Secret>, upstream: Arc<Upstream>) -> Roles {
        let lookup = cfg.lookup.as_deref().and_then(|l| RouteRule::parse(RouteClass::Other, l).ok());
        Roles { cfg, lookup, token, upstream, cache: Mutex::new(HashMap::new()) }
    }

    pub fn is_configured(&self) -> bool {
        self.cfg.is_configured()
    }

    /// The role of `user_id`; `None` when unknown (then only global fencing applies).
    pub async fn resolve(&self, user_id: &str, login_response: &Value) -> Option<String> {
        if let Some(role) = self.cfg.pointer.as_deref().and_then(|p| tokens::pointer_str(login_response, p)) {
            return Some(role);
        }
        let rule = self.lookup.as_ref()?;
        let now = now_ms();
        if let Some((role, expires)) = self.cache.lock().ok().and_then(|c| c.get(user_id).cloned()) {
            if expires > now {
                return role;
            }
        }
        let path = rule.path().replace(
            ":id",
            &percent_encoding::utf8_percent_encode(user_id, percent_encoding::NON_ALPHANUMERIC).to_string(),
        );
        let mut req = Request::builder()
            .method(rule.method.clone())
            .uri(self.upstream.uri(&path).ok()?)
            .header(header::HOST, self.upstream.authority().as_str())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("sessiongate/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {}", String::from_utf8_lossy(t.expose())));
        }
        let req = req.body(crate::error::full("")).ok()?;
        let fetched = async {
            let res = self.upstream.send(req).await.ok()?;
            let ok = res.status().is_success();
            let bytes = http_body_util::Limited::new(res.into_body(), 256 * 1024).collect().await.ok()?.to_bytes();
            Some((ok, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null)))
        };
        match tokio::time::timeout(Duration::from_secs(5), fetched).await {
            Ok(Some((true, json))) => {
                let role = tokens::pointer_str(&json, &self.cfg.lookup_pointer);
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() > 100_000 {
                        c.retain(|_, (_, exp)| *exp > now);
                    }
                    c.insert(user_id.to_string(), (role.clone(), now + self.cfg.cache_ttl.as_millis() as i64));
                }
                role
            }
            _ => {
                tracing::warn!(user = %user_id, "role lookup at the backend failed; only global fencing applies to this login");
                None
            }
        }
    }
}
