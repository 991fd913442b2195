//! sessiongate: a session-aware reverse proxy for JWT backends (Strapi v5 first).
//!
//! [`start`] is what `main` and the integration tests call: it takes a validated [`Config`] and
//! already-bound listeners, and returns a [`Running`] gateway. Startup order: secrets → store →
//! index → upstream client → TLS → serve. This file is wiring only.
//!
//! Modules are layered; a module uses only those below it (`tests/layering.rs` pins the order
//! and that each outside crate is named by one module):
//!
//! ```text
//! L6  main, cli
//! L5  lib (wiring), startup, reload, proxy/ (the request path), admin/ (the admin port)
//! L4  state            handles only; nothing below L5 sees it
//! L3  cluster/         replication transport (redis.rs: the only Redis user)
//! L2  session/         lifecycle, enforce (token → Decision), admission (login → Admission),
//!                      seen (request → Sighting), ending (one path after an ending),
//!                      replication (events, merge),
//!                      revoke (the durable queue), sweeper, maintenance, tokens, crypto
//! L1  geo, risk (rules.rs: the only CEL user), store (sled.rs: the only sled user), audit,
//!     backend (client, tls.rs: every rustls config, revoke, roles, fields), alerts
//!     (channels.rs: the only lettre user)
//! L0  routes, clock, sync, device, config/, error, metrics, telemetry
//! ```

pub mod admin;
pub mod alerts;
pub mod audit;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod device;
pub mod error;
pub mod geo;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod retry;
pub mod risk;
pub mod routes;
pub mod session;
pub mod startup;
pub mod state;
pub mod store;
pub mod sync;
pub mod telemetry;

use config::Config;
use error::StartupError;
use session::Sessions;
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Listeners bound before [`start`], so tests can bind port 0 without a race.
pub struct Listeners {
    pub public: std::net::TcpListener,
    /// `None` when `admin.enabled = false`.
    pub admin: Option<std::net::TcpListener>,
}

impl Listeners {
    pub fn bind(cfg: &Config) -> Result<Listeners, StartupError> {
        let public = bind(cfg.server.listen)?;
        let admin = if cfg.admin.enabled { Some(bind(cfg.admin.listen)?) } else { None };
        Ok(Listeners { public, admin })
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartupError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?;
    l.set_nonblocking(true).map_err(|source| StartupError::Bind { addr, source })?;
    Ok(l)
}

/// A running gateway.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    /// Tasks stopped only after the drain, so what the last requests produced is written
    /// (audit events, last-seen times) and published (cluster events): signal, then tasks.
    after_drain: (watch::Sender<bool>, Vec<JoinHandle<()>>),
}

impl Running {
    /// Stops accepting, drains open connections (bounded by `server.drain_timeout`), stops
    /// background tasks and flushes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        let (stop, tasks) = self.after_drain;
        let _ = stop.send(true);
        let limit = match &self.state.cluster {
            Some(cl) => cl.config().connect_timeout + cl.config().command_timeout * 2,
            None => std::time::Duration::from_secs(5),
        };
        if tokio::time::timeout(limit, futures_util::future::join_all(tasks)).await.is_err() {
            tracing::warn!("shutdown: queued writes did not finish in time (cluster events go out at the next start)");
        }
        for t in &self.background {
            t.abort();
        }
        for t in self.background {
            let _ = t.await;
        }
        if let Err(e) = self.state.sessions.store().flush().await {
            tracing::error!(error = %e, "final store flush failed");
        }
        // Connection tasks finish just after the drain; wait for them to release the state (and
        // with it the store's file lock) so the same data directory can be reopened at once.
        let deadline = tokio::time::Instant::now() + self.state.cfg().server.drain_timeout;
        while Arc::strong_count(&self.state) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tracing::info!("stopped");
    }
}

/// Rebuilds the per-hour login counters of the last day from the audit log.
async fn rebuild_login_counters(state: Arc<AppState>) {
    let since = clock::now_ms() - 24 * 3_600_000;
    let filter = audit::Filter { since_ms: Some(since), ..Default::default() };
    match audit::query(state.sessions.store(), &filter, usize::MAX).await {
        Ok(events) => {
            for e in events {
                match audit::Kind::parse(&e.kind) {
                    Some(audit::Kind::Login) if e.details["origin"] == "login" => {
                        state.logins.add_success(e.time, e.details["country"].as_str(), e.details["vpn"] == true)
                    }
                    Some(audit::Kind::LoginFailed) => {
                        state.logins.add_failure(e.time);
                        if let Some(ip) = e.ip.as_deref().and_then(|i| i.parse().ok()) {
                            state.risk.record_failure(ip, e.time);
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not rebuild login statistics from the audit log"),
    }
}

/// Starts the gateway on already-bound listeners.
pub async fn start(cfg: Config, listeners: Listeners) -> Result<Running, StartupError> {
    start_with_clock(cfg, listeners, clock::Clock::system()).await
}

/// [`start`] with the clock session decisions read: tests pass a driven one
/// ([`clock::Clock::driven`]) and move time forward instead of sleeping.
pub async fn start_with_clock(cfg: Config, listeners: Listeners, clock: clock::Clock) -> Result<Running, StartupError> {
    start_inner(cfg, listeners, clock, None).await
}

/// [`start`] with the log writer `telemetry::init` returned: the access log is written through
/// it. What the binary calls.
pub async fn start_with_log(
    cfg: Config,
    listeners: Listeners,
    log: telemetry::LogSink,
) -> Result<Running, StartupError> {
    start_inner(cfg, listeners, clock::Clock::system(), Some(log)).await
}

async fn start_inner(
    cfg: Config,
    listeners: Listeners,
    clock: clock::Clock,
    log: Option<telemetry::LogSink>,
) -> Result<Running, StartupError> {
    let cfg = Arc::new(cfg);
    let keyring = startup::load_keyring(&cfg).await?;
    let verifier = startup::load_verifier(&cfg)?;
    let admin_tokens = if cfg.admin.enabled { startup::load_admin_tokens(&cfg).await? } else { vec![] };
    let metrics = Arc::new(metrics::Metrics::new());
    let store = store::Store::open(&cfg.store.data_dir, cfg.store.cache_capacity_bytes).await?;
    // Compiling refuses a rule that does not compile even when the configuration was built
    // without `startup::load_config` (a deny rule that never held would deny nothing).
    let risk = risk::Risk::new(cfg.risk.clone(), cfg.geofence.clone(), cfg.alerts.custom.clone())
        .map_err(|issues| StartupError::Config(config::ConfigErrors(issues)))?;
    let risk = Arc::new(risk);
    let cluster = match &cfg.cluster {
        Some(cc) => Some(Arc::new(cluster::Cluster::new(cc, store.clone(), metrics.clone()).await?)),
        None => None,
    };
    let replication = cluster.as_ref().map(|c| c.replication()).unwrap_or_else(session::Replication::standalone);
    let (audit_log, audit_rx) = audit::AuditLog::new(metrics.clone());
    let audit_log = Arc::new(audit_log);
    let sender = alerts::channels::Sender::new(&cfg.alerts)?;
    let (alert_hub, alert_worker, alert_rx) = alerts::new(cfg.alerts.clone(), store.clone(), sender, metrics.clone());
    let aftermath = session::Aftermath { audit: audit_log.clone(), alerts: alert_hub.clone() };
    let parts = session::Parts {
        cfg: cfg.sessions.clone(),
        store: store.clone(),
        keyring,
        metrics: metrics.clone(),
        replication: replication.clone(),
        aftermath,
        clock,
    };
    // The admin port answers liveness (and "not ready") while the index loads.
    let loading = match listeners.admin {
        Some(l) => {
            let l = tokio::net::TcpListener::from_std(l)
                .map_err(|source| StartupError::Bind { addr: cfg.admin.listen, source })?;
            let addr = l.local_addr().map_err(|source| StartupError::Bind { addr: cfg.admin.listen, source })?;
            let (loaded, rx) = tokio::sync::oneshot::channel();
            Some((tokio::spawn(admin::while_loading(l, rx)), loaded, addr))
        }
        None => None,
    };
    let seen = risk.clone();
    let load_started = std::time::Instant::now();
    let (sessions, touch_rx) = Sessions::open(parts, move |h| {
        seen.record_seen(h.user_id, h.geo.as_ref(), h.browser_name, h.os_name, h.login_time)
    })
    .await?;
    let load_ms = load_started.elapsed().as_millis() as u64;
    let geo = Arc::new(geo::Geo::new(&cfg.geo));
    let geo2 = geo.clone();
    let report = tokio::task::spawn_blocking(move || geo2.reload_blocking(true))
        .await
        .map_err(|e| StartupError::Geo(e.to_string()))?;
    if let Some((key, e)) = report.failed.first() {
        return Err(StartupError::Geo(format!("{key}: {e}")));
    }
    geo::log_report(&report);
    let roles_token = match &cfg.roles.token {
        Some(src) => Some(src.require("roles token").map_err(StartupError::Secret)?),
        None => None,
    };
    sessions.set_revocation(cfg.backend.revokes());
    let (total, active, tokens) = sessions.counts();
    tracing::info!(sessions = total, active, tokens, ms = load_ms, data_dir = %cfg.store.data_dir.display(), "session index loaded");
    let upstream = Arc::new(backend::Upstream::new(&cfg.upstream)?);
    let tls = match &cfg.server.tls {
        Some(files) => Some(tokio_rustls::TlsAcceptor::from(backend::tls::server_config(files)?)),
        None => None,
    };
    let public = tokio::net::TcpListener::from_std(listeners.public)
        .map_err(|source| StartupError::Bind { addr: cfg.server.listen, source })?;
    let public_addr = public.local_addr().map_err(|source| StartupError::Bind { addr: cfg.server.listen, source })?;
    let admin = match loading {
        Some((task, loaded, addr)) => {
            let _ = loaded.send(());
            let l =
                task.await.map_err(|e| StartupError::Bind { addr, source: std::io::Error::other(e.to_string()) })?;
            Some((l, addr))
        }
        None => None,
    };

    let roles = backend::roles::Roles::new(cfg.roles.clone(), roles_token, upstream.clone());
    let queued = alert_worker.load().await?;
    if queued > 0 {
        tracing::info!(alerts = queued, "undelivered alerts from the previous run are queued again");
    }
    let state = Arc::new(AppState {
        config: Arc::new(arc_swap::ArcSwap::new(cfg.clone())),
        sessions: sessions.clone(),
        upstream,
        verifier,
        metrics: metrics.clone(),
        audit: audit_log.clone(),
        logins: audit::logins::LoginCounters::default(),
        geo: geo.clone(),
        risk,
        roles,
        alerts: alert_hub,
        alert_worker: alert_worker.clone(),
        cluster: cluster.clone(),
        log,
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drained_tx, drained_rx) = watch::channel(false);
    let mut after_drain = vec![
        tokio::spawn(session::run_touch_writer(
            store.clone(),
            metrics.clone(),
            touch_rx,
            replication,
            drained_rx.clone(),
        )),
        tokio::spawn(audit::run_writer(store, metrics.clone(), audit_rx, drained_rx.clone())),
    ];
    let mut background = vec![
        tokio::spawn(session::sweeper::run(sessions, state.config.clone(), shutdown_rx.clone())),
        tokio::spawn(rebuild_login_counters(state.clone())),
        tokio::spawn(geo::run_reloader(geo, cfg.geo.reload_interval, shutdown_rx.clone())),
        tokio::spawn(alerts::run(alert_worker, alert_rx, shutdown_rx.clone())),
        tokio::spawn(reload::run_on_sighup(state.clone(), shutdown_rx.clone())),
        tokio::spawn(session::revoke::run(
            session::revoke::Worker {
                sessions: state.sessions.clone(),
                upstream: state.upstream.clone(),
                config: state.config.clone(),
                audit: state.audit.clone(),
                metrics: metrics.clone(),
            },
            shutdown_rx.clone(),
        )),
    ];
    if let Some(cl) = &cluster {
        tracing::info!(node = %cl.name, slot = cl.slot, "cluster: replication through Redis");
        after_drain.push(tokio::spawn(cluster::run_publisher(cl.clone(), drained_rx)));
        let local = Arc::new(cluster::Local { sessions: state.sessions.clone(), risk: state.risk.clone() });
        background.push(tokio::spawn(cluster::run_follower(cl.clone(), local.clone(), shutdown_rx.clone())));
        background.push(tokio::spawn(cluster::run_snapshot_server(cl.clone(), local, shutdown_rx.clone())));
    }
    let mut servers = vec![tokio::spawn(proxy::serve(
        cfg.server.clone(),
        proxy::public_handler(state.clone()),
        public,
        tls.clone(),
        metrics.listener("public"),
        shutdown_rx.clone(),
    ))];
    let admin_addr = admin.as_ref().map(|(_, a)| *a);
    if let Some((listener, _)) = admin {
        let admin_state = Arc::new(admin::AdminState {
            app: state.clone(),
            auth: admin::auth::AdminAuth::new(admin_tokens, cfg.admin.auth_failures_per_minute),
            shutdown: shutdown_rx.clone(),
            jobs: Default::default(),
        });
        servers.push(tokio::spawn(proxy::serve(
            // Operators and probes on the admin port are not limited per address.
            config::ServerConfig { max_connections_per_ip: 0, ..cfg.server.clone() },
            admin::handler(admin_state),
            listener,
            None,
            metrics.listener("admin"),
            shutdown_rx,
        )));
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        public = %public_addr,
        admin = %admin_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        dashboard = %admin_addr.map(|a| format!("{}/dashboard/", admin::client::local_url(a))).unwrap_or_else(|| "off".into()),
        tls = tls.is_some(),
        upstream = %cfg.upstream.url,
        "sessiongate listening"
    );
    // Say so at once when the backend does not answer, rather than at the first 502.
    let probe = state.clone();
    tokio::spawn(async move {
        if !admin::upstream_reachable(&probe).await {
            tracing::warn!(
                upstream = %probe.cfg().upstream.url,
                "the backend does not answer (its health path, or a TCP connect); requests get 502 until it does"
            );
        }
    });
    Ok(Running {
        public_addr,
        admin_addr,
        state,
        shutdown: shutdown_tx,
        servers,
        background,
        after_drain: (drained_tx, after_drain),
    })
}
