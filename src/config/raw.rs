//! Serde mirror of `gateway.toml`. Every table denies unknown keys so a typo is an error, not a
//! silently ignored setting. Values stay loosely typed here (durations and addresses as strings)
//! so that `config::validate` can report each bad value with its key path.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub worker_threads: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub tls_handshake_timeout: Option<String>,
    pub h2_keepalive_interval: Option<String>,
    pub drain_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle_per_host: Option<usize>,
    pub max_response_body_bytes: Option<usize>,
    pub preserve_host: Option<bool>,
    pub health_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub data_dir: Option<String>,
    pub terminated_retention: Option<String>,
    pub sweep_interval: Option<String>,
    pub sweep_batch: Option<usize>,
    pub expired_token_grace: Option<String>,
    pub cache_capacity_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    pub last_seen_interval: Option<String>,
    pub inactivity_timeout: Option<String>,
    pub idle_policy: Option<String>,
    pub unknown_tokens: Option<String>,
    pub refresh_reuse_grace: Option<String>,
    pub encryption_key_env: Option<String>,
    pub encryption_key_file: Option<String>,
    pub previous_keys_env: Option<String>,
    pub previous_keys_file: Option<String>,
    pub tenant_claim: Option<String>,
    pub tenant_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub algorithm: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub public_key_file: Option<String>,
    pub leeway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutes {
    pub login: Option<Vec<String>>,
    pub refresh: Option<Vec<String>>,
    pub logout: Option<Vec<String>>,
    pub credential_change: Option<Vec<String>>,
    pub session_revoke: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExtract {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub refresh_cookie: Option<String>,
    pub access_cookie: Option<String>,
    pub access_query: Option<String>,
    pub user_id: Option<String>,
    pub user_id_claim: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub session_id_claim: Option<String>,
    pub refresh_claim: Option<String>,
    pub request_refresh_token: Option<String>,
    pub request_device_id: Option<String>,
    pub request_identifier: Option<String>,
    pub logout_all: Option<String>,
    pub credential_user_param: Option<String>,
    pub refresh_precedence: Option<String>,
    pub refresh_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGraphql {
    pub endpoints: Option<Vec<String>>,
    pub login: Option<Vec<String>>,
    pub refresh: Option<Vec<String>>,
    pub logout: Option<Vec<String>>,
    pub credential_change: Option<Vec<String>>,
    pub result_at: Option<String>,
    pub default_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub error_shape: Option<String>,
    pub revoke_on_end: Option<bool>,
    pub revoke_logout: Option<String>,
    pub revoke_refresh: Option<String>,
    pub body_formats: Option<Vec<String>>,
    pub body_methods: Option<Vec<String>>,
    pub revoke_fields: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserApi {
    pub enabled: Option<bool>,
    pub prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
    pub access: Option<String>,
    pub access_sample: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    pub name: Option<String>,
    pub env: Option<String>,
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
    pub tokens: Option<Vec<RawAdminToken>>,
    pub auth_failures_per_minute: Option<u32>,
    pub audit_retention: Option<String>,
    pub ready_requires_upstream: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    pub city_db: Option<String>,
    pub city_db_ipv6: Option<String>,
    pub asn_db: Option<String>,
    pub anonymous_db: Option<String>,
    pub tor_list: Option<String>,
    pub vpn_list: Option<String>,
    pub datacenter_list: Option<String>,
    pub reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeights {
    pub vpn: Option<u32>,
    pub proxy: Option<u32>,
    pub tor: Option<u32>,
    pub residential_proxy: Option<u32>,
    pub datacenter: Option<u32>,
    pub new_country: Option<u32>,
    pub new_device: Option<u32>,
    pub impossible_travel: Option<u32>,
    pub failed_login: Option<u32>,
    pub failed_logins_max: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    pub when: Option<String>,
    pub add: Option<i64>,
    pub action: Option<String>,
    pub tag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRisk {
    pub enabled: Option<bool>,
    pub alert_at: Option<u32>,
    pub deny_at: Option<u32>,
    pub impossible_travel_kmh: Option<f64>,
    pub weights: Option<RawWeights>,
    pub rules: Option<Vec<RawRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFenceRole {
    pub allowed_countries: Option<Vec<String>>,
    pub blocked_countries: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeofence {
    pub allowed_countries: Option<Vec<String>>,
    pub blocked_countries: Option<Vec<String>>,
    pub unknown_country: Option<String>,
    pub allow_ips: Option<Vec<String>>,
    pub roles: Option<std::collections::BTreeMap<String, RawFenceRole>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoles {
    pub pointer: Option<String>,
    pub lookup: Option<String>,
    pub lookup_pointer: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub cache_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub to: Option<Vec<String>>,
    pub rate_per_minute: Option<u32>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub smtp_user: Option<String>,
    pub smtp_password_env: Option<String>,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub tls: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomAlert {
    pub name: Option<String>,
    pub when: Option<String>,
    pub channels: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub enabled: Option<bool>,
    pub dashboard_url: Option<String>,
    pub dedupe_window: Option<String>,
    pub max_attempts: Option<u32>,
    pub backoff_initial: Option<String>,
    pub backoff_max: Option<String>,
    pub timeout: Option<String>,
    pub score_threshold: Option<u32>,
    pub retention: Option<String>,
    pub channels: Option<std::collections::BTreeMap<String, RawChannel>>,
    pub triggers: Option<std::collections::BTreeMap<String, Vec<String>>>,
    pub custom: Option<Vec<RawCustomAlert>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub enabled: Option<bool>,
    pub redis_url: Option<String>,
    pub redis_url_env: Option<String>,
    pub redis_url_file: Option<String>,
    pub tls_ca_file: Option<String>,
    pub sentinels: Option<Vec<String>>,
    pub sentinel_master: Option<String>,
    pub key_prefix: Option<String>,
    pub node_slot: Option<u64>,
    pub node_name: Option<String>,
    pub stream_max_len: Option<usize>,
    pub connect_timeout: Option<String>,
    pub command_timeout: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub touch_interval: Option<String>,
    pub snapshot_timeout: Option<String>,
    pub ready_when_isolated: Option<bool>,
}

/// A policy's keys (`[policies]` itself, or `[policies.roles.<role>]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub max_sessions_per_user: Option<u32>,
    pub on_exceed: Option<String>,
    pub max_session_age: Option<String>,
    pub on_change: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicies {
    pub max_sessions_per_user: Option<u32>,
    pub on_exceed: Option<String>,
    pub max_session_age: Option<String>,
    pub on_change: Option<String>,
    pub roles: Option<std::collections::BTreeMap<String, RawPolicy>>,
}
