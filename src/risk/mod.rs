//! Risk assessment of logins: a 0–100 threat score from weighted signals (anonymizers,
//! datacenter addresses, new country, new device, impossible travel, recent failed logins from
//! the address), declarative CEL rules, alert / deny thresholds, and country fencing globally
//! and per role.
//!
//! The per-user history (countries, devices, last location) and the per-address failure counts
//! live in memory: the history is rebuilt from stored sessions at startup, failures are kept
//! for an hour.

pub mod fence;
pub mod rules;
pub mod travel;

use crate::config::{ConfigIssue, CustomAlert, GeofenceConfig, RiskConfig, RuleAction};
use crate::device::Device;
use crate::geo::GeoInfo;
use rules::Condition;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const HOUR_MS: i64 = 3_600_000;

/// One contribution to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub name: String,
    pub points: i64,
}

/// The outcome of assessing one login.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// 0–100; higher is riskier.
    pub score: u32,
    pub signals: Vec<Signal>,
    pub tags: Vec<String>,
    /// Why the login must be refused (a rule name, or `score >= deny_at`).
    pub deny: Option<String>,
    pub alert: bool,
    pub travel_kmh: Option<f64>,
    pub new_country: bool,
    pub new_device: bool,
    pub impossible_travel: bool,
    pub failed_logins: u32,
}

/// What is known about a login being assessed.
pub struct LoginFacts<'a> {
    pub user_id: &'a str,
    pub ip: IpAddr,
    pub geo: &'a GeoInfo,
    pub device: &'a Device,
    pub user_agent: &'a str,
    pub role: Option<&'a str>,
    pub now_ms: i64,
}

#[derive(Debug, Default)]
struct UserHistory {
    countries: HashSet<String>,
    devices: HashSet<String>,
    logins: u32,
    /// (lat, lon, time ms) of the most recent located login.
    last: Option<(f64, f64, i64)>,
}

/// A device as "browser family on OS family", without versions (an upgrade is not a new device).
fn device_key(browser: &str, os: &str) -> String {
    // The words before the first that starts with a digit (the version).
    fn strip(key: &mut String, s: &str) {
        for (n, w) in s.split(' ').take_while(|w| !w.chars().next().is_some_and(|c| c.is_ascii_digit())).enumerate() {
            if n > 0 {
                key.push(' ');
            }
            key.push_str(w);
        }
    }
    let mut key = String::with_capacity(browser.len() + os.len() + 4);
    strip(&mut key, browser);
    key.push_str(" on ");
    strip(&mut key, os);
    key
}

pub struct Risk {
    /// Scoring rules and fences; swapped whole by a configuration reload.
    conf: arc_swap::ArcSwap<RiskConf>,
    history: Mutex<HashMap<String, UserHistory>>,
    failures: Mutex<HashMap<IpAddr, VecDeque<i64>>>,
}

struct RiskConf {
    cfg: RiskConfig,
    fence: GeofenceConfig,
    /// The compiled condition of each of `cfg.rules`.
    rules: Vec<Condition>,
    custom: Vec<(CustomAlert, Condition)>,
}

impl RiskConf {
    /// Compiles every condition; any that does not compile refuses the whole configuration (a
    /// rule that never held would be a deny rule that denies nothing).
    fn new(cfg: RiskConfig, fence: GeofenceConfig, custom: Vec<CustomAlert>) -> Result<RiskConf, Vec<ConfigIssue>> {
        let (rules, mut issues) = rules::compile_all(cfg.rules.iter().map(|r| (r.key.as_str(), r.when.as_str())));
        let (compiled, more) = rules::compile_all(custom.iter().map(|c| (c.key.as_str(), c.when.as_str())));
        issues.extend(more);
        if !issues.is_empty() {
            return Err(issues);
        }
        let rules = rules.into_iter().flatten().collect();
        let custom = custom.into_iter().zip(compiled.into_iter().flatten()).collect();
        Ok(RiskConf { cfg, fence, rules, custom })
    }
}

impl Risk {
    /// `custom`: the custom alerts (`alerts.custom`), whose conditions are evaluated here too.
    /// `Err`: the conditions that do not compile, each under its key.
    pub fn new(cfg: RiskConfig, fence: GeofenceConfig, custom: Vec<CustomAlert>) -> Result<Risk, Vec<ConfigIssue>> {
        Ok(Risk {
            conf: arc_swap::ArcSwap::from_pointee(RiskConf::new(cfg, fence, custom)?),
            history: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// New rules, fences and custom alerts for the logins that follow; login history and
    /// failure counts stay. On `Err` nothing changes.
    pub fn reconfigure(
        &self,
        cfg: RiskConfig,
        fence: GeofenceConfig,
        custom: Vec<CustomAlert>,
    ) -> Result<(), Vec<ConfigIssue>> {
        self.conf.store(Arc::new(RiskConf::new(cfg, fence, custom)?));
        Ok(())
    }

    /// The custom alerts whose condition holds for a login and its final assessment.
    pub fn custom_alerts(&self, f: &LoginFacts<'_>, a: &Assessment) -> Vec<CustomAlert> {
        let conf = self.conf.load();
        conf.custom
            .iter()
            .filter(|(_, c)| c.holds(f, a, i64::from(a.score)) == Ok(true))
            .map(|(alert, _)| alert.clone())
            .collect()
    }

    pub fn enabled(&self) -> bool {
        self.conf.load().cfg.enabled
    }

    /// Adds a stored session to the per-user history (at startup).
    /// Remembers an accepted login for the user's future assessments.
    pub fn record_login(&self, user_id: &str, geo: Option<&GeoInfo>, device: &Device, at_ms: i64) {
        self.record_seen(user_id, geo, &device.browser_name, &device.os_name, at_ms)
    }

    /// [`Risk::record_login`] from the device's browser and OS names (a cold start reads them
    /// borrowed from the store).
    pub fn record_seen(&self, user_id: &str, geo: Option<&GeoInfo>, browser: &str, os: &str, at_ms: i64) {
        let key = device_key(browser, os);
        let mut h = crate::sync::lock(&self.history);
        let u = match h.get_mut(user_id) {
            Some(u) => u,
            None => h.entry(user_id.to_string()).or_default(),
        };
        u.logins += 1;
        if !u.devices.contains(&key) {
            u.devices.insert(key);
        }
        if let Some(g) = geo {
            if let Some(cc) = &g.country_code {
                u.countries.insert(cc.clone());
            }
            if let (Some(lat), Some(lon)) = (g.lat, g.lon) {
                if u.last.is_none_or(|(_, _, t)| t <= at_ms) {
                    u.last = Some((lat, lon, at_ms));
                }
            }
        }
    }

    /// Counts a failed login from `ip`.
    pub fn record_failure(&self, ip: IpAddr, at_ms: i64) {
        let mut f = crate::sync::lock(&self.failures);
        if f.len() > 100_000 {
            f.retain(|_, q| q.back().is_some_and(|t| at_ms - t < HOUR_MS));
        }
        let q = f.entry(ip).or_default();
        q.push_back(at_ms);
        while q.front().is_some_and(|t| at_ms - t >= HOUR_MS) || q.len() > 1000 {
            q.pop_front();
        }
    }

    fn failures_last_hour(&self, ip: IpAddr, now: i64) -> u32 {
        crate::sync::lock(&self.failures)
            .get(&ip)
            .map_or(0, |q| q.iter().filter(|t| now - **t < HOUR_MS).count() as u32)
    }

    /// Country fencing: `Err(why)` when the login must be refused.
    pub fn check_fence(&self, geo: &GeoInfo, role: Option<&str>, ip: IpAddr) -> Result<(), String> {
        fence::check(&self.conf.load().fence, geo, role, ip)
    }

    /// Scores a login (signals, then rules in order) and decides alert / deny.
    pub fn assess(&self, f: &LoginFacts<'_>) -> Assessment {
        let mut a = Assessment::default();
        let conf = self.conf.load();
        let cfg = &conf.cfg;
        if !cfg.enabled {
            return a;
        }
        let w = &cfg.weights;
        let g = f.geo;
        let mut add = |name: &str, points: u32, on: bool| {
            if on && points > 0 {
                a.signals.push(Signal { name: name.into(), points: i64::from(points) });
            }
        };
        add("vpn", w.vpn, g.is_vpn);
        add("proxy", w.proxy, g.is_proxy);
        add("tor", w.tor, g.is_tor);
        add("residential_proxy", w.residential_proxy, g.is_residential_proxy);
        add("datacenter", w.datacenter, g.is_datacenter);
        let (new_country, new_device, travel) = {
            let h = crate::sync::lock(&self.history);
            let u = h.get(f.user_id);
            let known = u.is_some_and(|u| u.logins > 0);
            let new_country = known
                && g.country_code
                    .as_ref()
                    .is_some_and(|cc| u.is_some_and(|u| !u.countries.is_empty() && !u.countries.contains(cc)));
            let new_device =
                known && u.is_some_and(|u| !u.devices.contains(&device_key(&f.device.browser_name, &f.device.os_name)));
            let travel = match (u.and_then(|u| u.last), g.lat, g.lon) {
                (Some((lat0, lon0, t0)), Some(lat1), Some(lon1)) => {
                    travel::speed_kmh((lat0, lon0), t0, (lat1, lon1), f.now_ms)
                }
                _ => None,
            };
            (new_country, new_device, travel)
        };
        a.travel_kmh = travel;
        let impossible = travel.is_some_and(|k| k > cfg.impossible_travel_kmh);
        add("new_country", w.new_country, new_country);
        add("new_device", w.new_device, new_device);
        add("impossible_travel", w.impossible_travel, impossible);
        let failed = self.failures_last_hour(f.ip, f.now_ms);
        add("failed_logins", (failed.saturating_mul(w.failed_login)).min(w.failed_logins_max), failed > 0);
        let mut score: i64 = a.signals.iter().map(|s| s.points).sum();
        score = score.clamp(0, 100);

        a.new_country = new_country;
        a.new_device = new_device;
        a.impossible_travel = impossible;
        a.failed_logins = failed;
        for (rule, condition) in cfg.rules.iter().zip(&conf.rules) {
            let holds = match condition.holds(f, &a, score) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(rule = %rule.name, error = %e, "risk rule failed; ignored");
                    false
                }
            };
            if !holds {
                continue;
            }
            match &rule.action {
                RuleAction::Add(n) => {
                    a.signals.push(Signal { name: format!("rule:{}", rule.name), points: *n });
                    score = (score + n).clamp(0, 100);
                }
                RuleAction::Deny => {
                    a.deny.get_or_insert_with(|| format!("rule:{}", rule.name));
                }
                RuleAction::Tag(t) => {
                    if !a.tags.contains(t) {
                        a.tags.push(t.clone());
                    }
                }
            }
        }
        a.score = score as u32;
        if cfg.deny_at.is_some_and(|d| a.score >= d) {
            a.deny.get_or_insert_with(|| "score".to_string());
        }
        a.alert = a.score >= cfg.alert_at;
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RiskRule, RiskWeights};

    fn cfg(rules: &[(&str, RuleAction)]) -> RiskConfig {
        RiskConfig {
            enabled: true,
            alert_at: 50,
            deny_at: Some(90),
            impossible_travel_kmh: 900.0,
            weights: RiskWeights {
                vpn: 25,
                proxy: 25,
                tor: 40,
                residential_proxy: 15,
                datacenter: 15,
                new_country: 20,
                new_device: 10,
                impossible_travel: 40,
                failed_login: 5,
                failed_logins_max: 25,
            },
            rules: rules
                .iter()
                .map(|(w, a)| RiskRule {
                    name: w.to_string(),
                    key: format!("risk.rules[{w}]"),
                    when: w.to_string(),
                    action: a.clone(),
                })
                .collect(),
        }
    }

    fn device() -> Device {
        Device { device_type: "desktop".into(), browser_name: "Chrome 143".into(), os_name: "macOS 10.15.7".into() }
    }

    fn london() -> GeoInfo {
        GeoInfo {
            country_code: Some("GB".into()),
            lat: Some(51.5142),
            lon: Some(-0.0931),
            timezone: Some("Europe/London".into()),
            ..Default::default()
        }
    }

    fn milton() -> GeoInfo {
        GeoInfo {
            country_code: Some("US".into()),
            lat: Some(47.2513),
            lon: Some(-122.3149),
            timezone: Some("America/Los_Angeles".into()),
            ..Default::default()
        }
    }

    fn facts<'a>(geo: &'a GeoInfo, dev: &'a Device, now: i64) -> LoginFacts<'a> {
        LoginFacts {
            user_id: "1",
            ip: "81.2.69.142".parse().expect("ip"),
            geo,
            device: dev,
            user_agent: "ua",
            role: None,
            now_ms: now,
        }
    }

    #[test]
    fn every_signal_and_the_total() {
        let risk = Risk::new(cfg(&[]), GeofenceConfig::default(), vec![]).expect("compiles");
        let d = device();
        let t0 = 1_700_000_000_000;
        assert_eq!(risk.assess(&facts(&london(), &d, t0)).score, 0, "a first login has no history to differ from");
        risk.record_login("1", Some(&london()), &d, t0);
        let a = risk.assess(&facts(&london(), &d, t0 + HOUR_MS));
        assert_eq!((a.score, a.signals.len()), (0, 0));
        // Ten minutes later from Milton, on another browser, through a VPN, after 2 failures.
        let mut g = milton();
        g.is_vpn = true;
        let other =
            Device { device_type: "desktop".into(), browser_name: "Firefox 130".into(), os_name: "Windows 10".into() };
        risk.record_failure("81.2.69.142".parse().expect("ip"), t0 + 5 * 60_000);
        risk.record_failure("81.2.69.142".parse().expect("ip"), t0 + 6 * 60_000);
        let a = risk.assess(&facts(&g, &other, t0 + 10 * 60_000));
        let names: Vec<&str> = a.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["vpn", "new_country", "new_device", "impossible_travel", "failed_logins"]);
        assert_eq!(a.score, 100, "25+20+10+40+10 capped at 100");
        assert!(a.alert);
        assert_eq!(a.deny.as_deref(), Some("score"));
        assert!(a.travel_kmh.is_some_and(|k| k > 40_000.0));
        // A browser upgrade is not a new device.
        let upgraded = Device { browser_name: "Chrome 144".into(), ..d.clone() };
        assert!(risk.assess(&facts(&london(), &upgraded, t0 + 2 * HOUR_MS)).signals.is_empty());
    }

    #[test]
    fn rules_add_deny_and_tag_in_order() {
        let risk = Risk::new(
            cfg(&[
                ("hour_local < 6 || hour_local >= 22", RuleAction::Add(25)),
                ("score > 70 && is_vpn", RuleAction::Deny),
                ("country in ['GB', 'IE']", RuleAction::Tag("uk-ie".into())),
                ("'uk-ie' in tags && is_vpn", RuleAction::Add(50)),
            ]),
            GeofenceConfig::default(),
            vec![],
        )
        .expect("compiles");
        let d = device();
        let mut g = london();
        g.is_vpn = true;
        // 2023-11-14 22:13 UTC = 22:13 in London (GMT): night.
        let night = 1_700_000_000_000;
        let a = risk.assess(&facts(&g, &d, night));
        assert_eq!(
            a.signals.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["vpn", "rule:hour_local < 6 || hour_local >= 22", "rule:'uk-ie' in tags && is_vpn"]
        );
        assert_eq!(a.score, 100);
        assert_eq!(a.tags, vec!["uk-ie"]);
        assert_eq!(a.deny.as_deref(), Some("score"), "the deny rule saw score 50 (not > 70); the threshold denies");
        // Daytime: 25 (vpn) + 50 (tag rule) = 75, below deny_at; the deny rule ran before the +50.
        let day = night + 12 * HOUR_MS;
        let a = risk.assess(&facts(&g, &d, day));
        assert_eq!((a.score, a.deny.clone()), (75, None));
    }
}
