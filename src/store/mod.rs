//! Persistent session state. `store/` maps keys to versioned serde records and never sees an
//! HTTP type; `session/` owns the lifecycle. Only `store/sled.rs` imports sled.

mod codec;
mod sled;

pub use self::sled::SledStore as Store;
use serde::{Deserialize, Serialize};

pub use crate::error::StoreError;

/// Drains `rx` in batches of up to `max` items, writing each batch with `write` and recording
/// its latency as `store_operation_seconds{op}`, until the channel closes or `stop` fires —
/// then it writes what is still queued and returns. Used by the writers of deferred,
/// non-critical data (last-seen times, audit events).
pub async fn write_batches<T, F, Fut>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
    max: usize,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    op: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut write: F,
) where
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut batch = Vec::with_capacity(max);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, max) => n,
            _ = stop.changed() => {
                // No new items after this; the loop below drains what is buffered.
                rx.close();
                rx.recv_many(&mut batch, max).await
            }
        };
        if n == 0 {
            return;
        }
        let started = std::time::Instant::now();
        let r = write(std::mem::take(&mut batch)).await;
        metrics.store_latency.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        if let Err(e) = r {
            tracing::error!(error = %e, op, "deferred store write failed");
        }
    }
}

/// The session id inside a gateway-minted `sid` (`sess_` + 16 hex digits of the id + 16 random
/// ones). Ids minted so need no key index: the `keys` tree holds only the others (older
/// releases' random ids, imports).
pub fn id_in_sid(s: &str) -> Option<u64> {
    let h = s.strip_prefix("sess_")?;
    if h.len() != 32 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u64::from_str_radix(h.get(..16)?, 16).ok().filter(|id| *id != 0)
}

/// The session id inside a gateway-minted `documentId` (24 lower-case alphanumerics: 13 base-36
/// digits of the id, 11 random).
pub fn id_in_document_id(s: &str) -> Option<u64> {
    if s.len() != 24 || !s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()) {
        return None;
    }
    u64::from_str_radix(s.get(..13)?, 36).ok().filter(|id| *id != 0)
}

/// A `sid` carrying `id`, with 64 bits of `random`.
pub fn sid_for(id: u64, random: u64) -> String {
    format!("sess_{id:016x}{random:016x}")
}

/// A Strapi-style `documentId` carrying `id`, then 11 characters of `random` (each taken modulo 36).
pub fn document_id_for(id: u64, random: [u8; 11]) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut head = [b'0'; 13];
    let mut n = id;
    for d in head.iter_mut().rev() {
        *d = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    let tail = random.map(|r| DIGITS[(r % 36) as usize]);
    head.iter().chain(&tail).map(|b| *b as char).collect()
}

/// SHA-256 of a token exactly as the backend issued it; the only form in which tokens are
/// looked up.
pub type TokenHash = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    Refresh,
}

/// Index entry for one token the gateway saw in a backend response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    pub session: u64,
    pub kind: TokenKind,
    /// Expiry (unix seconds) from the token's `exp`, when it has one.
    pub exp: Option<i64>,
    /// For refresh tokens: when a successful refresh replaced it (unix ms).
    pub rotated_at: Option<i64>,
}

/// A token encrypted with AES-256-GCM; `kid` names the key of the keyring that sealed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub kid: String,
    pub nonce: String,
    pub ct: String,
}

/// One gateway session. Times are unix milliseconds.
///
/// The field order is the disk layout (see `codec`): the fields a cold start reads
/// ([`SessionHot`]) come first, in the same order, so a start decodes only that prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub v: u8,
    pub id: u64,
    /// Gateway session id (`sess_` + 128 random bits in hex).
    pub sid: String,
    pub document_id: String,
    pub user_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub ip: String,
    pub device_type: String,
    pub browser_name: String,
    pub os_name: String,
    pub login_time: i64,
    pub last_active: i64,
    pub logout_time: Option<i64>,
    /// 0–100 threat score of the login (absent when risk scoring is off).
    #[serde(default)]
    pub threat_score: Option<u32>,
    /// Location of the login address (absent when no geo data is configured).
    #[serde(default)]
    pub geo: Option<crate::geo::GeoInfo>,
    /// Backend session ids (Strapi's `sessionId` claim), oldest first.
    pub aliases: Vec<String>,
    /// The user's role at login, when `[roles]` says where it comes from (per-role policies).
    #[serde(default)]
    pub role: Option<String>,
    /// Where the session was last used from, once that was not the login's address.
    #[serde(default)]
    pub seen: Option<Seen>,
    // What a start does not read.
    pub tenant_id: Option<String>,
    pub device_id: Option<String>,
    pub user_agent: String,
    pub end_reason: Option<EndReason>,
    pub origin: SessionOrigin,
    pub access: Option<Sealed>,
    pub refresh: Option<Sealed>,
    pub access_exp: Option<i64>,
    pub refresh_exp: Option<i64>,
    pub rotation_count: u32,
    /// Times of the most recent rotations (bounded).
    pub rotations: Vec<i64>,
    #[serde(default)]
    pub risk_signals: Vec<crate::risk::Signal>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Where a live session was last used from (kept like last-seen: written when the place or
/// browser changes, and for a new address at most once per `sessions.last_seen_interval`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub ip: String,
    /// When this address was last written (unix ms).
    pub at: i64,
    pub country_code: Option<String>,
    pub asn: Option<u32>,
    /// The browser family (`Chrome`, `Firefox`, …; `Unknown` when the agent names none).
    pub family: String,
    /// Changes of country, network or browser family seen in this session.
    pub changes: u32,
}

/// The leading fields of a stored [`SessionRecord`], borrowed from the stored bytes: what a
/// cold start builds the index (and the risk engine's login history) from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SessionHot<'a> {
    pub v: u8,
    pub id: u64,
    pub sid: &'a str,
    pub document_id: &'a str,
    pub user_id: &'a str,
    #[serde(borrow)]
    pub username: Option<&'a str>,
    #[serde(borrow)]
    pub email: Option<&'a str>,
    pub ip: &'a str,
    pub device_type: &'a str,
    pub browser_name: &'a str,
    pub os_name: &'a str,
    pub login_time: i64,
    pub last_active: i64,
    pub logout_time: Option<i64>,
    pub threat_score: Option<u32>,
    pub geo: Option<crate::geo::GeoInfo>,
    #[serde(borrow)]
    pub aliases: Vec<&'a str>,
    #[serde(borrow)]
    pub role: Option<&'a str>,
    pub seen: Option<Seen>,
}

impl SessionRecord {
    pub const VERSION: u8 = 1;

    /// The leading fields, borrowed (what a cold start reads).
    pub fn hot(&self) -> SessionHot<'_> {
        SessionHot {
            v: self.v,
            id: self.id,
            sid: &self.sid,
            document_id: &self.document_id,
            user_id: &self.user_id,
            username: self.username.as_deref(),
            email: self.email.as_deref(),
            ip: &self.ip,
            device_type: &self.device_type,
            browser_name: &self.browser_name,
            os_name: &self.os_name,
            login_time: self.login_time,
            last_active: self.last_active,
            logout_time: self.logout_time,
            threat_score: self.threat_score,
            geo: self.geo.clone(),
            aliases: self.aliases.iter().map(String::as_str).collect(),
            role: self.role.as_deref(),
            seen: self.seen.clone(),
        }
    }

    /// The device the session was opened from, as parsed at login.
    pub fn device(&self) -> crate::device::Device {
        crate::device::Device {
            device_type: self.device_type.clone(),
            browser_name: self.browser_name.clone(),
            os_name: self.os_name.clone(),
        }
    }

    /// A live record with only its ids set (`sess_`/`doc` ids derived from `id`), for imports
    /// and bulk loads to fill in.
    pub fn blank(id: u64, user_id: &str) -> SessionRecord {
        SessionRecord {
            v: SessionRecord::VERSION,
            id,
            sid: sid_for(id, 0),
            document_id: document_id_for(id, [0; 11]),
            user_id: user_id.into(),
            username: None,
            email: None,
            tenant_id: None,
            device_id: None,
            ip: "127.0.0.1".into(),
            user_agent: "ua".into(),
            device_type: "desktop".into(),
            browser_name: "Chrome".into(),
            os_name: "Linux".into(),
            login_time: 0,
            last_active: 0,
            logout_time: None,
            end_reason: None,
            origin: SessionOrigin::Login,
            aliases: vec![],
            access: None,
            refresh: None,
            access_exp: None,
            refresh_exp: None,
            rotation_count: 0,
            rotations: vec![],
            geo: None,
            threat_score: None,
            risk_signals: vec![],
            tags: vec![],
            role: None,
            seen: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.logout_time.is_none()
    }
}

/// One security event of the audit log. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub user: Option<String>,
    pub session: Option<String>,
    pub ip: Option<String>,
    pub actor: Option<String>,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// One alert for one channel, as queued for delivery. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: u64,
    pub created: i64,
    pub trigger: String,
    pub channel: String,
    /// The event as delivered (JSON).
    pub event: serde_json::Value,
    pub status: AlertStatus,
    pub attempts: u32,
    pub next_attempt: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// Why a session ended: a closed set. It is stored in records (`end_reason`), used as the
/// `terminations_total{reason}` label and decides whether the backend must be told. Free text
/// (an admin's "stolen laptop") goes to the audit log only, never into a label.
/// The reason a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum EndReason {
    /// The backend's logout route, or the user API's `logout`.
    Logout,
    /// A logout for every session of the user (`scope: "all"`, the user API's `logout-all`).
    LogoutAll,
    /// The user ended another of their sessions through the user API.
    UserTerminated,
    /// An admin ended it (the admin API, the dashboard, the CLI).
    AdminTerminated,
    UserBlocked,
    /// A rotated-out refresh token was presented again.
    RefreshTokenReuse,
    /// Inactive past `sessions.inactivity_timeout` with `idle_policy = "terminate"`.
    IdleTimeout,
    /// Ended by the admin's clean-inactive action.
    Inactive,
    /// Every token expired (the sweeper).
    Expired,
    PasswordChange,
    /// The backend's own session route ended it (Strapi `DELETE /api/auth/sessions/:id`).
    BackendRevoked,
    /// Imported already ended (`sessiongate import`).
    Imported,
    /// Evicted by a newer login over `policies.max_sessions_per_user`.
    SessionLimit,
    /// Older than `policies.max_session_age`.
    MaxAge,
    /// Used from another country, network or browser family under `on_change = "terminate"`.
    SessionChanged,
}

impl EndReason {
    pub const ALL: [EndReason; 15] = [
        EndReason::Logout,
        EndReason::LogoutAll,
        EndReason::UserTerminated,
        EndReason::AdminTerminated,
        EndReason::UserBlocked,
        EndReason::RefreshTokenReuse,
        EndReason::IdleTimeout,
        EndReason::Inactive,
        EndReason::Expired,
        EndReason::PasswordChange,
        EndReason::BackendRevoked,
        EndReason::Imported,
        EndReason::SessionLimit,
        EndReason::MaxAge,
        EndReason::SessionChanged,
    ];

    /// Stable snake_case name (records, metric label, API `endReason`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::LogoutAll => "logout_all",
            EndReason::UserTerminated => "user_terminated",
            EndReason::AdminTerminated => "admin_terminated",
            EndReason::UserBlocked => "user_blocked",
            EndReason::RefreshTokenReuse => "refresh_token_reuse",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Inactive => "inactive",
            EndReason::Expired => "expired",
            EndReason::PasswordChange => "password_change",
            EndReason::BackendRevoked => "backend_revoked",
            EndReason::Imported => "imported_ended",
            EndReason::SessionLimit => "session_limit",
            EndReason::MaxAge => "max_age",
            EndReason::SessionChanged => "session_changed",
        }
    }

    /// The reason named `s`, if it is one (an admin may give a known reason, e.g. the plugin's
    /// `terminate-all` with `password_change`).
    pub fn parse(s: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the backend's session must be revoked too. Only an expired session needs
    /// nothing: none of its tokens is accepted by the backend any more.
    pub fn revokes_backend(self) -> bool {
        !matches!(self, EndReason::Expired | EndReason::Imported)
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for EndReason {
    type Error = String;
    fn try_from(s: String) -> Result<EndReason, String> {
        EndReason::parse(&s).ok_or_else(|| format!("unknown end reason {s:?}"))
    }
}

impl From<EndReason> for &'static str {
    fn from(r: EndReason) -> &'static str {
        r.as_str()
    }
}

/// How a session came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionOrigin {
    Login,
    /// Adopted at a refresh whose refresh token the gateway had not seen (a session that began
    /// before the gateway was in front).
    Refresh,
    /// Opened by the tokens a successful credential change returned.
    CredentialChange,
    /// Created by `sessiongate import`.
    Import,
}

impl SessionOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionOrigin::Login => "login",
            SessionOrigin::Refresh => "refresh",
            SessionOrigin::CredentialChange => "credential_change",
            SessionOrigin::Import => "import",
        }
    }
}

/// Where an alert's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    /// Waiting for its next attempt.
    Pending,
    Delivered,
    /// Given up after `alerts.max_attempts`.
    Dead,
}

impl AlertStatus {
    pub const ALL: [AlertStatus; 3] = [AlertStatus::Pending, AlertStatus::Delivered, AlertStatus::Dead];

    /// The stable name (stored records, the admin API, the `alerts_total{result}` label).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Pending => "pending",
            AlertStatus::Delivered => "delivered",
            AlertStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<AlertStatus> {
        AlertStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A blocked user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub user_id: String,
    pub blocked_at: i64,
    pub actor: Option<String>,
    pub reason: Option<String>,
}

/// A session whose backend session is still to be revoked: one entry of the durable
/// revocation queue. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub session: u64,
    /// The end reason (`EndReason::as_str`).
    pub reason: String,
    pub queued_at: i64,
    /// Not before this time.
    pub due: i64,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Everything one logical change writes, applied atomically.
#[derive(Debug, Default)]
pub struct Changes {
    pub put_sessions: Vec<SessionRecord>,
    pub put_tokens: Vec<(TokenHash, TokenEntry)>,
    /// (session, token): the store keeps a session's tokens together.
    pub delete_tokens: Vec<(u64, TokenHash)>,
    /// Sessions to remove, with every token stored for them.
    pub delete_sessions: Vec<u64>,
    /// Replication events to publish (opaque bytes), queued in the same transaction so that a
    /// change that reached the disk is also one that will reach the other instances.
    pub outbox: Vec<Vec<u8>>,
    /// Small bookkeeping values (e.g. the replication cursor), written in the same transaction.
    pub meta: Vec<(&'static str, Vec<u8>)>,
    /// Backend revocations to queue (with the ending they follow) or to drop.
    pub put_revocations: Vec<RevocationRecord>,
    pub delete_revocations: Vec<u64>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.put_sessions.is_empty()
            && self.put_tokens.is_empty()
            && self.delete_tokens.is_empty()
            && self.delete_sessions.is_empty()
            && self.outbox.is_empty()
            && self.meta.is_empty()
            && self.put_revocations.is_empty()
            && self.delete_revocations.is_empty()
    }
}

/// What a cold start read besides the sessions it handed over one by one.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sessions: usize,
    pub tokens: Vec<(TokenHash, TokenEntry)>,
    pub max_id: u64,
}

#[cfg(test)]
pub(crate) mod contract {
    //! The store contract, run against every implementation.
    use super::*;

    pub fn record(id: u64, user: &str) -> SessionRecord {
        SessionRecord { login_time: 1, last_active: 1, ..SessionRecord::blank(id, user) }
    }

    pub async fn run(store: &Store) {
        let entry = TokenEntry { session: 7, kind: TokenKind::Access, exp: Some(10), rotated_at: None };
        // Names in an older release's form (random, not carrying the id) go to the key index.
        let old_names = SessionRecord {
            sid: "sess_00000000000000000000000000000007".into(),
            document_id: "doc000000000000000000007".into(),
            ..record(7, "u1")
        };
        store
            .apply(
                Changes { put_sessions: vec![old_names], put_tokens: vec![([1; 32], entry)], ..Default::default() },
                true,
            )
            .await
            .expect("apply");
        assert_eq!(store.get(7).await.expect("get").map(|r| r.user_id), Some("u1".to_string()));
        assert_eq!(store.get(8).await.expect("get"), None);

        store.touch(vec![(7, 99)]).await.expect("touch");
        let collect = |seen: &mut Vec<(u64, i64)>, h: &SessionHot<'_>, last: i64| seen.push((h.id, last));
        let (snap, seen) = store.load_with(Vec::new(), collect).await.expect("load");
        assert_eq!(seen, vec![(7, 99)], "touches are merged into loaded records");
        assert_eq!(snap.sessions, 1);
        assert_eq!(snap.tokens, vec![([1; 32], entry)]);
        assert_eq!(snap.max_id, 7);
        assert_eq!(store.tokens_of(vec![7, 8]).await.expect("tokens"), vec![([1; 32], entry)]);
        store.apply(Changes { put_tokens: vec![([2; 32], entry)], ..Default::default() }, true).await.expect("put");
        store.apply(Changes { delete_tokens: vec![(7, [2; 32])], ..Default::default() }, true).await.expect("del");
        assert_eq!(store.tokens_of(vec![7]).await.expect("tokens").len(), 1);
        assert_eq!(store.find_key("sess_00000000000000000000000000000007".into()).await.expect("key"), Some(7));
        assert_eq!(store.find_key("doc000000000000000000007".into()).await.expect("key"), Some(7));
        assert_eq!(store.find_key("sess_nope".into()).await.expect("key"), None);
        store.apply(Changes { put_sessions: vec![record(8, "u1")], ..Default::default() }, true).await.expect("put");
        assert_eq!(store.find_key(record(8, "u1").sid).await.expect("key"), None, "minted names need no entry");
        store.apply(Changes { delete_sessions: vec![8], ..Default::default() }, true).await.expect("del");

        let page = store.scan(0, 10).await.expect("scan");
        assert_eq!(page.len(), 1);
        assert!(store.scan(7, 10).await.expect("scan").is_empty(), "scan is exclusive of `after`");

        store.apply(Changes { delete_sessions: vec![7], ..Default::default() }, true).await.expect("delete");
        assert!(store.tokens_of(vec![7]).await.expect("tokens").is_empty(), "tokens go with their session");
        let (snap, seen) = store.load_with(Vec::new(), collect).await.expect("load");
        assert!(seen.is_empty() && snap.tokens.is_empty());
        assert_eq!(snap.max_id, 8, "ids are never reused after a purge");
        assert_eq!(
            store.find_key("doc000000000000000000007".into()).await.expect("key"),
            None,
            "keys go with the record"
        );

        // The outbox is FIFO, written atomically with the change it describes.
        store
            .apply(
                Changes {
                    put_sessions: vec![record(9, "u2")],
                    outbox: vec![b"a".to_vec(), b"b".to_vec()],
                    meta: vec![("cursor", b"1-0".to_vec())],
                    ..Default::default()
                },
                true,
            )
            .await
            .expect("apply with outbox");
        store.set_block("u3", None, Some(b"c".to_vec())).await.expect("unblock with outbox");
        let queued = store.outbox_peek(10).await.expect("peek");
        assert_eq!(queued.iter().map(|(_, v)| v.as_slice()).collect::<Vec<_>>(), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(store.outbox_len().await.expect("len"), 3);
        store.outbox_delete(queued.iter().take(2).map(|(k, _)| *k).collect()).await.expect("delete");
        assert_eq!(store.outbox_peek(10).await.expect("peek").len(), 1);
        assert_eq!(store.meta_get("cursor").await.expect("meta"), Some(b"1-0".to_vec()));
        store.meta_set(vec![("cursor", b"2-0".to_vec())]).await.expect("meta set");
        assert_eq!(store.meta_get("cursor").await.expect("meta"), Some(b"2-0".to_vec()));

        // Revocations are queued atomically with the ending, updated and removed on their own.
        let queued = RevocationRecord {
            session: 9,
            reason: "logout".into(),
            queued_at: 1,
            due: 2,
            attempts: 0,
            last_error: None,
        };
        let mut ended = record(9, "u2");
        ended.logout_time = Some(5);
        store
            .apply(
                Changes { put_sessions: vec![ended], put_revocations: vec![queued.clone()], ..Default::default() },
                true,
            )
            .await
            .expect("end with a queued revocation");
        assert_eq!(store.revocations().await.expect("queue"), vec![queued.clone()]);
        let retried = RevocationRecord { attempts: 1, due: 10, last_error: Some("503".into()), ..queued };
        store.put_revocations(vec![retried.clone()]).await.expect("update");
        assert_eq!(store.revocations().await.expect("queue"), vec![retried.clone()]);
        assert_eq!(store.revocations_of(vec![8, 9]).await.expect("lookup"), vec![retried]);
        store.delete_revocations(vec![9]).await.expect("delete");
        assert!(store.revocations().await.expect("queue").is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_are_stored_by_name_and_unknown_names_are_refused() {
        assert_eq!(serde_json::to_string(&EndReason::LogoutAll).expect("encode"), "\"logout_all\"");
        assert_eq!(serde_json::from_str::<EndReason>("\"imported_ended\"").expect("decode"), EndReason::Imported);
        assert!(serde_json::from_str::<EndReason>("\"stolen laptop\"").is_err());
        assert_eq!(serde_json::to_string(&SessionOrigin::CredentialChange).expect("encode"), "\"credential_change\"");
    }

    #[test]
    fn minted_ids_carry_the_session_id_and_others_do_not() {
        for id in [1, 42, 1 << 40, u64::MAX] {
            assert_eq!(id_in_sid(&sid_for(id, rand::random())), Some(id));
            let doc = document_id_for(id, rand::random());
            assert_eq!((doc.len(), id_in_document_id(&doc)), (24, Some(id)), "{doc}");
        }
        assert_eq!(id_in_sid("sess_0000000000000000000000000000002a"), None, "an older release's form");
        assert_eq!(id_in_sid("sess_ABCDEF0000000000000000000000002a"), None);
        assert_eq!(id_in_document_id("doc000000000000000000002"), None, "not base 36 of an id");
        assert_eq!(id_in_document_id("zzzzzzzzzzzzzaaaaaaaaaaa"), None, "beyond u64");
    }

    #[test]
    fn names_are_unique_snake_case() {
        crate::metrics::assert_stable_names(&EndReason::ALL.map(EndReason::as_str));
        assert!(EndReason::ALL.iter().all(|r| EndReason::parse(r.as_str()) == Some(*r)));
        assert_eq!(EndReason::parse("stolen laptop"), None);
        crate::metrics::assert_stable_names(&AlertStatus::ALL.map(AlertStatus::as_str));
    }
}
