//! Validated configuration. `raw` mirrors the TOML; this module turns it into typed values,
//! applies the preset and defaults, and reports *every* problem at once, each with its key path.
//! Validation is pure: it opens no sockets and reads no secrets (those are read at startup).
//!
//! Layout: this file is the loader (`Config::from_toml_str` / `from_file`, with the [`Checks`]
//! of the layers above); `validate` holds the checks' tools and the order sections are read in;
//! `preset` the presets; `describe` the `check-config` text; and one file per group of sections
//! holds its types and checks — `server` (`[server]`, `[upstream]`, `[store]`, `[log]`),
//! `sessions` (`[sessions]`, `[jwt]`), `backend` (`[routes]`, `[extract]`, `[backend]`,
//! `[user_api]`), `admin`, `risk` (`[geo]`, `[risk]`, `[geofence]`, `[roles]`), `alerts`,
//! `policies`, `cluster`. Vocabularies owned above this layer (rule variables, alert triggers) are checked
//! by their owners through [`Checks`].

mod admin;
mod alerts;
mod backend;
mod cluster;
mod describe;
mod policies;
mod preset;
pub mod raw;
mod risk;
pub mod secret;
mod server;
mod sessions;
mod validate;

pub use admin::*;
pub use alerts::*;
pub use backend::*;
pub use cluster::*;
pub use describe::describe;
pub use policies::*;
pub use risk::*;
pub use server::*;
pub use sessions::*;

use crate::routes::{RouteClass, RouteRule, Router};
use ipnet::IpNet;
use raw::*;
pub use secret::{Secret, SecretSource};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use validate::{issue, line_of};

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
    pub graphql: GraphqlConfig,
    pub extract: ExtractConfig,
    pub backend: BackendConfig,
    pub user_api: UserApiConfig,
    pub admin: AdminConfig,
    pub geo: GeoConfig,
    pub risk: RiskConfig,
    pub geofence: GeofenceConfig,
    pub roles: RolesConfig,
    pub alerts: AlertsConfig,
    pub policies: PoliciesConfig,
    /// `None`: this instance runs alone on sled.
    pub cluster: Option<ClusterConfig>,
    pub log: LogConfig,
    /// The file this was read from (`None` when built from a string): what a reload re-reads.
    pub source: Option<std::path::PathBuf>,
    /// Keys set by environment variables (`SESSIONGATE_UPSTREAM__URL`), which take precedence
    /// over the file: (key path, variable).
    pub overrides: Vec<(String, String)>,
}

/// The prefix of environment overrides: `SESSIONGATE_<SECTION>__<KEY>[__<KEY>…]`, each `__` a
/// level of the TOML document (`SESSIONGATE_PRESET` for the top-level `preset`).
pub const ENV_PREFIX: &str = "SESSIONGATE_";

/// Sets the keys named by environment overrides in `table`; returns (key path, variable) of
/// each. A value that reads as TOML (a number, a boolean, an array, a quoted string) is taken as
/// such; anything else is a string. Variables of the CLI (`SESSIONGATE_CONFIG`,
/// `SESSIONGATE_ADMIN_TOKEN`, …) have no `__` and are not overrides.
fn apply_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<(String, String)> {
    let mut applied = Vec::new();
    let mut vars: Vec<(String, String)> = vars.into_iter().collect();
    vars.sort();
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
        let path: Vec<String> = if rest == "PRESET" {
            vec!["preset".to_string()]
        } else if rest.contains("__") {
            rest.split("__").map(str::to_ascii_lowercase).collect()
        } else {
            continue;
        };
        let key = path.join(".");
        if path.iter().any(String::is_empty) {
            issues.push(issue(&var, "an empty key between `__` separators"));
            continue;
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        if set_path(table, &path, value) {
            applied.push((key, var));
        } else {
            issues.push(issue(&key, &format!("{var}: the file sets a value here, not a table")));
        }
    }
    applied
}

/// Sets `path` (non-empty) in `table`, creating tables on the way; false when the way passes
/// through a value that is not a table.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> bool {
    match path {
        [] => false,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => {
            match table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => false,
            }
        }
    }
}

/// A value that may be a secret: a literal from the file, or an env var / file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    Literal(String),
    Secret(SecretSource),
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
    graphql: RawGraphql,
    extract: RawExtract,
    backend: RawBackend,
    user_api: RawUserApi,
    admin: RawAdmin,
    geo: RawGeo,
    risk: RawRisk,
    geofence: RawGeofence,
    roles: RawRoles,
    alerts: RawAlerts,
    policies: RawPolicies,
    cluster: Option<RawCluster>,
    log: RawLog,
}

/// Reads one section, reporting every bad value with its full key path (`server.idle_timeout`):
/// on an error the offending key is set aside and the rest read again, so one bad value hides
/// neither the section's other errors nor its good values. The keys set aside go to `bad`, so
/// that validation does not report them again as missing.
fn section<T: serde::de::DeserializeOwned + Default>(
    table: &mut toml::Table,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
    bad: &mut Vec<String>,
) -> Option<T> {
    let mut value = table.remove(key)?;
    // Each round removes one key; a section has far fewer than this.
    for _ in 0..256 {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let segments: Vec<&serde_path_to_error::Segment> = e.path().iter().collect();
        let mut path = key.to_string();
        for seg in &segments {
            match seg {
                serde_path_to_error::Segment::Map { key } => {
                    path.push('.');
                    path.push_str(key);
                }
                serde_path_to_error::Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                _ => {}
            }
        }
        let message = e.inner().message().trim().to_string();
        match unknown_field(&message) {
            Some((field, expected)) => {
                let hint = did_you_mean(field, &expected).map(|m| format!("; did you mean `{m}`?")).unwrap_or_default();
                issues.push(ConfigIssue { key: path, message: format!("unknown key{hint}") });
            }
            None => {
                issues.push(ConfigIssue { key: path.clone(), message });
                bad.push(path);
            }
        }
        let removed = set_aside(&mut value, &segments);
        if !removed {
            bad.push(key.to_string());
            return Some(T::default());
        }
    }
    Some(T::default())
}

/// `unknown field `x`, expected one of `a`, `b`` → ("x", ["a", "b"]), from serde's message.
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, tail) = rest.split_once('`')?;
    let expected = tail.split('`').skip(1).step_by(2).collect();
    Some((field, expected))
}

/// The closest expected name, when it is close enough to be the likely intent.
fn did_you_mean<'a>(given: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (strsim::jaro_winkler(given, e), *e))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, e)| e)
}

/// Removes the value at `segments` from `value`. Returns false when there is nothing to remove:
/// the error concerns the section itself (not a table, say).
fn set_aside(value: &mut toml::Value, segments: &[&serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parent)) = segments.split_last() else { return false };
    let mut at = value;
    for seg in parent {
        let next = match (seg, at) {
            (Segment::Map { key }, toml::Value::Table(t)) => t.get_mut(key.as_str()),
            (Segment::Seq { index }, toml::Value::Array(a)) => a.get_mut(*index),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match (last, at) {
        (Segment::Map { key }, toml::Value::Table(t)) => t.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, toml::Value::Array(a)) if *index < a.len() => {
            a.remove(*index);
            true
        }
        _ => false,
    }
}

/// Checks that need a vocabulary owned by a layer above `config` (the rule language's variables,
/// the alert triggers). They run on the validated configuration — also when it already has
/// issues — so every error is reported at once. `startup::CONFIG_CHECKS` is the full list.
pub type Checks = &'static [fn(&Config) -> Vec<ConfigIssue>];

impl Config {
    /// Parses and validates a TOML document, running `checks` too. No environment overrides:
    /// see [`Config::from_toml_str_with_env`].
    pub fn from_toml_str(text: &str, checks: Checks) -> Result<Config, ConfigErrors> {
        Config::from_toml_str_with_env(text, checks, std::iter::empty())
    }

    /// Parses a TOML document, applies the environment overrides in `vars` (precedence:
    /// environment > file > preset > defaults), and validates the result.
    pub fn from_toml_str_with_env(
        text: &str,
        checks: Checks,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let mut issues = Vec::new();
        let mut bad = Vec::new();
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
        let overrides = apply_env(&mut table, vars, &mut issues);
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
            server: section(&mut table, "server", &mut issues, &mut bad).unwrap_or_default(),
            upstream: section(&mut table, "upstream", &mut issues, &mut bad).unwrap_or_default(),
            store: section(&mut table, "store", &mut issues, &mut bad).unwrap_or_default(),
            sessions: section(&mut table, "sessions", &mut issues, &mut bad).unwrap_or_default(),
            jwt: section(&mut table, "jwt", &mut issues, &mut bad),
            routes: section(&mut table, "routes", &mut issues, &mut bad).unwrap_or_default(),
            graphql: section(&mut table, "graphql", &mut issues, &mut bad).unwrap_or_default(),
            extract: section(&mut table, "extract", &mut issues, &mut bad).unwrap_or_default(),
            backend: section(&mut table, "backend", &mut issues, &mut bad).unwrap_or_default(),
            user_api: section(&mut table, "user_api", &mut issues, &mut bad).unwrap_or_default(),
            admin: section(&mut table, "admin", &mut issues, &mut bad).unwrap_or_default(),
            geo: section(&mut table, "geo", &mut issues, &mut bad).unwrap_or_default(),
            risk: section(&mut table, "risk", &mut issues, &mut bad).unwrap_or_default(),
            geofence: section(&mut table, "geofence", &mut issues, &mut bad).unwrap_or_default(),
            roles: section(&mut table, "roles", &mut issues, &mut bad).unwrap_or_default(),
            alerts: section(&mut table, "alerts", &mut issues, &mut bad).unwrap_or_default(),
            policies: section(&mut table, "policies", &mut issues, &mut bad).unwrap_or_default(),
            cluster: section(&mut table, "cluster", &mut issues, &mut bad),
            log: section(&mut table, "log", &mut issues, &mut bad).unwrap_or_default(),
        };
        let sections = [
            "preset", "server", "upstream", "store", "sessions", "jwt", "routes", "graphql", "extract", "backend",
            "user_api", "admin", "geo", "risk", "geofence", "roles", "alerts", "policies", "cluster", "log",
        ];
        for key in table.keys() {
            let hint = did_you_mean(key, &sections).map(|m| format!("; did you mean `{m}`?")).unwrap_or_default();
            issues.push(issue(key, &format!("unknown key{hint}")));
        }
        let before = issues.len();
        let mut cfg = validate::validate(raw, &mut issues);
        cfg.overrides = overrides;
        // A key whose value was set aside above is not reported again as missing or defaulted.
        for check in checks {
            issues.extend(check(&cfg));
        }
        let covered = |k: &str| {
            bad.iter()
                .any(|b| k == b || k.strip_prefix(b.as_str()).is_some_and(|r| r.starts_with('.') || r.starts_with('[')))
        };
        let found = issues.split_off(before);
        issues.extend(found.into_iter().filter(|it| !covered(&it.key)));
        if issues.is_empty() {
            return Ok(cfg);
        }
        // Name the variable behind a bad value: the file does not show it.
        for it in &mut issues {
            let from = cfg.overrides.iter().find(|(k, _)| {
                it.key == *k
                    || it.key.strip_prefix(k.as_str()).is_some_and(|r| r.starts_with('.') || r.starts_with('['))
            });
            if let Some((_, var)) = from {
                it.message = format!("{} (set by {var})", it.message);
            }
        }
        Err(ConfigErrors(issues))
    }

    /// Reads and validates a config file, with the process's environment overrides.
    pub fn from_file(path: &std::path::Path, checks: Checks) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![issue("(file)", &format!("cannot read {}: {e}", path.display()))]))?;
        let mut cfg = Config::from_toml_str_with_env(&text, checks, std::env::vars())?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }
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
             [alerts.channels.hook]\ntype = \"webhook\"\nurl = \"http://h:1/x\"\nsecret_env = \"SG_DESCRIBE_TEST_SECRET\"\n[alerts.triggers]\nanonymizer = [\"hook\"]\n[policies]\nmax_sessions_per_user = 3\n[extract]\naccess_query = \"access_token\"\n", &[]
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
            "policies                 at most 3 per user (EvictOldest), no age limit, on change Alert",
            "access tokens from       Authorization: Bearer, query ?access_token=",
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
            "store.typo_key",
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
    fn type_errors_name_their_full_key_and_hide_nothing_else() {
        let text = r#"
preset = "strapi-v5"
[server]
idle_timeout = 60
max_connections = "many"
listen = "nowhere"
drain_timeout = "5s"
trusted_proxies = ["10.0.0.0/8", 7]
[upstream]
url = 5
[sessions]
inactivity_timeout = "soon"
[stor]
data_dir = "x"
[admin]
lisen = "127.0.0.1:1"
"#;
        let err = Config::from_toml_str(text, &[]).expect_err("invalid");
        let found: Vec<(&str, &str)> = err.0.iter().map(|i| (i.key.as_str(), i.message.as_str())).collect();
        let keys: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
        for k in [
            "server.idle_timeout",
            "server.max_connections",
            "server.listen",
            "server.trusted_proxies[1]",
            "upstream.url",
            "sessions.inactivity_timeout",
            "stor",
            "admin.lisen",
        ] {
            assert!(keys.contains(&k), "missing {k} in {found:?}");
        }
        assert_eq!(keys.iter().filter(|k| **k == "upstream.url").count(), 1, "no phantom `required`: {found:?}");
        assert!(found.iter().any(|(k, m)| *k == "server.idle_timeout" && m.contains("integer")), "{found:?}");
        assert!(found.contains(&("stor", "unknown key; did you mean `store`?")), "{found:?}");
        assert!(found.contains(&("admin.lisen", "unknown key; did you mean `listen`?")), "{found:?}");
        assert!(!keys.contains(&"server"), "no section-level error: {found:?}");
    }

    #[test]
    fn contradictions_between_keys_are_errors() {
        let base = "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://b:80\"\n";
        let text = format!(
            "{base}[server]\nlisten = \"0.0.0.0:9590\"\n[admin]\nlisten = \"127.0.0.1:9590\"\n[risk]\nalert_at = 90\ndeny_at = 80\n\
             [geofence]\nallowed_countries = [\"DE\", \"uk\"]\nblocked_countries = [\"de\", \"XX\", \"XK\"]\n\
             [geofence.roles.editor]\nallowed_countries = [\"FR\"]\nblocked_countries = [\"FR\"]\n"
        );
        let err = Config::from_toml_str(&text, &[]).expect_err("invalid");
        let found: Vec<(&str, &str)> = err.0.iter().map(|i| (i.key.as_str(), i.message.as_str())).collect();
        let keys: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
        for k in [
            "admin.listen",
            "risk.alert_at",
            "geofence.allowed_countries[1]",
            "geofence.blocked_countries[1]",
            "geofence.blocked_countries",
            "geofence.roles.editor.blocked_countries",
        ] {
            assert!(keys.contains(&k), "missing {k} in {found:?}");
        }
        assert!(!keys.contains(&"geofence.blocked_countries[2]"), "XK (Kosovo, as MaxMind has it) is accepted");
        assert!(found.iter().any(|(_, m)| m.contains("\"GB\"")), "UK hints at GB: {found:?}");
        // Different ports, or two specific addresses, are fine.
        let ok = format!("{base}[server]\nlisten = \"10.0.0.1:9590\"\n[admin]\nlisten = \"127.0.0.1:9590\"\n");
        assert!(Config::from_toml_str(&ok, &[]).is_ok());
    }

    #[test]
    fn environment_overrides_beat_the_file_and_the_preset() {
        let file = "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://file:1\"\n[server]\nmax_connections = 10\n";
        let vars = |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let cfg = Config::from_toml_str_with_env(
            file,
            &[],
            vars(&[
                ("SESSIONGATE_UPSTREAM__URL", "http://env:2"),
                ("SESSIONGATE_SERVER__MAX_CONNECTIONS", "500"),
                ("SESSIONGATE_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                ("SESSIONGATE_SESSIONS__INACTIVITY_TIMEOUT", "5m"),
                ("SESSIONGATE_EXTRACT__REFRESH_COOKIE", "my_refresh"),
                ("SESSIONGATE_ADMIN_TOKEN", "not-an-override"),
                ("SESSIONGATE_CONFIG", "/not/an/override"),
            ]),
        )
        .expect("valid");
        assert_eq!(cfg.upstream.url.to_string(), "http://env:2/");
        assert_eq!(cfg.server.max_connections, 500, "typed as TOML: an integer");
        assert_eq!(cfg.server.trusted_proxies.len(), 1, "an array");
        assert_eq!(cfg.sessions.inactivity_timeout, Duration::from_secs(300), "not TOML: a string");
        assert_eq!(cfg.extract.refresh_cookie.as_deref(), Some("my_refresh"), "over the preset");
        let keys: Vec<&str> = cfg.overrides.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "extract.refresh_cookie",
                "server.max_connections",
                "server.trusted_proxies",
                "sessions.inactivity_timeout",
                "upstream.url"
            ]
        );
        assert!(describe(&cfg).contains("override                 upstream.url from env SESSIONGATE_UPSTREAM__URL"));
        // A bad value or an unknown key names its variable.
        let err = Config::from_toml_str_with_env(
            file,
            &[],
            vars(&[("SESSIONGATE_SERVER__MAX_CONNECTIONS", "many"), ("SESSIONGATE_UPSTREAM__URLL", "x")]),
        )
        .expect_err("invalid");
        let found: Vec<String> = err.0.iter().map(|i| i.to_string()).collect();
        assert!(
            found.iter().any(|m| m.starts_with("server.max_connections:")
                && m.ends_with("(set by SESSIONGATE_SERVER__MAX_CONNECTIONS)")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|m| m
                    .contains("upstream.urll: unknown key; did you mean `url`? (set by SESSIONGATE_UPSTREAM__URLL)")),
            "{found:?}"
        );
        // Without the environment, the file as written.
        assert_eq!(Config::from_toml_str(file, &[]).expect("valid").server.max_connections, 10);
    }

    #[test]
    fn the_access_log_is_on_by_default_with_json_logs() {
        let base = "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://b:80\"\n";
        let log = |extra: &str| Config::from_toml_str(&format!("{base}[log]\n{extra}"), &[]).map(|c| c.log);
        assert_eq!(log("").expect("text").access, AccessLog::Off);
        assert_eq!(log("format = \"json\"\n").expect("json").access, AccessLog::All);
        let sampled = log("format = \"json\"\naccess = \"sample\"\naccess_sample = 0.25\n").expect("sample");
        assert_eq!((sampled.access, sampled.access_sample), (AccessLog::Sample, 0.25));
        assert!(log("access_sample = 2.0\n").is_err());
        assert!(log("access = \"some\"\n").is_err());
    }

    #[test]
    fn a_name_outside_its_set_is_reported_with_the_names_expected() {
        let base = "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://b:80\"\n";
        let text =
            format!("{base}[log]\nformat = \"xml\"\n[sessions]\nidle_policy = \"mark\"\nunknown_tokens = \"drop\"\n");
        let err = Config::from_toml_str(&text, &[]).expect_err("invalid");
        let found: Vec<(&str, &str)> = err.0.iter().map(|i| (i.key.as_str(), i.message.as_str())).collect();
        assert!(found.contains(&("log.format", "\"xml\": expected \"text\" or \"json\"")), "{found:?}");
        assert!(found.contains(&("sessions.unknown_tokens", "\"drop\": expected \"pass\" or \"reject\"")), "{found:?}");
        assert!(!found.iter().any(|(k, _)| *k == "sessions.idle_policy"), "a valid name is taken");
        let alerts = format!(
            "{base}[alerts.channels.m]\ntype = \"email\"\nto = [\"a@b.c\"]\nsmtp_host = \"h\"\nfrom = \"x@b.c\"\ntls = \"ssl\"\n"
        );
        let err = Config::from_toml_str(&alerts, &[]).expect_err("invalid");
        assert!(
            err.0.iter().any(|i| i.message == "\"ssl\": expected \"starttls\", \"tls\" or \"none\""),
            "{:?}",
            err.0
        );
        assert_eq!(Config::from_toml_str(base, &[]).expect("defaults").log.format, LogFormat::Text);
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
