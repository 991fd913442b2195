//! Operator maintenance on the stored sessions: re-sealing tokens with the current key (key
//! rotation) and importing sessions from another session store. Both run online, beside live
//! traffic, under the same per-session locks as every other write.

use super::{device, now_ms, tokens, Issued, Sessions};
use crate::store::{Changes, Sealed, SessionRecord, StoreError};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The outcome of one re-sealing batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct ResealBatch {
    /// The highest id scanned; `None` when nothing was left to scan.
    pub last_id: Option<u64>,
    pub scanned: usize,
    /// Records written back with their tokens sealed by the current key.
    pub resealed: usize,
    /// Tokens sealed with a key this keyring does not hold (they stay as they are).
    pub unreadable: usize,
}

impl Sessions {
    /// Re-seals, with the current key, the stored tokens of up to `limit` records with ids
    /// above `after`. Records already sealed with the current key are left untouched, so a
    /// rotation can be re-run (or resumed) at any time.
    pub async fn reseal_batch(&self, after: u64, limit: usize) -> Result<ResealBatch, StoreError> {
        let current = self.keyring.current_kid().to_string();
        let stale = |s: &Option<Sealed>| s.as_ref().is_some_and(|s| s.kid != current);
        let scanned = self.store.scan(after, limit).await?;
        let mut out =
            ResealBatch { last_id: scanned.last().map(|r| r.id), scanned: scanned.len(), ..Default::default() };
        let ids: Vec<u64> = scanned.iter().filter(|r| stale(&r.access) || stale(&r.refresh)).map(|r| r.id).collect();
        if ids.is_empty() {
            return Ok(out);
        }
        let _g = self.lock_many(&ids).await;
        // Read again under the locks: a refresh or an end may have rewritten them meanwhile.
        let mut changed = Vec::new();
        for mut rec in self.store.get_many(ids).await? {
            let mut dirty = false;
            for slot in [&mut rec.access, &mut rec.refresh] {
                let Some(sealed) = slot.as_ref().filter(|s| s.kid != current) else { continue };
                match self.keyring.open(sealed) {
                    Ok(plain) => {
                        *slot = Some(self.keyring.seal(&plain));
                        dirty = true;
                    }
                    Err(_) => out.unreadable += 1,
                }
            }
            if dirty {
                changed.push(rec);
            }
        }
        out.resealed = changed.len();
        if !changed.is_empty() {
            self.timed("reseal", self.store.apply(Changes { put_sessions: changed, ..Default::default() }, true))
                .await?;
        }
        Ok(out)
    }

    /// Imports sessions (see [`ImportRow`]). A row whose access token is already tracked is
    /// reported `exists` and left alone, so re-running an import is harmless. Rows are written
    /// durably in one transaction before this returns.
    pub async fn import(&self, rows: Vec<ImportRow>) -> Result<Vec<ImportOutcome>, StoreError> {
        // One import at a time, so two concurrent calls cannot both create the same token.
        let _one = self.importing.lock().await;
        let mut outcomes = Vec::with_capacity(rows.len());
        let mut records = Vec::new();
        let mut entries = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for row in rows {
            let hash = tokens::hash(&row.token);
            if self.index.token(&hash).is_some() || !seen.insert(hash) {
                outcomes.push(ImportOutcome::Exists);
                continue;
            }
            let id = self.allocate_id();
            let (sid, document_id) = super::minted_names(id);
            let issued = Issued::new(row.token.clone(), row.refresh_token.clone(), None);
            let dev = device::parse(&row.user_agent);
            let rec = SessionRecord {
                sid,
                document_id,
                username: row.username,
                email: row.email,
                ip: row.ip.to_string(),
                user_agent: row.user_agent,
                device_type: dev.device_type,
                browser_name: dev.browser_name,
                os_name: dev.os_name,
                login_time: row.created_at,
                last_active: row.last_seen.max(row.created_at),
                logout_time: row.ended_at,
                end_reason: row.ended_at.map(|_| crate::store::EndReason::Imported),
                origin: crate::store::SessionOrigin::Import,
                access: Some(self.keyring.seal(&issued.access)),
                refresh: issued.refresh.as_deref().map(|r| self.keyring.seal(r)),
                access_exp: issued.access_exp,
                refresh_exp: issued.refresh_exp,
                ..SessionRecord::blank(id, &row.user_id)
            };
            let e = issued.entries(id);
            outcomes.push(ImportOutcome::Created { id, session_id: rec.sid.clone() });
            entries.extend(e.iter().cloned());
            let event_entries = e;
            records.push((rec, event_entries));
        }
        if records.is_empty() {
            return Ok(outcomes);
        }
        let outbox = self.events(|| {
            records.iter().map(|(r, e)| super::replication::event::Event::session(r.clone(), e.clone())).collect()
        });
        let put_sessions: Vec<SessionRecord> = records.iter().map(|(r, _)| r.clone()).collect();
        let changes = Changes { put_sessions, put_tokens: entries, outbox, ..Default::default() };
        self.timed("import", self.store.apply(changes, true)).await?;
        for (rec, e) in &records {
            self.index.insert(&rec.hot(), rec.last_active, rec.logout_time.unwrap_or(0), e);
        }
        self.published();
        Ok(outcomes)
    }
}

/// One session to import, validated. The field names follow the session-manager plugin's
/// migration (`userId`, `ip`, `userAgent`, `token`, `createdAt`, `lastSeen`); the node-auth
/// store's names (`ipAddress`, `lastActiveAt`, `revokedAt`) and a few optional extras are
/// accepted as aliases.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportRow {
    pub user_id: String,
    pub ip: IpAddr,
    #[serde(default)]
    pub user_agent: String,
    pub token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub last_seen: i64,
    /// Set for sessions that had already ended: imported as ended, so their tokens are refused.
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum ImportOutcome {
    #[serde(rename_all = "camelCase")]
    Created { id: u64, session_id: String },
    /// The token is already tracked (an earlier run, or a login through the gateway).
    Exists,
    #[serde(rename_all = "camelCase")]
    Invalid { errors: Vec<String> },
}

const MAX_FIELD: usize = 512;
const MAX_TOKEN: usize = 16 * 1024;

/// Reads one row given as field name → text (a CSV record or a JSON object), reporting every
/// problem of the row at once.
pub fn parse_row(get: impl Fn(&[&str]) -> Option<String>) -> Result<ImportRow, Vec<String>> {
    let mut errors = Vec::new();
    let text = |names: &[&str], required: bool, max: usize, errors: &mut Vec<String>| -> Option<String> {
        match get(names).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
            Some(v) if v.len() > max => {
                errors.push(format!("{}: longer than {max} bytes", names[0]));
                None
            }
            Some(v) => Some(v),
            None if required => {
                errors.push(format!("{}: missing", names[0]));
                None
            }
            None => None,
        }
    };
    let time = |names: &[&str], required: bool, errors: &mut Vec<String>| -> Option<i64> {
        let v = text(names, required, 64, errors)?;
        match parse_time(&v) {
            Some(ms) => Some(ms),
            None => {
                errors.push(format!("{}: expected an ISO-8601 time or unix milliseconds, got {v:?}", names[0]));
                None
            }
        }
    };
    let user_id = text(&["userId", "user_id", "user"], true, MAX_FIELD, &mut errors);
    let ip = text(&["ip", "ipAddress", "ip_address"], true, 64, &mut errors).and_then(|v| match v.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            errors.push(format!("ip: not an IP address: {v:?}"));
            None
        }
    });
    let user_agent = text(&["userAgent", "user_agent"], false, MAX_FIELD, &mut errors).unwrap_or_default();
    let token = text(&["token", "accessToken", "jwt"], true, MAX_TOKEN, &mut errors);
    if token.as_deref().is_some_and(|t| t.chars().any(|c| c.is_whitespace() || c.is_control())) {
        errors.push("token: contains whitespace or control characters".into());
    }
    let refresh_token = text(&["refreshToken", "refresh_token"], false, MAX_TOKEN, &mut errors);
    let created_at = time(&["createdAt", "loginTime", "created_at"], true, &mut errors);
    let last_seen = time(&["lastSeen", "lastActiveAt", "lastActive", "last_seen"], false, &mut errors);
    let mut ended_at = time(&["endedAt", "logoutTime", "revokedAt"], false, &mut errors);
    match text(&["isActive", "active"], false, 8, &mut errors).as_deref() {
        None | Some("true" | "1") => {}
        Some("false" | "0") => ended_at = ended_at.or(last_seen).or(created_at),
        Some(other) => errors.push(format!("isActive: expected true or false, got {other:?}")),
    }
    let username = text(&["username"], false, MAX_FIELD, &mut errors);
    let email = text(&["email"], false, MAX_FIELD, &mut errors);
    if let (Some(c), Some(l)) = (created_at, last_seen) {
        if l < c {
            errors.push("lastSeen: before createdAt".into());
        }
    }
    if created_at.is_some_and(|c| c > now_ms() + 60_000) {
        errors.push("createdAt: in the future".into());
    }
    match (user_id, ip, token, created_at) {
        (Some(user_id), Some(ip), Some(token), Some(created_at)) if errors.is_empty() => Ok(ImportRow {
            user_id,
            ip,
            user_agent,
            token,
            refresh_token,
            created_at,
            last_seen: last_seen.unwrap_or(created_at),
            ended_at,
            username,
            email,
        }),
        _ => Err(errors),
    }
}

/// ISO-8601 / RFC 3339, or unix milliseconds.
pub fn parse_time(v: &str) -> Option<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    let t = humantime::parse_rfc3339_weak(v).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as i64)
}

/// Validates a row already in [`ImportRow`] form again (the admin API does not trust its
/// client).
pub fn revalidate(row: &ImportRow) -> Result<(), Vec<String>> {
    let v = serde_json::to_value(row).unwrap_or_default();
    parse_row(|names| names.iter().find_map(|n| v.get(*n)).and_then(json_text)).map(drop)
}

/// A JSON field as text (strings as they are; numbers and booleans printed).
pub fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn row(pairs: &[(&str, &str)]) -> Result<ImportRow, Vec<String>> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_row(|names| names.iter().find_map(|n| m.get(*n).cloned()))
    }

    #[test]
    fn plugin_and_node_auth_fields_are_read() {
        let r = row(&[
            ("userId", "7"),
            ("ip", "203.0.113.9"),
            ("userAgent", "Mozilla/5.0"),
            ("token", "a.b.c"),
            ("createdAt", "2026-01-02T10:30:00.000Z"),
            ("lastSeen", "1767351000000"),
        ])
        .expect("valid");
        assert_eq!((r.user_id.as_str(), r.created_at, r.last_seen), ("7", 1767349800000, 1767351000000));
        assert_eq!(r.ended_at, None);
        let r = row(&[
            ("userId", "7"),
            ("ipAddress", "::1"),
            ("token", "t"),
            ("createdAt", "1000"),
            ("lastActiveAt", "2000"),
            ("isActive", "false"),
        ])
        .expect("valid");
        assert_eq!(r.ended_at, Some(2000), "an inactive session is imported as ended at its last activity");
        assert!(revalidate(&r).is_ok());
    }

    #[test]
    fn every_problem_of_a_row_is_reported() {
        let errs = row(&[("ip", "nope"), ("createdAt", "yesterday"), ("token", "a b")]).expect_err("invalid");
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("userId: missing")));
        assert!(errs.iter().any(|e| e.starts_with("ip: not an IP")));
        assert!(errs.iter().any(|e| e.starts_with("createdAt: expected")));
        assert!(errs.iter().any(|e| e.starts_with("token: contains whitespace")));
        let errs =
            row(&[("userId", "1"), ("ip", "1.2.3.4"), ("token", "t"), ("createdAt", "2000"), ("lastSeen", "1000")])
                .expect_err("invalid");
        assert_eq!(errs, vec!["lastSeen: before createdAt".to_string()]);
    }
}
