//! Where a session is decided. This file: the lifecycle — create at login, rotate at refresh,
//! touch on use, end at logout / termination, purge after retention. `enforce` turns a
//! presented token into a decision, `admission` a login; `ending` is the one path every ending
//! takes; `replication` the events other instances send and their merge; `revoke` the durable
//! queue of backend revocations. No HTTP type appears in this layer's decisions.
//!
//! The per-request check reads only the in-memory index; sled (through `store/`) is written
//! *before* the index changes, and every ending is flushed before the caller acknowledges it.
//! Record writes of one session are serialised by a striped async lock, so a refresh racing a
//! termination can never write the session back to life.

pub mod admission;
pub mod crypto;
pub mod ending;
pub mod enforce;
pub mod index;
pub mod maintenance;
pub mod replication;
pub mod revoke;
pub mod seen;
pub mod sweeper;
pub mod tokens;

use crate::clock::{now_ms, Clock};
use crate::config::SessionConfig;
use crate::device;
use crate::metrics::Metrics;
pub use crate::store::SessionOrigin;
use crate::store::{
    BlockRecord, Changes, RevocationRecord, SessionHot, SessionRecord, Store, StoreError, TokenEntry, TokenHash,
    TokenKind,
};
use crypto::Keyring;
pub use ending::Aftermath;
pub use ending::{Audit, EndReason, Ending};
pub use index::{Live, Sid};
use replication::event::Event;
pub use replication::Replication;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// Rotation timestamps kept per record for the admin detail view.
const MAX_ROTATIONS_KEPT: usize = 50;
const LOCK_STRIPES: usize = 64;

/// Result of looking a presented token up.
#[derive(Debug, Clone)]
pub enum Check {
    /// Never seen in a backend response (or already purged).
    Unknown,
    /// A token of a live session.
    Live(Live, TokenEntry),
    /// A token of an ended session.
    Ended(Live),
    /// A refresh token that a refresh already replaced, presented after the grace period.
    Reuse(Live),
}

/// Tokens the backend issued, with what their (trusted) claims say.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access: String,
    pub refresh: Option<String>,
    pub access_exp: Option<i64>,
    pub refresh_exp: Option<i64>,
    pub backend_session: Option<String>,
}

impl Issued {
    /// Reads `exp` and the backend session id claim from backend-issued tokens.
    pub fn new(access: String, refresh: Option<String>, session_id_claim: Option<&str>) -> Issued {
        let ac = tokens::response_claims(&access);
        let rc = refresh.as_deref().and_then(tokens::response_claims);
        let sid = |c: &Option<serde_json::Map<String, serde_json::Value>>| {
            session_id_claim.and_then(|name| c.as_ref().and_then(|c| tokens::claim_str(c, name)))
        };
        Issued {
            access_exp: ac.as_ref().and_then(tokens::claim_exp),
            refresh_exp: rc.as_ref().and_then(tokens::claim_exp),
            backend_session: sid(&ac).or_else(|| sid(&rc)),
            access,
            refresh,
        }
    }

    fn entries(&self, session: u64) -> Vec<(TokenHash, TokenEntry)> {
        let mut out = vec![(
            tokens::hash(&self.access),
            TokenEntry { session, kind: TokenKind::Access, exp: self.access_exp, rotated_at: None },
        )];
        if let Some(r) = &self.refresh {
            out.push((
                tokens::hash(r),
                TokenEntry { session, kind: TokenKind::Refresh, exp: self.refresh_exp, rotated_at: None },
            ));
        }
        out
    }
}

/// Who logged in, from where.
#[derive(Debug, Clone)]
pub struct Origin {
    pub user_id: String,
    pub username: Option<String>,
    pub email: Option<String>,
    pub tenant_id: Option<String>,
    pub device_id: Option<String>,
    pub ip: IpAddr,
    pub user_agent: String,
    pub device: device::Device,
    pub kind: SessionOrigin,
    pub geo: Option<crate::geo::GeoInfo>,
    pub role: Option<String>,
    /// The login's risk assessment (absent when risk scoring is off).
    pub risk: Option<crate::risk::Assessment>,
}

/// A change worth telling live views about (the dashboard's event stream). Ids only: the
/// receiver fetches what it shows through the admin API.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// `created`, `rotated`, `ended`, `blocked` or `unblocked`.
    pub kind: &'static str,
    pub id: Option<u64>,
    pub session_id: Option<String>,
    pub user_id: String,
}

/// The durable queue of backend revocations (see `revoke`): on when the configuration says how
/// to revoke a session at the backend.
struct RevocationQueue {
    enabled: AtomicBool,
    /// Woken when an entry became due.
    notify: Arc<tokio::sync::Notify>,
}

pub struct Sessions {
    cfg: SessionConfig,
    revocation: RevocationQueue,
    store: Store,
    keyring: Keyring,
    index: index::Index,
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Next id counter `n` (see [`Replication::slot`]).
    next_id: AtomicU64,
    replication: Replication,
    touch_tx: mpsc::Sender<(u64, i64)>,
    blocked: RwLock<HashMap<String, BlockRecord>>,
    metrics: Arc<Metrics>,
    notices: tokio::sync::broadcast::Sender<Notice>,
    /// The clock every session decision reads (see `clock`).
    clock: Clock,
    /// A replicated session sealed with a key this instance lacks is reported once: it means a
    /// misconfiguration, and every later event would repeat it.
    foreign_key_reported: AtomicBool,
    aftermath: Aftermath,
    /// Held by an import (one at a time per instance).
    importing: tokio::sync::Mutex<()>,
}

/// A new session's `sid` and Strapi-style `documentId` (24 lower-case alphanumerics), both
/// carrying the session id beside random bits, so either finds the session without an index.
fn minted_names(id: u64) -> (String, String) {
    (crate::store::sid_for(id, rand::random()), crate::store::document_id_for(id, rand::random()))
}

/// What [`Sessions::open`] is built from.
pub struct Parts {
    pub cfg: SessionConfig,
    pub store: Store,
    pub keyring: Keyring,
    pub metrics: Arc<Metrics>,
    pub replication: Replication,
    pub aftermath: Aftermath,
    pub clock: Clock,
}

impl Sessions {
    /// Loads the store into the index, calling `seed` with every stored session. Returns the
    /// receiver of pending last-seen writes, which [`run_touch_writer`] drains.
    pub async fn open(
        parts: Parts,
        seed: impl FnMut(&SessionHot<'_>) + Send + 'static,
    ) -> Result<(Arc<Sessions>, mpsc::Receiver<(u64, i64)>), StoreError> {
        let Parts { cfg, store, keyring, metrics, replication, aftermath, clock } = parts;
        Metrics::preregister(&metrics.terminations, EndReason::ALL.map(EndReason::as_str));
        Metrics::preregister(&metrics.backend_revocations, revoke::OUTCOMES);
        let blocked = store.load_blocks().await?.into_iter().map(|b| (b.user_id.clone(), b)).collect();
        // Each stored session goes into the index as it is decoded (its leading fields only).
        fn fill<S: FnMut(&SessionHot<'_>)>(st: &mut (index::Index, S, u64), h: &SessionHot<'_>, last_active: i64) {
            (st.1)(h);
            st.2 = st.2.max(h.id);
            st.0.insert(h, last_active, h.logout_time.unwrap_or(0), &[]);
        }
        let (loaded, (index, _seed, max_id)) = store.load_with((index::Index::default(), seed, 0u64), fill).await?;
        index.load_tokens(&loaded.tokens);
        drop(loaded.tokens);
        let max_id = max_id.max(loaded.max_id);
        let (touch_tx, touch_rx) = mpsc::channel(65_536);
        let me = Sessions {
            cfg,
            revocation: RevocationQueue {
                enabled: AtomicBool::new(false),
                notify: Arc::new(tokio::sync::Notify::new()),
            },
            store,
            keyring,
            index,
            locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            // The first counter whose id lies above every id ever stored here.
            next_id: AtomicU64::new(max_id / replication.slots + 1),
            replication,
            touch_tx,
            blocked: RwLock::new(blocked),
            metrics,
            notices: tokio::sync::broadcast::channel(1024).0,
            foreign_key_reported: AtomicBool::new(false),
            clock,
            aftermath,
            importing: tokio::sync::Mutex::new(()),
        };
        Ok((Arc::new(me), touch_rx))
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The clock session decisions read: expiry, idleness, reuse grace, retention and
    /// revocation due times (a test drives it instead of sleeping).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Live notices of changes (local and replicated). A slow receiver gets `Lagged` and
    /// should reload what it shows.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    fn notify_session(&self, kind: &'static str, id: u64, sid: impl ToString, user_id: &str) {
        // No receivers is the normal case without a dashboard open: build nothing then.
        if self.notices.receiver_count() == 0 {
            return;
        }
        let _ = self.notices.send(Notice {
            kind,
            id: Some(id),
            session_id: Some(sid.to_string()),
            user_id: user_id.to_string(),
        });
    }

    fn notify_user(&self, kind: &'static str, user_id: &str) {
        if self.notices.receiver_count() == 0 {
            return;
        }
        let _ = self.notices.send(Notice { kind, id: None, session_id: None, user_id: user_id.to_string() });
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The in-memory index (see `index`).
    pub fn index(&self) -> &index::Index {
        &self.index
    }

    fn stripe(&self, id: u64) -> usize {
        (id % LOCK_STRIPES as u64) as usize
    }

    /// Locks the stripes of `ids` in ascending order (no deadlock between multi-session writers).
    async fn lock_many(&self, ids: &[u64]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = ids.iter().map(|id| self.stripe(*id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.locks[s].lock().await);
        }
        guards
    }

    /// The per-request check: memory only.
    pub fn check(&self, hash: &TokenHash, now: i64) -> Check {
        let Some((live, entry, ended)) = self.index.check(hash) else { return Check::Unknown };
        if ended {
            return Check::Ended(live);
        }
        if let (TokenKind::Refresh, Some(rotated)) = (entry.kind, entry.rotated_at) {
            if now - rotated > self.cfg.refresh_reuse_grace.as_millis() as i64 {
                return Check::Reuse(live);
            }
        }
        Check::Live(live, entry)
    }

    /// The session a backend session id belongs to.
    pub fn by_alias(&self, alias: &str) -> Option<Live> {
        self.index.by_alias(alias)
    }

    pub fn live(&self, id: u64) -> Option<Live> {
        self.index.get(id)
    }

    pub fn is_ended(&self, live: &Live) -> bool {
        self.index.is_ended(live)
    }

    /// Resolves once `live`'s session has ended — here or on another instance (a replicated
    /// ending marks the index the same way), or by leaving the index. What long-lived exchanges
    /// (tunnels, streamed responses, a wait for the backend) race against.
    pub async fn until_ended(&self, live: &Live) {
        // Subscribed before looking, so an ending between the two is not missed.
        let mut endings = self.index.endings();
        while !self.is_ended(live) {
            if endings.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    pub fn last_active(&self, live: &Live) -> i64 {
        self.index.last_active(live)
    }

    /// A session of `user_id` named by its `sid` or `documentId`.
    pub async fn find_for_user(&self, user_id: &str, key: &str) -> Result<Option<Live>, StoreError> {
        Ok(self.by_name(key).await?.filter(|l| &*l.user_id == user_id))
    }

    /// The session named by its `sid` or `documentId`. A minted name carries the id: the
    /// session at that id must have exactly this name (the `sid` is in memory; a `documentId`
    /// is read from its record). Other names are in the store's key index.
    async fn by_name(&self, key: &str) -> Result<Option<Live>, StoreError> {
        if let Some(live) = crate::store::id_in_sid(key).and_then(|id| self.live(id)) {
            if live.sid.to_string() == key {
                return Ok(Some(live));
            }
        }
        if let Some(id) = crate::store::id_in_document_id(key) {
            if let Some(rec) = self.timed("read", self.store.get(id)).await? {
                if rec.document_id == key {
                    return Ok(self.live(id));
                }
            }
        }
        let id = self.timed("read", self.store.find_key(key.to_string())).await?;
        Ok(id.and_then(|id| self.live(id)))
    }

    pub fn user_session_ids(&self, user_id: &str) -> Vec<u64> {
        self.index.user_sessions(user_id)
    }

    /// A user's sessions that have not ended, oldest login first: (id, login time).
    pub fn live_sessions_of(&self, user_id: &str) -> Vec<(u64, i64)> {
        let mut out: Vec<(u64, i64)> = self
            .user_session_ids(user_id)
            .into_iter()
            .filter_map(|id| self.live(id))
            .filter(|l| !self.is_ended(l))
            .map(|l| (l.id, self.index.login_time(&l)))
            .collect();
        out.sort_by_key(|(id, login)| (*login, *id));
        out
    }

    /// Ends a user's oldest sessions until at most `max` are left, never `keep` (the session
    /// a login just opened). Returns the ended records.
    pub async fn trim_user(
        &self,
        user_id: &str,
        max: usize,
        keep: u64,
        ending: &Ending,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let live = self.live_sessions_of(user_id);
        let over = live.len().saturating_sub(max);
        let ids: Vec<u64> = live.into_iter().map(|(id, _)| id).filter(|id| *id != keep).take(over).collect();
        self.end(&ids, ending).await
    }

    /// When the session began (unix ms).
    pub fn login_time(&self, live: &Live) -> i64 {
        self.index.login_time(live)
    }

    /// The role the session was opened with, when known.
    pub fn role(&self, live: &Live) -> Option<Arc<str>> {
        self.index.role(live)
    }

    /// The policy of `live`'s session: its role's, looked up only when policies differ by role.
    pub fn policy<'a>(&self, policies: &'a crate::config::PoliciesConfig, live: &Live) -> &'a crate::config::Policy {
        match policies.by_role() {
            true => policies.for_role(self.role(live).as_deref()),
            false => &policies.global,
        }
    }

    /// Writes where the session was last used from (and a new threat score, after a re-score).
    /// Serialised with the session's other writes; an ended session keeps its ending.
    pub async fn record_seen(
        &self,
        live: &Live,
        mut seen: crate::store::Seen,
        changed: bool,
        threat: Option<u32>,
    ) -> Result<(), StoreError> {
        let _g = self.lock_many(&[live.id]).await;
        let Some(mut rec) = self.timed("read", self.store.get(live.id)).await? else { return Ok(()) };
        seen.changes = rec.seen.as_ref().map_or(0, |s| s.changes) + u32::from(changed);
        rec.seen = Some(seen);
        if let Some(t) = threat {
            rec.threat_score = Some(t);
            self.index.set_threat(live, t);
        }
        let outbox = if self.replication.enabled() {
            let tokens = self.token_entries(vec![live.id]).await?.remove(&live.id).unwrap_or_default();
            self.events(|| vec![Event::session(rec.clone(), tokens)])
        } else {
            vec![]
        };
        self.timed("seen", self.store.apply(Changes { put_sessions: vec![rec], outbox, ..Default::default() }, false))
            .await?;
        self.published();
        Ok(())
    }

    /// Sessions of a user carrying a given device id (the device id is a listing field: read
    /// from the store).
    pub async fn user_device_sessions(&self, user_id: &str, device_id: &str) -> Result<Vec<u64>, StoreError> {
        let recs = self.timed("read", self.store.get_many(self.user_session_ids(user_id))).await?;
        Ok(recs.into_iter().filter(|r| r.device_id.as_deref() == Some(device_id)).map(|r| r.id).collect())
    }

    /// (sessions, active sessions, tokens) held in memory. The active count scans every slot;
    /// for the totals alone, `index().len()`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let o = self.overview();
        (o.total, o.active, self.index.len().1)
    }

    /// Counts over every session in memory (active, online, by device, threat scores).
    pub fn overview(&self) -> index::Overview {
        self.index.overview(self.now(), self.cfg.inactivity_timeout.as_millis() as i64)
    }

    pub fn is_idle(&self, live: &Live, now: i64) -> bool {
        now - self.index.last_active(live) > self.cfg.inactivity_timeout.as_millis() as i64
    }

    /// Records activity. The disk write is deferred to the touch writer and happens at most once
    /// per `last_seen_interval` per session.
    pub fn touch(&self, live: &Live, now: i64) {
        let interval = self.cfg.last_seen_interval.as_millis() as i64;
        if let Some(before) = self.index.touch(live, now, interval) {
            if self.touch_tx.try_send((live.id, now)).is_err() {
                // Queue full: let a later request retry the write.
                self.index.unpersist(live, before);
            }
        }
    }

    /// A new session id, unique across a cluster: `n × slots + slot`.
    fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) * self.replication.slots + self.replication.slot
    }

    /// Creates a session from a successful login (or an adopted refresh).
    pub async fn create(&self, origin: Origin, issued: Issued) -> Result<Live, StoreError> {
        let now = self.now();
        let id = self.allocate_id();
        let (sid, document_id) = minted_names(id);
        let dev = origin.device;
        let aliases: Vec<String> = issued.backend_session.iter().cloned().collect();
        let rec = SessionRecord {
            v: SessionRecord::VERSION,
            id,
            sid,
            document_id,
            user_id: origin.user_id,
            username: origin.username,
            email: origin.email,
            tenant_id: origin.tenant_id,
            device_id: origin.device_id,
            ip: origin.ip.to_string(),
            user_agent: origin.user_agent,
            device_type: dev.device_type,
            browser_name: dev.browser_name,
            os_name: dev.os_name,
            login_time: now,
            last_active: now,
            logout_time: None,
            end_reason: None,
            origin: origin.kind,
            aliases: aliases.clone(),
            access: Some(self.keyring.seal(&issued.access)),
            refresh: issued.refresh.as_deref().map(|r| self.keyring.seal(r)),
            access_exp: issued.access_exp,
            refresh_exp: issued.refresh_exp,
            rotation_count: 0,
            rotations: vec![],
            geo: origin.geo,
            threat_score: origin.risk.as_ref().map(|a| a.score),
            risk_signals: origin.risk.as_ref().map(|a| a.signals.clone()).unwrap_or_default(),
            tags: origin.risk.map(|a| a.tags).unwrap_or_default(),
            role: origin.role,
            seen: None,
        };
        let entries = issued.entries(id);
        let outbox = self.events(|| vec![Event::session(rec.clone(), entries.clone())]);
        let changes =
            Changes { put_sessions: vec![rec.clone()], put_tokens: entries.clone(), outbox, ..Default::default() };
        self.timed("create", self.store.apply(changes, true)).await?;
        let live = self.index.insert(&rec.hot(), rec.last_active, 0, &entries);
        self.published();
        self.notify_session("created", live.id, &live.sid, &live.user_id);
        Ok(live)
    }

    /// Attaches the tokens of a successful refresh to the same session and marks the presented
    /// refresh token as rotated out. If the session ended meanwhile, the new tokens are still
    /// indexed — under the ended session, so they are refused.
    pub async fn rotate(&self, live: &Live, old_refresh: Option<TokenHash>, issued: Issued) -> Result<(), StoreError> {
        let _g = self.lock_many(&[live.id]).await;
        let now = self.now();
        let Some(mut rec) = self.timed("read", self.store.get(live.id)).await? else { return Ok(()) };
        let mut entries = issued.entries(live.id);
        if let Some(old) = old_refresh {
            let prev = self.index.token(&old);
            if let Some(mut e) = prev.filter(|e| e.session == live.id && e.kind == TokenKind::Refresh) {
                e.rotated_at.get_or_insert(now);
                entries.push((old, e));
            }
        }
        rec.access = Some(self.keyring.seal(&issued.access));
        rec.access_exp = issued.access_exp;
        if let Some(r) = &issued.refresh {
            rec.refresh = Some(self.keyring.seal(r));
            rec.refresh_exp = issued.refresh_exp;
        }
        if let Some(a) = &issued.backend_session {
            if !rec.aliases.contains(a) {
                rec.aliases.push(a.clone());
            }
        }
        rec.rotation_count += 1;
        rec.rotations.push(now);
        if rec.rotations.len() > MAX_ROTATIONS_KEPT {
            rec.rotations.remove(0);
        }
        rec.last_active = rec.last_active.max(now);
        let outbox = if self.replication.enabled() {
            let mut all = self.token_entries(vec![live.id]).await?.remove(&live.id).unwrap_or_default();
            all.retain(|(h, _)| !entries.iter().any(|(n, _)| n == h));
            all.extend(entries.iter().copied());
            self.events(|| vec![Event::session(rec.clone(), all)])
        } else {
            vec![]
        };
        // Ended while this refresh was in flight (the stripe lock keeps this stable until the
        // write): the backend just minted tokens for it, so its revocation starts over with them.
        let put_revocations = if self.index.is_ended(live) {
            let reason = rec.end_reason.unwrap_or(EndReason::Logout);
            self.revocation_entries(&[live.id], reason, now, now)
        } else {
            vec![]
        };
        let requeued = !put_revocations.is_empty();
        let changes = Changes {
            put_sessions: vec![rec],
            put_tokens: entries.clone(),
            outbox,
            put_revocations,
            ..Default::default()
        };
        self.timed("rotate", self.store.apply(changes, true)).await?;
        if requeued {
            self.revocation.notify.notify_one();
        }
        self.index.put_tokens(live, &entries);
        self.index.seen(live, now, false);
        if let Some(a) = issued.backend_session {
            self.index.add_alias(live, &a);
        }
        self.published();
        self.notify_session("rotated", live.id, &live.sid, &live.user_id);
        Ok(())
    }

    /// Ends sessions durably: they are refused in memory at once, and the call returns only
    /// after the endings reached the disk — together with their backend revocations (unless the
    /// reason needs none), which the revocation worker then carries out — and the ending's
    /// aftermath (audit, alert; see `ending`) is recorded. Returns the records that were live
    /// until now.
    pub async fn end(&self, ids: &[u64], ending: &Ending) -> Result<Vec<SessionRecord>, StoreError> {
        self.end_with_aftermath(ids, ending, None).await
    }

    /// Like [`Sessions::end`], but the backend revocations wait `hold` for the caller to
    /// settle them with [`Sessions::settle_revocations`]: used by logouts, whose own backend
    /// answer may prove the revocation done. A crash meanwhile leaves them queued.
    pub async fn end_pending_proof(
        &self,
        ids: &[u64],
        ending: &Ending,
        hold: std::time::Duration,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.end_with_aftermath(ids, ending, Some(hold)).await
    }

    /// Ends every live session of a user.
    pub async fn end_user(&self, user_id: &str, ending: &Ending) -> Result<Vec<SessionRecord>, StoreError> {
        self.end(&self.user_session_ids(user_id), ending).await
    }

    /// Ends every session of a user but one ("log out my other devices").
    pub async fn end_user_except(
        &self,
        user_id: &str,
        keep: u64,
        ending: &Ending,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let ids: Vec<u64> = self.user_session_ids(user_id).into_iter().filter(|id| *id != keep).collect();
        self.end(&ids, ending).await
    }

    async fn end_with_aftermath(
        &self,
        ids: &[u64],
        ending: &Ending,
        hold: Option<std::time::Duration>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let records = self.end_inner(ids, ending.reason, hold).await?;
        self.aftermath.after(&records, ending);
        Ok(records)
    }

    /// The durable ending itself, without aftermath: what [`Sessions::end`] does first, and what
    /// replication applies (the deciding instance took the aftermath).
    pub(super) async fn end_inner(
        &self,
        ids: &[u64],
        reason: EndReason,
        hold: Option<std::time::Duration>,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let _g = self.lock_many(ids).await;
        let now = self.now();
        let mut newly = Vec::new();
        for id in ids {
            if let Some(live) = self.live(*id) {
                // `ended_at` is real time (diagnostics, the test harness's "nothing ended got
                // through" check), whatever the decision clock says.
                if self.index.mark_ended(&live, now_ms()) {
                    newly.push(*id);
                }
            }
        }
        let mut records = self.timed("read", self.store.get_many(newly)).await?;
        for rec in &mut records {
            rec.logout_time = Some(now);
            rec.end_reason = Some(reason);
        }
        let outbox = if self.replication.enabled() {
            let mut tokens = self.token_entries(records.iter().map(|r| r.id).collect()).await?;
            self.events(|| {
                records.iter().map(|r| Event::session(r.clone(), tokens.remove(&r.id).unwrap_or_default())).collect()
            })
        } else {
            vec![]
        };
        let due = now + hold.map_or(0, |h| h.as_millis() as i64);
        let ended_ids: Vec<u64> = records.iter().map(|r| r.id).collect();
        let put_revocations = self.revocation_entries(&ended_ids, reason, now, due);
        let queued = !put_revocations.is_empty();
        self.timed(
            "end",
            self.store
                .apply(Changes { put_sessions: records.clone(), outbox, put_revocations, ..Default::default() }, true),
        )
        .await?;
        self.published();
        if queued && hold.is_none() {
            self.revocation.notify.notify_one();
        }
        for r in &records {
            self.notify_session("ended", r.id, &r.sid, &r.user_id);
        }
        if !records.is_empty() {
            self.metrics.terminations.with_label_values(&[reason.as_str()]).inc_by(records.len() as u64);
        }
        Ok(records)
    }

    /// Queue entries for backend revocations of `ids` (none when revocation is off or the
    /// reason needs none).
    fn revocation_entries(&self, ids: &[u64], reason: EndReason, now: i64, due: i64) -> Vec<RevocationRecord> {
        if !reason.revokes_backend() || !self.revocation.enabled.load(Ordering::Relaxed) {
            return vec![];
        }
        ids.iter()
            .map(|id| RevocationRecord {
                session: *id,
                reason: reason.as_str().to_string(),
                queued_at: now,
                due,
                attempts: 0,
                last_error: None,
            })
            .collect()
    }

    /// Settles revocations held by [`Sessions::end_pending_proof`]: `proven` ones are dropped
    /// (the backend's own answer showed them done), `due_now` ones are handed to the worker.
    pub async fn settle_revocations(&self, proven: &[u64], due_now: &[u64]) -> Result<(), StoreError> {
        if !proven.is_empty() {
            self.store.delete_revocations(proven.to_vec()).await?;
            self.metrics.backend_revocations.with_label_values(&["proven"]).inc_by(proven.len() as u64);
        }
        if !due_now.is_empty() {
            let now = self.now();
            let mut recs = self.store.revocations_of(due_now.to_vec()).await?;
            for r in &mut recs {
                r.due = now;
            }
            self.store.put_revocations(recs).await?;
            self.revocation.notify.notify_one();
        }
        Ok(())
    }

    /// Turns the revocation queue on or off (startup and reload: on when the configuration
    /// says how to revoke a backend session).
    pub fn set_revocation(&self, enabled: bool) {
        self.revocation.enabled.store(enabled, Ordering::Relaxed);
    }

    pub fn revocation_enabled(&self) -> bool {
        self.revocation.enabled.load(Ordering::Relaxed)
    }

    /// Woken whenever a revocation became due.
    pub fn revocation_notify(&self) -> Arc<tokio::sync::Notify> {
        self.revocation.notify.clone()
    }

    /// Replaces the sealed tokens of an ended session (the revocation worker, after it had to
    /// refresh to revoke: a retry must use the new tokens, since the old refresh token is spent).
    pub async fn replace_sealed_tokens(&self, id: u64, access: &str, refresh: Option<&str>) -> Result<(), StoreError> {
        let _g = self.lock_many(&[id]).await;
        let Some(mut rec) = self.store.get(id).await? else { return Ok(()) };
        rec.access = Some(self.keyring.seal(access));
        if let Some(r) = refresh {
            rec.refresh = Some(self.keyring.seal(r));
        }
        self.store.apply(Changes { put_sessions: vec![rec], ..Default::default() }, true).await
    }

    /// The token prefixes (see `index::Key`) of every ended session with the time this
    /// instance learnt of the ending (unix ms).
    pub fn ended_tokens(&self) -> Vec<([u8; 16], i64)> {
        self.index.ended_tokens()
    }

    /// Runs a store operation, recording its latency as `store_operation_seconds{op}`.
    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let r = f.await;
        self.metrics.store_latency.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        r
    }

    pub fn is_blocked(&self, user_id: &str) -> bool {
        crate::sync::read(&self.blocked).contains_key(user_id)
    }

    pub fn blocked_users(&self) -> Vec<BlockRecord> {
        crate::sync::read(&self.blocked).values().cloned().collect()
    }

    /// Blocks a user durably and ends all their sessions as `ending` says. Returns the sessions
    /// ended.
    pub async fn block(
        &self,
        user_id: &str,
        actor: Option<String>,
        reason: Option<String>,
        ending: &Ending,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let rec = BlockRecord { user_id: user_id.to_string(), blocked_at: self.now(), actor, reason };
        let event = self.events(|| vec![Event::Block { rec: rec.clone() }]).pop();
        self.store.set_block(user_id, Some(rec.clone()), event).await?;
        crate::sync::write(&self.blocked).insert(user_id.to_string(), rec);
        self.published();
        self.notify_user("blocked", user_id);
        self.end_user(user_id, ending).await
    }

    pub async fn unblock(&self, user_id: &str) -> Result<(), StoreError> {
        let event = self.events(|| vec![Event::Unblock { user_id: user_id.to_string(), at: self.now() }]).pop();
        self.store.set_block(user_id, None, event).await?;
        crate::sync::write(&self.blocked).remove(user_id);
        self.published();
        self.notify_user("unblocked", user_id);
        Ok(())
    }

    /// Encoded replication events for the outbox (none when running alone).
    fn events(&self, make: impl FnOnce() -> Vec<Event>) -> Vec<Vec<u8>> {
        if self.replication.enabled() {
            make().iter().map(Event::encode).collect()
        } else {
            vec![]
        }
    }

    /// Wakes the publisher after a change reached the outbox.
    fn published(&self) {
        if self.replication.enabled() {
            self.replication.notify.notify_one();
        }
    }

    /// One page of sessions matching `q` (ids, in order), and how many match in all.
    pub fn select(&self, q: &index::Query) -> (usize, Vec<u64>) {
        self.index.select(q)
    }

    /// Every session id held in memory, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.index.ids()
    }

    /// A session by numeric id, `sid` or `documentId` (the last two through the store's key
    /// index: they are listing fields, not kept in memory).
    pub async fn find(&self, key: &str) -> Result<Option<Live>, StoreError> {
        if let Some(live) = key.parse::<u64>().ok().and_then(|id| self.live(id)) {
            return Ok(Some(live));
        }
        self.by_name(key).await
    }

    /// Full records (for the user API), with in-memory last-active applied.
    pub async fn records(&self, ids: Vec<u64>) -> Result<Vec<SessionRecord>, StoreError> {
        let mut recs = self.timed("read", self.store.get_many(ids)).await?;
        for r in &mut recs {
            if let Some(l) = self.live(r.id) {
                r.last_active = r.last_active.max(self.index.last_active(&l));
            }
        }
        Ok(recs)
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Decrypts a record's current (access, refresh) tokens, for revoking them at the backend.
    pub fn open_tokens(&self, rec: &SessionRecord) -> (Option<String>, Option<String>) {
        let open = |s: &Option<crate::store::Sealed>| s.as_ref().and_then(|s| self.keyring.open(s).ok());
        (open(&rec.access), open(&rec.refresh))
    }

    /// Removes purged sessions (with all their tokens) and expired token entries (called by
    /// the sweeper).
    pub(crate) async fn purge(
        &self,
        sessions: Vec<SessionRecord>,
        expired_tokens: Vec<(u64, TokenHash)>,
    ) -> Result<(), StoreError> {
        let ids: Vec<u64> = sessions.iter().map(|r| r.id).collect();
        let _g = self.lock_many(&ids).await;
        // Under the stripe locks no token is added to these sessions meanwhile.
        let mut tokens = self.token_entries(ids.clone()).await?;
        self.timed(
            "purge",
            self.store.apply(
                Changes { delete_sessions: ids, delete_tokens: expired_tokens.clone(), ..Default::default() },
                true,
            ),
        )
        .await?;
        for r in &sessions {
            let hashes: Vec<TokenHash> = tokens.remove(&r.id).unwrap_or_default().into_iter().map(|(h, _)| h).collect();
            self.index.remove_session(r.id, &r.aliases, &hashes);
        }
        self.index.remove_tokens(&expired_tokens.iter().map(|(_, h)| *h).collect::<Vec<_>>());
        Ok(())
    }

    /// Tokens of `ids` whose `exp` lies before `cutoff` (unix seconds).
    pub(crate) async fn expired_tokens(&self, ids: Vec<u64>, cutoff: i64) -> Result<Vec<(u64, TokenHash)>, StoreError> {
        let all = self.store.tokens_of(ids).await?;
        Ok(all
            .into_iter()
            .filter(|(_, e)| e.exp.is_some_and(|exp| exp < cutoff))
            .map(|(h, e)| (e.session, h))
            .collect())
    }

    /// The stored tokens of each of `ids`.
    pub(crate) async fn token_entries(
        &self,
        ids: Vec<u64>,
    ) -> Result<HashMap<u64, Vec<(TokenHash, TokenEntry)>>, StoreError> {
        let mut out: HashMap<u64, Vec<(TokenHash, TokenEntry)>> = HashMap::new();
        for (h, e) in self.timed("read", self.store.tokens_of(ids)).await? {
            out.entry(e.session).or_default().push((h, e));
        }
        Ok(out)
    }
}

/// Writes deferred last-seen times in batches until the channel closes.
/// With a cluster, the same times are queued for publishing to the other instances.
pub async fn run_touch_writer(
    store: Store,
    metrics: Arc<Metrics>,
    rx: mpsc::Receiver<(u64, i64)>,
    replication: Replication,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    crate::store::write_batches(rx, 1024, metrics, "touch", stop, |batch| {
        replication.queue_touches(&batch);
        store.touch(batch)
    })
    .await
}

/// Sessions for unit tests: a real store in a temporary directory, and a small world of tokens
/// in every state the decisions care about.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::Config;

    /// The HMAC key the world's tokens are signed with (and the verifier checks).
    const KEY: &[u8] = b"unit-test-jwt-key-unit-test-jwt-key";

    pub fn jwt(claims: serde_json::Value, key: &[u8]) -> String {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(key)).expect("encode")
    }

    /// A backend's token pair for `user`, naming backend session `backend`.
    pub fn issued(user: &str, backend: &str, n: u32) -> Issued {
        let exp = now_ms() / 1000 + 3600;
        let claims =
            |kind: &str| serde_json::json!({"id": user, "sessionId": backend, "type": kind, "exp": exp, "n": n});
        Issued::new(jwt(claims("access"), KEY), Some(jwt(claims("refresh"), KEY)), Some("sessionId"))
    }

    pub fn origin(user: &str) -> Origin {
        Origin {
            user_id: user.into(),
            username: None,
            email: None,
            tenant_id: None,
            device_id: None,
            ip: "127.0.0.1".parse().expect("ip"),
            user_agent: String::new(),
            device: device::parse(""),
            kind: SessionOrigin::Login,
            geo: None,
            role: None,
            risk: None,
        }
    }

    /// The strapi-v5 preset's settings, changed by `edit`.
    pub fn config(edit: impl FnOnce(&mut Config)) -> Config {
        let text = "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n";
        let mut cfg = Config::from_toml_str(text, &[]).expect("config");
        edit(&mut cfg);
        cfg
    }

    /// Sessions over a fresh store, with the strapi-v5 preset's settings changed by `edit`.
    pub async fn sessions(edit: impl FnOnce(&mut Config)) -> (Arc<Sessions>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(edit);
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(dir.path(), 1 << 20).await.expect("store");
        let (audit, _audit_rx) = crate::audit::AuditLog::new(metrics.clone());
        let sender = crate::alerts::channels::Sender::new(&cfg.alerts).expect("alert channels");
        let (alerts, _worker, _alerts_rx) =
            crate::alerts::new(cfg.alerts.clone(), store.clone(), sender, metrics.clone());
        let aftermath = Aftermath { audit: Arc::new(audit), alerts };
        let keyring = Keyring::new([7; 32], &[]);
        let parts = Parts {
            cfg: cfg.sessions,
            store,
            keyring,
            metrics,
            replication: Replication::standalone(),
            aftermath,
            clock: Clock::system(),
        };
        let (sessions, _touches) = Sessions::open(parts, |_| {}).await.expect("open");
        (sessions, dir)
    }

    /// A session's id and current tokens.
    pub struct Held {
        pub id: u64,
        pub access: String,
        pub refresh: Option<String>,
    }

    pub struct World {
        pub sessions: Arc<Sessions>,
        pub verifier: tokens::Verifier,
        /// When the world was made (unix ms).
        pub t0: i64,
        /// A live session, rotated once: its current tokens.
        pub a: Held,
        /// Session `a`'s first refresh token, rotated out.
        pub rotated_out: String,
        /// An ended session.
        pub ended: Held,
        /// A JWT of the backend's key that the gateway never saw.
        pub stranger: String,
        /// Never seen, signed with the backend's key, naming `a`'s backend session.
        pub signed_alias: String,
        /// Never seen, signed with the backend's key, naming the ended session's backend session.
        pub signed_ended_alias: String,
        /// Naming `a`'s backend session, signed with another key.
        pub forged_alias: String,
        _dir: tempfile::TempDir,
    }

    impl World {
        pub fn a_refresh(&self) -> String {
            self.a.refresh.clone().expect("refresh")
        }
    }

    pub async fn world(edit: impl FnOnce(&mut Config)) -> World {
        let (sessions, dir) = sessions(edit).await;
        let t0 = now_ms();
        let first = issued("alice", "bs-a", 1);
        let live = sessions.create(origin("alice"), first.clone()).await.expect("create");
        let second = issued("alice", "bs-a", 2);
        sessions.rotate(&live, first.refresh.as_deref().map(tokens::hash), second.clone()).await.expect("rotate");
        let gone = issued("bob", "bs-b", 1);
        let ended = sessions.create(origin("bob"), gone.clone()).await.expect("create");
        let ending = Ending::new(EndReason::Logout, Audit::EachSession(crate::audit::Kind::Logout), "user");
        sessions.end(&[ended.id], &ending).await.expect("end");
        let jwt_cfg = crate::config::JwtConfig {
            algorithm: crate::config::JwtAlgorithm::Hs256,
            key: crate::config::SecretSource::Env("UNUSED".into()),
            leeway: std::time::Duration::ZERO,
        };
        let exp = t0 / 1000 + 3600;
        let naming = |backend: &str| serde_json::json!({"id": "x", "sessionId": backend, "exp": exp, "fresh": true});
        World {
            verifier: tokens::Verifier::new(&jwt_cfg, KEY).expect("verifier"),
            t0,
            a: Held { id: live.id, access: second.access, refresh: second.refresh },
            rotated_out: first.refresh.expect("refresh"),
            ended: Held { id: ended.id, access: gone.access, refresh: gone.refresh },
            stranger: issued("carol", "bs-c", 1).access,
            signed_alias: jwt(naming("bs-a"), KEY),
            signed_ended_alias: jwt(naming("bs-b"), KEY),
            forged_alias: jwt(naming("bs-a"), b"some-other-key-some-other-key-xx"),
            sessions,
            _dir: dir,
        }
    }
}
