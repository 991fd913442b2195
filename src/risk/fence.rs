//! Country fencing, globally and per role.

use crate::config::{CountryFence, GeofenceConfig};
use crate::geo::GeoInfo;
use std::net::IpAddr;

fn check_one(f: &CountryFence, cc: &str, scope: &str) -> Result<(), String> {
    if f.blocked.iter().any(|c| c == cc) {
        return Err(format!("country {cc} is blocked{scope}"));
    }
    if !f.allowed.is_empty() && !f.allowed.iter().any(|c| c == cc) {
        return Err(format!("country {cc} is not allowed{scope}"));
    }
    Ok(())
}

/// `Err(why)` when a login from `geo` by a user with `role` must be refused. Allow-listed and
/// local addresses are never fenced.
pub fn check(cfg: &GeofenceConfig, geo: &GeoInfo, role: Option<&str>, ip: IpAddr) -> Result<(), String> {
    if geo.local || cfg.allow_ips.iter().any(|n| n.contains(&ip)) || !cfg.is_active() {
        return Ok(());
    }
    let Some(cc) = geo.country_code.as_deref() else {
        return if cfg.deny_unknown { Err("country unknown".into()) } else { Ok(()) };
    };
    check_one(&cfg.global, cc, "")?;
    if let Some((name, f)) = role.and_then(|r| cfg.roles.get_key_value(r)) {
        check_one(f, cc, &format!(" for role {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_role_unknown_and_allow_list() {
        let mut cfg = GeofenceConfig::default();
        cfg.global.blocked = vec!["CN".into()];
        cfg.roles.insert("Editor".into(), CountryFence { allowed: vec!["GB".into(), "SE".into()], blocked: vec![] });
        cfg.allow_ips = vec!["175.16.199.0/24".parse().expect("net")];
        let at = |cc: Option<&str>| GeoInfo { country_code: cc.map(str::to_string), ..Default::default() };
        let ip: IpAddr = "8.8.8.8".parse().expect("ip");
        assert!(check(&cfg, &at(Some("CN")), None, ip).is_err());
        assert!(check(&cfg, &at(Some("CN")), None, "175.16.199.5".parse().expect("ip")).is_ok(), "allow-listed");
        assert!(check(&cfg, &at(Some("US")), None, ip).is_ok());
        assert_eq!(
            check(&cfg, &at(Some("US")), Some("Editor"), ip),
            Err("country US is not allowed for role Editor".into())
        );
        assert!(check(&cfg, &at(Some("SE")), Some("Editor"), ip).is_ok());
        assert!(check(&cfg, &at(Some("US")), Some("Authenticated"), ip).is_ok(), "roles without a fence");
        assert!(check(&cfg, &at(None), None, ip).is_ok());
        cfg.deny_unknown = true;
        assert!(check(&cfg, &at(None), None, ip).is_err());
        assert!(check(&cfg, &GeoInfo { local: true, ..Default::default() }, None, ip).is_ok(), "local addresses");
    }
}
