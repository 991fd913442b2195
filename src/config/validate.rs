//! The checks' shared tools (`V`: typed getters that record every problem under its key) and
//! the order sections are validated in.

use super::*;
use crate::routes::Router;

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

pub(super) fn issue(key: &str, message: &str) -> ConfigIssue {
    ConfigIssue { key: key.to_string(), message: message.to_string() }
}

/// Collects problems while turning raw values into typed ones.
pub(super) struct V<'a> {
    pub(super) issues: &'a mut Vec<ConfigIssue>,
}

impl V<'_> {
    pub(super) fn err(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue { key: key.to_string(), message: message.into() });
    }

    /// One of a fixed set of names: `raw`'s value, `default` when it is absent. Another name is
    /// reported under `key` with the names expected, and `default` stands.
    pub(super) fn choice<T: Copy>(&mut self, key: &str, raw: Option<&str>, default: T, names: &[(&str, T)]) -> T {
        let Some(text) = raw else { return default };
        if let Some((_, value)) = names.iter().find(|(n, _)| *n == text) {
            return *value;
        }
        let quoted: Vec<String> = names.iter().map(|(n, _)| format!("{n:?}")).collect();
        let expected = match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.err(key, format!("{text:?}: expected {expected}"));
        default
    }

    pub(super) fn duration(&mut self, key: &str, raw: Option<&str>, default: &str) -> Duration {
        let text = raw.unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.err(key, format!("invalid duration {text:?} ({e}); use e.g. \"30s\", \"15m\", \"30d\""));
                humantime::parse_duration(default).unwrap_or_default()
            }
        }
    }

    pub(super) fn positive(&mut self, key: &str, raw: Option<usize>, default: usize) -> usize {
        let v = raw.unwrap_or(default);
        if v == 0 {
            self.err(key, "must be greater than 0");
            return default;
        }
        v
    }

    pub(super) fn pointer(&mut self, key: &str, raw: Option<String>) -> Option<String> {
        let p = raw.filter(|p| !p.is_empty())?;
        if !p.starts_with('/') {
            self.err(key, format!("{p:?} is not a JSON pointer (must start with '/')"));
        }
        Some(p)
    }

    pub(super) fn rules(&mut self, key: &str, class: RouteClass, raw: Option<Vec<String>>, out: &mut Vec<RouteRule>) {
        for (i, text) in raw.unwrap_or_default().iter().enumerate() {
            match RouteRule::parse(class, text) {
                Ok(r) => out.push(r),
                Err(e) => self.err(&format!("{key}[{i}]"), e),
            }
        }
    }

    pub(super) fn one_rule(&mut self, key: &str, class: RouteClass, raw: Option<String>) -> Option<RouteRule> {
        let text = raw.filter(|s| !s.is_empty())?;
        match RouteRule::parse(class, &text) {
            Ok(r) => Some(r),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    pub(super) fn secret_source(
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

/// Turns the raw document into typed sections, each section's checks in its own file.
pub(super) fn validate(mut raw: RawConfig, issues: &mut Vec<ConfigIssue>) -> Config {
    let mut v = V { issues };
    super::preset::apply_preset(&mut raw, &mut v);
    let server = super::server::server(&mut v, raw.server);
    let upstream = super::server::upstream(&mut v, raw.upstream);
    let store = super::server::store(&mut v, raw.store);
    let sessions = super::sessions::sessions(&mut v, raw.sessions);
    let jwt = super::sessions::jwt(&mut v, raw.jwt);
    let rules = super::backend::routes(&mut v, raw.routes);
    let extract = super::backend::extract(&mut v, raw.extract);
    let graphql = super::backend::graphql(&mut v, raw.graphql, &extract);
    let backend = super::backend::backend(&mut v, raw.backend);
    let user_api = super::backend::user_api(&mut v, raw.user_api, &rules);
    let admin = super::admin::admin(&mut v, raw.admin, server.listen);
    let (geo, risk, geofence, roles) = super::risk::validate_risk(&mut v, raw.geo, raw.risk, raw.geofence, raw.roles);
    let alerts = super::alerts::validate_alerts(&mut v, raw.alerts, risk.alert_at);
    let policies = super::policies::policies(&mut v, raw.policies, roles.is_configured());
    let cluster = raw.cluster.and_then(|c| super::cluster::validate_cluster(&mut v, c));
    let log = super::server::log(&mut v, raw.log);
    Config {
        server,
        upstream,
        store,
        sessions,
        jwt,
        routes: Router::new(rules),
        graphql,
        extract,
        backend,
        user_api,
        admin,
        geo,
        risk,
        geofence,
        roles,
        alerts,
        policies,
        cluster,
        log,
        source: None,
        overrides: Vec::new(),
    }
}
