//! The per-request session decision: a presented token → [`Decision`], with no HTTP in sight.
//! Memory only (the index, and for a token never seen, a signature check), so it runs on every
//! request; the proxy acts on the decision (forward, or refuse — ending the session first when
//! the refusal says so) and never decides itself.

use super::tokens::{self, Verifier};
use super::{Audit, Check, EndReason, Ending, Live, Sessions};
use crate::alerts::Trigger;
use crate::audit::Kind;
use crate::config::{IdlePolicy, PoliciesConfig, UnknownTokens};
use crate::error::GatewayError;
use crate::store::{TokenEntry, TokenKind};
use serde_json::Value;

/// As what a request presents a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// The bearer, or the access cookie.
    Access,
    /// A refresh credential (refresh and logout routes: cookie or body).
    Refresh,
}

/// What the gateway makes of a presented token.
#[derive(Debug)]
pub enum Decision {
    /// Not a token of any session the gateway tracks: it goes through as the backend's business.
    Unknown,
    /// A token of a live session. The entry says what kind of token it is; a refresh token
    /// presented as a bearer is checked but names no session of the request (Strapi answers 401).
    Live(Live, TokenEntry),
    /// Refused.
    Refuse(Refusal),
}

/// Why a token is refused.
#[derive(Debug)]
pub enum Refusal {
    /// A token of an ended session.
    Ended,
    /// A rotated-out refresh token presented again after the grace period: a sign of theft,
    /// so the whole session ends.
    Reuse(Live, String),
    /// Inactive past `sessions.inactivity_timeout` under `idle_policy = "terminate"`.
    Idle(Live),
    /// Older than its policy's `max_session_age`.
    MaxAge(Live),
    /// A JWT the gateway never saw, under `unknown_tokens = "reject"`.
    UnknownToken,
}

impl Refusal {
    /// The answer the client gets.
    pub fn error(&self) -> GatewayError {
        match self {
            Refusal::Ended => GatewayError::SessionTerminated,
            Refusal::Reuse(..) => GatewayError::RefreshTokenReuse,
            Refusal::Idle(_) => GatewayError::SessionInactive,
            Refusal::MaxAge(_) => GatewayError::SessionMaxAge,
            Refusal::UnknownToken => GatewayError::UnknownToken,
        }
    }

    /// The session this refusal ends first, and how (none: nothing to end).
    pub fn ends(&self) -> Option<(&Live, Ending)> {
        match self {
            Refusal::Reuse(live, token) => Some((
                live,
                Ending::new(EndReason::RefreshTokenReuse, Audit::EachSession(Kind::RefreshReuse), "system")
                    .details(serde_json::json!({ "token": token }))
                    .alert(Trigger::RefreshReuse, "a rotated-out refresh token was presented again"),
            )),
            Refusal::Idle(live) => {
                Some((live, Ending::new(EndReason::IdleTimeout, Audit::EachSession(Kind::IdleTerminated), "system")))
            }
            Refusal::MaxAge(live) => {
                Some((live, Ending::new(EndReason::MaxAge, Audit::EachSession(Kind::SessionMaxAge), "system")))
            }
            Refusal::Ended | Refusal::UnknownToken => None,
        }
    }
}

/// What the decision reads.
pub struct Enforcer<'a> {
    pub sessions: &'a Sessions,
    /// Present when `[jwt]` is configured: a token never seen counts as its backend session's
    /// only once its signature verifies.
    pub verifier: Option<&'a Verifier>,
    /// `extract.session_id_claim`.
    pub session_id_claim: Option<&'a str>,
    /// `[policies]` (the age limit).
    pub policies: &'a PoliciesConfig,
}

impl Enforcer<'_> {
    /// Decides one presented token at `now` (unix ms).
    pub fn decide(&self, token: &str, presented: Presented, now: i64) -> Decision {
        let hash = tokens::hash(token);
        let (live, entry) = match self.sessions.check(&hash, now) {
            Check::Ended(_) => return Decision::Refuse(Refusal::Ended),
            Check::Reuse(live) => return Decision::Refuse(Refusal::Reuse(live, tokens::log_id(&hash))),
            Check::Live(live, entry) => (live, entry),
            Check::Unknown => match self.by_verified_claim(token, presented) {
                Some(Ok(found)) => found,
                Some(Err(refusal)) => return Decision::Refuse(refusal),
                None if self.sessions.config().unknown_tokens == UnknownTokens::Reject
                    && tokens::is_jwt_shaped(token) =>
                {
                    return Decision::Refuse(Refusal::UnknownToken)
                }
                None => return Decision::Unknown,
            },
        };
        if self.sessions.config().idle_policy == IdlePolicy::Terminate && self.sessions.is_idle(&live, now) {
            return Decision::Refuse(Refusal::Idle(live));
        }
        if self.too_old(&live, now) {
            return Decision::Refuse(Refusal::MaxAge(live));
        }
        Decision::Live(live, entry)
    }

    /// Whether the session is older than its policy allows (the role is looked up only when
    /// policies differ by role).
    fn too_old(&self, live: &Live, now: i64) -> bool {
        if !self.policies.bounds_age() {
            return false;
        }
        self.sessions
            .policy(self.policies, live)
            .max_session_age
            .is_some_and(|max| now - self.sessions.login_time(live) > max.as_millis() as i64)
    }

    /// A token never seen may still belong to a tracked backend session (issued by the backend
    /// directly, e.g. a refresh the gateway did not see): its session id claim counts once its
    /// signature verifies. `None`: no such session.
    fn by_verified_claim(&self, token: &str, presented: Presented) -> Option<Result<(Live, TokenEntry), Refusal>> {
        let (Presented::Access, Some(v), Some(claim)) = (presented, self.verifier, self.session_id_claim) else {
            return None;
        };
        let claims = v.verify(token)?;
        let live = tokens::claim_str(&claims, claim).and_then(|a| self.sessions.by_alias(&a))?;
        if self.sessions.is_ended(&live) {
            return Some(Err(Refusal::Ended));
        }
        let refresh = claims.get("type").and_then(Value::as_str) == Some("refresh");
        let kind = if refresh { TokenKind::Refresh } else { TokenKind::Access };
        let entry = TokenEntry { session: live.id, kind, exp: tokens::claim_exp(&claims), rotated_at: None };
        Some(Ok((live, entry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::testing::{self, World};
    use std::time::Duration;

    /// What a decision is, in a few words (for the table).
    fn word(d: &Decision) -> &'static str {
        match d {
            Decision::Unknown => "unknown",
            Decision::Live(_, e) if e.kind == TokenKind::Access => "live access",
            Decision::Live(..) => "live refresh",
            Decision::Refuse(Refusal::Ended) => "ended",
            Decision::Refuse(Refusal::Reuse(..)) => "reuse",
            Decision::Refuse(Refusal::Idle(_)) => "idle",
            Decision::Refuse(Refusal::MaxAge(_)) => "too old",
            Decision::Refuse(Refusal::UnknownToken) => "unknown token",
        }
    }

    type Pick = fn(&World) -> String;
    type Case = (&'static str, Option<bool>, Pick, Presented, i64, &'static str);

    /// (case, policies it runs under — `None`: both, `Some(strict)`: only those —, the token,
    /// presented as, ms after the world was made, expected decision)
    const CASES: &[Case] = &[
        ("live access token", None, |w| w.a.access.clone(), Presented::Access, 1_000, "live access"),
        ("live refresh token as refresh", None, |w| w.a_refresh(), Presented::Refresh, 1_000, "live refresh"),
        (
            "refresh token as bearer: checked, no access",
            None,
            |w| w.a_refresh(),
            Presented::Access,
            1_000,
            "live refresh",
        ),
        ("ended session's access token", None, |w| w.ended.access.clone(), Presented::Access, 1_000, "ended"),
        ("ended session's token as refresh", None, |w| w.ended.access.clone(), Presented::Refresh, 1_000, "ended"),
        (
            "rotated-out refresh token past the grace",
            None,
            |w| w.rotated_out.clone(),
            Presented::Refresh,
            1_000,
            "reuse",
        ),
        ("rotated-out refresh token as bearer", None, |w| w.rotated_out.clone(), Presented::Access, 1_000, "reuse"),
        ("never-seen JWT, allowed", Some(false), |w| w.stranger.clone(), Presented::Access, 1_000, "unknown"),
        ("never-seen JWT, rejected", Some(true), |w| w.stranger.clone(), Presented::Access, 1_000, "unknown token"),
        ("opaque string: not JWT-shaped", None, |_| "opaque".into(), Presented::Access, 1_000, "unknown"),
        ("idle, allowed", Some(false), |w| w.a.access.clone(), Presented::Access, 3_600_000, "live access"),
        ("idle, terminated", Some(true), |w| w.a.access.clone(), Presented::Access, 3_600_000, "idle"),
        (
            "idle session's refresh token, terminated",
            Some(true),
            |w| w.a_refresh(),
            Presented::Refresh,
            3_600_000,
            "idle",
        ),
        (
            "verified token naming a tracked backend session",
            None,
            |w| w.signed_alias.clone(),
            Presented::Access,
            1_000,
            "live access",
        ),
        (
            "verified token naming an ended backend session",
            None,
            |w| w.signed_ended_alias.clone(),
            Presented::Access,
            1_000,
            "ended",
        ),
        (
            "verified token as refresh: no claim lookup",
            Some(false),
            |w| w.signed_alias.clone(),
            Presented::Refresh,
            1_000,
            "unknown",
        ),
        (
            "forged token naming a tracked backend session",
            Some(false),
            |w| w.forged_alias.clone(),
            Presented::Access,
            1_000,
            "unknown",
        ),
        (
            "forged token naming a tracked backend session, rejected",
            Some(true),
            |w| w.forged_alias.clone(),
            Presented::Access,
            1_000,
            "unknown token",
        ),
    ];

    #[tokio::test]
    async fn decisions_by_token_state_and_policy() {
        for strict in [false, true] {
            let w = testing::world(|c| {
                c.sessions.refresh_reuse_grace = Duration::ZERO;
                c.sessions.inactivity_timeout = Duration::from_secs(60);
                if strict {
                    c.sessions.unknown_tokens = UnknownTokens::Reject;
                    c.sessions.idle_policy = IdlePolicy::Terminate;
                }
            })
            .await;
            let policies = PoliciesConfig::default();
            let e = Enforcer {
                sessions: &w.sessions,
                verifier: Some(&w.verifier),
                session_id_claim: Some("sessionId"),
                policies: &policies,
            };
            for (name, only, pick, presented, after, expected) in CASES {
                if only.is_some_and(|o| o != strict) {
                    continue;
                }
                let got = e.decide(&pick(&w), *presented, w.t0 + after);
                assert_eq!(word(&got), *expected, "{name} (strict policies: {strict})");
            }
        }
    }

    #[tokio::test]
    async fn refusals_say_what_they_end_and_answer() {
        let w = testing::world(|c| c.sessions.refresh_reuse_grace = Duration::ZERO).await;
        let policies = PoliciesConfig::default();
        let e = Enforcer { sessions: &w.sessions, verifier: None, session_id_claim: None, policies: &policies };
        let Decision::Refuse(r) = e.decide(&w.rotated_out, Presented::Refresh, w.t0 + 1_000) else {
            panic!("reuse is refused");
        };
        assert_eq!(r.error().reason(), "refresh_token_reuse");
        let (live, ending) = r.ends().expect("reuse ends the session");
        assert_eq!((live.id, ending.reason), (w.a.id, EndReason::RefreshTokenReuse));
        assert!(ending.alert.is_some());
        assert!(Refusal::Ended.ends().is_none());
        assert_eq!(Refusal::UnknownToken.error().reason(), "unknown_token");
        assert_eq!(Refusal::Ended.error().reason(), "session_terminated");
    }

    #[tokio::test]
    async fn a_session_past_its_age_is_refused_and_ended() {
        let w = testing::world(|_| {}).await;
        let mut policies = PoliciesConfig::default();
        policies.global.max_session_age = Some(Duration::from_secs(10));
        let e = Enforcer { sessions: &w.sessions, verifier: None, session_id_claim: None, policies: &policies };
        let login = w.sessions.login_time(&w.sessions.live(w.a.id).expect("live"));
        assert_eq!(word(&e.decide(&w.a.access, Presented::Access, login + 9_000)), "live access");
        let got = e.decide(&w.a_refresh(), Presented::Refresh, login + 10_001);
        assert_eq!(word(&got), "too old", "the refresh token too: no refresh past the age");
        let Decision::Refuse(r) = got else { unreachable!() };
        assert_eq!(r.error().reason(), "session_max_age");
        assert_eq!(r.ends().map(|(_, e)| e.reason), Some(EndReason::MaxAge));
    }
}
