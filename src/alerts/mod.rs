//! Security alerts. Raising one never touches the request path's latency: the event goes
//! through a bounded queue to a worker that first writes one record per channel to the store
//! (the durable queue) and then delivers it — with a timeout, exponential backoff, a dead
//! letter after `alerts.max_attempts`, and a per-channel rate limit. Repeats of one trigger for
//! one user within `alerts.dedupe_window` are merged into the first.

pub mod channels;

use crate::clock::{iso, now_ms};
use crate::config::AlertsConfig;
use crate::metrics::Metrics;
use crate::store::{AlertRecord, AlertStatus, Store};
use arc_swap::ArcSwap;
use channels::Sender;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};

/// An alert on its way to the durable queue.
pub struct Raised {
    trigger: String,
    channels: Vec<String>,
    event: Value,
}

pub struct AlertHub {
    /// Swapped whole by a configuration reload.
    cfg: ArcSwap<AlertsConfig>,
    tx: mpsc::Sender<Raised>,
    dedupe: Mutex<HashMap<(String, String), i64>>,
    metrics: Arc<Metrics>,
}

/// What raised an alert. The built-in triggers are routed to channels by `alerts.triggers`;
/// custom ones (`alerts.custom`) name their channels themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trigger {
    NewCountry,
    Anonymizer,
    HighScore,
    LoginRefused,
    RefreshReuse,
    AdminTermination,
    PasswordChange,
    /// A newer login over the session limit ended a session.
    SessionEvicted,
    /// A live session was used from another country, network or browser family.
    SessionChanged,
    /// The admin API's test alert.
    Test,
    Custom(String),
}

impl Trigger {
    /// The triggers `alerts.triggers` may route.
    pub const ROUTABLE: [Trigger; 9] = [
        Trigger::NewCountry,
        Trigger::Anonymizer,
        Trigger::HighScore,
        Trigger::LoginRefused,
        Trigger::RefreshReuse,
        Trigger::AdminTermination,
        Trigger::PasswordChange,
        Trigger::SessionEvicted,
        Trigger::SessionChanged,
    ];

    /// The stable name (`alerts.triggers` keys, the event's `type`, stored records).
    pub fn name(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Trigger::Custom(name) => format!("custom:{name}").into(),
            builtin => builtin.label().into(),
        }
    }

    /// The `trigger` label of `alerts_total`: a bounded set (custom alerts share one value; a
    /// built-in trigger's label is its name).
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::Custom(_) => "custom",
            Trigger::NewCountry => "new_country",
            Trigger::Anonymizer => "anonymizer",
            Trigger::HighScore => "high_score",
            Trigger::LoginRefused => "login_refused",
            Trigger::RefreshReuse => "refresh_reuse",
            Trigger::AdminTermination => "admin_termination",
            Trigger::PasswordChange => "password_change",
            Trigger::SessionEvicted => "session_evicted",
            Trigger::SessionChanged => "session_changed",
            Trigger::Test => "test",
        }
    }

    /// The trigger a stored name stands for.
    pub fn parse(s: &str) -> Trigger {
        if let Some(name) = s.strip_prefix("custom:") {
            return Trigger::Custom(name.to_string());
        }
        Trigger::ROUTABLE
            .into_iter()
            .chain([Trigger::Test])
            .find(|t| t.name() == s)
            .unwrap_or(Trigger::Custom(s.into()))
    }

    /// Human title.
    pub fn title(&self) -> String {
        match self {
            Trigger::NewCountry => "Login from a new country".into(),
            Trigger::Anonymizer => "Login through a VPN, proxy, TOR or datacenter".into(),
            Trigger::HighScore => "High-risk login".into(),
            Trigger::LoginRefused => "Login attempt refused".into(),
            Trigger::RefreshReuse => "Refresh token reuse: session terminated".into(),
            Trigger::AdminTermination => "Sessions terminated by an admin".into(),
            Trigger::PasswordChange => "Password changed: sessions terminated".into(),
            Trigger::SessionEvicted => "Session limit reached: oldest session ended".into(),
            Trigger::SessionChanged => "Session used from another place or browser".into(),
            Trigger::Test => "Test alert".into(),
            Trigger::Custom(name) => format!("Alert: {name}"),
        }
    }
}

/// Configuration checks that need the trigger vocabulary (run with the config's own checks).
pub fn check_config(cfg: &crate::config::Config) -> Vec<crate::config::ConfigIssue> {
    let known: Vec<String> = Trigger::ROUTABLE.iter().map(|t| t.name().into_owned()).collect();
    cfg.alerts
        .triggers
        .keys()
        .filter(|t| !known.contains(t))
        .map(|t| crate::config::ConfigIssue {
            key: format!("alerts.triggers.{t}"),
            message: format!("unknown trigger; known: {}", known.join(", ")),
        })
        .collect()
}

/// What an alert says, before it gets its id and time.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub session: Option<String>,
    pub ip: Option<String>,
    pub geo: Option<crate::geo::GeoInfo>,
    pub score: Option<u32>,
    pub reasons: Vec<String>,
    pub summary: String,
}

/// The event JSON every channel renders (and the generic webhook sends as is).
pub fn event(trigger: &Trigger, f: &Facts) -> Value {
    let g = f.geo.as_ref();
    json!({
        "id": format!("{:016x}", rand::random::<u64>()),
        "type": trigger.name(),
        "title": trigger.title(),
        "summary": f.summary,
        "time": iso(now_ms()),
        "user": f.user_id.as_ref().map(|id| json!({"id": id, "username": f.username, "email": f.email})),
        "session": f.session,
        "ip": f.ip,
        "geo": g.map(|g| json!({"country": g.country, "countryCode": g.country_code, "flag": g.flag(), "city": g.city, "asn": g.asn, "isp": g.isp})),
        "flags": {
            "isVpn": g.is_some_and(|g| g.is_vpn),
            "isProxy": g.is_some_and(|g| g.is_proxy || g.is_residential_proxy),
            "isTor": g.is_some_and(|g| g.is_tor),
            "isDatacenter": g.is_some_and(|g| g.is_datacenter),
        },
        "score": f.score,
        "reasons": f.reasons,
    })
}

impl AlertHub {
    pub fn config(&self) -> Arc<AlertsConfig> {
        self.cfg.load_full()
    }

    /// Raises a built-in trigger, routed by `alerts.triggers`.
    pub fn raise(&self, trigger: Trigger, facts: &Facts) {
        let cfg = self.cfg.load();
        let Some(chans) = cfg.triggers.get(trigger.name().as_ref()).filter(|c| !c.is_empty()) else { return };
        self.raise_to(trigger, chans.clone(), facts, true);
    }

    /// Raises an alert to given channels (custom conditions, tests).
    pub fn raise_to(&self, trigger: Trigger, channels: Vec<String>, facts: &Facts, dedupe: bool) {
        let cfg = self.cfg.load();
        if !cfg.enabled || channels.is_empty() {
            return;
        }
        if let (true, Some(user)) = (dedupe, &facts.user_id) {
            let now = now_ms();
            let window = cfg.dedupe_window.as_millis() as i64;
            {
                let mut d = crate::sync::lock(&self.dedupe);
                if d.len() > 100_000 {
                    d.retain(|_, t| now - *t < window);
                }
                let key = (trigger.name().into_owned(), user.clone());
                if d.get(&key).is_some_and(|t| now - t < window) {
                    for c in &channels {
                        self.metrics.alerts.with_label_values(&[trigger.label(), c, "deduplicated"]).inc();
                    }
                    return;
                }
                d.insert(key, now);
            }
        }
        let raised = Raised { trigger: trigger.name().into_owned(), channels, event: event(&trigger, facts) };
        if self.tx.try_send(raised).is_err() {
            tracing::error!(trigger = %trigger.name(), "alert queue full: alert dropped");
        }
    }
}

/// The delivery side: pending records in memory (all of them also in the store).
pub struct Worker {
    cfg: ArcSwap<AlertsConfig>,
    store: Store,
    /// The channels, rebuilt by a configuration reload.
    sender: ArcSwap<Sender>,
    metrics: Arc<Metrics>,
    pending: Mutex<HashMap<u64, AlertRecord>>,
    in_flight: Mutex<HashSet<u64>>,
    sent: Mutex<HashMap<String, VecDeque<i64>>>,
    wake: Notify,
}

pub fn new(
    cfg: AlertsConfig,
    store: Store,
    sender: Sender,
    metrics: Arc<Metrics>,
) -> (Arc<AlertHub>, Arc<Worker>, mpsc::Receiver<Raised>) {
    let (tx, rx) = mpsc::channel(4096);
    let hub = Arc::new(AlertHub {
        cfg: ArcSwap::from_pointee(cfg.clone()),
        tx,
        dedupe: Mutex::new(HashMap::new()),
        metrics: metrics.clone(),
    });
    let worker = Arc::new(Worker {
        cfg: ArcSwap::from_pointee(cfg),
        store,
        sender: ArcSwap::from_pointee(sender),
        metrics,
        pending: Mutex::new(HashMap::new()),
        in_flight: Mutex::new(HashSet::new()),
        sent: Mutex::new(HashMap::new()),
        wake: Notify::new(),
    });
    (hub, worker, rx)
}

impl Worker {
    /// Alerts waiting for delivery (pending or being attempted).
    pub fn queued(&self) -> usize {
        crate::sync::lock(&self.pending).len()
    }
}

/// New alert settings and channels from a configuration reload; queued alerts stay queued
/// (an alert for a channel that no longer exists fails its next attempt, visibly).
pub fn reconfigure(hub: &AlertHub, worker: &Worker, cfg: AlertsConfig, sender: Sender) {
    hub.cfg.store(Arc::new(cfg.clone()));
    worker.cfg.store(Arc::new(cfg));
    worker.sender.store(Arc::new(sender));
    worker.wake.notify_one();
}

impl Worker {
    /// Loads undelivered alerts left by a previous run.
    pub async fn load(&self) -> Result<usize, crate::store::StoreError> {
        let all = self.store.alerts().await?;
        let mut p = crate::sync::lock(&self.pending);
        for r in all.into_iter().filter(|r| r.status == AlertStatus::Pending) {
            p.insert(r.id, r);
        }
        Ok(p.len())
    }

    /// Puts a dead alert back in the queue. `false` if there is no such dead alert.
    pub async fn retry(&self, id: u64) -> Result<bool, crate::store::StoreError> {
        let Some(mut rec) =
            self.store.alerts().await?.into_iter().find(|r| r.id == id && r.status == AlertStatus::Dead)
        else {
            return Ok(false);
        };
        rec.status = AlertStatus::Pending;
        rec.attempts = 0;
        rec.next_attempt = now_ms();
        self.store.put_alerts(vec![rec.clone()]).await?;
        crate::sync::lock(&self.pending).insert(rec.id, rec);
        self.wake.notify_one();
        Ok(true)
    }

    pub fn has_channel(&self, name: &str) -> bool {
        self.sender.load().has(name)
    }

    async fn persist(&self, raised: Raised) {
        let now = now_ms();
        let mut recs = Vec::new();
        for channel in raised.channels {
            let id = match self.store.alert_id().await {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!(error = %e, "cannot queue alert");
                    continue;
                }
            };
            recs.push(AlertRecord {
                id,
                created: now,
                trigger: raised.trigger.clone(),
                channel,
                event: raised.event.clone(),
                status: AlertStatus::Pending,
                attempts: 0,
                next_attempt: now,
                last_error: None,
                delivered_at: None,
            });
        }
        match self.store.put_alerts(recs.clone()).await {
            Ok(()) => {
                let mut p = crate::sync::lock(&self.pending);
                for r in recs {
                    p.insert(r.id, r);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot queue alerts"),
        }
    }

    /// Takes a delivery slot for `channel` if its rate limit allows.
    fn take_slot(&self, channel: &str, now: i64) -> bool {
        let limit = self.sender.load().rate_per_minute(channel).unwrap_or(60) as usize;
        let mut s = crate::sync::lock(&self.sent);
        let q = s.entry(channel.to_string()).or_default();
        while q.front().is_some_and(|t| now - t >= 60_000) {
            q.pop_front();
        }
        if q.len() >= limit {
            return false;
        }
        q.push_back(now);
        true
    }

    /// About `backoff_initial` doubling to `backoff_max`, with jitter: several instances whose
    /// deliveries failed together do not retry together.
    fn backoff_ms(&self, attempts: u32) -> i64 {
        let cfg = self.cfg.load();
        crate::retry::delay_after(attempts, cfg.backoff_initial, cfg.backoff_max).as_millis() as i64
    }

    /// Starts deliveries of every due alert not already in flight.
    fn dispatch(self: &Arc<Self>) {
        let now = now_ms();
        let due: Vec<AlertRecord> = {
            let (p, f) = (crate::sync::lock(&self.pending), crate::sync::lock(&self.in_flight));
            let mut d: Vec<AlertRecord> =
                p.values().filter(|r| r.next_attempt <= now && !f.contains(&r.id)).cloned().collect();
            d.sort_by_key(|r| r.id);
            d
        };
        for rec in due {
            if !self.take_slot(&rec.channel, now) {
                self.metrics
                    .alerts
                    .with_label_values(&[Trigger::parse(&rec.trigger).label(), &rec.channel, "rate_limited"])
                    .inc();
                continue;
            }
            crate::sync::lock(&self.in_flight).insert(rec.id);
            let me = self.clone();
            tokio::spawn(async move { me.deliver(rec).await });
        }
    }

    async fn deliver(self: Arc<Self>, mut rec: AlertRecord) {
        let (sender, cfg) = (self.sender.load_full(), self.cfg.load_full());
        let result = sender.send(&rec.channel, &rec.event, cfg.timeout).await;
        rec.attempts += 1;
        let outcome = match result {
            Ok(()) => {
                rec.status = AlertStatus::Delivered;
                rec.delivered_at = Some(now_ms());
                rec.last_error = None;
                AlertStatus::Delivered.as_str()
            }
            Err(e) => {
                tracing::warn!(alert = rec.id, channel = %rec.channel, attempt = rec.attempts, error = %e, "alert delivery failed");
                rec.last_error = Some(e);
                if rec.attempts >= cfg.max_attempts {
                    rec.status = AlertStatus::Dead;
                    AlertStatus::Dead.as_str()
                } else {
                    rec.next_attempt = now_ms() + self.backoff_ms(rec.attempts);
                    "failed"
                }
            }
        };
        self.metrics.alerts.with_label_values(&[Trigger::parse(&rec.trigger).label(), &rec.channel, outcome]).inc();
        if let Err(e) = self.store.put_alerts(vec![rec.clone()]).await {
            tracing::error!(error = %e, "cannot record alert delivery");
        }
        {
            let mut p = crate::sync::lock(&self.pending);
            if rec.status == AlertStatus::Pending {
                p.insert(rec.id, rec.clone());
            } else {
                p.remove(&rec.id);
            }
        }
        crate::sync::lock(&self.in_flight).remove(&rec.id);
    }

    /// Deletes delivered and dead alerts older than `alerts.retention`.
    async fn purge(&self) {
        let cutoff = now_ms() - self.cfg.load().retention.as_millis() as i64;
        if let Ok(all) = self.store.alerts().await {
            let old: Vec<u64> =
                all.iter().filter(|r| r.status != AlertStatus::Pending && r.created < cutoff).map(|r| r.id).collect();
            if !old.is_empty() {
                let _ = self.store.delete_alerts(old).await;
            }
        }
    }
}

/// Persists raised alerts and delivers due ones until shutdown.
pub async fn run(worker: Arc<Worker>, mut rx: mpsc::Receiver<Raised>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut last_purge = 0i64;
    loop {
        tokio::select! {
            Some(r) = rx.recv() => worker.persist(r).await,
            _ = tick.tick() => {}
            _ = worker.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        worker.dispatch();
        if now_ms() - last_purge > 3_600_000 {
            last_purge = now_ms();
            worker.purge().await;
        }
    }
}
