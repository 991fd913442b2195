//! The one shared state of a running gateway, built at startup.

use crate::audit::{AuditLog, Event};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::upstream::Upstream;
use crate::session::tokens::Verifier;
use crate::session::{now_ms, revoke, Sessions};
use crate::store::SessionRecord;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub struct AppState {
    pub cfg: Arc<Config>,
    pub sessions: Arc<Sessions>,
    pub upstream: Arc<Upstream>,
    /// Present when `[jwt]` is configured: verifies client-presented tokens before their
    /// claims are relied on.
    pub verifier: Option<Verifier>,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<AuditLog>,
    pub logins: LoginCounters,
}

impl AppState {
    /// Revokes ended sessions at the backend in background tasks (best effort).
    pub fn revoke_in_background(&self, records: Vec<SessionRecord>) {
        if !self.cfg.backend.revoke_on_end {
            return;
        }
        for rec in records {
            let (access, refresh) = self.sessions.open_tokens(&rec);
            let (up, cfg) = (self.upstream.clone(), self.cfg.clone());
            tokio::spawn(revoke::revoke(up, cfg, rec.sid, access, refresh));
        }
    }

    /// Audits the ending of each session in `records` as `kind`.
    pub fn audit_ended(&self, kind: &str, records: &[SessionRecord], actor: &str, details: serde_json::Value) {
        for r in records {
            self.audit.record(Event::new(kind).user(&r.user_id).session(&r.sid).actor(actor).details(details.clone()));
        }
    }
}

/// Logins and failed logins per hour for the last 24 hours (for `stats`), kept in memory and
/// rebuilt from the audit log at startup.
#[derive(Default)]
pub struct LoginCounters {
    hours: Mutex<VecDeque<(i64, u64, u64)>>,
}

const HOUR_MS: i64 = 3_600_000;

impl LoginCounters {
    pub fn add(&self, at_ms: i64, failed: bool) {
        let hour = at_ms - at_ms.rem_euclid(HOUR_MS);
        let Ok(mut h) = self.hours.lock() else { return };
        match h.iter_mut().find(|(t, _, _)| *t == hour) {
            Some(slot) => {
                if failed {
                    slot.2 += 1
                } else {
                    slot.1 += 1
                }
            }
            None => {
                h.push_back((hour, u64::from(!failed), u64::from(failed)));
                h.make_contiguous().sort_by_key(|(t, _, _)| *t);
            }
        }
        let oldest = now_ms() - 25 * HOUR_MS;
        while h.front().is_some_and(|(t, _, _)| *t < oldest) {
            h.pop_front();
        }
    }

    /// 24 entries `(hour start ms, logins, failed logins)`, oldest first, ending with the
    /// current hour.
    pub fn last_24h(&self, now: i64) -> Vec<(i64, u64, u64)> {
        let current = now - now.rem_euclid(HOUR_MS);
        let h = self.hours.lock().map(|h| h.clone()).unwrap_or_default();
        (0..24)
            .rev()
            .map(|i| {
                let t = current - i * HOUR_MS;
                h.iter().find(|(x, _, _)| *x == t).copied().unwrap_or((t, 0, 0))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_counters_bucket_by_hour() {
        let c = LoginCounters::default();
        let now = now_ms();
        c.add(now, false);
        c.add(now, true);
        c.add(now - HOUR_MS, false);
        c.add(now - 30 * HOUR_MS, false);
        let h = c.last_24h(now);
        assert_eq!(h.len(), 24);
        assert_eq!((h[23].1, h[23].2), (1, 1));
        assert_eq!(h[22].1, 1);
        assert_eq!(h.iter().map(|x| x.1).sum::<u64>(), 2, "older than a day is not counted");
    }
}
