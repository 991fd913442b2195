//! Admin authentication: named bearer tokens compared in constant time, with failed attempts
//! limited per client IP (and audited).

use crate::audit::{AuditLog, Event, Kind};
use crate::clock::now_ms;
use crate::config::Secret;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

const WINDOW_MS: i64 = 60_000;

pub struct AdminAuth {
    /// (name, SHA-256 of the token). Digests make every comparison the same length.
    tokens: Vec<(String, [u8; 32])>,
    failures: Mutex<HashMap<IpAddr, (i64, u32)>>,
    limit: u32,
}

impl AdminAuth {
    pub fn new(tokens: Vec<(String, Secret)>, failures_per_minute: u32) -> AdminAuth {
        AdminAuth {
            tokens: tokens.into_iter().map(|(n, s)| (n, Sha256::digest(s.expose()).into())).collect(),
            failures: Mutex::new(HashMap::new()),
            limit: failures_per_minute,
        }
    }

    fn limited(&self, ip: IpAddr, now: i64) -> bool {
        let f = crate::sync::lock(&self.failures).get(&ip).copied();
        matches!(f, Some((start, n)) if now - start < WINDOW_MS && n >= self.limit)
    }

    /// Counts a failure; returns the count in the current window.
    fn fail(&self, ip: IpAddr, now: i64) -> u32 {
        let mut f = crate::sync::lock(&self.failures);
        if f.len() > 10_000 {
            f.retain(|_, (start, _)| now - *start < WINDOW_MS);
        }
        let e = f.entry(ip).or_insert((now, 0));
        if now - e.0 >= WINDOW_MS {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1
    }

    /// The name of the token presented, or the denial. Every token is compared (no early exit),
    /// in constant time. A valid token is never limited: the limit holds back guessing from an
    /// address, not the operator behind the same NAT or load balancer. `method` and `path` go
    /// into the audit event of a failure.
    pub fn check(
        &self,
        headers: &HeaderMap,
        ip: IpAddr,
        method: &str,
        path: &str,
        audit: &AuditLog,
        metrics: &Metrics,
    ) -> Result<String, GatewayError> {
        let now = now_ms();
        // Two Authorization headers read as none.
        let bearer = crate::proxy::credentials::bearer(headers).ok().flatten();
        let presented: [u8; 32] = Sha256::digest(bearer.as_ref().map_or("", |t| t.text.as_str()).as_bytes()).into();
        let mut found: Option<&str> = None;
        for (name, digest) in &self.tokens {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(name);
            }
        }
        if let (Some(name), Some(_)) = (found, &bearer) {
            return Ok(name.to_string());
        }
        if self.limited(ip, now) {
            return Err(GatewayError::RateLimited);
        }
        metrics.admin_auth_failures.inc();
        let n = self.fail(ip, now);
        // Audit the first failure of a window and the one that trips the limit, not a flood.
        if n == 1 || n == self.limit {
            audit.record(Event::new(Kind::AdminAuthFailed).ip(ip).details(serde_json::json!({
                "method": method,
                "path": path.chars().take(200).collect::<String>(),
                "failuresThisMinute": n,
                "limited": n >= self.limit,
            })));
        }
        tracing::warn!(client = %ip, failures = n, method, path, "admin authentication failed");
        Err(GatewayError::AdminUnauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("hv"));
        h
    }

    #[test]
    fn named_tokens_and_rate_limit() {
        let metrics = Arc::new(Metrics::new());
        let (audit, _rx) = AuditLog::new(metrics.clone());
        let auth = AdminAuth::new(vec![("ops".into(), Secret::new("t-ops")), ("ci".into(), Secret::new("t-ci"))], 3);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let check = |h: &HeaderMap, ip| auth.check(h, ip, "GET", "/stats", &audit, &metrics);
        assert_eq!(check(&headers("t-ci"), ip).expect("ok"), "ci");
        assert_eq!(check(&headers("t-ops"), ip).expect("ok"), "ops");
        assert!(matches!(check(&HeaderMap::new(), ip), Err(GatewayError::AdminUnauthorized)));
        for _ in 0..2 {
            assert!(matches!(check(&headers("wrong"), ip), Err(GatewayError::AdminUnauthorized)));
        }
        assert!(matches!(check(&headers("wrong"), ip), Err(GatewayError::RateLimited)), "guessing is limited");
        assert_eq!(check(&headers("t-ops"), ip).expect("a valid token is never limited"), "ops");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(matches!(check(&headers("wrong"), other), Err(GatewayError::AdminUnauthorized)), "per IP");
        assert_eq!(metrics.admin_auth_failures.get(), 4, "limited attempts are not counted again");
    }
}
