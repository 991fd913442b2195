//! `[policies]`: what a session may be, beyond what the backend allows — how many a user may
//! hold, how old one may grow, and what a change of place or browser mid-session does. Each key
//! may be set again per role (`[policies.roles.<role>]`); a role's unset keys are the global ones.

use super::raw::*;
use super::validate::V;
use super::*;

/// What a login over `max_sessions_per_user` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExceed {
    /// The new session is created and the user's oldest sessions end (like an admin
    /// termination: revoked at the backend, audited, alertable).
    EvictOldest,
    /// The login is refused (`session_limit`) and the backend session it opened is revoked.
    Refuse,
}

/// What a live session's change of country, network (ASN) or browser family does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Only the last address is kept; no change is looked for.
    Off,
    /// Re-scored, audited and the `session_changed` alert raised; the request goes on.
    Alert,
    /// As `alert`, and the session ends: the request gets 401 `session_changed`.
    Terminate,
}

/// The policy in force for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `None`: no limit.
    pub max_sessions_per_user: Option<u32>,
    pub on_exceed: OnExceed,
    /// `None`: sessions live as long as the backend's tokens (and the idle limit) allow.
    pub max_session_age: Option<Duration>,
    pub on_change: OnChange,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_sessions_per_user: None,
            on_exceed: OnExceed::EvictOldest,
            max_session_age: None,
            on_change: OnChange::Alert,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoliciesConfig {
    pub global: Policy,
    /// Per role, every key resolved (the role's own, else the global one).
    pub roles: std::collections::BTreeMap<String, Policy>,
}

impl PoliciesConfig {
    /// The policy of a session with this role (`None`: no role known).
    pub fn for_role(&self, role: Option<&str>) -> &Policy {
        role.and_then(|r| self.roles.get(r)).unwrap_or(&self.global)
    }

    /// Whether any policy bounds a session's age (the request path skips the role lookup
    /// otherwise).
    pub fn bounds_age(&self) -> bool {
        self.global.max_session_age.is_some() || self.roles.values().any(|p| p.max_session_age.is_some())
    }

    /// Whether the policies differ by role at all.
    pub fn by_role(&self) -> bool {
        self.roles.values().any(|p| *p != self.global)
    }
}

fn policy(v: &mut V<'_>, prefix: &str, raw: RawPolicy, base: &Policy) -> Policy {
    let key = |k: &str| format!("{prefix}{k}");
    let max_sessions_per_user = match raw.max_sessions_per_user {
        Some(0) => {
            v.err(&key("max_sessions_per_user"), "must be at least 1 (leave it out for no limit)");
            base.max_sessions_per_user
        }
        Some(n) => Some(n),
        None => base.max_sessions_per_user,
    };
    let on_exceed = v.choice(
        &key("on_exceed"),
        raw.on_exceed.as_deref(),
        base.on_exceed,
        &[("evict_oldest", OnExceed::EvictOldest), ("refuse", OnExceed::Refuse)],
    );
    let max_session_age = match raw.max_session_age.as_deref() {
        Some(text) => {
            let d = v.duration(&key("max_session_age"), Some(text), "1h");
            if d < Duration::from_secs(1) {
                v.err(&key("max_session_age"), "must be at least 1s (leave it out for no limit)");
            }
            Some(d)
        }
        None => base.max_session_age,
    };
    let on_change = v.choice(
        &key("on_change"),
        raw.on_change.as_deref(),
        base.on_change,
        &[("off", OnChange::Off), ("alert", OnChange::Alert), ("terminate", OnChange::Terminate)],
    );
    Policy { max_sessions_per_user, on_exceed, max_session_age, on_change }
}

/// `[policies]`. Per-role policies need a role source (`[roles]`).
pub(super) fn policies(v: &mut V<'_>, raw: RawPolicies, roles_configured: bool) -> PoliciesConfig {
    let RawPolicies { max_sessions_per_user, on_exceed, max_session_age, on_change, roles } = raw;
    let global = policy(
        v,
        "policies.",
        RawPolicy { max_sessions_per_user, on_exceed, max_session_age, on_change },
        &Policy::default(),
    );
    let roles = roles.unwrap_or_default();
    if !roles.is_empty() && !roles_configured {
        v.err("policies.roles", "per-role policies need [roles] (pointer or lookup) to know a session's role");
    }
    let roles = roles
        .into_iter()
        .map(|(role, raw)| {
            let p = policy(v, &format!("policies.roles.{role}."), raw, &global);
            (role, p)
        })
        .collect();
    PoliciesConfig { global, roles }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml_str(&format!("preset = \"strapi-v5\"\n[upstream]\nurl = \"http://b:1\"\n{text}"), &[])
    }

    #[test]
    fn roles_inherit_the_global_keys_they_do_not_set() {
        let cfg = parse(
            "[roles]\npointer = \"/user/role/type\"\n[policies]\nmax_sessions_per_user = 3\nmax_session_age = \"12h\"\n\
             on_change = \"terminate\"\n[policies.roles.admin]\nmax_sessions_per_user = 1\non_exceed = \"refuse\"\n",
        )
        .expect("valid");
        let p = &cfg.policies;
        assert_eq!(p.global.max_sessions_per_user, Some(3));
        assert_eq!(p.global.on_exceed, OnExceed::EvictOldest);
        let admin = p.for_role(Some("admin"));
        assert_eq!(
            *admin,
            Policy {
                max_sessions_per_user: Some(1),
                on_exceed: OnExceed::Refuse,
                max_session_age: Some(Duration::from_secs(12 * 3600)),
                on_change: OnChange::Terminate,
            }
        );
        assert_eq!(p.for_role(Some("editor")), &p.global, "a role without a table gets the global policy");
        assert_eq!(p.for_role(None), &p.global);
        assert!(p.bounds_age() && p.by_role());
    }

    #[test]
    fn the_default_is_no_limit_and_alerting_on_change() {
        let cfg = parse("").expect("valid");
        assert_eq!(cfg.policies.global, Policy::default());
        assert!(!cfg.policies.bounds_age());
    }

    #[test]
    fn every_bad_key_is_named() {
        let err = parse(
            "[policies]\nmax_sessions_per_user = 0\non_exceed = \"kick\"\nmax_session_age = \"soon\"\non_change = \"panic\"\n\
             [policies.roles.admin]\nmax_session_age = \"0s\"\n",
        )
        .expect_err("invalid");
        let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
        for k in [
            "policies.max_sessions_per_user",
            "policies.on_exceed",
            "policies.max_session_age",
            "policies.on_change",
            "policies.roles",
            "policies.roles.admin.max_session_age",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }
}
