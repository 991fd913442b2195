//! Prometheus metrics: one registry and typed handles. Labels are bounded sets — route class,
//! status class, decision / reason code, operation — never a path, IP, user, session or token.

use crate::routes::RouteClass;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets in seconds, fine-grained below a millisecond where the gateway's own cost lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

/// Asserts (in tests) that `names` can serve as stable identifiers and label values: unique,
/// snake_case. Every closed set of names uses it.
#[cfg(test)]
pub(crate) fn assert_stable_names(names: &[&str]) {
    assert!(names.iter().all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_')), "{names:?}");
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "duplicate names in {names:?}");
}

/// The `kind` label of `exchanges_closed_total`.
pub const EXCHANGE_KINDS: [&str; 3] = ["websocket", "stream", "waiting"];

/// `logins_total{result}`: a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Success,
    /// The backend refused the credentials.
    Failed,
    /// The backend accepted, the gateway refused (`session::admission`).
    Blocked,
    GeoBlocked,
    RiskDenied,
    /// Over `policies.max_sessions_per_user` with `on_exceed = "refuse"`.
    SessionLimit,
}

impl LoginResult {
    pub const ALL: [LoginResult; 6] = [
        LoginResult::Success,
        LoginResult::Failed,
        LoginResult::Blocked,
        LoginResult::GeoBlocked,
        LoginResult::RiskDenied,
        LoginResult::SessionLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoginResult::Success => "success",
            LoginResult::Failed => "failed",
            LoginResult::Blocked => "blocked",
            LoginResult::GeoBlocked => "geo_blocked",
            LoginResult::RiskDenied => "risk_denied",
            LoginResult::SessionLimit => "session_limit",
        }
    }
}

/// `refreshes_total{result}`: a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    /// A tracked session's tokens were rotated.
    Rotated,
    /// An untracked refresh token's new tokens became a session.
    Adopted,
    /// The backend refused the refresh.
    Rejected,
}

impl RefreshResult {
    pub const ALL: [RefreshResult; 3] = [RefreshResult::Rotated, RefreshResult::Adopted, RefreshResult::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Rotated => "rotated",
            RefreshResult::Adopted => "adopted",
            RefreshResult::Rejected => "rejected",
        }
    }
}

/// Each labelled series is declared here; the modules that own a label's closed set (route
/// classes here, end reasons and revocation outcomes in `session/`) create its series up front
/// with [`Metrics::preregister`], so dashboards see every value at zero.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    upstream_latency: HistogramVec,
    gateway_latency: HistogramVec,
    /// The per-request series, resolved on first use: `with_label_values` hashes its labels on
    /// every call, which showed in the request path's profile.
    hot: HotSeries,
    pub sessions: IntGaugeVec,
    pub logins: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub reuse_detected: IntCounter,
    pub terminations: IntCounterVec,
    /// Backend revocations of ended sessions, by outcome (see `session::revoke`).
    pub backend_revocations: IntCounterVec,
    /// Ended sessions whose backend session is still to be revoked.
    pub backend_revocations_pending: IntGauge,
    pub store_latency: HistogramVec,
    pub store_size: IntGauge,
    /// Log lines dropped because the log consumer could not keep up (set at each scrape).
    pub log_lines_dropped: IntGauge,
    connections_open: IntGaugeVec,
    connections_rejected: IntCounterVec,
    requests_in_flight: IntGaugeVec,
    /// Configuration reloads by result (`applied`, `refused`).
    pub config_reloads: IntCounterVec,
    /// Unix time of the last applied configuration (the start counts as one).
    pub config_last_reload_success: IntGauge,
    /// Alerts waiting for delivery (set at each scrape).
    pub alerts_queued: IntGauge,
    /// Age of each loaded geo source (database build time, or a list's file time), set at scrape.
    pub geo_data_age: IntGaugeVec,
    /// Process metrics under their standard names (`process_*`), without the namespace.
    process: Registry,
    /// Bytes of the in-memory session index, by part (see `session::index::Memory`).
    pub index_bytes: IntGaugeVec,
    pub audit_dropped: IntCounter,
    pub alerts: IntCounterVec,
    pub admin_auth_failures: IntCounter,
    /// Long-lived exchanges closed because their session ended, by kind (`websocket`, `stream`,
    /// `waiting`).
    pub exchanges_closed: IntCounterVec,
    /// Open protocol-switched tunnels (WebSocket).
    pub upgrades_open: IntGauge,
    pub cluster: ClusterMetrics,
}

/// Replication (see `cluster/`). Registered always; zero when running alone.
pub struct ClusterMetrics {
    /// 1 when `[cluster]` is configured (so alerts on `connected` skip standalone instances).
    pub enabled: IntGauge,
    /// 1 while this instance reaches Redis, 0 while it is isolated.
    pub connected: IntGauge,
    /// Events by direction (`published`, `applied`, `skipped`) and kind.
    pub events: IntCounterVec,
    pub publish_failures: IntCounter,
    /// Local events queued durably, not yet in Redis.
    pub outbox_pending: IntGauge,
    /// Events in the stream this instance has not applied yet.
    pub lag_events: IntGauge,
    /// Age of the newest applied event when the batch was applied (0 when caught up).
    pub lag_seconds: prometheus::Gauge,
    /// Time from an event's publication to its application here.
    pub apply_delay: prometheus::Histogram,
    pub catchup_runs: IntCounter,
    pub snapshot_loads: IntCounterVec,
    pub snapshots_served: IntCounter,
    pub peers: IntGauge,
}

/// Cached series, indexed by route class (and status class for allowed requests).
#[derive(Default)]
struct HotSeries {
    allowed: [[OnceLock<IntCounter>; 5]; RouteClass::COUNT],
    upstream: [OnceLock<Histogram>; RouteClass::COUNT],
    gateway: [OnceLock<Histogram>; RouteClass::COUNT],
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on invalid metric names or duplicate registration, both fixed at compile time
    // by the constants below; a test builds the whole set.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    /// Creates the series of `vec` for each of `values` (at zero).
    pub fn login(&self, r: LoginResult) {
        self.logins.with_label_values(&[r.as_str()]).inc();
    }

    pub fn refresh(&self, r: RefreshResult) {
        self.refreshes.with_label_values(&[r.as_str()]).inc();
    }

    pub fn preregister<'a>(vec: &IntCounterVec, values: impl IntoIterator<Item = &'a str>) {
        for v in values {
            vec.with_label_values(&[v]);
        }
    }

    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("sessiongate".into()), None).unwrap_or_default();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = must(HistogramVec::new(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()), labels));
            must(registry.register(Box::new(h.clone())));
            h
        };
        let requests = counter(
            "requests_total",
            "Public requests by route class, status class and decision",
            &["route", "status", "decision"],
        );
        let upstream_latency =
            histogram("upstream_latency_seconds", "Time until the backend's response head", &["route"]);
        let gateway_latency = histogram(
            "gateway_added_latency_seconds",
            "Time the gateway adds to a request (total minus upstream)",
            &["route"],
        );
        let sessions = must(IntGaugeVec::new(Opts::new("sessions", "Sessions held, by state"), &["state"]));
        must(registry.register(Box::new(sessions.clone())));
        let logins = counter("logins_total", "Logins through the gateway by result", &["result"]);
        Metrics::preregister(&logins, LoginResult::ALL.map(LoginResult::as_str));
        let refreshes = counter("refreshes_total", "Refreshes through the gateway by result", &["result"]);
        Metrics::preregister(&refreshes, RefreshResult::ALL.map(RefreshResult::as_str));
        let reuse_detected = must(IntCounter::new("refresh_reuse_detected_total", "Rotated refresh tokens replayed"));
        must(registry.register(Box::new(reuse_detected.clone())));
        let terminations = counter("terminations_total", "Sessions ended, by reason", &["reason"]);
        let backend_revocations =
            counter("backend_revocations_total", "Backend revocations of ended sessions, by outcome", &["outcome"]);
        let backend_revocations_pending = must(IntGauge::new(
            "backend_revocations_pending",
            "Ended sessions whose backend session is still to be revoked",
        ));
        must(registry.register(Box::new(backend_revocations_pending.clone())));
        let alerts = counter(
            "alerts_total",
            "Alert deliveries by trigger, channel and result",
            &["trigger", "channel", "result"],
        );
        let store_latency = histogram("store_operation_seconds", "Session store operations", &["op"]);
        let index_bytes = must(IntGaugeVec::new(
            Opts::new("index_bytes", "Bytes of the in-memory session index, by part"),
            &["part"],
        ));
        must(registry.register(Box::new(index_bytes.clone())));
        let store_size = must(IntGauge::new("store_size_bytes", "Size of the sled database on disk"));
        must(registry.register(Box::new(store_size.clone())));
        let log_lines_dropped = must(IntGauge::new(
            "log_lines_dropped",
            "Log lines dropped since start because stderr's consumer could not keep up",
        ));
        must(registry.register(Box::new(log_lines_dropped.clone())));
        let connections_open =
            must(IntGaugeVec::new(Opts::new("connections_open", "Open client connections"), &["listener"]));
        must(registry.register(Box::new(connections_open.clone())));
        let connections_rejected = counter(
            "connections_rejected_total",
            "Connections closed at accept: server.max_connections or server.max_connections_per_ip reached",
            &["listener", "reason"],
        );
        let requests_in_flight = must(IntGaugeVec::new(
            Opts::new("requests_in_flight", "Requests being handled (until their response head)"),
            &["listener"],
        ));
        must(registry.register(Box::new(requests_in_flight.clone())));
        let config_reloads = counter("config_reloads_total", "Configuration reloads by result", &["result"]);
        Metrics::preregister(&config_reloads, ["applied", "refused"]);
        let config_last_reload_success = must(IntGauge::new(
            "config_last_reload_success_timestamp_seconds",
            "Unix time the configuration in force was applied (start or reload)",
        ));
        must(registry.register(Box::new(config_last_reload_success.clone())));
        config_last_reload_success.set(crate::clock::now_ms() / 1000);
        let alerts_queued = must(IntGauge::new("alerts_queued", "Alerts waiting for delivery"));
        must(registry.register(Box::new(alerts_queued.clone())));
        let geo_data_age = must(IntGaugeVec::new(
            Opts::new(
                "geo_data_age_seconds",
                "Age of each loaded geo source: database build time, or a list's file time",
            ),
            &["source"],
        ));
        must(registry.register(Box::new(geo_data_age.clone())));
        let audit_dropped =
            must(IntCounter::new("audit_events_dropped_total", "Audit events dropped because the writer fell behind"));
        must(registry.register(Box::new(audit_dropped.clone())));
        let admin_auth_failures = must(IntCounter::new("admin_auth_failures_total", "Failed admin authentications"));
        must(registry.register(Box::new(admin_auth_failures.clone())));
        let exchanges_closed = counter(
            "exchanges_closed_total",
            "Long-lived exchanges (tunnels, streamed responses, waits for the backend) closed because their session ended",
            &["kind"],
        );
        Metrics::preregister(&exchanges_closed, EXCHANGE_KINDS);
        let upgrades_open = must(IntGauge::new("upgrades_open", "Open protocol-switched (WebSocket) tunnels"));
        must(registry.register(Box::new(upgrades_open.clone())));
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let single = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let lag_seconds = must(prometheus::Gauge::new(
            "cluster_lag_seconds",
            "Age of the newest replicated event when it was applied (0 when caught up)",
        ));
        must(registry.register(Box::new(lag_seconds.clone())));
        let apply_delay = must(prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "cluster_apply_delay_seconds",
                "Time from an event's publication to its application here",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        ));
        must(registry.register(Box::new(apply_delay.clone())));
        let cluster = ClusterMetrics {
            enabled: gauge("cluster_enabled", "1 when this instance replicates through Redis ([cluster] configured)"),
            connected: gauge("cluster_connected", "1 while Redis is reachable, 0 while this instance is isolated"),
            events: counter("cluster_events_total", "Replication events by direction and kind", &["direction", "kind"]),
            publish_failures: single("cluster_publish_failures_total", "Failed attempts to publish to Redis"),
            outbox_pending: gauge("cluster_outbox_pending", "Local events queued durably, not yet published"),
            lag_events: gauge("cluster_lag_events", "Stream events not yet applied by this instance"),
            lag_seconds,
            apply_delay,
            catchup_runs: single(
                "cluster_catchup_runs_total",
                "Resumptions from a stored position with events to catch up",
            ),
            snapshot_loads: counter(
                "cluster_snapshot_loads_total",
                "Snapshot loads from a peer, by result",
                &["result"],
            ),
            snapshots_served: single("cluster_snapshots_served_total", "Snapshots sent to other instances"),
            peers: gauge("cluster_peers", "Other instances seen through Redis within three heartbeats"),
        };
        let build = must(IntGaugeVec::new(Opts::new("build_info", "Build information"), &["version"]));
        must(registry.register(Box::new(build.clone())));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let process = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let _ = process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }
        Metrics {
            registry,
            hot: HotSeries::default(),
            requests,
            upstream_latency,
            gateway_latency,
            sessions,
            logins,
            refreshes,
            reuse_detected,
            terminations,
            backend_revocations,
            backend_revocations_pending,
            store_latency,
            store_size,
            log_lines_dropped,
            connections_open,
            connections_rejected,
            requests_in_flight,
            config_reloads,
            config_last_reload_success,
            alerts_queued,
            geo_data_age,
            process,
            index_bytes,
            audit_dropped,
            alerts,
            admin_auth_failures,
            exchanges_closed,
            upgrades_open,
            cluster,
        }
    }

    /// Counts one public request and its latencies. `decision` is `allow` or a reason code.
    pub fn record_request(
        &self,
        route: RouteClass,
        status: u16,
        decision: &str,
        upstream: Option<Duration>,
        added: Duration,
    ) {
        let r = route as usize;
        let class = status_class(status);
        if decision == "allow" {
            let slot = &self.hot.allowed[r][(status / 100).clamp(1, 5) as usize - 1];
            slot.get_or_init(|| self.requests.with_label_values(&[route.as_str(), class, decision])).inc();
        } else {
            self.requests.with_label_values(&[route.as_str(), class, decision]).inc();
        }
        if let Some(u) = upstream {
            let h = self.hot.upstream[r].get_or_init(|| self.upstream_latency.with_label_values(&[route.as_str()]));
            h.observe(u.as_secs_f64());
        }
        let h = self.hot.gateway[r].get_or_init(|| self.gateway_latency.with_label_values(&[route.as_str()]));
        h.observe(added.as_secs_f64());
    }

    /// The series of one listener (`public`, `admin`).
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: self.connections_open.with_label_values(&[name]),
            rejected_total: self.connections_rejected.with_label_values(&[name, "max_connections"]),
            rejected_per_ip: self.connections_rejected.with_label_values(&[name, "max_connections_per_ip"]),
            in_flight: self.requests_in_flight.with_label_values(&[name]),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let _ = prometheus::TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A listener's connection and request gauges, resolved once.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub open: IntGauge,
    pub rejected_total: IntCounter,
    pub rejected_per_ip: IntCounter,
    pub in_flight: IntGauge,
}

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_labels_are_closed_sets_created_at_zero() {
        assert_stable_names(&LoginResult::ALL.map(LoginResult::as_str));
        assert_stable_names(&RefreshResult::ALL.map(RefreshResult::as_str));
        let text = Metrics::new().render();
        assert!(text.contains("sessiongate_logins_total{result=\"geo_blocked\"} 0"), "{text}");
        assert!(text.contains("sessiongate_refreshes_total{result=\"adopted\"} 0"), "{text}");
    }

    #[test]
    fn all_metrics_register_and_render() {
        let m = Metrics::new();
        m.requests.with_label_values(&["login", "2xx", "allow"]).inc();
        m.terminations.with_label_values(&["logout"]).inc();
        let text = m.render();
        assert!(
            text.contains("sessiongate_requests_total{decision=\"allow\",route=\"login\",status=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("sessiongate_build_info"));
        assert_eq!(status_class(404), "4xx");
    }
}
