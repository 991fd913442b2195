//! A user's role, for per-role fencing and rules: from a JSON pointer in the login response, or
//! — Strapi's login response has none — from one follow-up request to the backend with an API
//! token (`GET /api/users/:id?populate=role`), cached per user for `roles.cache_ttl`.

use super::fields::pointer_str;
use super::{Call, Upstream};
use crate::clock::now_ms;
use crate::config::{RolesConfig, Secret};
use crate::routes::{RouteClass, RouteRule};
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
        if let Some(role) = self.cfg.pointer.as_deref().and_then(|p| pointer_str(login_response, p)) {
            return Some(role);
        }
        let rule = self.lookup.as_ref()?;
        let now = now_ms();
        if let Some((role, expires)) = crate::sync::lock(&self.cache).get(user_id).cloned() {
            if expires > now {
                return role;
            }
        }
        let path = rule.path().replace(
            ":id",
            &percent_encoding::utf8_percent_encode(user_id, percent_encoding::NON_ALPHANUMERIC).to_string(),
        );
        let token = self.token.as_ref().map(|t| String::from_utf8_lossy(t.expose()).into_owned());
        let call = Call {
            method: rule.method.clone(),
            path: &path,
            bearer: token.as_deref(),
            cookie: None,
            json: None,
            form: false,
            internal: None,
            max_body: 256 * 1024,
        };
        let fetched = async {
            let a = self.upstream.call_json(call).await.ok()?;
            Some(((200..300).contains(&a.status), a.json))
        };
        match tokio::time::timeout(Duration::from_secs(5), fetched).await {
            Ok(Some((true, json))) => {
                let role = pointer_str(&json, &self.cfg.lookup_pointer);
                {
                    let mut c = crate::sync::lock(&self.cache);
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
