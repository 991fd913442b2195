//! Logins per hour for the last day (the admin `stats`), counted as logins happen and rebuilt
//! from the audit log at startup.

use crate::clock::now_ms;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Logins per hour for the last 24 hours (for `stats`): successes, failures, VPN logins and
/// logins by country. Kept in memory and rebuilt from the audit log at startup.
#[derive(Default)]
pub struct LoginCounters {
    hours: Mutex<VecDeque<Hour>>,
}

/// One hour of login figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hour {
    pub start: i64,
    pub logins: u64,
    pub failed: u64,
    pub vpn: u64,
    pub countries: BTreeMap<String, u64>,
}

const HOUR_MS: i64 = 3_600_000;

impl LoginCounters {
    fn with_hour(&self, at_ms: i64, f: impl FnOnce(&mut Hour)) {
        let start = at_ms - at_ms.rem_euclid(HOUR_MS);
        let mut h = crate::sync::lock(&self.hours);
        match h.iter_mut().find(|x| x.start == start) {
            Some(slot) => f(slot),
            None => {
                let mut slot = Hour { start, ..Default::default() };
                f(&mut slot);
                h.push_back(slot);
                h.make_contiguous().sort_by_key(|x| x.start);
            }
        }
        let oldest = now_ms() - 25 * HOUR_MS;
        while h.front().is_some_and(|x| x.start < oldest) {
            h.pop_front();
        }
    }

    pub fn add_success(&self, at_ms: i64, country: Option<&str>, vpn: bool) {
        self.with_hour(at_ms, |h| {
            h.logins += 1;
            h.vpn += u64::from(vpn);
            if let Some(c) = country {
                *h.countries.entry(c.to_string()).or_default() += 1;
            }
        });
    }

    pub fn add_failure(&self, at_ms: i64) {
        self.with_hour(at_ms, |h| h.failed += 1);
    }

    /// 24 hours, oldest first, ending with the current hour.
    pub fn last_24h(&self, now: i64) -> Vec<Hour> {
        let current = now - now.rem_euclid(HOUR_MS);
        let h = crate::sync::lock(&self.hours).clone();
        (0..24)
            .rev()
            .map(|i| {
                let t = current - i * HOUR_MS;
                h.iter().find(|x| x.start == t).cloned().unwrap_or(Hour { start: t, ..Default::default() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_counters_bucket_by_hour() {
        let c = LoginCounters::default();
        let now = now_ms();
        c.add_success(now, Some("GB"), true);
        c.add_failure(now);
        c.add_success(now - HOUR_MS, None, false);
        c.add_success(now - 30 * HOUR_MS, Some("US"), false);
        let h = c.last_24h(now);
        assert_eq!(h.len(), 24);
        assert_eq!((h[23].logins, h[23].failed, h[23].vpn), (1, 1, 1));
        assert_eq!(h[23].countries.get("GB"), Some(&1));
        assert_eq!(h[22].logins, 1);
        assert_eq!(h.iter().map(|x| x.logins).sum::<u64>(), 2, "older than a day is not counted");
    }
}
