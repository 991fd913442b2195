//! Several instances, one view of the sessions: replication through a Redis stream.
//!
//! Every instance keeps the full state in its own sled; the request path never waits on Redis.
//! A local change is written to sled together with its event in the `outbox` (one transaction),
//! and the publisher moves outbox events into the stream. Each instance follows the stream from
//! the last position it applied (stored in sled with the changes it caused), merging what others
//! published — see `session::replication::event` for why replays and reordering are harmless.
//!
//! Three tasks per instance, each with its own connection (blocking reads would hold up a
//! shared one): the publisher (outbox, aggregated last-active times, heartbeat), the follower
//! (sync, catch-up, live apply) and the snapshot server (answers peers that cannot catch up
//! from the stream because it was trimmed past them, or that are new).
//!
//! While Redis is unreachable every instance goes on enforcing what it knows; its own events
//! wait in the outbox and go out, in order, when Redis is back.

mod redis;

use self::redis::{Conn, Entry, Link, LinkError, Outgoing};
use crate::clock::now_ms;
use crate::config::{ClusterConfig, Password, ValueSource, CLUSTER_SLOTS};
use crate::error::StartupError;
use crate::metrics::Metrics;
use crate::risk::Risk;
use crate::session::replication::event::{self, Event, Item};
use crate::session::{Replication, Sessions};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const META_SLOT: &str = "cluster_slot";
const META_CURSOR: &str = "cluster_cursor";
/// Events per publish pipeline and per stream read.
const BATCH: usize = 256;
/// Sessions per snapshot chunk and per republished event.
const CHUNK: usize = 200;
/// How long a follower's stream read blocks waiting for news.
const READ_BLOCK: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Position in the stream up to which this instance has applied everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The stream history this position belongs to.
    pub epoch: String,
    /// Last applied stream id (`0-0`: from the start).
    pub id: String,
    /// Its sequence number (0: none).
    pub seq: u64,
}

impl Cursor {
    fn start(epoch: &str) -> Cursor {
        Cursor { epoch: epoch.to_string(), id: "0-0".into(), seq: 0 }
    }
}

/// Heartbeat an instance writes into Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub seen: i64,
    /// Ready to serve snapshots (it has synced with the current stream).
    pub synced: bool,
    pub seq: u64,
    pub version: String,
}

#[derive(Serialize, Deserialize)]
struct SnapshotRequest {
    rid: String,
    from: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Chunk {
    Items { items: Vec<Item> },
    Done { cursor: Cursor, blocks: Vec<crate::store::BlockRecord> },
    Refused { why: String },
}

pub struct Cluster {
    cfg: ClusterConfig,
    link: Link,
    pub slot: u64,
    pub name: String,
    replication: Replication,
    store: Store,
    metrics: Arc<Metrics>,
    publisher_ok: AtomicBool,
    follower_ok: AtomicBool,
    /// What this instance has applied; `None` until the follower synced.
    applied: Mutex<Option<Cursor>>,
    peers: Mutex<Vec<(u64, NodeInfo)>>,
    last_error: Mutex<Option<String>>,
}

/// Status for `/readyz` and the admin API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub node: String,
    pub slot: u64,
    pub connected: bool,
    pub synced: bool,
    pub applied_seq: Option<u64>,
    pub outbox_pending: i64,
    pub lag_events: i64,
    pub peers: Vec<PeerStatus>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub slot: u64,
    pub name: String,
    pub last_seen: i64,
    pub seq: u64,
}

fn random_id() -> String {
    (0..16).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

impl Cluster {
    /// Resolves the Redis URL and this instance's id class: the one stored in the data
    /// directory, else `cluster.node_slot`, else a fresh one from Redis (which must then be
    /// reachable: ids must never collide).
    pub async fn new(cfg: &ClusterConfig, store: Store, metrics: Arc<Metrics>) -> Result<Cluster, StartupError> {
        metrics.cluster.enabled.set(1);
        let url = match &cfg.redis_url {
            None => None,
            Some(ValueSource::Literal(u)) => Some(u.clone()),
            Some(ValueSource::Secret(src)) => {
                let s = src.require("cluster.redis_url").map_err(StartupError::Secret)?;
                let url = String::from_utf8_lossy(s.expose()).trim().to_string();
                // A password is expected here; the scheme and host are still checked.
                crate::config::check_redis_url(&url, Password::Allowed)
                    .map_err(|e| StartupError::Secret(format!("cluster.redis_url ({}): {e}", src.describe())))?;
                Some(url)
            }
        };
        let ca = match &cfg.tls_ca_file {
            Some(p) => Some(
                tokio::fs::read(p)
                    .await
                    .map_err(|e| StartupError::Secret(format!("cluster.tls_ca_file ({}): {e}", p.display())))?,
            ),
            None => None,
        };
        let sentinel = cfg
            .sentinel_master
            .as_deref()
            .map(|master| self::redis::SentinelSpec { sentinels: &cfg.sentinels, master });
        let link = Link::new(url.as_deref(), sentinel, ca, &cfg.key_prefix, cfg.connect_timeout, cfg.command_timeout)
            .map_err(|e| StartupError::Cluster(format!("cluster.redis_url: {e}")))?;
        let stored = store.meta_get(META_SLOT).await?.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok());
        let slot = match (cfg.node_slot, stored.map(u64::from_be_bytes)) {
            (Some(s), _) => s,
            (None, Some(s)) => s,
            (None, None) => {
                let mut conn = link.connect(Duration::ZERO).await.map_err(|e| {
                    StartupError::Cluster(format!(
                        "this instance has no node slot yet and cannot reach Redis to get one ({e}); \
                         start it with Redis reachable, or set cluster.node_slot"
                    ))
                })?;
                conn.allocate_slot(CLUSTER_SLOTS).await.map_err(|e| StartupError::Cluster(e.to_string()))?
            }
        };
        if stored != Some(slot.to_be_bytes()) {
            store.meta_set(vec![(META_SLOT, slot.to_be_bytes().to_vec())]).await?;
        }
        let name = cfg.node_name.clone().unwrap_or_else(|| format!("node-{slot}"));
        Ok(Cluster {
            cfg: cfg.clone(),
            link,
            slot,
            name,
            replication: Replication::new(slot, CLUSTER_SLOTS),
            store,
            metrics,
            publisher_ok: AtomicBool::new(false),
            follower_ok: AtomicBool::new(false),
            applied: Mutex::new(None),
            peers: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
        })
    }

    /// What `Sessions` needs to take part.
    pub fn replication(&self) -> Replication {
        self.replication.clone()
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    pub fn is_connected(&self) -> bool {
        self.publisher_ok.load(Ordering::Acquire) && self.follower_ok.load(Ordering::Acquire)
    }

    pub fn status(&self) -> Status {
        let applied = crate::sync::lock(&self.applied).clone();
        let peers = crate::sync::lock(&self.peers).clone();
        Status {
            node: self.name.clone(),
            slot: self.slot,
            connected: self.is_connected(),
            synced: applied.is_some(),
            applied_seq: applied.map(|c| c.seq),
            outbox_pending: self.metrics.cluster.outbox_pending.get(),
            lag_events: self.metrics.cluster.lag_events.get(),
            peers: peers
                .into_iter()
                .map(|(slot, i)| PeerStatus { slot, name: i.name, last_seen: i.seen, seq: i.seq })
                .collect(),
            last_error: crate::sync::lock(&self.last_error).clone(),
        }
    }

    /// Records a task's link state; logs when the instance becomes isolated or reconnects.
    fn set_ok(&self, flag: &AtomicBool, ok: bool, err: Option<&LinkError>) {
        let was = self.is_connected();
        flag.store(ok, Ordering::Release);
        let now = self.is_connected();
        self.metrics.cluster.connected.set(now as i64);
        if let Some(e) = err {
            *crate::sync::lock(&self.last_error) = Some(e.to_string());
        }
        match (was, now) {
            (true, false) => tracing::warn!(
                error = %err.map(|e| e.to_string()).unwrap_or_default(),
                "cluster: Redis unreachable, this instance is isolated; enforcing locally and queueing its events"
            ),
            (false, true) => tracing::info!(node = %self.name, slot = self.slot, "cluster: connected to Redis"),
            _ => {}
        }
    }
}

/// Other instances whose heartbeat is at most three intervals old.
async fn live_peers(cl: &Cluster, conn: &mut Conn<'_>) -> Result<Vec<(u64, NodeInfo)>, LinkError> {
    let now = now_ms();
    let stale_after = 3 * cl.cfg.heartbeat_interval.as_millis() as i64;
    Ok(conn
        .nodes()
        .await?
        .into_iter()
        .filter(|(slot, _)| *slot != cl.slot)
        .filter_map(|(slot, v)| serde_json::from_str::<NodeInfo>(&v).ok().map(|i| (slot, i)))
        .filter(|(_, i)| now - i.seen <= stale_after)
        .collect())
}

/// What replication applies to and serves from: this instance's sessions, and the risk history
/// that remote logins feed.
pub struct Local {
    pub sessions: Arc<Sessions>,
    pub risk: Arc<Risk>,
}

/// Applies remote events to the sessions and what depends on them (risk history).
async fn apply(app: &Local, events: Vec<Event>, meta: Vec<(&'static str, Vec<u8>)>) -> Result<(), LinkError> {
    let applied =
        app.sessions.apply_remote(events, meta).await.map_err(|e| LinkError::Protocol(format!("store: {e}")))?;
    for rec in &applied.new_sessions {
        app.risk.record_login(&rec.user_id, rec.geo.as_ref(), &rec.device(), rec.login_time);
    }
    Ok(())
}

fn encode_cursor(c: &Cursor) -> Vec<u8> {
    serde_json::to_vec(c).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Publisher

/// Publishes the outbox and aggregated touches, and writes the heartbeat, until shutdown; then
/// makes one last attempt so a drained instance leaves nothing behind.
pub async fn run_publisher(cl: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let mut conn: Option<Conn<'_>> = None;
    let fresh = || crate::retry::schedule(Duration::from_millis(100), MAX_BACKOFF);
    let mut backoff = fresh();
    let mut next_heartbeat = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = cl.replication.notify.notified() => false,
            _ = tokio::time::sleep(cl.cfg.touch_interval) => false,
            _ = shutdown.changed() => true,
        };
        if conn.is_none() {
            match cl.link.connect(Duration::ZERO).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    cl.set_ok(&cl.publisher_ok, false, Some(&e));
                    if stopping {
                        return;
                    }
                    tokio::time::sleep(backoff.next().unwrap_or(MAX_BACKOFF)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let heartbeat = tokio::time::Instant::now() >= next_heartbeat;
        match publish_round(&cl, c, heartbeat).await {
            Ok(()) => {
                cl.set_ok(&cl.publisher_ok, true, None);
                backoff = fresh();
                if heartbeat {
                    next_heartbeat = tokio::time::Instant::now() + cl.cfg.heartbeat_interval;
                }
            }
            Err(e) => {
                cl.metrics.cluster.publish_failures.inc();
                cl.set_ok(&cl.publisher_ok, false, Some(&e));
                conn = None;
                if !stopping {
                    tokio::time::sleep(backoff.next().unwrap_or(MAX_BACKOFF)).await;
                    // Retry soon even if nothing new happens.
                    cl.replication.notify.notify_one();
                }
            }
        }
        if stopping {
            return;
        }
    }
}

async fn publish_round(cl: &Cluster, conn: &mut Conn<'_>, heartbeat: bool) -> Result<(), LinkError> {
    loop {
        let batch = cl.store.outbox_peek(BATCH).await?;
        if batch.is_empty() {
            break;
        }
        let kinds: Vec<&'static str> =
            batch.iter().map(|(_, e)| Event::decode(e).map(|e| e.kind()).unwrap_or("unknown")).collect();
        let out: Vec<Outgoing<'_>> =
            batch.iter().zip(&kinds).map(|((_, payload), kind)| Outgoing { kind, payload }).collect();
        publish(cl, conn, &out).await?;
        cl.store.outbox_delete(batch.iter().map(|(k, _)| *k).collect()).await?;
        for k in kinds {
            cl.metrics.cluster.events.with_label_values(&["published", k]).inc();
        }
        if batch.len() < BATCH {
            break;
        }
    }
    let touches = cl.replication.take_touches();
    for chunk in touches.chunks(2000) {
        if let Err(e) = publish_event(cl, conn, &Event::Touches { touches: chunk.to_vec() }).await {
            // Keep them for the next round.
            cl.replication.queue_touches(&touches);
            return Err(e);
        }
        cl.metrics.cluster.events.with_label_values(&["published", "touches"]).inc();
    }
    if heartbeat {
        let applied = crate::sync::lock(&cl.applied).clone();
        let info = NodeInfo {
            name: cl.name.clone(),
            seen: now_ms(),
            synced: applied.is_some(),
            seq: applied.map(|c| c.seq).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        conn.heartbeat(cl.slot, &serde_json::to_string(&info).unwrap_or_default()).await?;
        let peers = live_peers(cl, conn).await?;
        cl.metrics.cluster.peers.set(peers.len() as i64);
        *crate::sync::lock(&cl.peers) = peers;
        let pending = cl.store.outbox_len().await?;
        cl.metrics.cluster.outbox_pending.set(pending as i64);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Follower

/// Follows the stream until shutdown, reconnecting (and re-syncing) after every failure.
pub async fn run_follower(cl: Arc<Cluster>, app: Arc<Local>, mut shutdown: watch::Receiver<bool>) {
    let fresh = || crate::retry::schedule(Duration::from_millis(100), MAX_BACKOFF);
    let mut backoff = fresh();
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            r = follow(&cl, &app) => r,
            _ = shutdown.changed() => return,
        };
        if let Err(e) = result {
            cl.set_ok(&cl.follower_ok, false, Some(&e));
            *crate::sync::lock(&cl.applied) = None;
        }
        // A connection that lasted a while was healthy: start the backoff over.
        if started.elapsed() > MAX_BACKOFF * 2 {
            backoff = fresh();
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next().unwrap_or(MAX_BACKOFF)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn follow(cl: &Cluster, app: &Local) -> Result<(), LinkError> {
    let mut conn = cl.link.connect(READ_BLOCK.max(cl.cfg.snapshot_timeout)).await?;
    let mut cur = sync(cl, app, &mut conn).await?;
    cl.set_ok(&cl.follower_ok, true, None);
    let m = &cl.metrics.cluster;
    loop {
        let entries = conn.read(&cur.id, BATCH, READ_BLOCK).await?;
        let Some(last) = entries.last().cloned() else {
            m.lag_events.set(0);
            m.lag_seconds.set(0.0);
            continue;
        };
        if entries[0].seq > cur.seq + 1 {
            // Trimmed while this instance was reading slowly: start over with a snapshot.
            return Err(LinkError::Protocol(format!(
                "events {}..{} were trimmed before this instance applied them",
                cur.seq + 1,
                entries[0].seq - 1
            )));
        }
        let now = now_ms();
        let events = decode(cl, &entries, now);
        cur = Cursor { epoch: cur.epoch, id: last.id.clone(), seq: last.seq };
        apply(app, events, vec![(META_CURSOR, encode_cursor(&cur))]).await?;
        *crate::sync::lock(&cl.applied) = Some(cur.clone());
        if entries.len() == BATCH {
            let newest = conn.sequence().await?;
            m.lag_events.set(newest.saturating_sub(cur.seq) as i64);
            m.lag_seconds.set((now - last.time_ms()).max(0) as f64 / 1000.0);
        } else {
            m.lag_events.set(0);
            m.lag_seconds.set(0.0);
        }
    }
}

/// Decodes stream entries, skipping this instance's own and those it cannot read.
fn decode(cl: &Cluster, entries: &[Entry], now: i64) -> Vec<Event> {
    let m = &cl.metrics.cluster;
    let mut events = Vec::with_capacity(entries.len());
    for e in entries {
        if e.node == cl.slot {
            continue;
        }
        if e.version > event::VERSION {
            m.events.with_label_values(&["skipped", "newer_version"]).inc();
            tracing::warn!(id = %e.id, version = e.version, "cluster: skipping an event of a newer format; upgrade this instance");
            continue;
        }
        match Event::decode(&e.payload) {
            Ok(ev) => {
                m.events.with_label_values(&["applied", ev.kind()]).inc();
                m.apply_delay.observe((now - e.time_ms()).max(0) as f64 / 1000.0);
                events.push(ev);
            }
            Err(err) => {
                m.events.with_label_values(&["skipped", "undecodable"]).inc();
                tracing::error!(id = %e.id, kind = %e.kind, error = %err, "cluster: skipping an undecodable event");
            }
        }
    }
    events
}

/// Decides where to resume: the stored position if the stream still holds everything after
/// it; otherwise a peer's snapshot. An instance new to this stream (fresh, or Redis lost its
/// data) first publishes its own state, so that others — and later newcomers reading from the
/// start — learn it.
async fn sync(cl: &Cluster, app: &Local, conn: &mut Conn<'_>) -> Result<Cursor, LinkError> {
    let epoch = conn.epoch(&random_id()).await?;
    let stored: Option<Cursor> = cl.store.meta_get(META_CURSOR).await?.and_then(|v| serde_json::from_slice(&v).ok());
    let oldest = conn.oldest().await?;
    let resumed = stored.as_ref().is_some_and(|c| c.epoch == epoch);
    let mut cur = match stored {
        Some(c) if c.epoch == epoch => c,
        other => {
            if other.is_some() {
                tracing::warn!("cluster: the Redis stream has a new history (Redis lost its data?); republishing this instance's state");
            }
            republish(cl, app, conn).await?;
            Cursor::start(&epoch)
        }
    };
    let newest = conn.sequence().await?;
    if resumed && newest < cur.seq {
        // Redis came back with less than it had acknowledged (e.g. `appendfsync everysec` and a
        // crash): events may be lost, including this instance's. Publish this instance's state
        // again so the others recover what it knows, and follow the stream from where it is.
        tracing::warn!(
            applied = cur.seq,
            newest,
            "cluster: the stream is behind this instance (Redis lost recent writes); republishing this instance's state"
        );
        republish(cl, app, conn).await?;
        cur.seq = newest;
    }
    let trimmed = oldest.as_ref().is_some_and(|o| o.seq > cur.seq + 1);
    // New to this stream and empty: a peer's snapshot is faster than replaying the stream.
    let fresh = !resumed && app.sessions.index().len().0 == 0;
    if trimmed || (fresh && newest > 0) {
        match load_snapshot(cl, app, conn, &epoch).await? {
            Some(c) => cur = c,
            None if trimmed => {
                cl.metrics.cluster.snapshot_loads.with_label_values(&["unavailable"]).inc();
                if let Some(o) = &oldest {
                    cur = Cursor { epoch: epoch.clone(), id: "0-0".into(), seq: o.seq - 1 };
                }
                tracing::error!(
                    applied = cur.seq,
                    "cluster: the stream was trimmed past this instance's position and no peer sent a snapshot; \
                     continuing from the oldest event still in the stream (some changes may be missing here)"
                );
            }
            None => {}
        }
    } else if cur.seq < newest {
        cl.metrics.cluster.catchup_runs.inc();
        tracing::info!(from = cur.seq, to = newest, "cluster: catching up from the stream");
    }
    cl.store.meta_set(vec![(META_CURSOR, encode_cursor(&cur))]).await?;
    *crate::sync::lock(&cl.applied) = Some(cur.clone());
    Ok(cur)
}

/// Appends encoded events (in order) to the stream as this instance.
async fn publish(cl: &Cluster, conn: &mut Conn<'_>, events: &[Outgoing<'_>]) -> Result<Vec<String>, LinkError> {
    conn.publish(cl.slot, event::VERSION, cl.cfg.stream_max_len, events).await
}

/// Appends one event straight to the stream (not through the outbox).
async fn publish_event(cl: &Cluster, conn: &mut Conn<'_>, ev: &Event) -> Result<(), LinkError> {
    let payload = ev.encode();
    publish(cl, conn, &[Outgoing { kind: ev.kind(), payload: &payload }]).await.map(drop)
}

/// Publishes this instance's whole state (sessions and blocks) into the stream.
async fn republish(cl: &Cluster, app: &Local, conn: &mut Conn<'_>) -> Result<(), LinkError> {
    let ids = app.sessions.state_ids();
    let mut sent = 0;
    for chunk in ids.chunks(CHUNK) {
        let items = app.sessions.state_items(chunk.to_vec()).await?;
        publish_event(cl, conn, &Event::Sessions { items }).await?;
        sent += chunk.len();
    }
    for rec in app.sessions.blocked_users() {
        publish_event(cl, conn, &Event::Block { rec }).await?;
    }
    if sent > 0 {
        tracing::info!(sessions = sent, "cluster: published this instance's state");
    }
    Ok(())
}

/// Asks live, synced peers (freshest first) for a snapshot and applies the first complete one.
async fn load_snapshot(
    cl: &Cluster,
    app: &Local,
    conn: &mut Conn<'_>,
    epoch: &str,
) -> Result<Option<Cursor>, LinkError> {
    let mut peers: Vec<(u64, NodeInfo)> = live_peers(cl, conn).await?.into_iter().filter(|(_, i)| i.synced).collect();
    peers.sort_by_key(|p| std::cmp::Reverse(p.1.seq));
    for (slot, info) in peers {
        let rid = random_id();
        let req = serde_json::to_string(&SnapshotRequest { rid: rid.clone(), from: cl.slot }).unwrap_or_default();
        conn.request_snapshot(slot, &req).await?;
        tracing::info!(peer = %info.name, "cluster: loading a snapshot from a peer");
        let mut sessions = 0usize;
        loop {
            let Some(bytes) = conn.pop_chunk(&rid, cl.cfg.snapshot_timeout).await? else {
                tracing::warn!(peer = %info.name, "cluster: peer did not send its snapshot in time");
                cl.metrics.cluster.snapshot_loads.with_label_values(&["timeout"]).inc();
                break;
            };
            match serde_json::from_slice::<Chunk>(&bytes) {
                Ok(Chunk::Items { items }) => {
                    sessions += items.len();
                    apply(app, vec![Event::Sessions { items }], vec![]).await?;
                }
                Ok(Chunk::Done { cursor, blocks }) => {
                    apply(app, blocks.into_iter().map(|rec| Event::Block { rec }).collect(), vec![]).await?;
                    cl.metrics.cluster.snapshot_loads.with_label_values(&["loaded"]).inc();
                    tracing::info!(peer = %info.name, sessions, seq = cursor.seq, "cluster: snapshot loaded");
                    let _ = conn.drop_snapshot(&rid).await;
                    // A peer on another history still gave us its state; read all of ours.
                    return Ok(Some(if cursor.epoch == epoch { cursor } else { Cursor::start(epoch) }));
                }
                Ok(Chunk::Refused { why }) => {
                    tracing::info!(peer = %info.name, why, "cluster: peer declined the snapshot request");
                    break;
                }
                Err(e) => {
                    cl.metrics.cluster.snapshot_loads.with_label_values(&["invalid"]).inc();
                    tracing::error!(peer = %info.name, error = %e, "cluster: invalid snapshot chunk");
                    break;
                }
            }
        }
        let _ = conn.drop_snapshot(&rid).await;
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Snapshot server

/// Answers snapshot requests addressed to this instance until shutdown.
pub async fn run_snapshot_server(cl: Arc<Cluster>, app: Arc<Local>, mut shutdown: watch::Receiver<bool>) {
    let wait = cl.cfg.heartbeat_interval;
    loop {
        let served = tokio::select! {
            r = serve_requests(&cl, &app, wait) => r,
            _ = shutdown.changed() => return,
        };
        if let Err(e) = served {
            tracing::debug!(error = %e, "cluster: snapshot server reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(MAX_BACKOFF.min(wait)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_requests(cl: &Cluster, app: &Local, wait: Duration) -> Result<(), LinkError> {
    let mut conn = cl.link.connect(wait).await?;
    loop {
        let Some(text) = conn.next_request(cl.slot, wait).await? else { continue };
        let Ok(req) = serde_json::from_str::<SnapshotRequest>(&text) else { continue };
        serve_snapshot(cl, app, &mut conn, &req).await?;
    }
}

async fn serve_snapshot(
    cl: &Cluster,
    app: &Local,
    conn: &mut Conn<'_>,
    req: &SnapshotRequest,
) -> Result<(), LinkError> {
    // The position is taken first: the state read afterwards contains at least everything up
    // to it, and the requester replays what follows (harmless where it overlaps).
    let Some(cursor) = crate::sync::lock(&cl.applied).clone() else {
        let chunk = Chunk::Refused { why: "not synced".into() };
        return conn.push_chunk(&req.rid, &serde_json::to_vec(&chunk).unwrap_or_default()).await;
    };
    let ids = app.sessions.state_ids();
    for chunk in ids.chunks(CHUNK) {
        let items = app.sessions.state_items(chunk.to_vec()).await?;
        conn.push_chunk(&req.rid, &serde_json::to_vec(&Chunk::Items { items }).unwrap_or_default()).await?;
    }
    let done = Chunk::Done { cursor, blocks: app.sessions.blocked_users() };
    conn.push_chunk(&req.rid, &serde_json::to_vec(&done).unwrap_or_default()).await?;
    cl.metrics.cluster.snapshots_served.inc();
    tracing::info!(to_slot = req.from, sessions = ids.len(), "cluster: snapshot served");
    Ok(())
}
