//! `[cluster]`: replication through Redis.

use super::raw::*;
use super::validate::V;
use super::*;

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

pub(super) fn validate_cluster(v: &mut V<'_>, c: RawCluster) -> Option<ClusterConfig> {
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
