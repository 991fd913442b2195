//! `[geo]`, `[risk]`, `[geofence]` and `[roles]`: geolocation sources, scoring, fencing and role
//! lookups. The rule conditions are only stored here; `risk::rules` compiles and checks them.

use super::raw::*;
use super::validate::V;
use super::*;

/// Geolocation databases and address lists (all optional).
#[derive(Debug, Clone, Default)]
pub struct GeoConfig {
    pub city_db: Option<PathBuf>,
    /// A separate City database for IPv6 addresses (ip-location-db ships IPv4 and IPv6 apart).
    pub city_db_ipv6: Option<PathBuf>,
    pub asn_db: Option<PathBuf>,
    pub anonymous_db: Option<PathBuf>,
    pub tor_list: Option<PathBuf>,
    pub vpn_list: Option<PathBuf>,
    pub datacenter_list: Option<PathBuf>,
    /// How often files are checked for changes (zero: only on SIGHUP).
    pub reload_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskWeights {
    pub vpn: u32,
    pub proxy: u32,
    pub tor: u32,
    pub residential_proxy: u32,
    pub datacenter: u32,
    pub new_country: u32,
    pub new_device: u32,
    pub impossible_travel: u32,
    pub failed_login: u32,
    pub failed_logins_max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleAction {
    Add(i64),
    Deny,
    Tag(String),
}

/// A custom risk rule: a condition (compiled and checked by `risk::rules`) and what to do
/// when it holds.
#[derive(Debug, Clone)]
pub struct RiskRule {
    pub name: String,
    /// The config key of the condition (`risk.rules[N].when`), for errors.
    pub key: String,
    pub when: String,
    pub action: RuleAction,
}

#[derive(Debug, Clone)]
pub struct RiskConfig {
    pub enabled: bool,
    pub alert_at: u32,
    /// Logins scoring at least this are refused (`None`: never).
    pub deny_at: Option<u32>,
    pub impossible_travel_kmh: f64,
    pub weights: RiskWeights,
    pub rules: Vec<RiskRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountryFence {
    /// Empty: every country allowed (unless blocked).
    pub allowed: Vec<String>,
    pub blocked: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GeofenceConfig {
    pub global: CountryFence,
    pub roles: std::collections::BTreeMap<String, CountryFence>,
    /// Deny logins from public addresses whose country is unknown.
    pub deny_unknown: bool,
    /// Addresses that bypass fencing.
    pub allow_ips: Vec<IpNet>,
}

impl GeofenceConfig {
    pub fn is_active(&self) -> bool {
        self.global != CountryFence::default() || !self.roles.is_empty() || self.deny_unknown
    }
}

/// Where a user's role comes from.
#[derive(Debug, Clone, Default)]
pub struct RolesConfig {
    /// JSON pointer into the login response.
    pub pointer: Option<String>,
    /// One follow-up request to the backend (`GET /api/users/:id?populate=role`).
    pub lookup: Option<String>,
    pub lookup_pointer: String,
    pub token: Option<SecretSource>,
    pub cache_ttl: Duration,
}

impl RolesConfig {
    pub fn is_configured(&self) -> bool {
        self.pointer.is_some() || self.lookup.is_some()
    }
}

/// ISO 3166-1 alpha-2 codes (the 249 assigned ones, from the ISO list via pycountry), plus `XK`
/// (Kosovo), which MaxMind's databases return.
const COUNTRY_CODES: &str = "\
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS \
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE \
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM \
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC \
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA \
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW \
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO \
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW";

pub(super) fn country_list(v: &mut V<'_>, key: &str, raw: Option<Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in raw.unwrap_or_default().into_iter().enumerate() {
        let up = c.trim().to_ascii_uppercase();
        if up.len() == 2 && COUNTRY_CODES.split_ascii_whitespace().any(|k| k == up) {
            out.push(up);
        } else {
            let hint = if up == "UK" { " (the United Kingdom is \"GB\")" } else { "" };
            v.err(&format!("{key}[{i}]"), format!("{c:?} is not an ISO 3166-1 alpha-2 country code{hint}"));
        }
    }
    out
}

/// A country both allowed and blocked in one fence is a contradiction, not a precedence rule.
fn check_fence(v: &mut V<'_>, prefix: &str, fence: &CountryFence) {
    for c in fence.blocked.iter().filter(|c| fence.allowed.contains(c)) {
        v.err(&format!("{prefix}blocked_countries"), format!("{c} is also in {prefix}allowed_countries"));
    }
}

pub(super) fn validate_risk(
    v: &mut V<'_>,
    g: RawGeo,
    r: RawRisk,
    f: RawGeofence,
    ro: RawRoles,
) -> (GeoConfig, RiskConfig, GeofenceConfig, RolesConfig) {
    let path = |p: Option<String>| p.filter(|s| !s.is_empty()).map(PathBuf::from);
    let geo = GeoConfig {
        city_db: path(g.city_db),
        city_db_ipv6: path(g.city_db_ipv6),
        asn_db: path(g.asn_db),
        anonymous_db: path(g.anonymous_db),
        tor_list: path(g.tor_list),
        vpn_list: path(g.vpn_list),
        datacenter_list: path(g.datacenter_list),
        reload_interval: v.duration("geo.reload_interval", g.reload_interval.as_deref(), "60s"),
    };
    let w = r.weights.unwrap_or_default();
    let weights = RiskWeights {
        vpn: w.vpn.unwrap_or(25),
        proxy: w.proxy.unwrap_or(25),
        tor: w.tor.unwrap_or(40),
        residential_proxy: w.residential_proxy.unwrap_or(15),
        datacenter: w.datacenter.unwrap_or(15),
        new_country: w.new_country.unwrap_or(20),
        new_device: w.new_device.unwrap_or(10),
        impossible_travel: w.impossible_travel.unwrap_or(40),
        failed_login: w.failed_login.unwrap_or(5),
        failed_logins_max: w.failed_logins_max.unwrap_or(25),
    };
    let mut rules = Vec::new();
    for (i, rule) in r.rules.unwrap_or_default().into_iter().enumerate() {
        let key = format!("risk.rules[{i}]");
        let name = rule.name.filter(|n| !n.is_empty()).unwrap_or_else(|| format!("rule{}", i + 1));
        let Some(when) = rule.when.filter(|w| !w.trim().is_empty()) else {
            v.err(&format!("{key}.when"), "required: a CEL condition, e.g. \"score > 70 && is_vpn\"");
            continue;
        };
        let action = match (rule.add, rule.action.as_deref(), rule.tag) {
            (Some(n), None, None) => RuleAction::Add(n),
            (None, Some("deny"), None) => RuleAction::Deny,
            (None, None, Some(t)) if !t.is_empty() => RuleAction::Tag(t),
            (None, Some(other), None) => {
                v.err(
                    &format!("{key}.action"),
                    format!("{other:?}: the only action is \"deny\" (use add = N or tag = \"…\")"),
                );
                continue;
            }
            _ => {
                v.err(&key, "set exactly one of add = N, action = \"deny\" or tag = \"…\"");
                continue;
            }
        };
        rules.push(RiskRule { name, key: format!("{key}.when"), when, action });
    }
    let risk = RiskConfig {
        enabled: r.enabled.unwrap_or(true),
        alert_at: r.alert_at.unwrap_or(60),
        deny_at: r.deny_at.filter(|d| *d > 0),
        impossible_travel_kmh: r.impossible_travel_kmh.unwrap_or(900.0),
        weights,
        rules,
    };
    if let Some(deny) = risk.deny_at {
        if risk.alert_at > deny {
            v.err("risk.alert_at", format!("{} is above risk.deny_at ({deny}): logins scoring between the two would be denied without an alert", risk.alert_at));
        }
    }
    if risk.impossible_travel_kmh <= 0.0 {
        v.err("risk.impossible_travel_kmh", "must be greater than 0");
    }
    let mut roles_fence = std::collections::BTreeMap::new();
    for (role, rf) in f.roles.unwrap_or_default() {
        let fence = CountryFence {
            allowed: country_list(v, &format!("geofence.roles.{role}.allowed_countries"), rf.allowed_countries),
            blocked: country_list(v, &format!("geofence.roles.{role}.blocked_countries"), rf.blocked_countries),
        };
        check_fence(v, &format!("geofence.roles.{role}."), &fence);
        roles_fence.insert(role, fence);
    }
    let mut allow_ips = Vec::new();
    for (i, net) in f.allow_ips.unwrap_or_default().iter().enumerate() {
        match net.parse::<IpNet>().or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from)) {
            Ok(n) => allow_ips.push(n),
            Err(_) => v.err(&format!("geofence.allow_ips[{i}]"), format!("{net:?} is not a CIDR or address")),
        }
    }
    let deny_unknown =
        v.choice("geofence.unknown_country", f.unknown_country.as_deref(), false, &[("allow", false), ("deny", true)]);
    let global = CountryFence {
        allowed: country_list(v, "geofence.allowed_countries", f.allowed_countries),
        blocked: country_list(v, "geofence.blocked_countries", f.blocked_countries),
    };
    check_fence(v, "geofence.", &global);
    let geofence = GeofenceConfig { global, roles: roles_fence, deny_unknown, allow_ips };
    let token = v.secret_source("roles.token_env", ro.token_env, "roles.token_file", ro.token_file);
    let lookup = ro.lookup.filter(|s| !s.is_empty());
    if let Some(l) = &lookup {
        match RouteRule::parse(RouteClass::Other, l) {
            Ok(rule) if rule.path().contains(":id") => {}
            Ok(_) => v.err(
                "roles.lookup",
                "the path must contain :id (the user id), e.g. \"GET /api/users/:id?populate=role\"",
            ),
            Err(e) => v.err("roles.lookup", e),
        }
        if token.is_none() {
            v.err("roles.token_env", "required with roles.lookup: a backend API token that may read users");
        }
    }
    let roles = RolesConfig {
        pointer: v.pointer("roles.pointer", ro.pointer),
        lookup,
        lookup_pointer: v.pointer("roles.lookup_pointer", ro.lookup_pointer).unwrap_or_else(|| "/role/name".into()),
        token,
        cache_ttl: v.duration("roles.cache_ttl", ro.cache_ttl.as_deref(), "5m"),
    };
    if !geofence.roles.is_empty() && !roles.is_configured() {
        v.err("geofence.roles", "per-role fencing needs [roles] pointer or lookup to know a user's role");
    }
    if geo.city_db.is_none() && geofence.is_active() {
        v.err("geo.city_db", "geofencing needs a City (or Country) database");
    }
    (geo, risk, geofence, roles)
}
