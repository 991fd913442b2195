//! `check-config`'s description of the effective settings.

use super::*;

/// Human-readable effective settings for `check-config`. Secrets appear only as their source.
pub fn describe(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let d = |d: Duration| humantime::format_duration(d).to_string();
    // Precedence: environment > file > preset > defaults.
    for (key, var) in &cfg.overrides {
        let _ = writeln!(o, "override                 {key} from env {var}");
    }
    let _ = writeln!(o, "server.listen            {}", cfg.server.listen);
    let _ = writeln!(o, "server.tls               {}", if cfg.server.tls.is_some() { "on" } else { "off" });
    let _ = writeln!(o, "server.worker_threads    {} (0: one per CPU)", cfg.server.worker_threads);
    let _ = writeln!(o, "server.max_conns_per_ip  {} (0: no limit)", cfg.server.max_connections_per_ip);
    let _ = writeln!(
        o,
        "server.trusted_proxies   {:?}",
        cfg.server.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>()
    );
    let _ = writeln!(o, "upstream.url             {}", cfg.upstream.url);
    let _ = writeln!(o, "store.data_dir           {}", cfg.store.data_dir.display());
    let _ = writeln!(o, "store.terminated_retention {}", d(cfg.store.terminated_retention));
    let _ =
        writeln!(o, "sessions.inactivity      {} ({:?})", d(cfg.sessions.inactivity_timeout), cfg.sessions.idle_policy);
    let _ = writeln!(o, "sessions.last_seen       {}", d(cfg.sessions.last_seen_interval));
    let _ = writeln!(o, "sessions.unknown_tokens  {:?}", cfg.sessions.unknown_tokens);
    let _ = writeln!(o, "sessions.encryption_key  from {}", cfg.sessions.encryption_key.describe());
    match &cfg.jwt {
        Some(j) => {
            let _ = writeln!(o, "jwt                      {:?}, key from {}", j.algorithm, j.key.describe());
        }
        None => {
            let _ = writeln!(o, "jwt                      off (client token claims are never relied on)");
        }
    }
    for r in cfg.routes.rules() {
        let _ = writeln!(o, "route {:<18} {}", r.class.as_str(), r.source);
    }
    for e in &cfg.graphql.endpoints {
        let _ = writeln!(o, "graphql endpoint         {} (and below it)", e.source);
    }
    for f in &cfg.graphql.fields {
        let _ = writeln!(o, "graphql {:<16} {}", f.class.as_str(), f.source);
    }
    let x = &cfg.extract;
    let mut transports = vec!["Authorization: Bearer".to_string()];
    transports.extend(x.access_query.as_ref().map(|q| format!("query ?{q}=")));
    transports.extend(x.access_cookie.as_ref().map(|c| format!("cookie {c}")));
    let _ = writeln!(o, "access tokens from       {}", transports.join(", "));
    let policy = |p: &Policy| {
        let limit = match p.max_sessions_per_user {
            Some(n) => format!("at most {n} per user ({:?})", p.on_exceed),
            None => "no session limit".into(),
        };
        let age = p.max_session_age.map_or("no age limit".into(), |a| format!("at most {}", d(a)));
        format!("{limit}, {age}, on change {:?}", p.on_change)
    };
    let _ = writeln!(o, "policies                 {}", policy(&cfg.policies.global));
    for (role, p) in &cfg.policies.roles {
        let _ = writeln!(o, "policies.roles.{role:<9} {}", policy(p));
    }
    let formats: Vec<&str> = cfg.backend.body_formats.iter().map(|f| f.as_str()).collect();
    let first = match cfg.extract.refresh_precedence {
        RefreshPrecedence::CookieFirst => "cookie",
        RefreshPrecedence::BodyFirst => "body",
    };
    let first = match &cfg.extract.refresh_mode {
        Some(p) => format!("place named by {p} (json, cookie, session), else the {first} first"),
        None => format!("{first} first"),
    };
    let methods: Vec<&str> = cfg.backend.body_methods.iter().map(|m| m.as_str()).collect();
    let _ = writeln!(
        o,
        "auth route bodies        {} on {} (others refused with 415), forwarded as JSON; refresh token read from the {first}",
        formats.join(", "),
        methods.join(", ")
    );
    let _ = writeln!(
        o,
        "backend revocation       {}",
        if cfg.backend.revokes() { "on (durable queue, retried until the tokens expire)" } else { "off" }
    );
    let _ = writeln!(
        o,
        "user_api                 {} at {}",
        if cfg.user_api.enabled { "on" } else { "off" },
        cfg.user_api.prefix
    );
    if cfg.admin.enabled {
        let tokens: Vec<String> =
            cfg.admin.tokens.iter().map(|t| format!("{} from {}", t.name, t.source.describe())).collect();
        let tokens =
            if tokens.is_empty() { "generated into data_dir/admin.token".to_string() } else { tokens.join(", ") };
        let _ = writeln!(o, "admin.listen             {} (tokens: {tokens})", cfg.admin.listen);
    } else {
        let _ = writeln!(o, "admin                    off");
    }
    let geo: Vec<String> = [
        ("city", &cfg.geo.city_db),
        ("city_ipv6", &cfg.geo.city_db_ipv6),
        ("asn", &cfg.geo.asn_db),
        ("anonymous", &cfg.geo.anonymous_db),
        ("tor", &cfg.geo.tor_list),
        ("vpn", &cfg.geo.vpn_list),
        ("datacenter", &cfg.geo.datacenter_list),
    ]
    .iter()
    .filter_map(|(k, p)| p.as_ref().map(|p| format!("{k}={}", p.display())))
    .collect();
    let _ = writeln!(o, "geo                      {}", if geo.is_empty() { "off".to_string() } else { geo.join(" ") });
    let _ = writeln!(
        o,
        "risk                     {} (alert at {}, deny at {}, {} rule(s))",
        if cfg.risk.enabled { "on" } else { "off" },
        cfg.risk.alert_at,
        cfg.risk.deny_at.map(|d| d.to_string()).unwrap_or_else(|| "never".into()),
        cfg.risk.rules.len()
    );
    if cfg.geofence.is_active() {
        let _ = writeln!(
            o,
            "geofence                 allowed {:?} blocked {:?} unknown {} roles {:?}",
            cfg.geofence.global.allowed,
            cfg.geofence.global.blocked,
            if cfg.geofence.deny_unknown { "deny" } else { "allow" },
            cfg.geofence.roles.keys().collect::<Vec<_>>()
        );
    }
    if cfg.alerts.enabled && !cfg.alerts.channels.is_empty() {
        let chans: Vec<String> = cfg
            .alerts
            .channels
            .values()
            .map(|c| {
                let kind = match &c.kind {
                    ChannelKind::Webhook { .. } => "webhook",
                    ChannelKind::Slack { .. } => "slack",
                    ChannelKind::Discord { .. } => "discord",
                    ChannelKind::Email { .. } => "email",
                };
                format!("{}({kind})", c.name)
            })
            .collect();
        let routes: Vec<String> = cfg.alerts.triggers.iter().map(|(t, c)| format!("{t}→{}", c.join("+"))).collect();
        let _ = writeln!(
            o,
            "alerts                   channels {} · {} · {} custom",
            chans.join(" "),
            routes.join(" "),
            cfg.alerts.custom.len()
        );
    } else {
        let _ = writeln!(o, "alerts                   off (no channels)");
    }
    match &cfg.cluster {
        Some(c) => {
            let mut url = match &c.redis_url {
                Some(ValueSource::Literal(u)) => u.clone(),
                Some(ValueSource::Secret(s)) => format!("from {}", s.describe()),
                None => String::new(),
            };
            if let Some(m) = &c.sentinel_master {
                url = format!("master {m:?} via Sentinel {} {url}", c.sentinels.join(","));
            }
            let slot = c.node_slot.map(|s| s.to_string()).unwrap_or_else(|| "allocated".into());
            let _ = writeln!(
                o,
                "cluster                  redis {url} · prefix {} · slot {slot} · stream ≤{} · ready when isolated: {}",
                c.key_prefix, c.stream_max_len, c.ready_when_isolated
            );
        }
        None => {
            let _ = writeln!(o, "cluster                  off (this instance runs alone)");
        }
    }
    let access = match cfg.log.access {
        crate::config::AccessLog::Off => "off".to_string(),
        crate::config::AccessLog::All => "every request".to_string(),
        crate::config::AccessLog::Sample => format!("refusals, 5xx and {} of the rest", cfg.log.access_sample),
    };
    let _ = writeln!(o, "log                      {} · {:?} · access log: {access}", cfg.log.level, cfg.log.format);
    o
}
