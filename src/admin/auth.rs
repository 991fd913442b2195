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
    /// in constant time.
    pub fn check(
        &self,
        headers: &HeaderMap,
        ip: IpAddr,
        audit: &AuditLog,
        metrics: &Metrics,
    ) -> Result<String, GatewayError> {
        let now = now_ms();
        if self.limited(ip, now) {
            return Err(GatewayError::RateLimited);
        }
        // Two Authorization headers read as none.
        let bearer = crate::proxy::credentials::bearer(headers).ok().flatten();
        let presented: [u8; 32] = Sha256::digest(bearer.as_ref().map_or("", |t| t.text.as_str()).as_bytes()).into();
        let mut found: Option<&str> = None;
        for (name, digest) in &self.tokens {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(name);
            }
        }
        match found {
            Some(name) if bearer.is_some() => Ok(name.to_string()),
            _ => {
                metrics.admin_auth_failures.inc();
                let n = self.fail(ip, now);
                // Audit the first failure of a window and the one that trips the limit, not a flood.
                if n == 1 || n == self.limit {
                    audit.record(
                        Event::new(Kind::AdminAuthFailed)
                            .ip(ip)
                            .details(serde_json::json!({"failuresThisMinute": n, "limited": n >= self.limit})),
                    );
                }
                tracing::warn!(client = %ip, failures = n, "admin authentication failed");
                Err(GatewayError::AdminUnauthorized)
            }
        }
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
        assert_eq!(auth.check(&headers("t-ci"), ip, &audit, &metrics).expect("ok"), "ci");
        assert_eq!(auth.check(&headers("t-ops"), ip, &audit, &metrics).expect("ok"), "ops");
        assert!(matches!(auth.check(&HeaderMap::new(), ip, &audit, &metrics), Err(GatewayError::AdminUnauthorized)));
        for _ in 0..2 {
            assert!(matches!(
                auth.check(&headers("wrong"), ip, &audit, &metrics),
                Err(GatewayError::AdminUnauthorized)
            ));
        }
        assert!(
            matches!(auth.check(&headers("t-ops"), ip, &audit, &metrics), Err(GatewayError::RateLimited)),
            "limited even with a good token"
        );
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(auth.check(&headers("t-ops"), other, &audit, &metrics).is_ok(), "per IP");
        assert_eq!(metrics.admin_auth_failures.get(), 3);
    }
}
