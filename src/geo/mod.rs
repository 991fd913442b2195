//! Geolocation: MaxMind-format City / ASN / Anonymous-IP databases and plain-text CIDR lists
//! (TOR exits, VPN, datacenter ranges). The only module that touches maxminddb.
//!
//! Lookups are in memory and never fail: an address no database knows is simply unknown, and
//! private / loopback addresses are `local`. Databases and lists are reloaded on SIGHUP and when
//! their file changes: parsed off the async threads, then swapped atomically; a file that fails
//! to parse keeps the previous one in use.

pub mod lists;

use crate::config::GeoConfig;
use arc_swap::ArcSwapOption;
use lists::CidrList;
use maxminddb::{geoip2, Reader};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What is known about an address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeoInfo {
    pub country_code: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub timezone: Option<String>,
    pub asn: Option<u32>,
    pub isp: Option<String>,
    pub is_vpn: bool,
    pub is_proxy: bool,
    pub is_tor: bool,
    pub is_datacenter: bool,
    pub is_residential_proxy: bool,
    /// A private, loopback or link-local address.
    pub local: bool,
}

impl GeoInfo {
    pub fn is_anonymous(&self) -> bool {
        self.is_vpn || self.is_proxy || self.is_tor || self.is_residential_proxy
    }

    /// The flag emoji of the country (regional indicator symbols).
    pub fn flag(&self) -> Option<String> {
        let cc = self.country_code.as_deref()?;
        (cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase()))
            .then(|| cc.bytes().filter_map(|b| char::from_u32(0x1F1E6 + u32::from(b - b'A'))).collect())
    }
}

/// True for addresses that never have a public location.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (v6.segments()[0] & 0xfe00) == 0xfc00
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        },
    }
}

/// One reloadable source: its path, the loaded value and the file's modification time.
struct Source<T> {
    key: &'static str,
    path: Option<PathBuf>,
    value: ArcSwapOption<T>,
    mtime: Mutex<Option<SystemTime>>,
}

impl<T> Source<T> {
    fn new(key: &'static str, path: Option<PathBuf>) -> Self {
        Source { key, path, value: ArcSwapOption::empty(), mtime: Mutex::new(None) }
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

type Db = Reader<Vec<u8>>;

/// The flat record schema of the ip-location-db databases (`geoip/fetch.sh` installs those):
/// `country_code`, `city`, `latitude`, `longitude`, `timezone`.
#[derive(Deserialize)]
struct FlatLocation {
    country_code: Option<String>,
    city: Option<String>,
    // Stored as 32-bit floats; maxminddb decodes f64 only from doubles.
    latitude: Option<f32>,
    longitude: Option<f32>,
    timezone: Option<String>,
}

/// A database's type and build time, for `sessiongate geoip verify`.
pub fn verify_file(path: &Path) -> Result<String, String> {
    let r = open_db(path)?;
    let built = std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.metadata().build_epoch);
    Ok(format!(
        "{} (built {}, {} nodes, IPv{})",
        r.metadata().database_type,
        humantime::format_rfc3339_seconds(built),
        r.metadata().node_count,
        r.metadata().ip_version
    ))
}

fn open_db(path: &Path) -> Result<Db, String> {
    let reader = Reader::open_readfile(path).map_err(|e| e.to_string())?;
    // A corrupt database may open fine and fail only on some records; check the whole file here
    // (off the async threads) so it is refused at load, not on a login. maxminddb's verify()
    // also rejects harmless metadata quirks (the ip-location-db files have an empty
    // `description`), so when it objects, every record is decoded instead: that still catches
    // a corrupt data section.
    if let Err(strict) = reader.verify() {
        let mut records = 0u64;
        for found in reader.networks(Default::default()).map_err(|e| format!("database is corrupt: {e}"))? {
            let found = found.map_err(|e| format!("database is corrupt: {e}"))?;
            found.decode::<serde::de::IgnoredAny>().map_err(|e| format!("database is corrupt: {e}"))?;
            records += 1;
        }
        if records == 0 {
            return Err(format!("database is corrupt: {strict}"));
        }
        tracing::warn!(file = %path.display(), "database metadata is not strictly valid ({strict}); every record decodes, so it is used");
    }
    Ok(reader)
}

/// Result of (re)loading: which sources changed and which failed (the old value stays).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub loaded: Vec<&'static str>,
    pub failed: Vec<(&'static str, String)>,
}

pub struct Geo {
    city: Source<Db>,
    city_v6: Source<Db>,
    asn: Source<Db>,
    anonymous: Source<Db>,
    tor: Source<CidrList>,
    vpn: Source<CidrList>,
    datacenter: Source<CidrList>,
    /// Woken by a reload (SIGHUP or the admin port's `POST /reload`, both through `reload`):
    /// every file is read again.
    reload_requested: tokio::sync::Notify,
}

impl Geo {
    /// Asks the reloader to read every file again (the configuration reload calls this).
    pub fn request_reload(&self) {
        self.reload_requested.notify_one();
    }

    pub fn new(cfg: &GeoConfig) -> Geo {
        Geo {
            city: Source::new("geo.city_db", cfg.city_db.clone()),
            city_v6: Source::new("geo.city_db_ipv6", cfg.city_db_ipv6.clone()),
            asn: Source::new("geo.asn_db", cfg.asn_db.clone()),
            anonymous: Source::new("geo.anonymous_db", cfg.anonymous_db.clone()),
            tor: Source::new("geo.tor_list", cfg.tor_list.clone()),
            vpn: Source::new("geo.vpn_list", cfg.vpn_list.clone()),
            datacenter: Source::new("geo.datacenter_list", cfg.datacenter_list.clone()),
            reload_requested: tokio::sync::Notify::new(),
        }
    }

    /// Whether any database or list is configured.
    pub fn is_configured(&self) -> bool {
        [
            &self.city.path,
            &self.city_v6.path,
            &self.asn.path,
            &self.anonymous.path,
            &self.tor.path,
            &self.vpn.path,
            &self.datacenter.path,
        ]
        .iter()
        .any(|p| p.is_some())
    }

    /// Loads every source whose file changed since the last load (all of them the first time).
    /// Blocking: call from `spawn_blocking`.
    pub fn reload_blocking(&self, force: bool) -> ReloadReport {
        let mut report = ReloadReport::default();
        reload_source(&self.city, force, open_db, &mut report);
        reload_source(&self.city_v6, force, open_db, &mut report);
        reload_source(&self.asn, force, open_db, &mut report);
        reload_source(&self.anonymous, force, open_db, &mut report);
        reload_source(&self.tor, force, CidrList::load, &mut report);
        reload_source(&self.vpn, force, CidrList::load, &mut report);
        reload_source(&self.datacenter, force, CidrList::load, &mut report);
        report
    }

    /// (source key, age in seconds) of each loaded source: a database's build time (its
    /// metadata), a list's file time. What `sessiongate_geo_data_age_seconds` reports.
    pub fn ages(&self, now: SystemTime) -> Vec<(&'static str, i64)> {
        let secs = |t: SystemTime| now.duration_since(t).map(|d| d.as_secs() as i64).unwrap_or(0);
        let mut out = Vec::new();
        for db in [&self.city, &self.city_v6, &self.asn, &self.anonymous] {
            if let Some(d) = db.value.load().as_ref() {
                let built = std::time::UNIX_EPOCH + std::time::Duration::from_secs(d.metadata().build_epoch);
                out.push((db.key, secs(built)));
            }
        }
        for list in [&self.tor, &self.vpn, &self.datacenter] {
            if list.value.load().is_some() {
                if let Some(t) = *crate::sync::lock(&list.mtime) {
                    out.push((list.key, secs(t)));
                }
            }
        }
        out
    }

    /// Looks an address up in everything loaded.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let mut g = GeoInfo { local: is_local(ip), ..Default::default() };
        if g.local {
            return g;
        }
        let city = match (ip, self.city_v6.value.load_full()) {
            (IpAddr::V6(_), Some(v6)) => Some(v6),
            _ => self.city.value.load_full(),
        };
        if let Some(db) = city {
            if let Ok(found) = db.lookup(ip) {
                if let Ok(Some(c)) = found.decode::<geoip2::City>() {
                    g.country_code = c.country.iso_code.map(str::to_string);
                    g.country = c.country.names.english.map(str::to_string);
                    g.city = c.city.names.english.map(str::to_string);
                    g.lat = c.location.latitude;
                    g.lon = c.location.longitude;
                    g.timezone = c.location.time_zone.map(str::to_string);
                }
                if g.country_code.is_none() {
                    if let Ok(Some(f)) = found.decode::<FlatLocation>() {
                        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
                        g.country_code = nonempty(f.country_code);
                        g.city = nonempty(f.city);
                        // Round the widened f32 to the precision it carries.
                        let widen = |v: Option<f32>| v.map(|x| (f64::from(x) * 1e4).round() / 1e4);
                        g.lat = widen(f.latitude);
                        g.lon = widen(f.longitude);
                        g.timezone = nonempty(f.timezone);
                    }
                }
            }
        }
        if let Some(db) = self.asn.value.load_full() {
            if let Ok(Some(a)) = db.lookup(ip).and_then(|r| r.decode::<geoip2::Asn>()) {
                g.asn = a.autonomous_system_number;
                g.isp = a.autonomous_system_organization.map(str::to_string);
            }
        }
        if let Some(db) = self.anonymous.value.load_full() {
            if let Ok(Some(a)) = db.lookup(ip).and_then(|r| r.decode::<geoip2::AnonymousIp>()) {
                g.is_vpn = a.is_anonymous_vpn.unwrap_or(false);
                g.is_proxy = a.is_public_proxy.unwrap_or(false);
                g.is_tor = a.is_tor_exit_node.unwrap_or(false);
                g.is_datacenter = a.is_hosting_provider.unwrap_or(false);
                g.is_residential_proxy = a.is_residential_proxy.unwrap_or(false);
            }
        }
        let listed = |s: &Source<CidrList>| s.value.load().as_ref().is_some_and(|l| l.contains(ip));
        g.is_tor |= listed(&self.tor);
        g.is_vpn |= listed(&self.vpn);
        g.is_datacenter |= listed(&self.datacenter);
        g
    }
}

fn reload_source<T>(src: &Source<T>, force: bool, load: fn(&Path) -> Result<T, String>, report: &mut ReloadReport) {
    let Some(path) = &src.path else { return };
    let current = mtime(path);
    let mut seen = crate::sync::lock(&src.mtime);
    if !force && src.value.load().is_some() && *seen == current {
        return;
    }
    match load(path) {
        Ok(v) => {
            src.value.store(Some(Arc::new(v)));
            *seen = current;
            report.loaded.push(src.key);
        }
        Err(e) => {
            // Remember the broken file's time so it is not re-parsed every tick; a fixed file
            // gets a new time and is picked up.
            *seen = current;
            report.failed.push((src.key, format!("{}: {e}", path.display())));
        }
    }
}

/// Reloads changed files every `interval`, and every file when a reload is requested
/// ([`Geo::request_reload`]), until shutdown.
pub async fn run_reloader(
    geo: Arc<Geo>,
    interval: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick =
        (!interval.is_zero()).then(|| tokio::time::interval_at(tokio::time::Instant::now() + interval, interval));
    loop {
        let force = tokio::select! {
            _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending::<()>().await } } => false,
            _ = geo.reload_requested.notified() => true,
            _ = shutdown.changed() => return,
        };
        let g = geo.clone();
        match tokio::task::spawn_blocking(move || g.reload_blocking(force)).await {
            Ok(r) => log_report(&r),
            Err(e) => tracing::error!(error = %e, "geo reload task failed"),
        }
    }
}

pub fn log_report(r: &ReloadReport) {
    for key in &r.loaded {
        tracing::info!(source = key, "geo data loaded");
    }
    for (key, e) in &r.failed {
        tracing::error!(source = key, error = %e, "geo data could not be loaded; the previous version stays in use");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_and_flags() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_local(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["81.2.69.142", "2001:db8::1", "8.8.8.8"] {
            assert!(!is_local(ip.parse().expect("ip")), "{ip}");
        }
        let g = GeoInfo { country_code: Some("GB".into()), ..Default::default() };
        assert_eq!(g.flag().as_deref(), Some("🇬🇧"));
        assert_eq!(GeoInfo::default().flag(), None);
    }
}

#[cfg(test)]
mod db_tests {
    use super::*;

    fn test_db(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("geoip/test").join(name)
    }

    #[test]
    fn known_addresses_from_the_test_databases() {
        let cfg = GeoConfig {
            city_db: Some(test_db("GeoIP2-City-Test.mmdb")),
            asn_db: Some(test_db("GeoLite2-ASN-Test.mmdb")),
            anonymous_db: Some(test_db("GeoIP2-Anonymous-IP-Test.mmdb")),
            ..Default::default()
        };
        let geo = Geo::new(&cfg);
        let r = geo.reload_blocking(true);
        assert!(r.failed.is_empty(), "{r:?}");
        let g = geo.lookup("81.2.69.142".parse().expect("ip"));
        assert_eq!((g.country_code.as_deref(), g.city.as_deref()), (Some("GB"), Some("London")));
        assert!(g.is_vpn && g.is_tor && g.is_proxy && g.is_datacenter && g.is_residential_proxy);
        let a = geo.lookup("1.128.0.1".parse().expect("ip"));
        assert_eq!((a.asn, a.isp.as_deref()), (Some(1221), Some("Telstra Pty Ltd")));
        assert!(geo.lookup("::ffff:81.2.69.142".parse().expect("ip")).is_tor, "IPv4-mapped");
        let unknown = geo.lookup("203.0.113.1".parse().expect("ip"));
        assert_eq!(unknown, GeoInfo::default(), "unknown, never an error");
        assert!(geo.lookup("192.168.1.1".parse().expect("ip")).local);
    }

    #[test]
    fn a_broken_database_is_refused_and_the_previous_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("city.mmdb");
        std::fs::write(&path, std::fs::read(test_db("GeoIP2-City-Test.mmdb")).expect("read")).expect("write");
        let geo = Geo::new(&GeoConfig { city_db: Some(path.clone()), ..Default::default() });
        assert!(geo.reload_blocking(true).failed.is_empty());
        std::fs::write(&path, std::fs::read(test_db("GeoIP2-City-Test-Broken-Double-Format.mmdb")).expect("read"))
            .expect("write");
        let r = geo.reload_blocking(true);
        assert_eq!(r.failed.len(), 1, "{r:?}");
        assert_eq!(geo.lookup("81.2.69.142".parse().expect("ip")).city.as_deref(), Some("London"));
        std::fs::write(&path, b"not a database").expect("write");
        assert_eq!(geo.reload_blocking(true).failed.len(), 1);
        assert_eq!(geo.lookup("81.2.69.142".parse().expect("ip")).city.as_deref(), Some("London"));
    }
}
