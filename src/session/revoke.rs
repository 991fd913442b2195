//! Revoking ended sessions at the backend, so that a session ended at the gateway is ended at
//! the backend too — whatever the backend answered the client's own call.
//!
//! Every ending that needs it ([`super::EndReason::revokes_backend`]) writes an entry of the
//! durable revocation queue (store tree `revocations`) in the same transaction as the ending.
//! [`run`] works through the queue: it calls the backend's logout route with the session's
//! stored tokens (Strapi: `POST /api/auth/logout`, the access jwt as bearer, the refresh token
//! in cookie and body); when the stored access jwt has expired or is refused, it first exchanges
//! the stored refresh token for a fresh pair and logs out with that. A refresh token the backend
//! refuses means its session is already dead there. Failures (backend down, 5xx, timeouts) are
//! retried with exponential backoff until the session's tokens have expired — after which the
//! backend accepts none of them anyway. Each outcome is counted in
//! `backend_revocations_total{outcome}`, final ones are audited, and
//! `backend_revocations_pending` shows what is still open: a session that stays ended at the
//! gateway and alive at the backend is visible there.
//!
//! Logouts hold their entry back while their own backend answer arrives (see
//! `Sessions::end_pending_proof`): when that answer proves the session revoked, the entry is
//! dropped (`proven`); otherwise it is made due at once.
//!
//! The gateway's own calls carry `x-sessiongate-internal: revocation`; client requests can
//! never carry that header to the backend (`x-sessiongate-*` is stripped from them).

use crate::clock::now_ms;
use crate::audit::{kind, Event};
use crate::config::Config;
use crate::error::full;
use crate::proxy::upstream::Upstream;
use crate::routes::RouteRule;
use crate::state::AppState;
use crate::store::RevocationRecord;
use http::{header, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Every `outcome` label of `backend_revocations_total`.
pub const OUTCOMES: [&str; 8] =
    ["revoked", "already_revoked", "expired", "proven", "retry", "unsupported", "abandoned", "disabled"];

/// Entries worked on per pass.
const BATCH: usize = 16;
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// An access jwt this close to its `exp` is treated as expired (clock skew).
const EXP_MARGIN_S: i64 = 5;

/// The header marking the gateway's own backend calls.
pub const INTERNAL_HEADER: &str = "x-sessiongate-internal";

/// Builds `{"a":{"b":value}}` for pointer `/a/b`.
pub fn json_at(pointer: &str, value: &str) -> Value {
    let keys: Vec<&str> = pointer.split('/').skip(1).collect();
    keys.into_iter().rev().fold(Value::String(value.to_string()), |inner, key| {
        let mut m = serde_json::Map::new();
        m.insert(key.replace("~1", "/").replace("~0", "~"), inner);
        Value::Object(m)
    })
}

/// One backend call: `(status, JSON body, headers)`, or why it failed.
async fn call(
    up: &Upstream,
    rule: &RouteRule,
    cfg: &Config,
    access: Option<&str>,
    refresh: Option<&str>,
) -> Result<(u16, Value, http::HeaderMap), String> {
    let body = match (refresh, cfg.extract.request_refresh_token.as_deref()) {
        (Some(r), Some(ptr)) => json_at(ptr, r),
        _ => Value::Object(Default::default()),
    };
    let mut req = Request::builder()
        .method(rule.method.clone())
        .uri(up.uri(rule.path()).map_err(|e| e.to_string())?)
        .header(header::HOST, up.authority().as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, concat!("sessiongate/", env!("CARGO_PKG_VERSION")))
        .header(INTERNAL_HEADER, "revocation");
    if let Some(a) = access {
        req = req.header(header::AUTHORIZATION, format!("Bearer {a}"));
    }
    if let (Some(r), Some(name)) = (refresh, cfg.extract.refresh_cookie.as_deref()) {
        req = req.header(header::COOKIE, format!("{name}={r}"));
    }
    let req = req.body(full(body.to_string())).map_err(|e| e.to_string())?;
    let res = up.send(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    let bytes = http_body_util::Limited::new(body, cfg.upstream.max_response_body_bytes)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), parts.headers))
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
    fn label(&self) -> &'static str {
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
) -> Attempt {
    let done = |outcome| Attempt { outcome, fresh: None };
    let Some(logout) = cfg.backend.revoke_logout.as_ref() else { return done(Outcome::Unsupported) };
    let now_s = now_ms() / 1000;
    let access = access.filter(|_| access_exp.is_none_or(|e| e > now_s + EXP_MARGIN_S));
    if let Some(a) = access {
        match call(up, logout, cfg, Some(a), refresh).await {
            Ok((s, _, _)) if ok(s) => return done(Outcome::Revoked),
            Ok((401 | 403, _, _)) => {}
            Ok((404, _, _)) => return done(Outcome::Unsupported),
            Ok((s, _, _)) => return done(Outcome::Failed(format!("logout answered {s}"))),
            Err(e) => return done(Outcome::Failed(e)),
        }
    }
    // The access jwt is expired or refused: only the refresh token can still open the session.
    let Some(r) = refresh else { return done(Outcome::AlreadyRevoked) };
    let Some(rule) = cfg.backend.revoke_refresh.as_ref() else {
        return done(Outcome::Failed("the access token is refused and backend.revoke_refresh is not set".into()));
    };
    let (json, headers) = match call(up, rule, cfg, None, Some(r)).await {
        Ok((s, json, headers)) if ok(s) => (json, headers),
        Ok((401 | 403, _, _)) => return done(Outcome::AlreadyRevoked),
        Ok((404, _, _)) => return done(Outcome::Unsupported),
        Ok((s, _, _)) => return done(Outcome::Failed(format!("refresh answered {s}"))),
        Err(e) => return done(Outcome::Failed(e)),
    };
    let x = &cfg.extract;
    let Some(fresh_access) = super::tokens::pointer_str(&json, &x.access_token) else {
        return done(Outcome::Failed("the refresh answer carries no access token".into()));
    };
    let fresh_refresh = x
        .refresh_token
        .as_deref()
        .and_then(|p| super::tokens::pointer_str(&json, p))
        .or_else(|| x.refresh_cookie.as_deref().and_then(|n| super::tokens::set_cookie(&headers, n)));
    let refresh_now = fresh_refresh.as_deref().or(Some(r));
    let outcome = match call(up, logout, cfg, Some(&fresh_access), refresh_now).await {
        Ok((s, _, _)) if ok(s) => Outcome::Revoked,
        Ok((s, _, _)) => Outcome::Failed(format!("logout after a refresh answered {s}")),
        Err(e) => Outcome::Failed(e),
    };
    Attempt { outcome, fresh: Some((fresh_access, fresh_refresh)) }
}

/// Backoff before attempt `n + 1` (n ≥ 1): 1 s, 2 s, 4 s, … up to 5 min.
fn backoff(attempts: u32) -> Duration {
    BACKOFF_INITIAL.saturating_mul(1u32 << attempts.saturating_sub(1).min(16)).min(BACKOFF_MAX)
}

/// Works through the revocation queue until `stop` fires.
pub async fn run(st: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let notify = st.sessions.revocation_notify();
    loop {
        let wait = match pass(&st).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "revocation queue: store failure; retrying");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Handles the due entries; returns how long to wait before the next one is due.
async fn pass(st: &AppState) -> Result<Duration, crate::store::StoreError> {
    let store = st.sessions.store();
    let queue = store.revocations().await?;
    let now = now_ms();
    let mut due: Vec<RevocationRecord> = queue.iter().filter(|r| r.due <= now).cloned().collect();
    due.sort_by_key(|r| r.due);
    let more = due.len() > BATCH;
    due.truncate(BATCH);
    let results = futures_util::future::join_all(due.into_iter().map(|r| settle(st, r))).await;
    let (mut delete, mut retry) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            Settled::Done(id) => delete.push(id),
            Settled::Again(rec) => retry.push(rec),
        }
    }
    // What is left: the queue as read, less what settled, with the retries' new times. An entry
    // queued meanwhile has woken the worker already, so the next pass sees it.
    let left: Vec<i64> = queue
        .iter()
        .filter(|r| !delete.contains(&r.session))
        .map(|r| retry.iter().find(|x| x.session == r.session).map_or(r.due, |x| x.due))
        .collect();
    store.delete_revocations(delete).await?;
    store.put_revocations(retry).await?;
    st.metrics.backend_revocations_pending.set(left.len() as i64);
    if more {
        return Ok(Duration::ZERO);
    }
    let next = left.iter().min().copied();
    Ok(next.map_or(Duration::from_secs(60), |d| Duration::from_millis((d - now_ms()).clamp(0, 60_000) as u64)))
}

enum Settled {
    Done(u64),
    Again(RevocationRecord),
}

async fn settle(st: &AppState, mut rec: RevocationRecord) -> Settled {
    let cfg = st.config.load_full();
    let count = |label: &str| st.metrics.backend_revocations.with_label_values(&[label]).inc();
    if !st.sessions.revocation_enabled() || cfg.backend.revoke_logout.is_none() {
        count("disabled");
        return Settled::Done(rec.session);
    }
    let record = match st.sessions.store().get(rec.session).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            // Purged after its retention: its tokens are long dead.
            count("expired");
            return Settled::Done(rec.session);
        }
        Err(e) => {
            rec.last_error = Some(e.to_string());
            rec.due = now_ms() + 5_000;
            return Settled::Again(rec);
        }
    };
    let (access, refresh) = st.sessions.open_tokens(&record);
    let audit = |outcome: &str, attempts: u32, error: Option<&str>| {
        let kind = if error.is_some() { kind::BACKEND_REVOKE_FAILED } else { kind::BACKEND_REVOKED };
        st.audit.record(Event::new(kind).user(&record.user_id).session(&record.sid).actor("system").details(
            serde_json::json!({"outcome": outcome, "attempts": attempts, "reason": rec.reason, "error": error}),
        ));
    };
    if access.is_none() && refresh.is_none() {
        tracing::error!(session = %record.sid, "cannot revoke at the backend: the session's tokens cannot be decrypted");
        count("abandoned");
        audit("abandoned", rec.attempts, Some("the stored tokens cannot be decrypted"));
        return Settled::Done(rec.session);
    }
    let now_s = now_ms() / 1000;
    let exps = [record.access_exp, record.refresh_exp];
    if exps.iter().all(|e| e.is_some_and(|e| e < now_s)) {
        count("expired");
        audit("expired", rec.attempts, None);
        return Settled::Done(rec.session);
    }
    let a = attempt(&st.upstream, &cfg, access.as_deref(), record.access_exp, refresh.as_deref()).await;
    if let Some((fa, fr)) = &a.fresh {
        if let Err(e) = st.sessions.replace_sealed_tokens(rec.session, fa, fr.as_deref()).await {
            tracing::warn!(session = %record.sid, error = %e, "could not store the tokens a revocation refresh minted");
        }
    }
    rec.attempts += 1;
    count(a.outcome.label());
    match a.outcome {
        Outcome::Revoked | Outcome::AlreadyRevoked | Outcome::Unsupported => {
            if a.outcome == Outcome::Unsupported {
                tracing::warn!(session = %record.sid, "the backend has no route to revoke sessions (backend.revoke_logout answered 404)");
            } else {
                tracing::info!(session = %record.sid, outcome = a.outcome.label(), attempts = rec.attempts, "session revoked at the backend");
            }
            audit(a.outcome.label(), rec.attempts, None);
            Settled::Done(rec.session)
        }
        Outcome::Failed(why) => {
            if rec.attempts == 1 || rec.attempts % 10 == 0 {
                tracing::warn!(session = %record.sid, attempts = rec.attempts, error = %why, "backend revocation failed; it will be retried (the gateway refuses the session's tokens meanwhile)");
            }
            rec.due = now_ms() + backoff(rec.attempts).as_millis() as i64;
            rec.last_error = Some(why);
            Settled::Again(rec)
        }
    }
}

/// Revokes tokens that belong to no gateway session (a login the gateway refused after the
/// backend accepted it), in a background task with a few quick retries.
pub fn revoke_unowned(st: &AppState, why: String, access: String, refresh: Option<String>) {
    let (up, cfg) = (st.upstream.clone(), st.config.load_full());
    tokio::spawn(async move {
        for n in 0..3u32 {
            let a = attempt(&up, &cfg, Some(&access), None, refresh.as_deref()).await;
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
    fn json_at_builds_nested_objects() {
        assert_eq!(json_at("/refreshToken", "t"), serde_json::json!({"refreshToken": "t"}));
        assert_eq!(json_at("/a/b~1c", "t"), serde_json::json!({"a": {"b/c": "t"}}));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let s: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(s, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
