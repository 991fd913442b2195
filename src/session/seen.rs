//! Mid-session change detection: where a live session is used from, request by request. The
//! index keeps a hash of the last address and agent and the last place (country, network,
//! browser family), so a request from the same address with the same agent costs a few
//! integer compares; a new address is looked up (memory only: the geo databases are loaded),
//! a new agent parsed. A change of country, network (ASN) or browser family while the session
//! is live is a [`Change`] — a sign its tokens are replayed from elsewhere — that the proxy
//! re-scores, audits, alerts and, under `on_change = "terminate"`, ends the session for. A new
//! address within the same place is only kept, written at most once per last-seen interval.

use super::index::{self, Place};
use super::{Live, Sessions};
use crate::device;
use crate::geo::{Geo, GeoInfo};
use crate::store::Seen;
use std::net::IpAddr;

/// What a request says about where its session is.
#[derive(Debug)]
pub enum Sighting {
    /// As before, or a move within the same place; `write`: the new address is due for the disk.
    Same { write: Option<Seen> },
    /// The country, network or browser family changed.
    Changed(Box<Change>),
}

/// A change of place.
#[derive(Debug, Clone)]
pub struct Change {
    /// `country`, `network` and/or `browser`.
    pub what: Vec<&'static str>,
    pub from: Where,
    pub to: Where,
    /// The new address's geo data (default when no geo data is configured).
    pub geo: GeoInfo,
    /// What to record as the session's last sighting.
    pub seen: Seen,
}

/// A place, readable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Where {
    pub country: Option<String>,
    pub asn: Option<u32>,
    pub browser: Option<String>,
}

impl Sessions {
    /// Compares a request's address and agent with where `live` was last used from, and
    /// records them as the latest.
    pub fn sight(&self, live: &Live, ip: IpAddr, user_agent: &str, geo: &Geo, now_ms: i64) -> Sighting {
        let (ip_h, ua_h) = (index::ip_hash(ip), index::ua_hash(user_agent));
        let Some(last) = self.index().last_seen(live) else { return Sighting::Same { write: None } };
        let now_s = (now_ms / 1000).clamp(0, i64::from(u32::MAX)) as u32;
        let interval = self.config().last_seen_interval.as_secs().min(u64::from(u32::MAX)) as u32;
        let due = |written: u32| now_s.saturating_sub(written) >= interval;
        if last.ip_hash == ip_h && last.ua_hash == ua_h {
            // Unchanged; a new address that was not yet due for the disk may be now.
            if last.pending && due(last.written) {
                self.index().set_last_seen(live, ip_h, ua_h, None, Some(now_s), false);
                return Sighting::Same { write: Some(self.seen_now(ip, last.place, now_ms)) };
            }
            return Sighting::Same { write: None };
        }
        let before = last.place;
        // No agent at all says nothing about the browser (a server-side fetch, a test client).
        let family = match before {
            _ if user_agent.is_empty() => 0,
            Some(p) if last.ua_hash == ua_h => p.family,
            _ => self.index().family(&device::family(user_agent)),
        };
        let (country, asn, info) = match before {
            Some(p) if last.ip_hash == ip_h => (p.country, p.asn, GeoInfo::default()),
            _ if geo.is_configured() => {
                let g = geo.lookup(ip);
                (g.country_code.as_deref().map_or(0, index::country_code), g.asn.unwrap_or(0), g)
            }
            _ => (0, 0, GeoInfo::default()),
        };
        let seen_now = Place { country, asn, family };
        let what = before.map(|b| changes(&b, &seen_now)).unwrap_or_default();
        // What is kept is the last *known* of each: an unknown side never erases it, so a
        // request without an agent (or from an address the geo data lacks) cannot reset the
        // baseline a later request is compared with.
        let now = Place {
            country: known_or(country, before.map(|b| b.country)),
            asn: known_or(asn, before.map(|b| b.asn)),
            family: known_or(family, before.map(|b| b.family)),
        };
        let moved = last.ip_hash != ip_h;
        if what.is_empty() {
            let write = moved && due(last.written);
            let pending = (moved || last.pending) && !write;
            self.index().set_last_seen(live, ip_h, ua_h, Some(now), write.then_some(now_s), pending);
            let write = write.then(|| self.seen_now(ip, Some(now), now_ms));
            return Sighting::Same { write };
        }
        self.index().set_last_seen(live, ip_h, ua_h, Some(now), Some(now_s), false);
        let seen = self.seen_now(ip, Some(now), now_ms);
        let from = before.map(|b| self.where_of(&b)).unwrap_or(Where { country: None, asn: None, browser: None });
        Sighting::Changed(Box::new(Change { what, from, to: self.where_of(&seen_now), geo: info, seen }))
    }

    fn where_of(&self, p: &Place) -> Where {
        Where {
            country: p.country_code(),
            asn: (p.asn != 0).then_some(p.asn),
            browser: self.index().family_name(p.family).map(|f| f.to_string()),
        }
    }

    fn seen_now(&self, ip: IpAddr, place: Option<Place>, now_ms: i64) -> Seen {
        let w = place.map(|p| self.where_of(&p));
        Seen {
            ip: ip.to_string(),
            at: now_ms,
            country_code: w.as_ref().and_then(|w| w.country.clone()),
            asn: w.as_ref().and_then(|w| w.asn),
            family: w.and_then(|w| w.browser).unwrap_or_else(|| "Unknown".into()),
            changes: 0,
        }
    }
}

/// `now`, unless it is unknown (0): then what was known before.
fn known_or<T: Copy + Default + PartialEq>(now: T, before: Option<T>) -> T {
    if now != T::default() {
        now
    } else {
        before.unwrap_or_default()
    }
}

/// Two known values that differ (an unknown side is no change).
fn differs<T: Default + PartialEq>(a: T, b: T) -> bool {
    a != T::default() && b != T::default() && a != b
}

/// What differs between two places; an unknown side (no geo data for an address) is no change.
fn changes(before: &Place, now: &Place) -> Vec<&'static str> {
    let mut what = Vec::new();
    if differs(before.country, now.country) {
        what.push("country");
    }
    if differs(before.asn, now.asn) {
        what.push("network");
    }
    if differs(before.family, now.family) {
        what.push("browser");
    }
    what
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::testing;

    const CHROME: &str =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";

    fn word(s: &Sighting) -> String {
        match s {
            Sighting::Same { write: None } => "same".into(),
            Sighting::Same { write: Some(w) } => format!("write {}", w.ip),
            Sighting::Changed(c) => format!("changed {}", c.what.join("+")),
        }
    }

    #[tokio::test]
    async fn a_new_browser_is_a_change_and_a_new_address_is_kept() {
        let edit = |c: &mut crate::config::Config| c.sessions.last_seen_interval = std::time::Duration::from_secs(30);
        let (sessions, _dir) = testing::sessions(edit).await;
        let mut origin = testing::origin("alice");
        origin.device = device::parse(CHROME);
        origin.user_agent = CHROME.into();
        let live = sessions.create(origin, testing::issued("alice", "b1", 1)).await.expect("create");
        let geo = Geo::new(&testing::config(|_| {}).geo);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().expect("ip"), "10.1.2.3".parse().expect("ip"));
        let t0 = sessions.login_time(&live);
        // (step, address, agent, at +s, expected)
        let steps = [
            ("the login's place: its agent is parsed once", a, CHROME, 1, "same"),
            ("again: integers only", a, CHROME, 2, "same"),
            ("a new address (no geo data: same place), not yet due", b, CHROME, 3, "same"),
            ("the pending address is written once due", b, CHROME, 40, "write 10.1.2.3"),
            ("and not again", b, CHROME, 41, "same"),
            ("another browser family", b, FIREFOX, 42, "changed browser"),
            ("which is now the known place", b, FIREFOX, 43, "same"),
            ("no agent says nothing about the browser", b, "", 44, "same"),
            ("and does not erase the known one", b, CHROME, 45, "changed browser"),
        ];
        for (step, ip, ua, at, expected) in steps {
            let got = sessions.sight(&live, ip, ua, &geo, t0 + at * 1000);
            assert_eq!(word(&got), expected, "{step}");
        }
    }

    #[test]
    fn unknown_sides_are_no_change() {
        let p = |country, asn, family| Place { country, asn, family };
        assert!(changes(&p(0, 0, 1), &p(0x4445, 3320, 1)).is_empty(), "a first geo answer is no move");
        assert_eq!(changes(&p(0x4445, 3320, 1), &p(0x4652, 3215, 2)), vec!["country", "network", "browser"]);
        assert_eq!(changes(&p(0x4445, 3320, 1), &p(0x4445, 0, 1)), Vec::<&str>::new());
    }
}
