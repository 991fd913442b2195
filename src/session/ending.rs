//! What follows the ending of sessions — the one path every ending takes (logout, user API,
//! admin, reuse, idleness, password change, the backend's own session route, blocking, expiry):
//! [`Sessions::end`](super::Sessions::end) writes the endings durably together with their
//! backend revocations (one transaction), then [`Aftermath::after`] records the audit events and
//! raises the alert the [`Ending`] names. A caller describes an ending; it never writes out its
//! consequences. The reasons themselves ([`EndReason`]) are record vocabulary and live with the
//! records in `store`.
//!
//! Endings applied from other instances (replication) take no aftermath here: the instance
//! that decided them audited and alerted.

use crate::alerts::{AlertHub, Facts, Trigger};
use crate::audit::{AuditLog, Event, Kind};
pub use crate::store::EndReason;
use crate::store::SessionRecord;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;

/// How an ending is written to the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    /// One event per ended session.
    EachSession(Kind),
    /// One event for the whole action, with `sessionsEnded` and the action's user, if it had
    /// one (terminate-all, block, a password change, an admin's clean-up). Recorded even when
    /// the action ended nothing.
    Once(Kind),
}

/// An ending, described once: why, what the audit log records, which alert follows.
#[derive(Debug, Clone)]
pub struct Ending {
    pub reason: EndReason,
    pub audit: Audit,
    /// The user an action audited [`Audit::Once`] was on.
    pub user: Option<String>,
    /// The audit log's `actor`: `user`, `client`, `system` or an admin's name.
    pub actor: String,
    /// The client address, when a request caused it.
    pub ip: Option<IpAddr>,
    /// Extra audit details (an object, or `Null`).
    pub details: Value,
    /// Raised once per user whose sessions ended; the text says why, in the alert's summary.
    pub alert: Option<(Trigger, String)>,
}

impl Ending {
    pub fn new(reason: EndReason, audit: Audit, actor: impl Into<String>) -> Ending {
        Ending { reason, audit, user: None, actor: actor.into(), ip: None, details: Value::Null, alert: None }
    }

    pub fn user(mut self, user: impl Into<String>) -> Ending {
        self.user = Some(user.into());
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Ending {
        self.ip = Some(ip);
        self
    }

    pub fn details(mut self, details: Value) -> Ending {
        self.details = details;
        self
    }

    pub fn alert(mut self, trigger: Trigger, why: impl Into<String>) -> Ending {
        self.alert = Some((trigger, why.into()));
        self
    }
}

/// The consequences every local ending has besides the durable write.
pub struct Aftermath {
    pub audit: Arc<AuditLog>,
    pub alerts: Arc<AlertHub>,
}

impl Aftermath {
    /// Audits and alerts `records`, the sessions `ending` just ended.
    pub fn after(&self, records: &[SessionRecord], ending: &Ending) {
        for e in audit_events(records, ending) {
            self.audit.record(e);
        }
        if let Some((trigger, why)) = &ending.alert {
            for facts in alert_facts(records, why) {
                self.alerts.raise(trigger.clone(), &facts);
            }
        }
    }
}

/// The audit events of an ending.
fn audit_events(records: &[SessionRecord], ending: &Ending) -> Vec<Event> {
    let base = |kind: Kind| {
        let e = Event::new(kind).actor(&ending.actor);
        match ending.ip {
            Some(ip) => e.ip(ip),
            None => e,
        }
    };
    let with_count = |n: usize| {
        let mut d = if ending.details.is_object() { ending.details.clone() } else { serde_json::json!({}) };
        d["sessionsEnded"] = n.into();
        d
    };
    match ending.audit {
        Audit::EachSession(kind) => records
            .iter()
            .map(|r| base(kind).user(&r.user_id).session(&r.sid).details(ending.details.clone()))
            .collect(),
        Audit::Once(kind) => {
            let e = base(kind).details(with_count(records.len()));
            vec![match &ending.user {
                Some(u) => e.user(u),
                None => e,
            }]
        }
    }
}

/// Each user of `records` once (first record), with their number of records.
fn users(records: &[SessionRecord]) -> Vec<(&SessionRecord, usize)> {
    let mut out: Vec<(&SessionRecord, usize)> = Vec::new();
    for r in records {
        match out.iter_mut().find(|(u, _)| u.user_id == r.user_id) {
            Some((_, n)) => *n += 1,
            None => out.push((r, 1)),
        }
    }
    out
}

/// One alert per user whose sessions ended.
fn alert_facts(records: &[SessionRecord], why: &str) -> Vec<Facts> {
    users(records)
        .into_iter()
        .map(|(r, n)| Facts {
            user_id: Some(r.user_id.clone()),
            username: r.username.clone(),
            email: r.email.clone(),
            session: Some(r.sid.clone()),
            ip: Some(r.ip.clone()),
            geo: r.geo.clone(),
            score: r.threat_score,
            reasons: vec![why.to_string()],
            summary: format!(
                "{n} session(s) of {} ended: {why}",
                r.email.as_deref().or(r.username.as_deref()).unwrap_or(&r.user_id)
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::record;

    fn kinds_and_users(events: &[Event]) -> Vec<(String, Option<String>, Option<String>, Value)> {
        events
            .iter()
            .map(|e| {
                let r = e.record();
                (r.kind.clone(), r.user.clone(), r.session.clone(), r.details.clone())
            })
            .collect()
    }

    #[test]
    fn each_audit_shape_records_what_it_says() {
        let recs = vec![record(1, "alice"), record(2, "alice"), record(3, "bob")];
        let each = Ending::new(EndReason::Logout, Audit::EachSession(Kind::Logout), "user");
        let got = kinds_and_users(&audit_events(&recs, &each));
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(k, _, s, _)| k == "logout" && s.is_some()));

        let on_user = Ending::new(EndReason::PasswordChange, Audit::Once(Kind::PasswordChange), "client")
            .user("alice")
            .details(serde_json::json!({"x": 1}));
        let got = kinds_and_users(&audit_events(&recs[..2], &on_user));
        assert_eq!(
            got,
            vec![(
                "password_change".into(),
                Some("alice".into()),
                None,
                serde_json::json!({"x": 1, "sessionsEnded": 2})
            )]
        );

        let once = Ending::new(EndReason::Inactive, Audit::Once(Kind::Cleanup), "ops");
        let got = kinds_and_users(&audit_events(&[], &once));
        assert_eq!(got, vec![("cleanup".into(), None, None, serde_json::json!({"sessionsEnded": 0}))]);
    }

    #[test]
    fn one_alert_per_user_naming_how_many_sessions_ended() {
        let recs = vec![record(1, "alice"), record(2, "alice"), record(3, "bob")];
        let facts = alert_facts(&recs, "password changed");
        assert_eq!(facts.len(), 2);
        assert_eq!(facts[0].summary, "2 session(s) of alice ended: password changed");
        assert_eq!(facts[1].user_id.as_deref(), Some("bob"));
    }
}
