//! `[server]`, `[upstream]`, `[store]` and `[log]`: the listener, the backend connection, the data
//! directory and logging.

use super::raw::*;
use super::validate::V;
use super::*;

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
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    /// One line per public request (target `sessiongate::access`).
    pub access: AccessLog,
    /// With `AccessLog::Sample`: the fraction of allowed, non-5xx requests logged.
    pub access_sample: f64,
}

/// Which requests the access log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    /// Every refusal and every 5xx, and `access_sample` of the rest.
    Sample,
    All,
}

/// `[server]`.
pub(super) fn server(v: &mut V<'_>, s: RawServer) -> ServerConfig {
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
    ServerConfig {
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
    }
}

/// `[upstream]`.
pub(super) fn upstream(v: &mut V<'_>, u: RawUpstream) -> UpstreamConfig {
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
    upstream
}

/// `[store]`.
pub(super) fn store(v: &mut V<'_>, st: RawStore) -> StoreConfig {
    StoreConfig {
        data_dir: st.data_dir.unwrap_or_else(|| "./data".into()).into(),
        terminated_retention: v.duration("store.terminated_retention", st.terminated_retention.as_deref(), "30d"),
        sweep_interval: v.duration("store.sweep_interval", st.sweep_interval.as_deref(), "10m"),
        sweep_batch: v.positive("store.sweep_batch", st.sweep_batch, 1000),
        expired_token_grace: v.duration("store.expired_token_grace", st.expired_token_grace.as_deref(), "1h"),
        cache_capacity_bytes: st.cache_capacity_bytes.unwrap_or(256 * 1024 * 1024),
    }
}

/// `[log]`.
pub(super) fn log(v: &mut V<'_>, l: RawLog) -> LogConfig {
    let level = l.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        v.err("log.level", format!("{level:?} is not a level or filter (e.g. \"info\", \"sessiongate=debug\")"));
    }
    let format = v.choice(
        "log.format",
        l.format.as_deref(),
        LogFormat::Text,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    );
    // On by default where logs are shipped as JSON; a terminal's text log stays readable.
    let default_access = if format == LogFormat::Json { AccessLog::All } else { AccessLog::Off };
    let access = v.choice(
        "log.access",
        l.access.as_deref(),
        default_access,
        &[("off", AccessLog::Off), ("sample", AccessLog::Sample), ("all", AccessLog::All)],
    );
    let access_sample = l.access_sample.unwrap_or(0.01);
    if !(0.0..=1.0).contains(&access_sample) {
        v.err("log.access_sample", format!("{access_sample} is not a fraction from 0 to 1"));
    }
    LogConfig { level, format, access, access_sample }
}
