//! Append-only audit log of security events, kept in the store. Recording never waits on the
//! disk: events go through a bounded queue to a writer task (a full queue drops the event and
//! counts it in `sessiongate_audit_events_dropped_total`).

use crate::metrics::Metrics;
use crate::store::{AuditRecord, Store};
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Event types (stable strings; the `type` filter of the export matches these).
pub mod kind {
    pub const LOGIN: &str = "login";
    pub const LOGIN_FAILED: &str = "login_failed";
    pub const LOGIN_BLOCKED: &str = "login_blocked";
    pub const LOGIN_DENIED: &str = "login_denied";
    pub const RISK_ALERT: &str = "risk_alert";
    pub const REFRESH: &str = "refresh";
    pub const REFRESH_REUSE: &str = "refresh_reuse";
    pub const LOGOUT: &str = "logout";
    pub const LOGOUT_ALL: &str = "logout_all";
    pub const TERMINATE: &str = "terminate";
    pub const TERMINATE_ALL: &str = "terminate_all";
    pub const USER_BLOCKED: &str = "user_blocked";
    pub const USER_UNBLOCKED: &str = "user_unblocked";
    pub const PASSWORD_CHANGE: &str = "password_change";
    pub const SESSION_EXPIRED: &str = "session_expired";
    pub const IDLE_TERMINATED: &str = "idle_terminated";
    pub const ADMIN_AUTH_FAILED: &str = "admin_auth_failed";
    pub const CLEANUP: &str = "cleanup";
    pub const KEY_ROTATION: &str = "key_rotation";
    pub const IMPORT: &str = "import";
    pub const CONFIG_RELOAD: &str = "config_reload";
    /// The backend's own session route ended a session (Strapi `DELETE /api/auth/sessions/:id`).
    pub const BACKEND_SESSION_REVOKED: &str = "backend_session_revoked";
    /// An ended session was revoked at the backend too (details: outcome, attempts).
    pub const BACKEND_REVOKED: &str = "backend_revoked";
    /// An ended session could not be revoked at the backend and was given up.
    pub const BACKEND_REVOKE_FAILED: &str = "backend_revoke_failed";
}

/// Builder for one event.
#[derive(Debug, Clone)]
pub struct Event(AuditRecord);

impl Event {
    pub fn new(kind: &str) -> Event {
        Event(AuditRecord {
            time: crate::clock::now_ms(),
            kind: kind.to_string(),
            user: None,
            session: None,
            ip: None,
            actor: None,
            details: Value::Null,
        })
    }
    pub fn user(mut self, u: impl Into<String>) -> Event {
        self.0.user = Some(u.into());
        self
    }
    pub fn session(mut self, s: impl Into<String>) -> Event {
        self.0.session = Some(s.into());
        self
    }
    pub fn ip(mut self, ip: impl ToString) -> Event {
        self.0.ip = Some(ip.to_string());
        self
    }
    pub fn actor(mut self, a: impl Into<String>) -> Event {
        self.0.actor = Some(a.into());
        self
    }
    pub fn details(mut self, d: Value) -> Event {
        self.0.details = d;
        self
    }
}

pub struct AuditLog {
    tx: mpsc::Sender<AuditRecord>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    pub fn new(metrics: Arc<Metrics>) -> (AuditLog, mpsc::Receiver<AuditRecord>) {
        let (tx, rx) = mpsc::channel(16_384);
        (AuditLog { tx, metrics }, rx)
    }

    pub fn record(&self, ev: Event) {
        if self.tx.try_send(ev.0).is_err() {
            self.metrics.audit_dropped.inc();
            tracing::warn!("audit queue full: event dropped");
        }
    }
}

/// Writes queued events in batches until the queue closes.
/// Runs until `stop` fires, then writes what is queued and returns.
pub async fn run_writer(
    store: Store,
    metrics: Arc<Metrics>,
    rx: mpsc::Receiver<AuditRecord>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    crate::store::write_batches(rx, 256, metrics, "audit_append", stop, |batch| store.append_audit(batch)).await
}

/// Which events an export or query selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub kind: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
}

impl Filter {
    fn matches(&self, e: &AuditRecord) -> bool {
        self.kind.as_ref().is_none_or(|k| *k == e.kind)
            && self.user.as_ref().is_none_or(|u| e.user.as_ref() == Some(u))
            && self.session.as_ref().is_none_or(|s| e.session.as_ref() == Some(s))
    }
}

const PAGE: usize = 1000;

/// Events matching `filter`, oldest first, at most `limit`.
pub async fn query(store: &Store, filter: &Filter, limit: usize) -> Result<Vec<AuditRecord>, crate::store::StoreError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page =
            store.scan_audit(filter.since_ms.unwrap_or(0), filter.until_ms.unwrap_or(i64::MAX), cursor, PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.0);
        let n = page.len();
        out.extend(page.into_iter().map(|(_, e)| e).filter(|e| filter.matches(e)));
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
        if n < PAGE {
            break;
        }
    }
    Ok(out)
}

/// A cell a spreadsheet would evaluate as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a
/// leading apostrophe: user agents, user names and reasons are attacker-chosen text, and these
/// exports are opened in spreadsheets (OWASP "CSV injection").
pub fn csv_safe(s: &str) -> std::borrow::Cow<'_, str> {
    match s.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

pub const CSV_HEADER: [&str; 7] = ["time", "type", "user", "session", "ip", "actor", "details"];

/// Encodes events as CSV rows (RFC 4180 quoting by the csv crate), with the header first when
/// `header` is set.
pub fn csv_rows(events: &[AuditRecord], header: bool) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    if header {
        let _ = w.write_record(CSV_HEADER);
    }
    for e in events {
        let details = if e.details.is_null() { String::new() } else { e.details.to_string() };
        let _ = w.write_record([
            crate::clock::iso(e.time).as_str(),
            &csv_safe(&e.kind),
            &csv_safe(e.user.as_deref().unwrap_or("")),
            &csv_safe(e.session.as_deref().unwrap_or("")),
            &csv_safe(e.ip.as_deref().unwrap_or("")),
            &csv_safe(e.actor.as_deref().unwrap_or("")),
            &csv_safe(&details),
        ]);
    }
    w.into_inner().unwrap_or_default()
}

/// A streamed CSV export: the header, then one chunk per page of matching events. Memory stays
/// bounded whatever the size of the log.
pub fn csv_stream(
    store: Store,
    filter: Filter,
) -> impl futures_util::Stream<Item = Result<Bytes, crate::store::StoreError>> + Send {
    enum State {
        Header,
        Page(Option<[u8; 16]>),
        Done,
    }
    futures_util::stream::unfold((State::Header, store, filter), |(state, store, filter)| async move {
        match state {
            State::Done => None,
            State::Header => Some((Ok(Bytes::from(csv_rows(&[], true))), (State::Page(None), store, filter))),
            State::Page(cursor) => {
                let page = store
                    .scan_audit(filter.since_ms.unwrap_or(0), filter.until_ms.unwrap_or(i64::MAX), cursor, PAGE)
                    .await;
                match page {
                    Err(e) => Some((Err(e), (State::Done, store, filter))),
                    Ok(page) if page.is_empty() => None,
                    Ok(page) => {
                        let next = if page.len() < PAGE { State::Done } else { State::Page(page.last().map(|p| p.0)) };
                        let events: Vec<AuditRecord> =
                            page.into_iter().map(|(_, e)| e).filter(|e| filter.matches(e)).collect();
                        Some((Ok(Bytes::from(csv_rows(&events, false))), (next, store, filter)))
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_per_rfc_4180() {
        let e = AuditRecord {
            time: 0,
            kind: "login_failed".into(),
            user: Some("a,b".into()),
            session: None,
            ip: Some("1.2.3.4".into()),
            actor: Some("say \"hi\"".into()),
            details: serde_json::json!({"identifier": "x\ny"}),
        };
        let text = String::from_utf8(csv_rows(&[e], true)).expect("utf8");
        assert!(text.starts_with("time,type,user,session,ip,actor,details\r\n"));
        assert!(text.contains("\"a,b\""));
        assert!(text.contains("\"say \"\"hi\"\"\""));
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let row = r.records().next().expect("row").expect("parse");
        assert_eq!(&row[2], "a,b");
        assert_eq!(&row[5], "say \"hi\"");
        assert_eq!(&row[6], r#"{"identifier":"x\ny"}"#);
    }
}
