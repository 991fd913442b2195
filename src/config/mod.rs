//! Validated configuration. `raw` mirrors the TOML; this module turns it into typed values,
//! applies the preset and defaults, and reports *every* problem at once, each with its key path.
//! Validation is pure: it opens no sockets and reads no secrets (those are read at startup).

pub mod raw;
pub mod secret;

use crate::routes::{RouteClass, RouteRule, Router};
use ipnet::IpNet;
use raw::*;
pub use secret::{Secret, SecretSource};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One configuration problem, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// All problems found in one configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

/// The configuration in force, shared by everything that must see a reload (which swaps it whole).
pub type SharedConfig = std::sync::Arc<arc_swap::ArcSwap<Config>>;

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub sessions: SessionConfig,
    pub jwt: Option<JwtConfig>,
    pub routes: Router,
    pub extract: ExtractConfig,
    pub backend: BackendConfig,
    pub user_api: UserApiConfig,
    pub admin: AdminConfig,
    pub geo: GeoConfig,
    pub risk: RiskConfig,
    pub geofence: GeofenceConfig,
    pub roles: RolesConfig,
    pub alerts: AlertsConfig,
    /// `None`: this instance runs alone on sled.
    pub cluster: Option<ClusterConfig>,
    pub log: LogConfig,
    /// The file this was read from (`None` when built from a string): what a reload re-reads.
    pub source: Option<std::path::PathBuf>,
}

/// Multi-instance replication through Redis (see `cluster/`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://`; a URL with a password must come from
    /// an env var or file. With Sentinel: optional, and only its credentials, database and
    /// scheme (TLS) are used for the master.
    pub redis_url: Option<ValueSource>,
    /// Sentinel addresses (`redis://host:26379`); empty: connect to `redis_url` directly.
    pub sentinels: Vec<String>,
    pub sentinel_master: Option<String>,
    /// CA certificates (PEM) to verify a `rediss://` server with, instead of the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// Namespace of every key, in a hash tag so all keys live in one Redis Cluster slot.
    pub key_prefix: String,
    /// Fixed id class of this instance (0–1023); by default one is allocated through Redis at
    /// the first start and kept in the data directory.
    pub node_slot: Option<u64>,
    pub node_name: Option<String>,
    /// Approximate length the event stream is trimmed to.
    pub stream_max_len: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Last-active times are published at most this often.
    pub touch_interval: Duration,
    /// How long to wait for a peer's snapshot chunk.
    pub snapshot_timeout: Duration,
    /// `/readyz` stays 200 while Redis is unreachable (enforcement continues locally).
    pub ready_when_isolated: bool,
}

/// Number of id classes (and so the most instances one cluster can have).
pub const CLUSTER_SLOTS: u64 = 1024;

/// A value that may be a secret: a literal from the file, or an env var / file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    Literal(String),
    Secret(SecretSource),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS on a plain connection (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text, for a trusted local relay only.
    None,
}

/// SMTP settings; unset ones come from `SMTP_HOST`, `SMTP_PORT`, `SMTP_USER`, `SMTP_PASSWORD`,
/// `SMTP_DEFAULT_FROM`, `SMTP_DEFAULT_REPLY_TO` at startup (the seed plugin's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: SecretSource,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub tls: SmtpTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// Generic JSON webhook signed with HMAC-SHA256 when a secret is set.
    Webhook {
        url: ValueSource,
        secret: Option<SecretSource>,
    },
    Slack {
        url: ValueSource,
    },
    Discord {
        url: ValueSource,
    },
    Email {
        to: Vec<String>,
        smtp: SmtpSettings,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    pub rate_per_minute: u32,
}

/// A custom alert: a condition over a login (the risk rule variables, checked by
/// `risk::rules`) and its channels.
#[derive(Debug, Clone)]
pub struct CustomAlert {
    pub name: String,
    /// The config key of the condition (`alerts.custom[N].when`), for errors.
    pub key: String,
    pub when: String,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub enabled: bool,
    /// Base URL of the admin dashboard, for "Force logout" links.
    pub dashboard_url: Option<String>,
    pub dedupe_window: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub score_threshold: u32,
    /// Delivered and dead alerts are deleted after this.
    pub retention: Duration,
    pub channels: std::collections::BTreeMap<String, ChannelConfig>,
    /// Trigger name → channel names.
    pub triggers: std::collections::BTreeMap<String, Vec<String>>,
    pub custom: Vec<CustomAlert>,
}

/// Geolocation databases and address lists (all optional).
#[derive(Debug, Clone, Default)]
pub struct GeoConfig {
    pub city_db: Option<PathBuf>,
    /// A separate City database for IPv6 addresses (ip-location-db ships IPv4 and IPv6 apart).
    pub city_db_ipv6: Option<PathBuf>,
    pub asn_db: Option<PathBuf>,
    pub anonymous_db: Option<PathBuf>,
    pub tor_list: Option<PathBuf>,
    pub vpn_list: Option<PathBuf>,
    pub datacenter_list: Option<PathBuf>,
    /// How often files are checked for changes (zero: only on SIGHUP).
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskWeights {
    pub vpn: u32,
    pub proxy: u32,
    pub tor: u32,
    pub residential_proxy: u32,
    pub datacenter: u32,
    pub new_country: u32,
    pub new_device: u32,
    pub impossible_travel: u32,
    pub failed_login: u32,
    pub failed_logins_max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    Add(i64),
    Deny,
    Tag(String),
}

/// A custom risk rule: a condition (compiled and checked by `risk::rules`) and what to do
/// when it holds.
#[derive(Debug, Clone)]
pub struct RiskRule {
    pub name: String,
    /// The config key of the condition (`risk.rules[N].when`), for errors.
    pub key: String,
    pub when: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone)]
pub struct RiskConfig {
    pub enabled: bool,
    pub alert_at: u32,
    /// Logins scoring at least this are refused (`None`: never).
    pub deny_at: Option<u32>,
    pub impossible_travel_kmh: f64,
    pub weights: RiskWeights,
    pub rules: Vec<RiskRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountryFence {
    /// Empty: every country allowed (unless blocked).
    pub allowed: Vec<String>,
    pub blocked: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GeofenceConfig {
    pub global: CountryFence,
    pub roles: std::collections::BTreeMap<String, CountryFence>,
    /// Deny logins from public addresses whose country is unknown.
    pub deny_unknown: bool,
    /// Addresses that bypass fencing.
    pub allow_ips: Vec<IpNet>,
}

impl GeofenceConfig {
    pub fn is_active(&self) -> bool {
        self.global != CountryFence::default() || !self.roles.is_empty() || self.deny_unknown
    }
}

/// Where a user's role comes from.
#[derive(Debug, Clone, Default)]
pub struct RolesConfig {
    /// JSON pointer into the login response.
    pub pointer: Option<String>,
    /// One follow-up request to the backend (`GET /api/users/:id?populate=role`).
    pub lookup: Option<String>,
    pub lookup_pointer: String,
    pub token: Option<SecretSource>,
    pub cache_ttl: Duration,
}

impl RolesConfig {
    pub fn is_configured(&self) -> bool {
        self.pointer.is_some() || self.lookup.is_some()
    }
}

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

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_connections: usize,
    /// Concurrent connections from one client address (peers outside `trusted_proxies`); 0: no
    /// limit.
    pub max_connections_per_ip: usize,
    /// Threads serving requests; 0 = one per CPU available to the process. With one, the
    /// gateway runs on a single-threaded scheduler (measured ~14 % less CPU per request than a
    /// one-worker work-stealing runtime; BENCHMARKS.md, round 3).
    pub worker_threads: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    /// A client connection with no request in flight for this long is closed gracefully.
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub h2_keepalive_interval: Duration,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: http::Uri,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub max_response_body_bytes: usize,
    /// Send the client's `Host` upstream instead of the upstream's own authority.
    pub preserve_host: bool,
    /// Path probed by `/readyz` (any answer below 500 counts); `None`: a TCP connect.
    pub health_path: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub terminated_retention: Duration,
    pub sweep_interval: Duration,
    pub sweep_batch: usize,
    /// Token index entries are kept this long past the token's `exp`.
    pub expired_token_grace: Duration,
    pub cache_capacity_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Inactive sessions are only reported as such (`isTrulyActive: false`).
    Mark,
    /// Inactive sessions are ended on their next request.
    Terminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownTokens {
    Pass,
    Reject,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub last_seen_interval: Duration,
    pub inactivity_timeout: Duration,
    pub idle_policy: IdlePolicy,
    pub unknown_tokens: UnknownTokens,
    pub refresh_reuse_grace: Duration,
    pub encryption_key: SecretSource,
    pub previous_keys: Option<SecretSource>,
    pub tenant_claim: Option<String>,
    pub tenant_header: Option<http::HeaderName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Es256,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    /// HMAC secret (HS*) or PEM public key file (RS256/ES256).
    pub key: SecretSource,
    pub leeway: Duration,
}

#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub refresh_cookie: Option<String>,
    pub access_cookie: Option<String>,
    pub user_id: Option<String>,
    pub user_id_claim: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub session_id_claim: Option<String>,
    pub request_refresh_token: Option<String>,
    pub request_device_id: Option<String>,
    /// The login identifier in login request bodies (recorded with failed logins).
    pub request_identifier: Option<String>,
    /// `(pointer, value)`: a logout body with this value ends every session of the user.
    pub logout_all: Option<(String, String)>,
    pub credential_user_param: Option<String>,
    /// Which refresh credential the backend reads when a request carries both.
    pub refresh_precedence: RefreshPrecedence,
}

/// Where the backend looks first for a refresh token (Strapi: the cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshPrecedence {
    CookieFirst,
    BodyFirst,
}

/// A request body format the backend parses on its auth routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Urlencoded,
    Multipart,
}

impl BodyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyFormat::Json => "json",
            BodyFormat::Urlencoded => "urlencoded",
            BodyFormat::Multipart => "multipart",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"data":null,"error":{"status","name","message","details":{"reason"}}}`
    Strapi,
    /// `{"error":{"status","reason","message"}}`
    Plain,
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub error_shape: ErrorShape,
    /// Body formats read (and re-serialized as JSON) on auth routes; others are refused (415).
    pub body_formats: Vec<BodyFormat>,
    pub revoke_on_end: bool,
    pub revoke_logout: Option<RouteRule>,
    pub revoke_refresh: Option<RouteRule>,
}

impl BackendConfig {
    /// Whether ended sessions are revoked at the backend (the revocation queue is on).
    pub fn revokes(&self) -> bool {
        self.revoke_on_end && self.revoke_logout.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct UserApiConfig {
    pub enabled: bool,
    /// Normalised prefix, e.g. `/api/magic-sessionmanager`.
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// The whole TOML document, section by section, so that a bad key in one section does not hide
/// the problems of the others.
struct RawConfig {
    preset: Option<String>,
    server: RawServer,
    upstream: RawUpstream,
    store: RawStore,
    sessions: RawSessions,
    jwt: Option<RawJwt>,
    routes: RawRoutes,
    extract: RawExtract,
    backend: RawBackend,
    user_api: RawUserApi,
    admin: RawAdmin,
    geo: RawGeo,
    risk: RawRisk,
    geofence: RawGeofence,
    roles: RawRoles,
    alerts: RawAlerts,
    cluster: Option<RawCluster>,
    log: RawLog,
}

fn section<T: serde::de::DeserializeOwned + Default>(
    table: &mut toml::Table,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    let value = table.remove(key)?;
    match T::deserialize(value) {
        Ok(v) => Some(v),
        Err(e) => {
            issues.push(ConfigIssue { key: key.to_string(), message: e.message().trim().to_string() });
            Some(T::default())
        }
    }
}

/// Checks that need a vocabulary owned by a layer above `config` (the rule language's variables,
/// the alert triggers). They run on the validated configuration — also when it already has
/// issues — so every error is reported at once. `startup::CONFIG_CHECKS` is the full list.
pub type Checks = &'static [fn(&Config) -> Vec<ConfigIssue>];

impl Config {
    /// Parses and validates a TOML document, running `checks` too.
    pub fn from_toml_str(text: &str, checks: Checks) -> Result<Config, ConfigErrors> {
        let mut issues = Vec::new();
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let at = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
                return Err(ConfigErrors(vec![ConfigIssue {
                    key: format!("(line {at})"),
                    message: e.message().trim().to_string(),
                }]));
            }
        };
        let preset = match table.remove("preset") {
            None => None,
            Some(toml::Value::String(s)) => Some(s),
            Some(_) => {
                issues.push(issue("preset", "must be a string"));
                None
            }
        };
        let raw = RawConfig {
            preset,
            server: section(&mut table, "server", &mut issues).unwrap_or_default(),
            upstream: section(&mut table, "upstream", &mut issues).unwrap_or_default(),
            store: section(&mut table, "store", &mut issues).unwrap_or_default(),
            sessions: section(&mut table, "sessions", &mut issues).unwrap_or_default(),
            jwt: section(&mut table, "jwt", &mut issues),
            routes: section(&mut table, "routes", &mut issues).unwrap_or_default(),
            extract: section(&mut table, "extract", &mut issues).unwrap_or_default(),
            backend: section(&mut table, "backend", &mut issues).unwrap_or_default(),
            user_api: section(&mut table, "user_api", &mut issues).unwrap_or_default(),
            admin: section(&mut table, "admin", &mut issues).unwrap_or_default(),
            geo: section(&mut table, "geo", &mut issues).unwrap_or_default(),
            risk: section(&mut table, "risk", &mut issues).unwrap_or_default(),
            geofence: section(&mut table, "geofence", &mut issues).unwrap_or_default(),
            roles: section(&mut table, "roles", &mut issues).unwrap_or_default(),
            alerts: section(&mut table, "alerts", &mut issues).unwrap_or_default(),
            cluster: section(&mut table, "cluster", &mut issues),
            log: section(&mut table, "log", &mut issues).unwrap_or_default(),
        };
        for key in table.keys() {
            issues.push(issue(key, "unknown key"));
        }
        let cfg = validate(raw, &mut issues);
        for check in checks {
            issues.extend(check(&cfg));
        }
        if issues.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(issues))
        }
    }

    /// Reads and validates a config file.
    pub fn from_file(path: &std::path::Path, checks: Checks) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![issue("(file)", &format!("cannot read {}: {e}", path.display()))]))?;
        let mut cfg = Config::from_toml_str(&text, checks)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }
}

/// Human-readable effective settings for `check-config`. Secrets appear only as their source.
pub fn describe(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let d = |d: Duration| humantime::format_duration(d).to_string();
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
    let formats: Vec<&str> = cfg.backend.body_formats.iter().map(|f| f.as_str()).collect();
    let first = match cfg.extract.refresh_precedence {
        RefreshPrecedence::CookieFirst => "cookie",
        RefreshPrecedence::BodyFirst => "body",
    };
    let _ = writeln!(
        o,
        "auth route bodies        {} (others refused with 415), forwarded as JSON; refresh token read from the {first} first",
        formats.join(", ")
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
    o
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn issue(key: &str, message: &str) -> ConfigIssue {
    ConfigIssue { key: key.to_string(), message: message.to_string() }
}

/// Collects problems while turning raw values into typed ones.
struct V<'a> {
    issues: &'a mut Vec<ConfigIssue>,
}

impl V<'_> {
    fn err(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue { key: key.to_string(), message: message.into() });
    }

    fn duration(&mut self, key: &str, raw: Option<&str>, default: &str) -> Duration {
        let text = raw.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.err(key, format!("invalid duration {text:?} ({e}); use e.g. \"30s\", \"15m\", \"30d\""));
                humantime::parse_duration(default).unwrap_or_default()
            }
        }
    }

    fn positive(&mut self, key: &str, raw: Option<usize>, default: usize) -> usize {
        let v = raw.unwrap_or(default);
        if v == 0 {
            self.err(key, "must be greater than 0");
            return default;
        }
        v
    }

    fn pointer(&mut self, key: &str, raw: Option<String>) -> Option<String> {
        let p = raw.filter(|p| !p.is_empty())?;
        if !p.starts_with('/') {
            self.err(key, format!("{p:?} is not a JSON pointer (must start with '/')"));
        }
        Some(p)
    }

    fn rules(&mut self, key: &str, class: RouteClass, raw: Option<Vec<String>>, out: &mut Vec<RouteRule>) {
        for (i, text) in raw.unwrap_or_default().iter().enumerate() {
            match RouteRule::parse(class, text) {
                Ok(r) => out.push(r),
                Err(e) => self.err(&format!("{key}[{i}]"), e),
            }
        }
    }

    fn one_rule(&mut self, key: &str, class: RouteClass, raw: Option<String>) -> Option<RouteRule> {
        let text = raw.filter(|s| !s.is_empty())?;
        match RouteRule::parse(class, &text) {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    fn secret_source(
        &mut self,
        key_env: &str,
        env: Option<String>,
        key_file: &str,
        file: Option<String>,
    ) -> Option<SecretSource> {
        match (env.filter(|s| !s.is_empty()), file.filter(|s| !s.is_empty())) {
            (Some(_), Some(_)) => {
                self.err(key_file, format!("set either {key_env} or {key_file}, not both"));
                None
            }
            (Some(e), None) => Some(SecretSource::Env(e)),
            (None, Some(f)) => Some(SecretSource::File(f.into())),
            (None, None) => None,
        }
    }
}

/// Fills what a preset defines where the file left a key unset, so a preset is exactly what a
/// user could have written by hand.
fn apply_preset(raw: &mut RawConfig, v: &mut V<'_>) {
    let Some(name) = raw.preset.clone() else { return };
    match name.as_str() {
        "strapi-v5" => {
            let r = &mut raw.routes;
            let list = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            r.login.get_or_insert_with(|| {
                list(&["POST /api/auth/local", "POST /api/auth/local/register", "GET /api/auth/:provider/callback"])
                    .unwrap_or_default()
            });
            r.refresh.get_or_insert_with(|| list(&["POST /api/auth/refresh"]).unwrap_or_default());
            r.logout.get_or_insert_with(|| list(&["POST /api/auth/logout"]).unwrap_or_default());
            r.session_revoke.get_or_insert_with(|| list(&["DELETE /api/auth/sessions/:sessionId"]).unwrap_or_default());
            r.credential_change.get_or_insert_with(|| {
                list(&[
                    "POST /api/auth/change-password",
                    "POST /api/auth/reset-password",
                    "PUT /api/users/:id if /password",
                ])
                .unwrap_or_default()
            });
            let e = &mut raw.extract;
            let set = |slot: &mut Option<String>, val: &str| {
                slot.get_or_insert_with(|| val.to_string());
            };
            set(&mut e.access_token, "/jwt");
            set(&mut e.refresh_token, "/refreshToken");
            set(&mut e.refresh_cookie, "strapi_up_refresh");
            set(&mut e.user_id, "/user/id");
            set(&mut e.user_id_claim, "userId");
            set(&mut e.username, "/user/username");
            set(&mut e.email, "/user/email");
            set(&mut e.session_id_claim, "sessionId");
            set(&mut e.request_refresh_token, "/refreshToken");
            set(&mut e.request_device_id, "/deviceId");
            set(&mut e.request_identifier, "/identifier");
            set(&mut raw.upstream.health_path, "/_health");
            set(&mut e.logout_all, "/scope=all");
            set(&mut e.credential_user_param, "id");
            set(&mut e.refresh_precedence, "cookie");
            let b = &mut raw.backend;
            set(&mut b.error_shape, "strapi");
            set(&mut b.revoke_logout, "POST /api/auth/logout");
            set(&mut b.revoke_refresh, "POST /api/auth/refresh");
            b.body_formats.get_or_insert_with(|| list(&["json", "urlencoded", "multipart"]).unwrap_or_default());
            b.revoke_on_end.get_or_insert(true);
        }
        other => v.err("preset", format!("unknown preset {other:?} (known: \"strapi-v5\")")),
    }
}

fn validate(mut raw: RawConfig, issues: &mut Vec<ConfigIssue>) -> Config {
    let mut v = V { issues };
    apply_preset(&mut raw, &mut v);

    // [server]
    let s = raw.server;
    let listen_text = s.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen = listen_text.parse().unwrap_or_else(|_| {
        v.err("server.listen", format!("{listen_text:?} is not an address like 0.0.0.0:8080"));
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let tls = match (s.tls_cert, s.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.into(), key: key.into() }),
        (None, None) => None,
        (Some(_), None) => {
            v.err("server.tls_key", "required when server.tls_cert is set");
            None
        }
        (None, Some(_)) => {
            v.err("server.tls_cert", "required when server.tls_key is set");
            None
        }
    };
    let mut trusted_proxies = Vec::new();
    for (i, net) in s.trusted_proxies.unwrap_or_default().iter().enumerate() {
        match net.parse::<IpNet>().or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from)) {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => v.err(&format!("server.trusted_proxies[{i}]"), format!("{net:?} is not a CIDR like 10.0.0.0/8")),
        }
    }
    let max_header_bytes = v.positive("server.max_header_bytes", s.max_header_bytes, 16 * 1024);
    if max_header_bytes < 8192 {
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        v.err("server.max_header_bytes", "must be at least 8192");
    }
    let server = ServerConfig {
        listen,
        tls,
        trusted_proxies,
        max_connections: v.positive("server.max_connections", s.max_connections, 10_000),
        max_connections_per_ip: s.max_connections_per_ip.unwrap_or(0),
        worker_threads: s.worker_threads.unwrap_or(0),
        max_header_bytes: max_header_bytes.max(8192),
        max_headers: v.positive("server.max_headers", s.max_headers, 100),
        max_body_bytes: v.positive("server.max_body_bytes", s.max_body_bytes, 1024 * 1024),
        header_read_timeout: v.duration("server.header_read_timeout", s.header_read_timeout.as_deref(), "30s"),
        idle_timeout: v.duration("server.idle_timeout", s.idle_timeout.as_deref(), "60s"),
        tls_handshake_timeout: v.duration("server.tls_handshake_timeout", s.tls_handshake_timeout.as_deref(), "10s"),
        h2_keepalive_interval: v.duration("server.h2_keepalive_interval", s.h2_keepalive_interval.as_deref(), "30s"),
        drain_timeout: v.duration("server.drain_timeout", s.drain_timeout.as_deref(), "30s"),
    };

    // [upstream]
    let u = raw.upstream;
    let url = match u.url.as_deref() {
        None => {
            v.err("upstream.url", "required (e.g. \"http://127.0.0.1:1337\")");
            http::Uri::from_static("http://127.0.0.1:1337")
        }
        Some(text) => match text.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some()
                    && uri.path_and_query().is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty()) =>
            {
                uri
            }
            _ => {
                v.err("upstream.url", format!("{text:?} must be http:// or https:// with a host and no path"));
                http::Uri::from_static("http://127.0.0.1:1337")
            }
        },
    };
    let upstream = UpstreamConfig {
        url,
        connect_timeout: v.duration("upstream.connect_timeout", u.connect_timeout.as_deref(), "5s"),
        response_timeout: v.duration("upstream.response_timeout", u.response_timeout.as_deref(), "60s"),
        pool_idle_timeout: v.duration("upstream.pool_idle_timeout", u.pool_idle_timeout.as_deref(), "90s"),
        pool_max_idle_per_host: u.pool_max_idle_per_host.unwrap_or(256),
        max_response_body_bytes: v.positive("upstream.max_response_body_bytes", u.max_response_body_bytes, 1024 * 1024),
        preserve_host: u.preserve_host.unwrap_or(false),
        health_path: match u.health_path.filter(|p| !p.is_empty()) {
            Some(p) if !p.starts_with('/') => {
                v.err("upstream.health_path", "must start with '/'");
                None
            }
            p => p,
        },
    };

    // [store]
    let st = raw.store;
    let store = StoreConfig {
        data_dir: st.data_dir.unwrap_or_else(|| "./data".into()).into(),
        terminated_retention: v.duration("store.terminated_retention", st.terminated_retention.as_deref(), "30d"),
        sweep_interval: v.duration("store.sweep_interval", st.sweep_interval.as_deref(), "10m"),
        sweep_batch: v.positive("store.sweep_batch", st.sweep_batch, 1000),
        expired_token_grace: v.duration("store.expired_token_grace", st.expired_token_grace.as_deref(), "1h"),
        cache_capacity_bytes: st.cache_capacity_bytes.unwrap_or(256 * 1024 * 1024),
    };

    // [sessions]
    let se = raw.sessions;
    let idle_policy = match se.idle_policy.as_deref().unwrap_or("mark") {
        "mark" => IdlePolicy::Mark,
        "terminate" => IdlePolicy::Terminate,
        other => {
            v.err("sessions.idle_policy", format!("{other:?}: expected \"mark\" or \"terminate\""));
            IdlePolicy::Mark
        }
    };
    let unknown_tokens = match se.unknown_tokens.as_deref().unwrap_or("pass") {
        "pass" => UnknownTokens::Pass,
        "reject" => UnknownTokens::Reject,
        other => {
            v.err("sessions.unknown_tokens", format!("{other:?}: expected \"pass\" or \"reject\""));
            UnknownTokens::Pass
        }
    };
    let encryption_key = v
        .secret_source(
            "sessions.encryption_key_env",
            se.encryption_key_env,
            "sessions.encryption_key_file",
            se.encryption_key_file,
        )
        .unwrap_or_else(|| SecretSource::Env("SESSION_ENCRYPTION_KEY".into()));
    let tenant_header = se.tenant_header.and_then(|h| match http::HeaderName::from_bytes(h.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            v.err("sessions.tenant_header", format!("{h:?} is not a header name"));
            None
        }
    });
    let sessions = SessionConfig {
        last_seen_interval: v.duration("sessions.last_seen_interval", se.last_seen_interval.as_deref(), "30s"),
        inactivity_timeout: v.duration("sessions.inactivity_timeout", se.inactivity_timeout.as_deref(), "15m"),
        idle_policy,
        unknown_tokens,
        refresh_reuse_grace: v.duration("sessions.refresh_reuse_grace", se.refresh_reuse_grace.as_deref(), "10s"),
        encryption_key,
        previous_keys: v.secret_source(
            "sessions.previous_keys_env",
            se.previous_keys_env,
            "sessions.previous_keys_file",
            se.previous_keys_file,
        ),
        tenant_claim: se.tenant_claim.filter(|s| !s.is_empty()),
        tenant_header,
    };
    if sessions.inactivity_timeout.is_zero() {
        v.err("sessions.inactivity_timeout", "must be greater than 0");
    }

    // [jwt]
    let jwt = raw.jwt.map(|j| {
        let algorithm = match j.algorithm.as_deref().unwrap_or("HS256").to_ascii_uppercase().as_str() {
            "HS256" => JwtAlgorithm::Hs256,
            "HS384" => JwtAlgorithm::Hs384,
            "HS512" => JwtAlgorithm::Hs512,
            "RS256" => JwtAlgorithm::Rs256,
            "ES256" => JwtAlgorithm::Es256,
            other => {
                v.err("jwt.algorithm", format!("{other:?}: expected HS256, HS384, HS512, RS256 or ES256"));
                JwtAlgorithm::Hs256
            }
        };
        let hmac = matches!(algorithm, JwtAlgorithm::Hs256 | JwtAlgorithm::Hs384 | JwtAlgorithm::Hs512);
        let key = if hmac {
            if j.public_key_file.is_some() {
                v.err("jwt.public_key_file", "only for RS256/ES256; HMAC algorithms use secret_env or secret_file");
            }
            v.secret_source("jwt.secret_env", j.secret_env, "jwt.secret_file", j.secret_file)
                .unwrap_or_else(|| SecretSource::Env("JWT_SECRET".into()))
        } else {
            match j.public_key_file {
                Some(f) => SecretSource::File(f.into()),
                None => {
                    v.err("jwt.public_key_file", "required for RS256/ES256 (PEM public key)");
                    SecretSource::Env(String::new())
                }
            }
        };
        JwtConfig { algorithm, key, leeway: v.duration("jwt.leeway", j.leeway.as_deref(), "30s") }
    });

    // [routes]
    let mut rules = Vec::new();
    let r = raw.routes;
    v.rules("routes.login", RouteClass::Login, r.login, &mut rules);
    v.rules("routes.refresh", RouteClass::Refresh, r.refresh, &mut rules);
    v.rules("routes.logout", RouteClass::Logout, r.logout, &mut rules);
    v.rules("routes.credential_change", RouteClass::CredentialChange, r.credential_change, &mut rules);
    let first_revoke = rules.len();
    v.rules("routes.session_revoke", RouteClass::SessionRevoke, r.session_revoke, &mut rules);
    for (i, rule) in rules[first_revoke..].iter().enumerate() {
        if rule.param_names().len() != 1 {
            v.err(
                &format!("routes.session_revoke[{i}]"),
                format!("{:?} must name the backend session id as its one path parameter (e.g. /api/auth/sessions/:sessionId)", rule.source),
            );
        }
    }
    if !rules.iter().any(|r| r.class == RouteClass::Login) {
        v.err("routes.login", "at least one login route is required (or set preset = \"strapi-v5\")");
    }

    // [extract]
    let e = raw.extract;
    let access_token = v.pointer("extract.access_token", e.access_token).unwrap_or_else(|| {
        v.err("extract.access_token", "required: JSON pointer to the access token in login responses");
        "/jwt".into()
    });
    let logout_all = e.logout_all.filter(|s| !s.is_empty()).and_then(|s| match s.split_once('=') {
        Some((p, val)) if p.starts_with('/') => Some((p.to_string(), val.to_string())),
        _ => {
            v.err("extract.logout_all", format!("{s:?}: expected \"/json/pointer=value\""));
            None
        }
    });
    let extract = ExtractConfig {
        access_token,
        refresh_token: v.pointer("extract.refresh_token", e.refresh_token),
        refresh_cookie: e.refresh_cookie.filter(|s| !s.is_empty()),
        access_cookie: e.access_cookie.filter(|s| !s.is_empty()),
        user_id: v.pointer("extract.user_id", e.user_id),
        user_id_claim: e.user_id_claim.filter(|s| !s.is_empty()),
        username: v.pointer("extract.username", e.username),
        email: v.pointer("extract.email", e.email),
        session_id_claim: e.session_id_claim.filter(|s| !s.is_empty()),
        request_refresh_token: v.pointer("extract.request_refresh_token", e.request_refresh_token),
        request_device_id: v.pointer("extract.request_device_id", e.request_device_id),
        request_identifier: v.pointer("extract.request_identifier", e.request_identifier),
        logout_all,
        credential_user_param: e.credential_user_param.filter(|s| !s.is_empty()),
        refresh_precedence: match e.refresh_precedence.as_deref().unwrap_or("cookie") {
            "cookie" => RefreshPrecedence::CookieFirst,
            "body" => RefreshPrecedence::BodyFirst,
            other => {
                v.err("extract.refresh_precedence", format!("{other:?}: expected \"cookie\" or \"body\""));
                RefreshPrecedence::CookieFirst
            }
        },
    };
    if extract.user_id.is_none() && extract.user_id_claim.is_none() {
        v.err("extract.user_id", "set extract.user_id (JSON pointer) or extract.user_id_claim (JWT claim)");
    }

    // [backend]
    let b = raw.backend;
    let error_shape = match b.error_shape.as_deref().unwrap_or("plain") {
        "strapi" => ErrorShape::Strapi,
        "plain" => ErrorShape::Plain,
        other => {
            v.err("backend.error_shape", format!("{other:?}: expected \"strapi\" or \"plain\""));
            ErrorShape::Plain
        }
    };
    let mut body_formats = Vec::new();
    for (i, f) in b
        .body_formats
        .unwrap_or_else(|| vec!["json".into(), "urlencoded".into(), "multipart".into()])
        .iter()
        .enumerate()
    {
        match f.as_str() {
            "json" => body_formats.push(BodyFormat::Json),
            "urlencoded" => body_formats.push(BodyFormat::Urlencoded),
            "multipart" => body_formats.push(BodyFormat::Multipart),
            other => v.err(
                &format!("backend.body_formats[{i}]"),
                format!("{other:?}: expected \"json\", \"urlencoded\" or \"multipart\""),
            ),
        }
    }
    let backend = BackendConfig {
        error_shape,
        body_formats,
        revoke_on_end: b.revoke_on_end.unwrap_or(false),
        revoke_logout: v.one_rule("backend.revoke_logout", RouteClass::Logout, b.revoke_logout),
        revoke_refresh: v.one_rule("backend.revoke_refresh", RouteClass::Refresh, b.revoke_refresh),
    };
    if backend.revoke_on_end && backend.revoke_logout.is_none() {
        v.err("backend.revoke_logout", "required when backend.revoke_on_end = true");
    }

    // [user_api]
    let ua = raw.user_api;
    let prefix_text = ua.prefix.unwrap_or_else(|| "/api/magic-sessionmanager".into());
    if !prefix_text.starts_with('/') {
        v.err("user_api.prefix", "must start with '/'");
    }
    let prefix = crate::routes::normalize_path(&prefix_text);
    if rules.iter().any(|r| crate::routes::normalize_path(r.path()).starts_with(&prefix)) {
        v.err("user_api.prefix", format!("{prefix_text:?} overlaps a watched auth route"));
    }
    let user_api = UserApiConfig { enabled: ua.enabled.unwrap_or(true), prefix };

    // [admin]
    let a = raw.admin;
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
        if admin.listen == server.listen && admin.listen.port() != 0 {
            v.err("admin.listen", format!("must differ from server.listen (both {})", admin.listen));
        }
    }

    let (geo, risk, geofence, roles) = validate_risk(&mut v, raw.geo, raw.risk, raw.geofence, raw.roles);
    let alerts = validate_alerts(&mut v, raw.alerts, risk.alert_at);
    let cluster = raw.cluster.and_then(|c| validate_cluster(&mut v, c));

    // [log]
    let l = raw.log;
    let level = l.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        v.err("log.level", format!("{level:?} is not a level or filter (e.g. \"info\", \"sessiongate=debug\")"));
    }
    let format = match l.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            v.err("log.format", format!("{other:?}: expected \"text\" or \"json\""));
            LogFormat::Text
        }
    };

    Config {
        server,
        upstream,
        store,
        sessions,
        jwt,
        routes: Router::new(rules),
        extract,
        backend,
        user_api,
        admin,
        geo,
        risk,
        geofence,
        roles,
        alerts,
        cluster,
        log: LogConfig { level, format },
        source: None,
    }
}

fn validate_cluster(v: &mut V<'_>, c: RawCluster) -> Option<ClusterConfig> {
    if c.enabled == Some(false) {
        return None;
    }
    let literal = c.redis_url.filter(|u| !u.is_empty());
    let secret = v.secret_source("cluster.redis_url_env", c.redis_url_env, "cluster.redis_url_file", c.redis_url_file);
    let sentinels = c.sentinels.unwrap_or_default();
    for (i, s) in sentinels.iter().enumerate() {
        if let Err(e) = check_redis_url(s, Password::Refused) {
            v.err(&format!("cluster.sentinels[{i}]"), e);
        }
    }
    let sentinel_master = c.sentinel_master.filter(|m| !m.is_empty());
    match (sentinels.is_empty(), &sentinel_master) {
        (false, None) => v.err("cluster.sentinel_master", "required with cluster.sentinels"),
        (true, Some(_)) => v.err("cluster.sentinels", "required with cluster.sentinel_master"),
        _ => {}
    }
    let redis_url = match (literal, secret) {
        (Some(u), None) => {
            if let Err(e) = check_redis_url(&u, Password::Refused) {
                v.err("cluster.redis_url", e);
            }
            Some(ValueSource::Literal(u))
        }
        (None, Some(s)) => Some(ValueSource::Secret(s)),
        (Some(_), Some(_)) => {
            v.err("cluster.redis_url", "set either redis_url or redis_url_env / redis_url_file, not several");
            return None;
        }
        (None, None) if sentinels.is_empty() => {
            v.err(
                "cluster.redis_url",
                "required (or redis_url_env / redis_url_file, or sentinels), or set cluster.enabled = false",
            );
            return None;
        }
        (None, None) => None,
    };
    let key_prefix = c.key_prefix.unwrap_or_else(|| "sessiongate".into());
    if key_prefix.is_empty() || key_prefix.contains(['{', '}', ' ']) {
        v.err("cluster.key_prefix", format!("{key_prefix:?}: must be non-empty, without braces or spaces"));
    }
    if let Some(slot) = c.node_slot.filter(|s| *s >= CLUSTER_SLOTS) {
        v.err("cluster.node_slot", format!("{slot} is out of range 0–{}", CLUSTER_SLOTS - 1));
    }
    let stream_max_len = c.stream_max_len.unwrap_or(100_000);
    if stream_max_len < 10 {
        v.err("cluster.stream_max_len", "must be at least 10");
    }
    let cfg = ClusterConfig {
        redis_url,
        sentinels,
        sentinel_master,
        tls_ca_file: c.tls_ca_file.filter(|f| !f.is_empty()).map(PathBuf::from),
        key_prefix,
        node_slot: c.node_slot,
        node_name: c.node_name.filter(|n| !n.is_empty()),
        stream_max_len,
        connect_timeout: v.duration("cluster.connect_timeout", c.connect_timeout.as_deref(), "2s"),
        command_timeout: v.duration("cluster.command_timeout", c.command_timeout.as_deref(), "2s"),
        heartbeat_interval: v.duration("cluster.heartbeat_interval", c.heartbeat_interval.as_deref(), "5s"),
        touch_interval: v.duration("cluster.touch_interval", c.touch_interval.as_deref(), "1s"),
        snapshot_timeout: v.duration("cluster.snapshot_timeout", c.snapshot_timeout.as_deref(), "10s"),
        ready_when_isolated: c.ready_when_isolated.unwrap_or(true),
    };
    for (key, d) in [
        ("cluster.connect_timeout", cfg.connect_timeout),
        ("cluster.command_timeout", cfg.command_timeout),
        ("cluster.heartbeat_interval", cfg.heartbeat_interval),
        ("cluster.touch_interval", cfg.touch_interval),
        ("cluster.snapshot_timeout", cfg.snapshot_timeout),
    ] {
        if d.is_zero() {
            v.err(key, "must be greater than 0");
        }
    }
    Some(cfg)
}

/// Whether a Redis URL may carry a password: not when written in the config file (it belongs
/// in `redis_url_env` / `redis_url_file`), yes when it was read from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Password {
    Refused,
    Allowed,
}

/// Checks a Redis URL: a known scheme, a host, and a password only where `password` allows.
pub fn check_redis_url(url: &str, password: Password) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("not a URL like redis://host:6379/0".into());
    };
    if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix" | "valkey" | "valkeys") {
        return Err(format!("unsupported scheme {scheme:?}: use redis://, rediss:// (TLS) or redis+unix://"));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') && password == Password::Refused {
            return Err("contains a password; put the URL in redis_url_env or redis_url_file".into());
        }
    }
    if scheme.starts_with("redis") && !scheme.contains("unix") && authority.rsplit('@').next().unwrap_or("").is_empty()
    {
        return Err("the URL has no host".into());
    }
    Ok(())
}

fn validate_alerts(v: &mut V<'_>, a: RawAlerts, default_threshold: u32) -> AlertsConfig {
    let mut channels = std::collections::BTreeMap::new();
    for (name, c) in a.channels.unwrap_or_default() {
        let key = format!("alerts.channels.{name}");
        let url = match (c.url.filter(|u| !u.is_empty()), c.url_env.filter(|u| !u.is_empty())) {
            (Some(u), None) => {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    v.err(&format!("{key}.url"), format!("{u:?} is not an http(s) URL"));
                }
                Some(ValueSource::Literal(u))
            }
            (None, Some(e)) => Some(ValueSource::Secret(SecretSource::Env(e))),
            (Some(_), Some(_)) => {
                v.err(&format!("{key}.url_env"), "set either url or url_env, not both");
                None
            }
            (None, None) => None,
        };
        let need_url = |v: &mut V<'_>, url: Option<ValueSource>| {
            url.unwrap_or_else(|| {
                v.err(&format!("{key}.url"), "required (or url_env)");
                ValueSource::Literal(String::new())
            })
        };
        let kind = match c.kind.as_deref() {
            Some("webhook") => ChannelKind::Webhook {
                url: need_url(v, url),
                secret: v.secret_source(
                    &format!("{key}.secret_env"),
                    c.secret_env,
                    &format!("{key}.secret_file"),
                    c.secret_file,
                ),
            },
            Some("slack") => ChannelKind::Slack { url: need_url(v, url) },
            Some("discord") => ChannelKind::Discord { url: need_url(v, url) },
            Some("email") => {
                let to: Vec<String> = c.to.unwrap_or_default();
                if to.is_empty() || to.iter().any(|t| !t.contains('@')) {
                    v.err(&format!("{key}.to"), "one or more e-mail addresses required");
                }
                let tls = match c.tls.as_deref().unwrap_or("starttls") {
                    "starttls" => SmtpTls::StartTls,
                    "tls" => SmtpTls::Tls,
                    "none" => SmtpTls::None,
                    other => {
                        v.err(&format!("{key}.tls"), format!("{other:?}: expected \"starttls\", \"tls\" or \"none\""));
                        SmtpTls::StartTls
                    }
                };
                ChannelKind::Email {
                    to,
                    smtp: SmtpSettings {
                        host: c.smtp_host,
                        port: c.smtp_port,
                        user: c.smtp_user,
                        password: SecretSource::Env(c.smtp_password_env.unwrap_or_else(|| "SMTP_PASSWORD".into())),
                        from: c.from,
                        reply_to: c.reply_to,
                        tls,
                    },
                }
            }
            other => {
                v.err(
                    &format!("{key}.type"),
                    format!("{other:?}: expected \"webhook\", \"slack\", \"discord\" or \"email\""),
                );
                continue;
            }
        };
        channels.insert(
            name.clone(),
            ChannelConfig { name, kind, rate_per_minute: c.rate_per_minute.unwrap_or(60).max(1) },
        );
    }
    let check_channels = |v: &mut V<'_>, key: &str, names: &[String]| {
        for n in names {
            if !channels.contains_key(n) {
                v.err(key, format!("unknown channel {n:?} (define it under [alerts.channels.{n}])"));
            }
        }
    };
    let triggers = a.triggers.unwrap_or_default();
    for (t, names) in &triggers {
        check_channels(v, &format!("alerts.triggers.{t}"), names);
    }
    let mut custom = Vec::new();
    for (i, c) in a.custom.unwrap_or_default().into_iter().enumerate() {
        let key = format!("alerts.custom[{i}]");
        let name = c.name.filter(|n| !n.is_empty()).unwrap_or_else(|| format!("custom{}", i + 1));
        let chans = c.channels.unwrap_or_default();
        check_channels(v, &format!("{key}.channels"), &chans);
        let Some(when) = c.when.filter(|w| !w.trim().is_empty()) else {
            v.err(&format!("{key}.when"), "required: a CEL condition");
            continue;
        };
        custom.push(CustomAlert { name, key: format!("{key}.when"), when, channels: chans });
    }
    AlertsConfig {
        enabled: a.enabled.unwrap_or(true),
        dashboard_url: a.dashboard_url.filter(|u| !u.is_empty()).map(|u| u.trim_end_matches('/').to_string()),
        dedupe_window: v.duration("alerts.dedupe_window", a.dedupe_window.as_deref(), "10m"),
        max_attempts: a.max_attempts.unwrap_or(8).max(1),
        backoff_initial: v.duration("alerts.backoff_initial", a.backoff_initial.as_deref(), "5s"),
        backoff_max: v.duration("alerts.backoff_max", a.backoff_max.as_deref(), "15m"),
        timeout: v.duration("alerts.timeout", a.timeout.as_deref(), "10s"),
        score_threshold: a.score_threshold.unwrap_or(default_threshold),
        retention: v.duration("alerts.retention", a.retention.as_deref(), "30d"),
        channels,
        triggers,
        custom,
    }
}

fn country_list(v: &mut V<'_>, key: &str, raw: Option<Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in raw.unwrap_or_default().into_iter().enumerate() {
        let up = c.trim().to_ascii_uppercase();
        if up.len() == 2 && up.bytes().all(|b| b.is_ascii_uppercase()) {
            out.push(up);
        } else {
            v.err(&format!("{key}[{i}]"), format!("{c:?} is not an ISO 3166-1 alpha-2 country code"));
        }
    }
    out
}

fn validate_risk(
    v: &mut V<'_>,
    g: RawGeo,
    r: RawRisk,
    f: RawGeofence,
    ro: RawRoles,
) -> (GeoConfig, RiskConfig, GeofenceConfig, RolesConfig) {
    let path = |p: Option<String>| p.filter(|s| !s.is_empty()).map(PathBuf::from);
    let geo = GeoConfig {
        city_db: path(g.city_db),
        city_db_ipv6: path(g.city_db_ipv6),
        asn_db: path(g.asn_db),
        anonymous_db: path(g.anonymous_db),
        tor_list: path(g.tor_list),
        vpn_list: path(g.vpn_list),
        datacenter_list: path(g.datacenter_list),
        reload_interval: v.duration("geo.reload_interval", g.reload_interval.as_deref(), "60s"),
    };
    let w = r.weights.unwrap_or_default();
    let weights = RiskWeights {
        vpn: w.vpn.unwrap_or(25),
        proxy: w.proxy.unwrap_or(25),
        tor: w.tor.unwrap_or(40),
        residential_proxy: w.residential_proxy.unwrap_or(15),
        datacenter: w.datacenter.unwrap_or(15),
        new_country: w.new_country.unwrap_or(20),
        new_device: w.new_device.unwrap_or(10),
        impossible_travel: w.impossible_travel.unwrap_or(40),
        failed_login: w.failed_login.unwrap_or(5),
        failed_logins_max: w.failed_logins_max.unwrap_or(25),
    };
    let mut rules = Vec::new();
    for (i, rule) in r.rules.unwrap_or_default().into_iter().enumerate() {
        let key = format!("risk.rules[{i}]");
        let name = rule.name.filter(|n| !n.is_empty()).unwrap_or_else(|| format!("rule{}", i + 1));
        let Some(when) = rule.when.filter(|w| !w.trim().is_empty()) else {
            v.err(&format!("{key}.when"), "required: a CEL condition, e.g. \"score > 70 && is_vpn\"");
            continue;
        };
        let action = match (rule.add, rule.action.as_deref(), rule.tag) {
            (Some(n), None, None) => RuleAction::Add(n),
            (None, Some("deny"), None) => RuleAction::Deny,
            (None, None, Some(t)) if !t.is_empty() => RuleAction::Tag(t),
            (None, Some(other), None) => {
                v.err(
                    &format!("{key}.action"),
                    format!("{other:?}: the only action is \"deny\" (use add = N or tag = \"…\")"),
                );
                continue;
            }
            _ => {
                v.err(&key, "set exactly one of add = N, action = \"deny\" or tag = \"…\"");
                continue;
            }
        };
        rules.push(RiskRule { name, key: format!("{key}.when"), when, action });
    }
    let risk = RiskConfig {
        enabled: r.enabled.unwrap_or(true),
        alert_at: r.alert_at.unwrap_or(60),
        deny_at: r.deny_at.filter(|d| *d > 0),
        impossible_travel_kmh: r.impossible_travel_kmh.unwrap_or(900.0),
        weights,
        rules,
    };
    if risk.impossible_travel_kmh <= 0.0 {
        v.err("risk.impossible_travel_kmh", "must be greater than 0");
    }
    let mut roles_fence = std::collections::BTreeMap::new();
    for (role, rf) in f.roles.unwrap_or_default() {
        let fence = CountryFence {
            allowed: country_list(v, &format!("geofence.roles.{role}.allowed_countries"), rf.allowed_countries),
            blocked: country_list(v, &format!("geofence.roles.{role}.blocked_countries"), rf.blocked_countries),
        };
        roles_fence.insert(role, fence);
    }
    let mut allow_ips = Vec::new();
    for (i, net) in f.allow_ips.unwrap_or_default().iter().enumerate() {
        match net.parse::<IpNet>().or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from)) {
            Ok(n) => allow_ips.push(n),
            Err(_) => v.err(&format!("geofence.allow_ips[{i}]"), format!("{net:?} is not a CIDR or address")),
        }
    }
    let deny_unknown = match f.unknown_country.as_deref().unwrap_or("allow") {
        "allow" => false,
        "deny" => true,
        other => {
            v.err("geofence.unknown_country", format!("{other:?}: expected \"allow\" or \"deny\""));
            false
        }
    };
    let geofence = GeofenceConfig {
        global: CountryFence {
            allowed: country_list(v, "geofence.allowed_countries", f.allowed_countries),
            blocked: country_list(v, "geofence.blocked_countries", f.blocked_countries),
        },
        roles: roles_fence,
        deny_unknown,
        allow_ips,
    };
    let token = v.secret_source("roles.token_env", ro.token_env, "roles.token_file", ro.token_file);
    let lookup = ro.lookup.filter(|s| !s.is_empty());
    if let Some(l) = &lookup {
        match RouteRule::parse(RouteClass::Other, l) {
            Ok(rule) if rule.path().contains(":id") => {}
            Ok(_) => v.err(
                "roles.lookup",
                "the path must contain :id (the user id), e.g. \"GET /api/users/:id?populate=role\"",
            ),
            Err(e) => v.err("roles.lookup", e),
        }
        if token.is_none() {
            v.err("roles.token_env", "required with roles.lookup: a backend API token that may read users");
        }
    }
    let roles = RolesConfig {
        pointer: v.pointer("roles.pointer", ro.pointer),
        lookup,
        lookup_pointer: v.pointer("roles.lookup_pointer", ro.lookup_pointer).unwrap_or_else(|| "/role/name".into()),
        token,
        cache_ttl: v.duration("roles.cache_ttl", ro.cache_ttl.as_deref(), "5m"),
    };
    if !geofence.roles.is_empty() && !roles.is_configured() {
        v.err("geofence.roles", "per-role fencing needs [roles] pointer or lookup to know a user's role");
    }
    if geo.city_db.is_none() && geofence.is_active() {
        v.err("geo.city_db", "geofencing needs a City (or Country) database");
    }
    (geo, risk, geofence, roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../gateway.toml.example");
        let cfg = Config::from_toml_str(text, &[]).expect("gateway.toml.example must stay valid");
        assert_eq!(cfg.routes.rules().len(), 9);
        assert_eq!(cfg.backend.error_shape, ErrorShape::Strapi);
    }

    #[test]
    fn describe_covers_every_section_and_hides_secrets() {
        std::env::set_var("SG_DESCRIBE_TEST_SECRET", "super-secret-value");
        let cfg = Config::from_toml_str(
            "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://b:1\"\n[admin]\ntokens = [{ name = \"ops\", env = \"SG_DESCRIBE_TEST_SECRET\" }]\n\
             [alerts.channels.hook]\ntype = \"webhook\"\nurl = \"http://h:1/x\"\nsecret_env = \"SG_DESCRIBE_TEST_SECRET\"\n[alerts.triggers]\nanonymizer = [\"hook\"]\n", &[]
        )
        .expect("valid");
        let text = describe(&cfg);
        for line in [
            "admin.listen",
            "geo ",
            "risk ",
            "alerts ",
            "hook(webhook)",
            "anonymizer→hook",
            "ops from env SG_DESCRIBE_TEST_SECRET",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("super-secret-value"));
    }

    #[test]
    fn minimal_strapi_config_gets_defaults() {
        let cfg = Config::from_toml_str("preset = \"strapi-v5\"\n[upstream]\nurl = \"http://127.0.0.1:1337\"\n", &[])
            .expect("valid");
        assert_eq!(cfg.sessions.last_seen_interval, Duration::from_secs(30));
        assert_eq!(cfg.sessions.inactivity_timeout, Duration::from_secs(900));
        assert_eq!(cfg.store.terminated_retention, Duration::from_secs(30 * 86400));
        assert_eq!(cfg.extract.refresh_cookie.as_deref(), Some("strapi_up_refresh"));
        assert_eq!(cfg.user_api.prefix, "/api/magic-sessionmanager");
        assert_eq!(cfg.sessions.encryption_key, SecretSource::Env("SESSION_ENCRYPTION_KEY".into()));
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_key() {
        let text = r#"
preset = "strapi-v5"
bogus = 1
[server]
listen = "nowhere"
trusted_proxies = ["10.0.0.0/8", "ten"]
[upstream]
url = "ftp://x"
[sessions]
idle_policy = "sometimes"
inactivity_timeout = "soon"
[store]
typo_key = 3
[routes]
login = ["POST"]
"#;
        let err = Config::from_toml_str(text, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        for k in [
            "bogus",
            "store",
            "server.listen",
            "server.trusted_proxies[1]",
            "upstream.url",
            "sessions.idle_policy",
            "sessions.inactivity_timeout",
            "routes.login[0]",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
        assert!(err.to_string().contains("typo_key"), "{err}");
    }

    #[test]
    fn admin_on_a_public_address_needs_a_token() {
        let base = "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://b:80\"\n";
        let err =
            Config::from_toml_str(&format!("{base}[admin]\nlisten = \"0.0.0.0:9090\"\n"), &[]).expect_err("no token");
        assert_eq!(err.0[0].key, "admin.tokens");
        let ok = format!(
            "{base}[admin]\nlisten = \"0.0.0.0:9090\"\ntokens = [{{ name = \"ops\", env = \"ADMIN_TOKEN\" }}]\n"
        );
        assert_eq!(Config::from_toml_str(&ok, &[]).expect("valid").admin.tokens[0].name, "ops");
        let same = format!("{base}[server]\nlisten = \"127.0.0.1:9090\"\n");
        assert!(Config::from_toml_str(&same, &[]).is_err(), "admin and public on one port");
    }

    #[test]
    fn generic_backend_needs_its_rules() {
        let err = Config::from_toml_str("[upstream]\nurl = \"http://b:80\"\n", &[]).expect_err("no rules");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        assert!(keys.contains(&"routes.login"));
        assert!(keys.contains(&"extract.access_token"));
        assert!(keys.contains(&"extract.user_id"));
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let err = Config::from_toml_str("a = 1\n[server\n", &[]).expect_err("syntax");
        assert!(err.0[0].key.contains("line 2"), "{err}");
    }

    #[test]
    fn cluster_settings_are_validated_with_their_keys() {
        let base = "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://b:1337\"\n";
        let cfg = Config::from_toml_str(base, &[]).expect("no cluster");
        assert!(cfg.cluster.is_none());
        let ok = format!("{base}[cluster]\nredis_url = \"rediss://cache.internal:6380/2\"\nnode_slot = 3\n");
        let c = Config::from_toml_str(&ok, &[]).expect("valid").cluster.expect("cluster on");
        assert_eq!((c.node_slot, c.stream_max_len, c.ready_when_isolated), (Some(3), 100_000, true));
        assert_eq!(c.key_prefix, "sessiongate");
        let off = format!("{base}[cluster]\nenabled = false\n");
        assert!(Config::from_toml_str(&off, &[]).expect("valid").cluster.is_none());

        let bad = format!(
            "{base}[cluster]\nredis_url = \"redis://:hunter2@cache:6379\"\nnode_slot = 5000\n\
             stream_max_len = 3\ntouch_interval = \"soon\"\nkey_prefix = \"a{{b}}\"\n"
        );
        let err = Config::from_toml_str(&bad, &[]).expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        for k in [
            "cluster.redis_url",
            "cluster.node_slot",
            "cluster.stream_max_len",
            "cluster.touch_interval",
            "cluster.key_prefix",
        ] {
            assert!(keys.contains(&k), "{k} reported: {err}");
        }
        assert!(!err.to_string().contains("hunter2"), "the password is not echoed: {err}");
        let none = format!("{base}[cluster]\nnode_name = \"a\"\n");
        assert!(Config::from_toml_str(&none, &[]).expect_err("no url").to_string().contains("cluster.redis_url"));
        let sentinel = format!("{base}[cluster]\nsentinels = [\"redis://s1:26379\"]\nsentinel_master = \"m\"\n");
        let c = Config::from_toml_str(&sentinel, &[]).expect("sentinel without redis_url").cluster.expect("on");
        assert_eq!((c.sentinels.len(), c.sentinel_master.as_deref(), c.redis_url.is_none()), (1, Some("m"), true));
        let half = format!("{base}[cluster]\nsentinels = [\"redis://s1:26379\"]\n");
        assert!(Config::from_toml_str(&half, &[])
            .expect_err("no master")
            .to_string()
            .contains("cluster.sentinel_master"));
        let typo = format!("{base}[cluster]\nredis = \"redis://x\"\n");
        assert!(Config::from_toml_str(&typo, &[]).is_err(), "unknown keys are errors");
    }

    #[test]
    fn redis_urls() {
        for ok in ["redis://127.0.0.1:6379", "rediss://h:6380/1", "redis://user@h/0", "redis+unix:///run/r.sock"] {
            assert_eq!(check_redis_url(ok, Password::Refused), Ok(()), "{ok}");
        }
        for bad in ["http://h", "localhost:6379", "redis://u:p@h", "redis://"] {
            assert!(check_redis_url(bad, Password::Refused).is_err(), "{bad}");
        }
        // Read from a secret, a password is fine; the scheme and host are still checked.
        assert_eq!(check_redis_url("redis://u:p@h", Password::Allowed), Ok(()));
        assert!(check_redis_url("http://u:p@h", Password::Allowed).is_err());
    }
}
