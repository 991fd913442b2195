//! Declarative conditions over a login, in CEL: the risk rules (`risk.rules`) and the custom
//! alerts (`alerts.custom`). The only module that names `cel`, and the one home of the rule
//! language's vocabulary: [`check_config`] compiles every condition when the configuration is
//! loaded (unknown variables and syntax errors name their key), [`Condition`] evaluates them.

use super::{Assessment, LoginFacts};
use crate::config::{Config, ConfigIssue};
use std::sync::Arc;

/// The variables a condition may use (documented in the README).
pub const VARIABLES: &[&str] = &[
    "country",
    "city",
    "asn",
    "isp",
    "is_vpn",
    "is_proxy",
    "is_tor",
    "is_datacenter",
    "is_residential_proxy",
    "is_anonymous",
    "is_local",
    "hour_utc",
    "hour_local",
    "weekday_utc",
    "user_agent",
    "device_type",
    "browser",
    "os",
    "role",
    "ip",
    "user_id",
    "score",
    "new_country",
    "new_device",
    "impossible_travel",
    "travel_kmh",
    "failed_logins_last_hour",
    "tags",
];

/// A compiled condition.
#[derive(Clone)]
pub struct Condition(Arc<cel::Program>);

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Condition")
    }
}

impl Condition {
    /// Compiles `when`; a syntax error or a variable outside [`VARIABLES`] is the `Err`.
    pub fn compile(when: &str) -> Result<Condition, String> {
        let program =
            cel::Program::compile(when).map_err(|e| format!("syntax error in {when:?}: {}", e.to_string().trim()))?;
        let unknown: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .filter(|n| !VARIABLES.contains(n))
            .map(str::to_string)
            .collect();
        if !unknown.is_empty() {
            return Err(format!("unknown variable(s) {}; known: {}", unknown.join(", "), VARIABLES.join(", ")));
        }
        Ok(Condition(Arc::new(program)))
    }

    /// Whether the condition holds for a login with `score` so far; `Err` when it does not
    /// evaluate to a boolean.
    pub fn holds(&self, f: &LoginFacts<'_>, a: &Assessment, score: i64) -> Result<bool, String> {
        match self.0.execute(&context(f, a, score)) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("did not evaluate to a boolean ({other:?})")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Compiles each `(key, when)`; the conditions that compile, and an issue for each that does not.
pub fn compile_all<'a>(
    conditions: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Vec<Option<Condition>>, Vec<ConfigIssue>) {
    let mut issues = Vec::new();
    let compiled = conditions
        .into_iter()
        .map(|(key, when)| {
            Condition::compile(when).map_err(|message| issues.push(ConfigIssue { key: key.to_string(), message })).ok()
        })
        .collect();
    (compiled, issues)
}

/// Configuration check: every risk rule and custom alert condition compiles.
pub fn check_config(cfg: &Config) -> Vec<ConfigIssue> {
    let rules = cfg.risk.rules.iter().map(|r| (r.key.as_str(), r.when.as_str()));
    let custom = cfg.alerts.custom.iter().map(|c| (c.key.as_str(), c.when.as_str()));
    compile_all(rules.chain(custom)).1
}

/// The variables conditions see: exactly [`VARIABLES`] (a test holds them together).
fn context(f: &LoginFacts<'_>, a: &Assessment, score: i64) -> cel::Context<'static, 'static> {
    let g = f.geo;
    let (hour_utc, weekday_utc, hour_local) = clock(f.now_ms, g.timezone.as_deref());
    let mut ctx = cel::Context::default();
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    ctx.add_variable_from_value("country", s(&g.country_code));
    ctx.add_variable_from_value("city", s(&g.city));
    ctx.add_variable_from_value("asn", i64::from(g.asn.unwrap_or(0)));
    ctx.add_variable_from_value("isp", s(&g.isp));
    ctx.add_variable_from_value("is_vpn", g.is_vpn);
    ctx.add_variable_from_value("is_proxy", g.is_proxy);
    ctx.add_variable_from_value("is_tor", g.is_tor);
    ctx.add_variable_from_value("is_datacenter", g.is_datacenter);
    ctx.add_variable_from_value("is_residential_proxy", g.is_residential_proxy);
    ctx.add_variable_from_value("is_anonymous", g.is_anonymous());
    ctx.add_variable_from_value("is_local", g.local);
    ctx.add_variable_from_value("hour_utc", hour_utc);
    ctx.add_variable_from_value("hour_local", hour_local);
    ctx.add_variable_from_value("weekday_utc", weekday_utc);
    ctx.add_variable_from_value("user_agent", f.user_agent.to_string());
    ctx.add_variable_from_value("device_type", f.device.device_type.clone());
    ctx.add_variable_from_value("browser", f.device.browser_name.clone());
    ctx.add_variable_from_value("os", f.device.os_name.clone());
    ctx.add_variable_from_value("role", f.role.unwrap_or("").to_string());
    ctx.add_variable_from_value("ip", f.ip.to_string());
    ctx.add_variable_from_value("user_id", f.user_id.to_string());
    ctx.add_variable_from_value("score", score);
    ctx.add_variable_from_value("new_country", a.new_country);
    ctx.add_variable_from_value("new_device", a.new_device);
    ctx.add_variable_from_value("impossible_travel", a.impossible_travel);
    ctx.add_variable_from_value("travel_kmh", a.travel_kmh.unwrap_or(0.0));
    ctx.add_variable_from_value("failed_logins_last_hour", i64::from(a.failed_logins));
    ctx.add_variable_from_value("tags", a.tags.iter().map(|t| cel::Value::from(t.clone())).collect::<Vec<_>>());
    ctx
}

/// (hour UTC, weekday UTC with Monday = 1, hour in the location's timezone or UTC).
fn clock(now_ms: i64, tz: Option<&str>) -> (i64, i64, i64) {
    let Ok(ts) = jiff::Timestamp::from_millisecond(now_ms) else { return (0, 0, 0) };
    let utc = ts.to_zoned(jiff::tz::TimeZone::UTC);
    let local = tz.and_then(|t| ts.in_tz(t).ok()).map(|z| z.hour()).unwrap_or(utc.hour());
    (i64::from(utc.hour()), i64::from(utc.weekday().to_monday_one_offset()), i64::from(local))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::geo::GeoInfo;

    #[test]
    fn the_context_defines_exactly_the_documented_variables() {
        let geo = GeoInfo::default();
        let device = Device { device_type: "desktop".into(), browser_name: "Firefox".into(), os_name: "Linux".into() };
        let f = LoginFacts {
            user_id: "1",
            ip: "127.0.0.1".parse().expect("ip"),
            geo: &geo,
            device: &device,
            user_agent: "",
            role: None,
            now_ms: 0,
        };
        let a = Assessment::default();
        for v in VARIABLES {
            // A variable the context lacks fails to evaluate; one it has compares fine.
            let c = Condition::compile(&format!("{v} == {v}")).expect("compiles");
            assert_eq!(c.holds(&f, &a, 0), Ok(true), "{v} is documented but not in the context");
        }
        assert!(Condition::compile("scoer > 1").is_err_and(|e| e.contains("unknown variable(s) scoer")));
        assert!(Condition::compile("score >").is_err_and(|e| e.starts_with("syntax error")));
    }

    #[test]
    fn local_time_uses_the_locations_timezone() {
        let (utc, _, local) = clock(1_700_000_000_000, Some("Asia/Tokyo"));
        assert_eq!((utc, local), (22, 7));
        assert_eq!(clock(1_700_000_000_000, Some("Not/AZone")).2, 22, "unknown zone: UTC");
    }
}
