//! The one shared state of a running gateway, built at startup.

use crate::config::Config;
use crate::proxy::upstream::Upstream;
use crate::session::tokens::Verifier;
use crate::session::{revoke, Sessions};
use crate::store::SessionRecord;
use std::sync::Arc;

pub struct AppState {
    pub cfg: Arc<Config>,
    pub sessions: Arc<Sessions>,
    pub upstream: Arc<Upstream>,
    /// Present when `[jwt]` is configured: verifies client-presented tokens before their
    /// claims are relied on.
    pub verifier: Option<Verifier>,
}

impl AppState {
    /// Revokes ended sessions at the backend in background tasks (best effort).
    pub fn revoke_in_background(&self, records: Vec<SessionRecord>) {
        if !self.cfg.backend.revoke_on_end {
            return;
        }
        for rec in records {
            let (access, refresh) = self.sessions.open_tokens(&rec);
            let (up, cfg) = (self.upstream.clone(), self.cfg.clone());
            tokio::spawn(revoke::revoke(up, cfg, rec.sid, access, refresh));
        }
    }
}
