//! `[sessions]` and `[jwt]`: session policies, the encryption key, client-token verification.

use super::raw::*;
use super::validate::V;
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Inactive sessions are only reported as such (`isTrulyActive: false`).
    Mark,
    /// Inactive sessions are ended on their next request.
    Terminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownTokens {
    Pass,
    Reject,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub last_seen_interval: Duration,
    pub inactivity_timeout: Duration,
    pub idle_policy: IdlePolicy,
    pub unknown_tokens: UnknownTokens,
    pub refresh_reuse_grace: Duration,
    pub encryption_key: SecretSource,
    pub previous_keys: Option<SecretSource>,
    pub tenant_claim: Option<String>,
    pub tenant_header: Option<http::HeaderName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Es256,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    /// HMAC secret (HS*) or PEM public key file (RS256/ES256).
    pub key: SecretSource,
    pub leeway: Duration,
}

/// `[sessions]`.
pub(super) fn sessions(v: &mut V<'_>, se: RawSessions) -> SessionConfig {
    let idle_policy = v.choice(
        "sessions.idle_policy",
        se.idle_policy.as_deref(),
        IdlePolicy::Mark,
        &[("mark", IdlePolicy::Mark), ("terminate", IdlePolicy::Terminate)],
    );
    let unknown_tokens = v.choice(
        "sessions.unknown_tokens",
        se.unknown_tokens.as_deref(),
        UnknownTokens::Pass,
        &[("pass", UnknownTokens::Pass), ("reject", UnknownTokens::Reject)],
    );
    let encryption_key = v
        .secret_source(
            "sessions.encryption_key_env",
            se.encryption_key_env,
            "sessions.encryption_key_file",
            se.encryption_key_file,
        )
        .unwrap_or_else(|| SecretSource::Env("SESSION_ENCRYPTION_KEY".into()));
    let tenant_header = se.tenant_header.and_then(|h| match http::HeaderName::from_bytes(h.as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            v.err("sessions.tenant_header", format!("{h:?} is not a header name"));
            None
        }
    });
    let sessions = SessionConfig {
        last_seen_interval: v.duration("sessions.last_seen_interval", se.last_seen_interval.as_deref(), "30s"),
        inactivity_timeout: v.duration("sessions.inactivity_timeout", se.inactivity_timeout.as_deref(), "15m"),
        idle_policy,
        unknown_tokens,
        refresh_reuse_grace: v.duration("sessions.refresh_reuse_grace", se.refresh_reuse_grace.as_deref(), "10s"),
        encryption_key,
        previous_keys: v.secret_source(
            "sessions.previous_keys_env",
            se.previous_keys_env,
            "sessions.previous_keys_file",
            se.previous_keys_file,
        ),
        tenant_claim: se.tenant_claim.filter(|s| !s.is_empty()),
        tenant_header,
    };
    if sessions.inactivity_timeout.is_zero() {
        v.err("sessions.inactivity_timeout", "must be greater than 0");
    }
    sessions
}

/// `[jwt]` (absent: client tokens are not verified).
pub(super) fn jwt(v: &mut V<'_>, raw: Option<RawJwt>) -> Option<JwtConfig> {
    let jwt = raw.map(|j| {
        let algorithm = match j.algorithm.as_deref().unwrap_or("HS256").to_ascii_uppercase().as_str() {
            "HS256" => JwtAlgorithm::Hs256,
            "HS384" => JwtAlgorithm::Hs384,
            "HS512" => JwtAlgorithm::Hs512,
            "RS256" => JwtAlgorithm::Rs256,
            "ES256" => JwtAlgorithm::Es256,
            other => {
                v.err("jwt.algorithm", format!("{other:?}: expected HS256, HS384, HS512, RS256 or ES256"));
                JwtAlgorithm::Hs256
            }
        };
        let hmac = matches!(algorithm, JwtAlgorithm::Hs256 | JwtAlgorithm::Hs384 | JwtAlgorithm::Hs512);
        let key = if hmac {
            if j.public_key_file.is_some() {
                v.err("jwt.public_key_file", "only for RS256/ES256; HMAC algorithms use secret_env or secret_file");
            }
            v.secret_source("jwt.secret_env", j.secret_env, "jwt.secret_file", j.secret_file)
                .unwrap_or_else(|| SecretSource::Env("JWT_SECRET".into()))
        } else {
            match j.public_key_file {
                Some(f) => SecretSource::File(f.into()),
                None => {
                    v.err("jwt.public_key_file", "required for RS256/ES256 (PEM public key)");
                    SecretSource::Env(String::new())
                }
            }
        };
        JwtConfig { algorithm, key, leeway: v.duration("jwt.leeway", j.leeway.as_deref(), "30s") }
    });
    jwt
}
