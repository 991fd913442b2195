//! The handles of a running gateway, built at startup (`lib.rs`) and read by the request path
//! and the admin port. Handles only: behaviour lives in the modules they point to, and nothing
//! below the wiring layer sees this type (tests/layering.rs).

use crate::audit::AuditLog;
use crate::backend::Upstream;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::tokens::Verifier;
use crate::session::Sessions;
use std::sync::Arc;

pub struct AppState {
    /// The configuration in force; a reload (SIGHUP, `POST /reload`) swaps it whole. Requests
    /// read it with [`AppState::cfg`].
    pub config: crate::config::SharedConfig,
    pub sessions: Arc<Sessions>,
    pub upstream: Arc<Upstream>,
    /// Present when `[jwt]` is configured: verifies client-presented tokens before their
    /// claims are relied on.
    pub verifier: Option<Verifier>,
    pub metrics: Arc<Metrics>,
    pub audit: Arc<AuditLog>,
    pub logins: crate::audit::logins::LoginCounters,
    pub geo: Arc<crate::geo::Geo>,
    pub risk: Arc<crate::risk::Risk>,
    pub roles: crate::backend::roles::Roles,
    pub alerts: Arc<crate::alerts::AlertHub>,
    pub alert_worker: Arc<crate::alerts::Worker>,
    /// Present when `[cluster]` is configured.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The process's log writer (access lines, dropped-line count); `None` in library tests,
    /// which install no subscriber.
    pub log: Option<crate::telemetry::LogSink>,
}

impl AppState {
    /// The configuration in force (cheap: no lock, no reference count in the common case).
    pub fn cfg(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }
}
