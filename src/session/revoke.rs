//! Revoking ended sessions at the backend, so that a session ended at the gateway is ended at
//! the backend too — whatever the backend answered the client's own call.
//!
//! Every ending that needs it ([`super::EndReason::revokes_backend`]) writes an entry of the
//! durable revocation queue (store tree `revocations`) in the same transaction as the ending.
//! [`run`] works through the queue, revoking each session with its stored tokens
//! (`backend::revoke`: logout, refreshing first when the stored jwt is dead). Failures (backend down, 5xx, timeouts) are
//! retried with exponential backoff until the session's tokens have expired — after which the
//! backend accepts none of them anyway. Each outcome is counted in
//! `backend_revocations_total{outcome}`, final ones are audited, and
//! `backend_revocations_pending` shows what is still open: a session that stays ended at the
//! gateway and alive at the backend is visible there.
//!
//! Logouts hold their entry back while their own backend answer arrives (see
//! `Sessions::end_pending_proof`): when that answer proves the session revoked, the entry is
//! dropped (`proven`); otherwise it is made due at once.

use super::Sessions;
use crate::audit::{AuditLog, Event, Kind};
use crate::backend::revoke::{attempt, backoff, Outcome};
use crate::backend::Upstream;
use crate::config::SharedConfig;
use crate::metrics::Metrics;
use crate::store::RevocationRecord;
use std::sync::Arc;
use std::time::Duration;

/// Every `outcome` label of `backend_revocations_total`.
pub const OUTCOMES: [&str; 8] =
    ["revoked", "already_revoked", "expired", "proven", "retry", "unsupported", "abandoned", "disabled"];

/// Entries worked on per pass.
const BATCH: usize = 16;

/// What the queue worker works with.
pub struct Worker {
    pub sessions: Arc<Sessions>,
    pub upstream: Arc<Upstream>,
    /// The configuration in force (a reload changes the revocation routes it uses).
    pub config: SharedConfig,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
}

/// Works through the revocation queue until `stop` fires.
pub async fn run(st: Worker, mut stop: tokio::sync::watch::Receiver<bool>) {
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
async fn pass(st: &Worker) -> Result<Duration, crate::store::StoreError> {
    let store = st.sessions.store();
    let queue = store.revocations().await?;
    let now = st.sessions.clock().now_ms();
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
    Ok(next.map_or(Duration::from_secs(60), |d| {
        Duration::from_millis((d - st.sessions.clock().now_ms()).clamp(0, 60_000) as u64)
    }))
}

enum Settled {
    Done(u64),
    Again(RevocationRecord),
}

async fn settle(st: &Worker, mut rec: RevocationRecord) -> Settled {
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
            rec.due = st.sessions.clock().now_ms() + 5_000;
            return Settled::Again(rec);
        }
    };
    let (access, refresh) = st.sessions.open_tokens(&record);
    let audit = |outcome: &str, attempts: u32, error: Option<&str>| {
        let kind = if error.is_some() { Kind::BackendRevokeFailed } else { Kind::BackendRevoked };
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
    let now_s = st.sessions.clock().now_ms() / 1000;
    let exps = [record.access_exp, record.refresh_exp];
    if exps.iter().all(|e| e.is_some_and(|e| e < now_s)) {
        count("expired");
        audit("expired", rec.attempts, None);
        return Settled::Done(rec.session);
    }
    let a = attempt(&st.upstream, &cfg, access.as_deref(), record.access_exp, refresh.as_deref(), now_s).await;
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
            rec.due = st.sessions.clock().now_ms() + backoff(rec.attempts).as_millis() as i64;
            rec.last_error = Some(why);
            Settled::Again(rec)
        }
    }
}
