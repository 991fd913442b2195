//! Background sweeper: ends sessions whose every token has expired, purges ended sessions after
//! `store.terminated_retention`, and drops index entries of long-expired tokens. Works in
//! bounded batches through the store's blocking pool and stops on shutdown.
//!
//! An ended session is purged only once its newest tokens are expired as well (plus the grace):
//! purging earlier would turn its still-valid refresh token into an *unknown* token, which
//! the backend would accept again.

use super::{Audit, EndReason, Ending, Sessions};
use crate::audit::Kind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_sessions: usize,
    pub purged_sessions: usize,
    pub dropped_tokens: usize,
    pub purged_audit_events: usize,
}

/// What the sweeper is told.
#[derive(Debug, Clone, Copy)]
pub struct SweepPolicy {
    pub retention: Duration,
    /// Expired tokens are kept this long past `exp`, so a backend whose clock runs behind ours
    /// cannot accept a token we already forgot.
    pub expired_token_grace: Duration,
    pub batch: usize,
    /// Audit events older than this are deleted.
    pub audit_retention: Duration,
}

/// One full pass over the store.
pub async fn sweep_once(sessions: &Sessions, policy: SweepPolicy, shutdown: &watch::Receiver<bool>) -> SweepReport {
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
        let mut kept = Vec::new();
        for rec in page {
            // The newest tokens carry the latest expiry; without any `exp`, only retention counts.
            let last_exp = rec.refresh_exp.max(rec.access_exp);
            let tokens_dead = last_exp.is_none_or(|e| e < now_s - grace_s);
            match rec.logout_time {
                Some(t) if now - t > retention_ms && tokens_dead => purge.push(rec),
                Some(_) => kept.push(rec.id),
                None => {
                    if last_exp.is_some_and(|e| e < now_s) {
                        expired.push(rec.id);
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

/// Runs [`sweep_once`] every `interval` until shutdown.
pub async fn run(
    sessions: Arc<Sessions>,
    interval: Duration,
    policy: SweepPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let r = sweep_once(&sessions, policy, &shutdown).await;
        if r != SweepReport::default() {
            tracing::info!(
                expired = r.expired_sessions,
                purged = r.purged_sessions,
                tokens = r.dropped_tokens,
                audit_events = r.purged_audit_events,
                "sweep done"
            );
        }
    }
}
