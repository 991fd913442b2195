//! Append-only audit log of security events, kept in the store. Recording never waits on the
//! disk: events go through a bounded queue to a writer task (a full queue drops the event and
//! counts it in `sessiongate_audit_events_dropped_total`).

pub mod logins;

use crate::metrics::Metrics;
use crate::store::{AuditRecord, Store};
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Event types. Their names are stable (records, the export's `type` filter, the dashboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Login,
    LoginFailed,
    LoginBlocked,
    LoginDenied,
    RiskAlert,
    Refresh,
    RefreshReuse,
    Logout,
    LogoutAll,
    Terminate,
    TerminateAll,
    UserBlocked,
    UserUnblocked,
    PasswordChange,
    SessionExpired,
    IdleTerminated,
    AdminAuthFailed,
    Cleanup,
    KeyRotation,
    Import,
    ConfigReload,
    /// The backend's own session route ended a session (Strapi `DELETE /api/auth/sessions/:id`).
    BackendSessionRevoked,
    /// An ended session was revoked at the backend too (details: outcome, attempts).
    BackendRevoked,
    /// An ended session could not be revoked at the backend and was given up.
    BackendRevokeFailed,
    /// A newer login over the session limit ended this one.
    SessionEvicted,
    /// Ended at `policies.max_session_age`.
    SessionMaxAge,
    /// A live session was used from another country, network or browser family.
    SessionChanged,
}

impl Kind {
    pub const ALL: [Kind; 27] = [
        Kind::Login,
        Kind::LoginFailed,
        Kind::LoginBlocked,
        Kind::LoginDenied,
        Kind::RiskAlert,
        Kind::Refresh,
        Kind::RefreshReuse,
        Kind::Logout,
        Kind::LogoutAll,
        Kind::Terminate,
        Kind::TerminateAll,
        Kind::UserBlocked,
        Kind::UserUnblocked,
        Kind::PasswordChange,
        Kind::SessionExpired,
        Kind::IdleTerminated,
        Kind::AdminAuthFailed,
        Kind::Cleanup,
        Kind::KeyRotation,
        Kind::Import,
        Kind::ConfigReload,
        Kind::BackendSessionRevoked,
        Kind::BackendRevoked,
        Kind::BackendRevokeFailed,
        Kind::SessionEvicted,
        Kind::SessionMaxAge,
        Kind::SessionChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Login => "login",
            Kind::LoginFailed => "login_failed",
            Kind::LoginBlocked => "login_blocked",
            Kind::LoginDenied => "login_denied",
            Kind::RiskAlert => "risk_alert",
            Kind::Refresh => "refresh",
            Kind::RefreshReuse => "refresh_reuse",
            Kind::Logout => "logout",
            Kind::LogoutAll => "logout_all",
            Kind::Terminate => "terminate",
            Kind::TerminateAll => "terminate_all",
            Kind::UserBlocked => "user_blocked",
            Kind::UserUnblocked => "user_unblocked",
            Kind::PasswordChange => "password_change",
            Kind::SessionExpired => "session_expired",
            Kind::IdleTerminated => "idle_terminated",
            Kind::AdminAuthFailed => "admin_auth_failed",
            Kind::Cleanup => "cleanup",
            Kind::KeyRotation => "key_rotation",
            Kind::Import => "import",
            Kind::ConfigReload => "config_reload",
            Kind::BackendSessionRevoked => "backend_session_revoked",
            Kind::BackendRevoked => "backend_revoked",
            Kind::BackendRevokeFailed => "backend_revoke_failed",
            Kind::SessionEvicted => "session_evicted",
            Kind::SessionMaxAge => "session_max_age",
            Kind::SessionChanged => "session_changed",
        }
    }

    /// The kind named `s`, if it is one (records written by this or an older version).
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builder for one event.
#[derive(Debug, Clone)]
pub struct Event(AuditRecord);

impl Event {
    pub fn new(kind: Kind) -> Event {
        Event(AuditRecord {
            time: crate::clock::now_ms(),
            kind: kind.as_str().to_string(),
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
    /// The record as it will be stored.
    pub fn record(&self) -> &AuditRecord {
        &self.0
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
    fn kind_names_are_unique_snake_case_and_parse_back() {
        crate::metrics::assert_stable_names(&Kind::ALL.map(Kind::as_str));
        assert!(Kind::ALL.iter().all(|k| Kind::parse(k.as_str()) == Some(*k)));
        assert_eq!(Kind::parse("no_such_kind"), None);
    }

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
