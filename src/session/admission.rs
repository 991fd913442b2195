//! Login admission: a login the backend accepted → [`Admission`], with no HTTP in sight. The
//! gateway may still refuse it (a blocked user, a fenced country, the session limit under
//! `on_exceed = "refuse"`, a risk rule); an admitted
//! login carries what the new session records (geo, device, role, assessment) and the alerts it
//! raises once the session exists. The proxy gathers nothing and decides nothing: it asks
//! [`Admitter::admit`] and acts on the answer.

use crate::alerts::Trigger;
use crate::audit::Kind;
use crate::backend::roles::Roles;
use crate::config::{OnExceed, PoliciesConfig, Policy};
use crate::device::{self, Device};
use crate::error::GatewayError;
use crate::geo::{Geo, GeoInfo};
use crate::metrics::LoginResult;
use crate::risk::{Assessment, LoginFacts, Risk};
use serde_json::Value;
use std::net::IpAddr;

/// A login as the backend answered it.
pub struct Login<'a> {
    pub user_id: &'a str,
    pub ip: IpAddr,
    pub user_agent: &'a str,
    /// The backend's login answer (a role may be read from it).
    pub response: &'a Value,
    pub now_ms: i64,
}

/// Why the gateway refuses a login the backend accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Blocked,
    GeoBlocked,
    RiskDenied,
    SessionLimit,
}

impl Refusal {
    /// The audit `reason` (the `logins_total{result}` label's name for it).
    pub fn as_str(self) -> &'static str {
        self.result().as_str()
    }

    /// The `logins_total{result}` label.
    pub fn result(self) -> LoginResult {
        match self {
            Refusal::Blocked => LoginResult::Blocked,
            Refusal::GeoBlocked => LoginResult::GeoBlocked,
            Refusal::RiskDenied => LoginResult::RiskDenied,
            Refusal::SessionLimit => LoginResult::SessionLimit,
        }
    }

    pub fn error(self) -> GatewayError {
        match self {
            Refusal::Blocked => GatewayError::UserBlocked,
            Refusal::GeoBlocked => GatewayError::GeoBlocked,
            Refusal::RiskDenied => GatewayError::RiskDenied,
            Refusal::SessionLimit => GatewayError::SessionLimit,
        }
    }

    /// The audit event of the refusal.
    pub fn kind(self) -> Kind {
        match self {
            Refusal::Blocked => Kind::LoginBlocked,
            Refusal::GeoBlocked | Refusal::RiskDenied | Refusal::SessionLimit => Kind::LoginDenied,
        }
    }
}

/// A refused login.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub why: String,
    /// Where the login came from, when looked up (for the alert).
    pub geo: Option<GeoInfo>,
    /// Audit details (an object, or `Null`).
    pub details: Value,
    pub score: Option<u32>,
}

/// An admitted login: what its session records, and what follows it.
#[derive(Debug)]
pub struct Admitted {
    pub geo: Option<GeoInfo>,
    pub device: Device,
    pub role: Option<String>,
    pub risk: Option<Assessment>,
    /// The assessment crossed `risk.alert_at` (audited as `risk_alert`), with its details.
    pub risky: Option<Value>,
    /// Alerts to raise once the session exists: a trigger and, for custom alerts, its channels.
    pub alerts: Vec<(Trigger, Option<Vec<String>>)>,
    /// The session's policy (its role's): the caller trims the user's sessions to its limit
    /// once the new one exists.
    pub policy: Policy,
}

#[derive(Debug)]
// One per login, moved once and never stored: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Admission {
    Admit(Admitted),
    Refuse(Refused),
}

/// What admission reads.
pub struct Admitter<'a> {
    pub sessions: &'a super::Sessions,
    pub geo: &'a Geo,
    pub roles: &'a Roles,
    pub risk: &'a Risk,
    /// `alerts.score_threshold`.
    pub score_threshold: u32,
    pub policies: &'a PoliciesConfig,
}

/// Everything a decision needs, gathered.
pub struct Facts<'a> {
    pub login: &'a Login<'a>,
    pub blocked: bool,
    pub geo: Option<GeoInfo>,
    pub role: Option<String>,
    /// The user's sessions that have not ended.
    pub live_sessions: usize,
}

impl Admitter<'_> {
    /// Gathers the facts of a login (block list, geo lookup, the role — the only step that
    /// may ask the backend, skipped for a blocked user) and decides.
    pub async fn admit(&self, login: &Login<'_>) -> Admission {
        let blocked = self.sessions.is_blocked(login.user_id);
        let geo = self.geo.is_configured().then(|| self.geo.lookup(login.ip));
        let role = match blocked || !self.roles.is_configured() {
            true => None,
            false => self.roles.resolve(login.user_id, login.response).await,
        };
        let live_sessions = self.sessions.live_sessions_of(login.user_id).len();
        self.decide(Facts { login, blocked, geo, role, live_sessions })
    }

    /// The decision itself: memory only (the risk history is read, not written).
    pub fn decide(&self, f: Facts<'_>) -> Admission {
        let login = f.login;
        let refuse = |refusal, why: String, details: Value, score| {
            Admission::Refuse(Refused { refusal, why, geo: f.geo.clone(), details, score })
        };
        if f.blocked {
            return refuse(Refusal::Blocked, "user is blocked".into(), Value::Null, None);
        }
        let device = device::parse(login.user_agent);
        let located = f.geo.clone().unwrap_or_default();
        if let Err(why) = self.risk.check_fence(&located, f.role.as_deref(), login.ip) {
            let details = serde_json::json!({"country": located.country_code, "role": f.role});
            return refuse(Refusal::GeoBlocked, why, details, None);
        }
        let policy = *self.policies.for_role(f.role.as_deref());
        if let (Some(max), OnExceed::Refuse) = (policy.max_sessions_per_user, policy.on_exceed) {
            if f.live_sessions >= max as usize {
                let why = format!("{} active sessions; the limit is {max}", f.live_sessions);
                let details = serde_json::json!({"sessions": f.live_sessions, "limit": max, "role": f.role});
                return refuse(Refusal::SessionLimit, why, details, None);
            }
        }
        let facts = LoginFacts {
            user_id: login.user_id,
            ip: login.ip,
            geo: &located,
            device: &device,
            user_agent: login.user_agent,
            role: f.role.as_deref(),
            now_ms: login.now_ms,
        };
        let assessment = self.risk.enabled().then(|| self.risk.assess(&facts));
        let mut risky = None;
        let mut alerts = Vec::new();
        if let Some(a) = &assessment {
            let details = serde_json::json!({"score": a.score, "signals": a.signals, "tags": a.tags, "country": located.country_code});
            if let Some(rule) = &a.deny {
                return refuse(Refusal::RiskDenied, format!("denied by {rule}"), details, Some(a.score));
            }
            if a.alert {
                risky = Some(details);
            }
            if a.new_country {
                alerts.push((Trigger::NewCountry, None));
            }
            if a.score >= self.score_threshold {
                alerts.push((Trigger::HighScore, None));
            }
            for c in self.risk.custom_alerts(&facts, a) {
                alerts.push((Trigger::Custom(c.name), Some(c.channels)));
            }
        }
        if located.is_anonymous() || located.is_datacenter {
            alerts.push((Trigger::Anonymizer, None));
        }
        Admission::Admit(Admitted { geo: f.geo, device, role: f.role, risk: assessment, risky, alerts, policy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, CountryFence, RuleAction};
    use crate::session::testing;

    /// A word for the outcome: the refusal, or the admitted login's alerts.
    fn outcome(a: &Admission) -> String {
        match a {
            Admission::Refuse(r) => format!("refused {}", r.refusal.as_str()),
            Admission::Admit(a) => {
                let alerts: Vec<String> = a.alerts.iter().map(|(t, _)| t.name().into_owned()).collect();
                format!("admitted [{}]{}", alerts.join(","), if a.risky.is_some() { " risky" } else { "" })
            }
        }
    }

    fn geo(cc: &str, vpn: bool) -> Option<GeoInfo> {
        Some(GeoInfo { country_code: Some(cc.into()), is_vpn: vpn, ..Default::default() })
    }

    #[tokio::test]
    async fn admissions_by_user_place_and_risk() {
        let edit = |c: &mut Config| {
            c.geofence.global = CountryFence { allowed: vec![], blocked: vec!["KP".into()] };
            c.geofence.roles.insert("admin".into(), CountryFence { allowed: vec!["DE".into()], blocked: vec![] });
            c.risk.alert_at = 20;
            c.risk.deny_at = Some(90);
            c.risk.rules.push(crate::config::RiskRule {
                name: "no-tor".into(),
                key: "risk.rules[0].when".into(),
                when: "is_tor".into(),
                action: RuleAction::Deny,
            });
            c.alerts.custom.push(crate::config::CustomAlert {
                name: "night-shift".into(),
                key: "alerts.custom[0].when".into(),
                when: "role == 'night'".into(),
                channels: vec!["ops".into()],
            });
        };
        let (sessions, _dir) = testing::sessions(edit).await;
        let cfg = testing::config(edit);
        let risk = Risk::new(cfg.risk.clone(), cfg.geofence.clone(), cfg.alerts.custom.clone()).expect("compiles");
        let geo_db = Geo::new(&cfg.geo);
        let upstream = std::sync::Arc::new(crate::backend::Upstream::new(&cfg.upstream).expect("client"));
        let roles = Roles::new(cfg.roles.clone(), None, upstream);
        let mut policies = crate::config::PoliciesConfig::default();
        let limited =
            crate::config::Policy { max_sessions_per_user: Some(2), on_exceed: OnExceed::Refuse, ..Default::default() };
        policies.roles.insert("kiosk".into(), limited);
        let admitter = Admitter {
            sessions: &sessions,
            geo: &geo_db,
            roles: &roles,
            risk: &risk,
            score_threshold: 60,
            policies: &policies,
        };
        let tor = Some(GeoInfo { country_code: Some("NL".into()), is_tor: true, ..Default::default() });
        // (case, user, blocked, geo, role, expected) — in order: the risk history grows.
        type Case = (&'static str, &'static str, bool, Option<GeoInfo>, Option<&'static str>, &'static str);
        let cases: Vec<Case> = vec![
            ("blocked user", "u1", true, geo("DE", false), None, "refused blocked"),
            ("blocked beats everything", "u1", true, geo("KP", false), None, "refused blocked"),
            ("globally fenced country", "u1", false, geo("KP", false), None, "refused geo_blocked"),
            ("role fence", "u1", false, geo("FR", false), Some("admin"), "refused geo_blocked"),
            ("role fence allows its country", "u1", false, geo("DE", false), Some("admin"), "admitted []"),
            ("first login: no history, nothing new", "u2", false, geo("DE", false), None, "admitted []"),
            (
                "a new country, through a VPN",
                "u2",
                false,
                geo("FR", true),
                None,
                "admitted [new_country,anonymizer] risky",
            ),
            ("deny rule", "u3", false, tor, None, "refused risk_denied"),
            ("custom alert", "u4", false, geo("DE", false), Some("night"), "admitted [night-shift]"),
            ("a role's session limit, refusing", "u5", false, geo("DE", false), Some("kiosk"), "refused session_limit"),
            ("blocked beats the limit", "u5", true, geo("DE", false), Some("kiosk"), "refused blocked"),
        ];
        for (name, user, blocked, g, role, expected) in cases {
            let body = Value::Null;
            let login = Login {
                user_id: user,
                ip: "203.0.113.9".parse().expect("ip"),
                user_agent: "",
                response: &body,
                now_ms: 1,
            };
            let decided = admitter.decide(Facts {
                login: &login,
                blocked,
                geo: g.clone(),
                role: role.map(str::to_string),
                live_sessions: 5,
            });
            let got = outcome(&decided).replace("custom:night-shift", "night-shift");
            assert_eq!(got, expected, "{name}");
            if let Admission::Admit(_) = decided {
                risk.record_login(user, g.as_ref(), &device::parse(""), 1);
            }
        }
    }

    #[test]
    fn refusals_name_their_answer_audit_and_label() {
        assert_eq!(Refusal::Blocked.error().reason(), "user_blocked");
        assert_eq!((Refusal::GeoBlocked.kind(), Refusal::GeoBlocked.as_str()), (Kind::LoginDenied, "geo_blocked"));
        assert_eq!(Refusal::RiskDenied.error().reason(), "risk_denied");
    }
}
