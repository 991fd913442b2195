//! Background sweeper: ends sessions whose every token has expired, sessions past their
//! policy's `max_session_age`, and idle ones under `idle_policy = "terminate"` (the next
//! request would end them too; the sweeper ends those that make none); purges ended sessions after
//! `store.terminated_retention`, and drops index entries of long-expired tokens. Works in
//! bounded batches through the store's blocking pool and stops on shutdown.
//!
//! An ended session is purged only once its newest tokens are expired as well (plus the grace):
//! purging earlier would turn its still-valid refresh token into an *unknown* token, which
//! the backend would accept again.

use super::{Audit, EndReason, Ending, Sessions};
use crate::audit::Kind;
use crate::config::{Config, IdlePolicy, PoliciesConfig, SharedConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_sessions: usize,
    /// Ended at their policy's `max_session_age`.
    pub aged_sessions: usize,
    /// Ended as idle (`idle_policy = "terminate"`).
    pub idle_sessions: usize,
    pub purged_sessions: usize,
    pub dropped_tokens: usize,
    pub purged_audit_events: usize,
}

/// What the sweeper is told.
#[derive(Debug, Clone)]
pub struct SweepPolicy {
    pub retention: Duration,
    /// Expired tokens are kept this long past `exp`, so a backend whose clock runs behind ours
    /// cannot accept a token we already forgot.
    pub expired_token_grace: Duration,
    pub batch: usize,
    /// Audit events older than this are deleted.
    pub audit_retention: Duration,
    pub policies: PoliciesConfig,
}

impl SweepPolicy {
    /// The policy a configuration sets.
    pub fn of(cfg: &Config) -> SweepPolicy {
        SweepPolicy {
            retention: cfg.store.terminated_retention,
            expired_token_grace: cfg.store.expired_token_grace,
            batch: cfg.store.sweep_batch,
            audit_retention: cfg.admin.audit_retention,
            policies: cfg.policies.clone(),
        }
    }
}

/// One full pass over the store.
pub async fn sweep_once(sessions: &Sessions, policy: &SweepPolicy, shutdown: &watch::Receiver<bool>) -> SweepReport {
    let mut report = SweepReport::default();
    let mut after = 0u64;
    let retention_ms = policy.retention.as_millis() as i64;
    let grace_s = policy.expired_token_grace.as_secs() as i64;
    let batch = policy.batch;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let page = match sessions.store().scan(after, batch).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "sweeper: scan failed");
                break;
            }
        };
        let Some(last) = page.last() else { break };
        after = last.id;
        let now = sessions.clock().now_ms();
        let now_s = now / 1000;
        let mut purge = Vec::new();
        let mut expired = Vec::new();
        let mut aged = Vec::new();
        let mut idle = Vec::new();
        let mut kept = Vec::new();
        let idle_ends = sessions.config().idle_policy == IdlePolicy::Terminate;
        for rec in page {
            // The newest tokens carry the latest expiry; without any `exp`, only retention counts.
            let last_exp = rec.refresh_exp.max(rec.access_exp);
            let tokens_dead = last_exp.is_none_or(|e| e < now_s - grace_s);
            match rec.logout_time {
                Some(t) if now - t > retention_ms && tokens_dead => purge.push(rec),
                Some(_) => kept.push(rec.id),
                None => {
                    let max_age = policy.policies.for_role(rec.role.as_deref()).max_session_age;
                    let live = sessions.live(rec.id);
                    if last_exp.is_some_and(|e| e < now_s) {
                        expired.push(rec.id);
                    } else if max_age.is_some_and(|m| now - rec.login_time > m.as_millis() as i64) {
                        aged.push(rec.id);
                    } else if idle_ends && live.is_some_and(|l| sessions.is_idle(&l, now)) {
                        idle.push(rec.id);
                    }
                    kept.push(rec.id);
                }
            }
        }
        let dropped = match sessions.expired_tokens(kept, now_s - grace_s).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "sweeper: could not read token entries");
                vec![]
            }
        };
        if !expired.is_empty() {
            let ending = Ending::new(EndReason::Expired, Audit::EachSession(Kind::SessionExpired), "system");
            match sessions.end(&expired, &ending).await {
                Ok(r) => report.expired_sessions += r.len(),
                Err(e) => tracing::warn!(error = %e, "sweeper: could not end expired sessions"),
            }
        }
        if !aged.is_empty() {
            let ending = Ending::new(EndReason::MaxAge, Audit::EachSession(Kind::SessionMaxAge), "system");
            match sessions.end(&aged, &ending).await {
                Ok(r) => report.aged_sessions += r.len(),
                Err(e) => tracing::warn!(error = %e, "sweeper: could not end sessions past their maximum age"),
            }
        }
        if !idle.is_empty() {
            let ending = Ending::new(EndReason::IdleTimeout, Audit::EachSession(Kind::IdleTerminated), "system");
            match sessions.end(&idle, &ending).await {
                Ok(r) => report.idle_sessions += r.len(),
                Err(e) => tracing::warn!(error = %e, "sweeper: could not end idle sessions"),
            }
        }
        if !purge.is_empty() || !dropped.is_empty() {
            let (p, d) = (purge.len(), dropped.len());
            match sessions.purge(purge, dropped).await {
                Ok(()) => {
                    report.purged_sessions += p;
                    report.dropped_tokens += d;
                }
                Err(e) => tracing::warn!(error = %e, "sweeper: purge failed"),
            }
        }
        tokio::task::yield_now().await;
    }
    let cutoff = sessions.clock().now_ms() - policy.audit_retention.as_millis() as i64;
    while !*shutdown.borrow() {
        match sessions.store().purge_audit(cutoff, batch).await {
            Ok(0) => break,
            Ok(n) => report.purged_audit_events += n,
            Err(e) => {
                tracing::warn!(error = %e, "sweeper: audit purge failed");
                break;
            }
        }
    }
    report
}

/// Runs [`sweep_once`] every `store.sweep_interval` until shutdown, with the configuration in
/// force at each pass (a reload's policies apply from the next pass).
pub async fn run(sessions: Arc<Sessions>, config: SharedConfig, mut shutdown: watch::Receiver<bool>) {
    loop {
        let interval = config.load().store.sweep_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let policy = SweepPolicy::of(&config.load());
        let r = sweep_once(&sessions, &policy, &shutdown).await;
        if r != SweepReport::default() {
            tracing::info!(
                expired = r.expired_sessions,
                aged = r.aged_sessions,
                idle = r.idle_sessions,
                purged = r.purged_sessions,
                tokens = r.dropped_tokens,
                audit_events = r.purged_audit_events,
                "sweep done"
            );
        }
    }
}
