//! Background sweeper: ends sessions whose every token has expired, purges ended sessions after
//! `store.terminated_retention`, and drops index entries of long-expired tokens. Works in
//! bounded batches through the store's blocking pool and stops on shutdown.

use super::{now_ms, Sessions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Expired token entries are kept this long past `exp`, so a backend whose clock runs behind
/// ours cannot accept a token we already forgot.
const EXPIRED_TOKEN_GRACE_SECS: i64 = 3600;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_sessions: usize,
    pub purged_sessions: usize,
    pub dropped_tokens: usize,
}

/// One full pass over the store.
pub async fn sweep_once(sessions: &Sessions, retention: Duration, batch: usize, shutdown: &watch::Receiver<bool>) -> SweepReport {
    let mut report = SweepReport::default();
    let mut after = 0u64;
    let retention_ms = retention.as_millis() as i64;
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
        let now = now_ms();
        let now_s = now / 1000;
        let mut purge = Vec::new();
        let mut expired = Vec::new();
        let mut dropped = Vec::new();
        for rec in page {
            match rec.logout_time {
                Some(t) if now - t > retention_ms => purge.push(rec),
                Some(_) => dropped.extend(sessions.expired_tokens_of(rec.id, now_s - EXPIRED_TOKEN_GRACE_SECS)),
                None => {
                    let last_exp = rec.refresh_exp.or(rec.access_exp);
                    if last_exp.is_some_and(|e| e < now_s) {
                        expired.push(rec.id);
                    }
                    dropped.extend(sessions.expired_tokens_of(rec.id, now_s - EXPIRED_TOKEN_GRACE_SECS));
                }
            }
        }
        if !expired.is_empty() {
            match sessions.end_many(&expired, "expired").await {
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
    report
}

/// Runs [`sweep_once`] every `interval` until shutdown.
pub async fn run(sessions: Arc<Sessions>, interval: Duration, retention: Duration, batch: usize, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let r = sweep_once(&sessions, retention, batch, &shutdown).await;
        if r != SweepReport::default() {
            tracing::info!(expired = r.expired_sessions, purged = r.purged_sessions, tokens = r.dropped_tokens, "sweep done");
        }
    }
}
