//! `[admin]`: the admin listener and its tokens.

use super::raw::*;
use super::validate::V;
use super::*;

/// One named admin token (the name is the actor in the audit log).
#[derive(Debug, Clone)]
pub struct AdminTokenSource {
    pub name: String,
    pub source: SecretSource,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Empty: a token is generated into `data_dir/admin.token` (allowed on loopback only).
    pub tokens: Vec<AdminTokenSource>,
    pub auth_failures_per_minute: u32,
    pub audit_retention: Duration,
    /// `/readyz` also requires the backend to answer.
    pub ready_requires_upstream: bool,
}

/// `[admin]`; its listener must differ from the public one.
pub(super) fn admin(v: &mut V<'_>, a: RawAdmin, server_listen: SocketAddr) -> AdminConfig {
    let admin_text = a.listen.unwrap_or_else(|| "127.0.0.1:9090".into());
    let admin_listen: SocketAddr = admin_text.parse().unwrap_or_else(|_| {
        v.err("admin.listen", format!("{admin_text:?} is not an address like 127.0.0.1:9090"));
        SocketAddr::from(([127, 0, 0, 1], 9090))
    });
    let mut admin_tokens = Vec::new();
    for (i, t) in a.tokens.unwrap_or_default().into_iter().enumerate() {
        let key = format!("admin.tokens[{i}]");
        let name = t.name.filter(|n| !n.is_empty()).unwrap_or_else(|| {
            v.err(&format!("{key}.name"), "required (recorded as the actor in the audit log)");
            String::new()
        });
        match v.secret_source(&format!("{key}.env"), t.env, &format!("{key}.file"), t.file) {
            Some(source) => admin_tokens.push(AdminTokenSource { name, source }),
            None => v.err(&key, "set env or file"),
        }
    }
    let admin = AdminConfig {
        enabled: a.enabled.unwrap_or(true),
        listen: admin_listen,
        tokens: admin_tokens,
        auth_failures_per_minute: a.auth_failures_per_minute.unwrap_or(10).max(1),
        audit_retention: v.duration("admin.audit_retention", a.audit_retention.as_deref(), "365d"),
        ready_requires_upstream: a.ready_requires_upstream.unwrap_or(true),
    };
    if admin.enabled {
        if admin.tokens.is_empty() && !admin.listen.ip().is_loopback() {
            v.err("admin.tokens", format!("required when admin.listen ({}) is not a loopback address", admin.listen));
        }
        // 0.0.0.0:9090 and 127.0.0.1:9090 cannot both be bound: the wildcard takes the port on
        // every address.
        let overlap = admin.listen.ip() == server_listen.ip()
            || admin.listen.ip().is_unspecified()
            || server_listen.ip().is_unspecified();
        if admin.listen.port() == server_listen.port() && admin.listen.port() != 0 && overlap {
            v.err(
                "admin.listen",
                format!("{} and server.listen ({server_listen}) cannot both be bound: use another port", admin.listen),
            );
        }
    }
    admin
}
