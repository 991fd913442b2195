//! Revoking one backend session with its tokens: the backend's logout route with the access
//! jwt (Strapi: `POST /api/auth/logout`, the refresh token in cookie and body too); when that
//! jwt has expired or is refused, the stored refresh token is first exchanged for a fresh pair
//! and the logout made with that. A refresh token the backend refuses means its session is
//! already dead there. The durable queue that decides *when* to call is `session::revoke`.
//!
//! The calls carry `x-sessiongate-internal: revocation`.

use super::fields::{json_at, pointer_str, set_cookie};
use super::{client::Answer, Call, Upstream};
use crate::clock::now_ms;
use crate::config::Config;
use crate::routes::RouteRule;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// An access jwt this close to its `exp` is treated as expired (clock skew).
const EXP_MARGIN_S: i64 = 5;

/// One backend call with a session's tokens: the access jwt as bearer, the refresh token in the
/// refresh cookie and the body (as a logout or refresh reads it).
async fn call(
    up: &Upstream,
    rule: &RouteRule,
    cfg: &Config,
    access: Option<&str>,
    refresh: Option<&str>,
) -> Result<Answer, String> {
    let field = rule.refresh_at.as_deref().or(cfg.extract.request_refresh_token.as_deref());
    let mut json = match (refresh, field) {
        (Some(r), Some(ptr)) => json_at(ptr, r),
        _ => Value::Object(Default::default()),
    };
    if let Value::Object(m) = &mut json {
        for (k, v) in &cfg.backend.revoke_fields {
            m.entry(k.clone()).or_insert_with(|| Value::String(v.clone()));
        }
    }
    let cookie = refresh.zip(cfg.extract.refresh_cookie.as_deref()).map(|(r, name)| (name, r));
    up.call_json(Call {
        method: rule.method.clone(),
        path: rule.path(),
        bearer: access,
        cookie,
        json: Some(json),
        form: cfg.backend.sends_forms(),
        internal: Some("revocation"),
        max_body: cfg.upstream.max_response_body_bytes,
    })
    .await
    .map_err(|e| e.to_string())
}

/// How one revocation attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backend's logout accepted the session's tokens.
    Revoked,
    /// The backend refuses the session's tokens already (its refresh token is dead).
    AlreadyRevoked,
    /// The backend has no such route (Strapi in legacy mode answers 404): nothing to revoke.
    Unsupported,
    /// Worth another try later.
    Failed(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Revoked => "revoked",
            Outcome::AlreadyRevoked => "already_revoked",
            Outcome::Unsupported => "unsupported",
            Outcome::Failed(_) => "retry",
        }
    }
}

/// One attempt, and the tokens a refresh minted during it (the next attempt must use them).
#[derive(Debug)]
pub struct Attempt {
    pub outcome: Outcome,
    pub fresh: Option<(String, Option<String>)>,
}

fn ok(s: u16) -> bool {
    (200..300).contains(&s)
}

/// Revokes one session's tokens at the backend (see the module doc).
pub async fn attempt(
    up: &Upstream,
    cfg: &Config,
    access: Option<&str>,
    access_exp: Option<i64>,
    refresh: Option<&str>,
    now_s: i64,
) -> Attempt {
    let done = |outcome| Attempt { outcome, fresh: None };
    let Some(logout) = cfg.backend.revoke_logout.as_ref() else { return done(Outcome::Unsupported) };
    let access = access.filter(|_| access_exp.is_none_or(|e| e > now_s + EXP_MARGIN_S));
    if let Some(a) = access {
        match call(up, logout, cfg, Some(a), refresh).await {
            Ok(a) if ok(a.status) => return done(Outcome::Revoked),
            Ok(a) if matches!(a.status, 401 | 403) => {}
            Ok(a) if a.status == 404 => return done(Outcome::Unsupported),
            Ok(a) => return done(Outcome::Failed(format!("logout answered {}", a.status))),
            Err(e) => return done(Outcome::Failed(e)),
        }
    }
    // The access jwt is expired or refused: only the refresh token can still open the session.
    let Some(r) = refresh else { return done(Outcome::AlreadyRevoked) };
    let Some(rule) = cfg.backend.revoke_refresh.as_ref() else {
        return done(Outcome::Failed("the access token is refused and backend.revoke_refresh is not set".into()));
    };
    let (json, headers) = match call(up, rule, cfg, None, Some(r)).await {
        Ok(a) if ok(a.status) => (a.json, a.headers),
        Ok(a) if matches!(a.status, 401 | 403) => return done(Outcome::AlreadyRevoked),
        Ok(a) if a.status == 404 => return done(Outcome::Unsupported),
        Ok(a) => return done(Outcome::Failed(format!("refresh answered {}", a.status))),
        Err(e) => return done(Outcome::Failed(e)),
    };
    let x = &cfg.extract;
    let Some(fresh_access) = pointer_str(&json, &x.access_token) else {
        return done(Outcome::Failed("the refresh answer carries no access token".into()));
    };
    let fresh_refresh = x
        .refresh_token
        .as_deref()
        .and_then(|p| pointer_str(&json, p))
        .or_else(|| x.refresh_cookie.as_deref().and_then(|n| set_cookie(&headers, n)));
    let refresh_now = fresh_refresh.as_deref().or(Some(r));
    let outcome = match call(up, logout, cfg, Some(&fresh_access), refresh_now).await {
        Ok(a) if ok(a.status) => Outcome::Revoked,
        Ok(a) => Outcome::Failed(format!("logout after a refresh answered {}", a.status)),
        Err(e) => Outcome::Failed(e),
    };
    Attempt { outcome, fresh: Some((fresh_access, fresh_refresh)) }
}

/// Backoff before attempt `n + 1` (n ≥ 1): about 1 s, 2 s, 4 s, … up to 5 min, with jitter.
pub fn backoff(attempts: u32) -> Duration {
    crate::retry::delay_after(attempts, BACKOFF_INITIAL, BACKOFF_MAX)
}

/// Revokes tokens that belong to no gateway session (a login the gateway refused after the
/// backend accepted it), in a background task with a few quick retries.
pub fn revoke_unowned(up: Arc<Upstream>, cfg: Arc<Config>, why: String, access: String, refresh: Option<String>) {
    tokio::spawn(async move {
        for n in 0..3u32 {
            let a = attempt(&up, &cfg, Some(&access), None, refresh.as_deref(), now_ms() / 1000).await;
            match a.outcome {
                Outcome::Failed(e) if n < 2 => {
                    tracing::debug!(why, error = %e, "revoking refused-login tokens failed; retrying");
                    tokio::time::sleep(backoff(n + 1)).await;
                }
                Outcome::Failed(e) => {
                    tracing::warn!(why, error = %e, "could not revoke the tokens of a refused login at the backend");
                }
                _ => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes_with_jitter() {
        let s: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        for (d, base) in s.iter().zip([1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]) {
            assert!(*d >= base && *d < base * 2, "{s:?}");
        }
        assert!((300..600).contains(&backoff(u32::MAX).as_secs()));
    }
}
