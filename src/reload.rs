//! Live configuration reload (SIGHUP or the admin port's `POST /reload`): the file is read
//! and validated again; if every check passes, the new configuration replaces the old one for
//! the requests that follow, without dropping connections or sessions. If anything is wrong,
//! every error is reported and logged and the old configuration stays in force.
//!
//! Reloaded: routes and body extraction, the user API, body limits, trusted proxies and
//! forwarding, error shape, risk rules and weights, geo-fencing lists, alert settings and
//! channels. Sections bound to resources opened at start (listeners, TLS, upstream pool, store,
//! keys, cluster, admin tokens, session policies, JWT verification, roles, geo database paths,
//! logging) are compared too: a change there is reported as needing a restart and not applied.

use crate::audit::{Event, Kind};
use crate::config::{Config, ConfigErrors};
use crate::state::AppState;
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reloaded {
    /// Sections whose new settings are in force.
    pub applied: Vec<&'static str>,
    /// Sections that changed but take effect only at the next restart.
    pub restart_required: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the gateway was not started from a file; nothing to reload")]
    NoFile,
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("alerts: {0}")]
    Alerts(String),
}

impl ReloadError {
    /// Every problem, one per entry.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ReloadError::Invalid(e) => e.0.iter().map(|i| format!("{}: {}", i.key, i.message)).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// Settings compared section by section (their `Debug` text: secrets print as their source).
fn sections(c: &Config) -> Vec<(&'static str, bool, String)> {
    let d = |v: &dyn std::fmt::Debug| format!("{v:?}");
    // Per-request server settings reload; the rest is fixed when the listener starts.
    let mut bound = c.server.clone();
    bound.trusted_proxies = vec![];
    bound.max_body_bytes = 0;
    vec![
        ("server (listener, TLS, timeouts, header limits)", false, d(&bound)),
        (
            "server.trusted_proxies, server.max_body_bytes",
            true,
            d(&(&c.server.trusted_proxies, c.server.max_body_bytes)),
        ),
        ("upstream", false, d(&c.upstream)),
        ("store", false, d(&c.store)),
        ("sessions", false, d(&c.sessions)),
        ("jwt", false, d(&c.jwt)),
        ("routes", true, d(&c.routes)),
        ("extract", true, d(&c.extract)),
        ("backend", true, d(&c.backend)),
        ("user_api", true, d(&c.user_api)),
        ("admin", false, d(&c.admin)),
        ("geo", false, d(&c.geo)),
        ("risk", true, d(&c.risk)),
        ("geofence", true, d(&c.geofence)),
        ("roles", false, d(&c.roles)),
        ("alerts", true, d(&c.alerts)),
        ("cluster", false, d(&c.cluster)),
        ("log", false, d(&c.log)),
    ]
}

/// Re-reads the configuration file and applies what can change at runtime. `actor` is
/// recorded in the audit log (`signal` or `admin:<token name>`).
pub async fn reload(st: &AppState, actor: &str) -> Result<Reloaded, ReloadError> {
    // The geo files are read again on every reload, also one whose configuration is refused:
    // they are data, not configuration (their paths need a restart, their contents do not).
    st.geo.request_reload();
    let result = apply(st).await;
    match &result {
        Ok(r) => {
            st.metrics.config_reloads.with_label_values(&["applied"]).inc();
            st.metrics.config_last_reload_success.set(crate::clock::now_ms() / 1000);
            // Lists as JSON arrays in JSON logs (a tracing field would be their Debug text).
            match &st.log {
                Some(log) => log.info_with_lists(
                    "sessiongate::reload",
                    "configuration reloaded",
                    &[
                        ("applied", serde_json::json!(r.applied)),
                        ("restart_required", serde_json::json!(r.restart_required)),
                        ("actor", serde_json::json!(actor)),
                    ],
                ),
                None => {
                    tracing::info!(applied = ?r.applied, restart_required = ?r.restart_required, %actor, "configuration reloaded")
                }
            }
            for s in &r.restart_required {
                tracing::warn!(section = s, "configuration changed in a section that applies only at restart");
            }
            st.audit.record(Event::new(Kind::ConfigReload).actor(actor).details(serde_json::json!({
                "result": "applied", "applied": r.applied, "restartRequired": r.restart_required,
            })));
        }
        Err(e) => {
            st.metrics.config_reloads.with_label_values(&["refused"]).inc();
            for m in e.messages() {
                tracing::error!(error = %m, "configuration reload refused; the previous configuration stays in force");
            }
            st.audit.record(
                Event::new(Kind::ConfigReload)
                    .actor(actor)
                    .details(serde_json::json!({"result": "refused", "errors": e.messages()})),
            );
        }
    }
    result
}

async fn apply(st: &AppState) -> Result<Reloaded, ReloadError> {
    let old = st.config.load_full();
    let path = old.source.clone().ok_or(ReloadError::NoFile)?;
    let new = tokio::task::spawn_blocking(move || crate::startup::load_config(&path))
        .await
        .map_err(|e| {
            ReloadError::Invalid(ConfigErrors(vec![crate::config::ConfigIssue {
                key: "(file)".into(),
                message: e.to_string(),
            }]))
        })?
        .map_err(ReloadError::Invalid)?;
    // Built before anything is swapped: a channel whose secret is missing refuses the reload.
    let sender = crate::alerts::channels::Sender::new(&new.alerts).map_err(|e| ReloadError::Alerts(e.to_string()))?;
    let (before, after) = (sections(&old), sections(&new));
    let mut out = Reloaded { applied: vec![], restart_required: vec![] };
    for ((name, live, a), (_, _, b)) in before.iter().zip(after.iter()) {
        if a != b {
            if *live {
                out.applied.push(name);
            } else {
                out.restart_required.push(name);
            }
        }
    }
    // Sections that need a restart keep their running values, so what `settings` and
    // `check-config` describe is what is in force.
    let mut merged = new;
    merged.server = crate::config::ServerConfig {
        trusted_proxies: std::mem::take(&mut merged.server.trusted_proxies),
        max_body_bytes: merged.server.max_body_bytes,
        ..old.server.clone()
    };
    merged.upstream = old.upstream.clone();
    merged.store = old.store.clone();
    merged.sessions = old.sessions.clone();
    merged.jwt = old.jwt.clone();
    merged.admin = old.admin.clone();
    merged.geo = old.geo.clone();
    merged.roles = old.roles.clone();
    merged.cluster = old.cluster.clone();
    merged.log = old.log.clone();
    // Checked when the file was loaded; a refusal here changes nothing.
    st.risk
        .reconfigure(merged.risk.clone(), merged.geofence.clone(), merged.alerts.custom.clone())
        .map_err(|issues| ReloadError::Invalid(ConfigErrors(issues)))?;
    crate::alerts::reconfigure(&st.alerts, &st.alert_worker, merged.alerts.clone(), sender);
    st.sessions.set_revocation(merged.backend.revokes());
    st.config.store(Arc::new(merged));
    Ok(out)
}

/// Reloads on every SIGHUP until `shutdown`: the one listener of the signal (configuration and
/// geo data alike go through [`reload`]).
pub async fn run_on_sighup(st: Arc<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload through the admin port's POST /reload");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = reload(&st, "signal").await; }
            _ = shutdown.changed() => return,
        }
    }
}
