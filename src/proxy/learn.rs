//! What the gateway learns from the backend's answers (phase 8 of the request path): sessions
//! from successful logins, refreshes and credential changes — a login admitted or refused by
//! `session::admission` — and the ending of a session whose backend session the backend's own
//! session route revoked.

use super::handler::{names_current_backend_session, split_proven, Creds, RequestCtx};
use crate::alerts::Trigger;
use crate::audit::{Event, Kind};
use crate::backend::fields;
use crate::config::{OnChange, OnExceed, Policy};
use crate::error::GatewayError;
use crate::metrics::RefreshResult;
use crate::risk::LoginFacts;
use crate::routes::RouteMatch;
use crate::session::admission::{Admission, Admitted, Admitter, Login, Refused};
use crate::session::seen::Change;
use crate::session::{tokens, Audit, EndReason, Ending, Issued, Live, Origin, SessionOrigin};
use crate::state::AppState;
use crate::store::Seen;
use http::HeaderMap;
use serde_json::Value;

/// The backend's own session route answered 2xx: the gateway session carrying that backend
/// session id ends too (the backend revoked its refresh token; its access jwt would otherwise
/// stay valid until `exp`).
pub(super) async fn backend_session_revoked(
    st: &AppState,
    ctx: &RequestCtx,
    matched: Option<&RouteMatch<'_>>,
) -> Result<(), GatewayError> {
    let Some(m) = matched else { return Ok(()) };
    let Some(alias) = m.rule.param_names().first().and_then(|n| m.param(n)).map(str::to_string) else { return Ok(()) };
    let Some(live) = st.sessions.by_alias(&alias) else { return Ok(()) };
    let hold = st.cfg().upstream.response_timeout;
    let ending = Ending::new(EndReason::BackendRevoked, Audit::EachSession(Kind::BackendSessionRevoked), "user")
        .ip(ctx.client_ip);
    let ended = st.sessions.end_pending_proof(&[live.id], &ending, hold).await?;
    // Proven when the backend revoked the session's current backend session; an older id of a
    // rotated session leaves the current one to the gateway's revocation.
    let (proven, due) = split_proven(&ended, |r| names_current_backend_session(r, Some(&alias)));
    st.sessions.settle_revocations(&proven, &due).await?;
    tracing::info!(request_id = %ctx.request_id, session = %live.sid, "backend session route ended a session");
    Ok(())
}

/// Access and refresh tokens of a backend response (JSON pointers, then `Set-Cookie`).
pub(super) fn issued_from(st: &AppState, headers: &HeaderMap, json: Option<&Value>) -> Option<Issued> {
    let x = &st.cfg().extract;
    let access = json
        .and_then(|j| fields::pointer_str(j, &x.access_token))
        .or_else(|| x.access_cookie.as_deref().and_then(|n| fields::set_cookie(headers, n)))?;
    let refresh = x
        .refresh_token
        .as_deref()
        .and_then(|p| json.and_then(|j| fields::pointer_str(j, p)))
        .or_else(|| x.refresh_cookie.as_deref().and_then(|n| fields::set_cookie(headers, n)))
        .or_else(|| x.refresh_claim.as_deref().and_then(|c| claim_of(&access, c)));
    Some(Issued::new(access, refresh, x.session_id_claim.as_deref()))
}

/// A string claim of a token the backend issued (its claims are trusted: read, not verified).
fn claim_of(token: &str, claim: &str) -> Option<String> {
    tokens::response_claims(token).and_then(|c| tokens::claim_str(&c, claim))
}

/// Creates a session from backend-issued tokens (their claims are trusted: the backend just
/// issued them).
pub(super) async fn create(
    st: &AppState,
    ctx: &RequestCtx,
    creds: &Creds,
    req_headers: &HeaderMap,
    json: &Value,
    issued: Issued,
    kind: SessionOrigin,
) -> Result<Live, GatewayError> {
    let x = &st.cfg().extract;
    let claims = tokens::response_claims(&issued.access);
    let claim = |name: Option<&str>| name.and_then(|n| claims.as_ref().and_then(|c| tokens::claim_str(c, n)));
    let user_id = x
        .user_id
        .as_deref()
        .and_then(|p| fields::pointer_str(json, p))
        .or_else(|| claim(x.user_id_claim.as_deref()))
        .ok_or(GatewayError::BadAuthResponse("response names no user"))?;
    let now = st.sessions.clock().now_ms();
    let admitter = Admitter {
        sessions: &st.sessions,
        geo: &st.geo,
        roles: &st.roles,
        risk: &st.risk,
        score_threshold: st.alerts.config().score_threshold,
        policies: &st.cfg().policies,
    };
    let login =
        Login { user_id: &user_id, ip: ctx.client_ip, user_agent: &ctx.user_agent, response: json, now_ms: now };
    let admitted = match admitter.admit(&login).await {
        Admission::Admit(a) => a,
        Admission::Refuse(r) => return Err(deny_login(st, ctx, &user_id, issued, kind.as_str(), r)),
    };
    let Admitted { geo, device, role, risk: assessment, risky, alerts: triggers, policy } = admitted;
    if let (Some(details), Some(a)) = (risky, &assessment) {
        tracing::warn!(request_id = %ctx.request_id, user = %user_id, score = a.score, client = %ctx.client_ip, "risky login");
        st.audit.record(Event::new(Kind::RiskAlert).user(&user_id).ip(ctx.client_ip).actor("system").details(details));
    }
    st.risk.record_login(&user_id, geo.as_ref(), &device, now);
    let tenant_id = claim(st.cfg().sessions.tenant_claim.as_deref()).or_else(|| {
        let cfg = st.cfg();
        let h = cfg.sessions.tenant_header.as_ref()?;
        req_headers.get(h).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(128).collect())
    });
    let origin = Origin {
        user_id,
        username: x.username.as_deref().and_then(|p| fields::pointer_str(json, p)),
        email: x.email.as_deref().and_then(|p| fields::pointer_str(json, p)),
        tenant_id,
        device_id: creds.device_id.clone(),
        ip: ctx.client_ip,
        user_agent: ctx.user_agent.clone(),
        device,
        kind,
        geo,
        role,
        risk: assessment,
    };
    let geo_seen = origin.geo.clone().unwrap_or_default();
    let country = origin.geo.as_ref().and_then(|g| g.country_code.clone());
    let vpn = origin.geo.as_ref().is_some_and(|g| g.is_vpn);
    let score = origin.risk.as_ref().map(|a| a.score);
    let device_type = origin.device.device_type.clone();
    let live = st.sessions.create(origin, issued).await?;
    tracing::info!(request_id = %ctx.request_id, session = %live.sid, user = %live.user_id, client = %ctx.client_ip, kind = kind.as_str(), "session created");
    if let (Some(max), OnExceed::EvictOldest) = (policy.max_sessions_per_user, policy.on_exceed) {
        // After the creation, so logins racing each other each trim to the limit.
        let ending = Ending::new(EndReason::SessionLimit, Audit::EachSession(Kind::SessionEvicted), "system")
            .ip(ctx.client_ip)
            .details(serde_json::json!({"limit": max, "newSession": live.sid.to_string()}))
            .alert(Trigger::SessionEvicted, format!("a new login went over the limit of {max} sessions"));
        let evicted = st.sessions.trim_user(&live.user_id, max as usize, live.id, &ending).await?;
        if !evicted.is_empty() {
            tracing::info!(request_id = %ctx.request_id, user = %live.user_id, evicted = evicted.len(), limit = max, "session limit: oldest sessions ended");
        }
    }
    let event = if kind == SessionOrigin::Refresh { Kind::Refresh } else { Kind::Login };
    st.audit.record(
        Event::new(event).user(&*live.user_id).session(live.sid.to_string()).ip(ctx.client_ip).actor("client").details(
            serde_json::json!({
                "origin": kind.as_str(),
                "deviceType": device_type,
                "userAgent": ctx.user_agent,
                "country": country,
                "vpn": vpn,
                "score": score,
            }),
        ),
    );
    if kind == SessionOrigin::Login {
        st.logins.add_success(now, country.as_deref(), vpn);
    }
    if !triggers.is_empty() {
        let facts = crate::alerts::Facts {
            user_id: Some(live.user_id.to_string()),
            username: x.username.as_deref().and_then(|p| fields::pointer_str(json, p)),
            email: x.email.as_deref().and_then(|p| fields::pointer_str(json, p)),
            session: Some(live.sid.to_string()),
            ip: Some(ctx.client_ip.to_string()),
            geo: Some(geo_seen.clone()),
            score,
            reasons: triggers.iter().map(|(t, _)| t.name().into_owned()).collect(),
            summary: format!(
                "Login of user {} from {}{}",
                live.user_id,
                ctx.client_ip,
                country.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
            ),
        };
        for (t, chans) in triggers {
            match chans {
                Some(c) => st.alerts.raise_to(t, c, &facts, true),
                None => st.alerts.raise(t, &facts),
            }
        }
    }
    Ok(live)
}

/// Refuses a login the backend already accepted: the client gets the refusal, the backend
/// session just opened is revoked at once (so its tokens are dead even if leaked), and the
/// attempt is audited, alerted and counted.
fn deny_login(st: &AppState, ctx: &RequestCtx, user_id: &str, issued: Issued, via: &str, r: Refused) -> GatewayError {
    let result = r.refusal.as_str();
    tracing::warn!(request_id = %ctx.request_id, user = %user_id, client = %ctx.client_ip, reason = result, why = %r.why, "login refused");
    st.metrics.login(r.refusal.result());
    let mut details = if r.details.is_object() { r.details } else { serde_json::json!({}) };
    details["reason"] = result.into();
    details["why"] = r.why.clone().into();
    details["via"] = via.into();
    let facts = crate::alerts::Facts {
        user_id: Some(user_id.to_string()),
        ip: Some(ctx.client_ip.to_string()),
        score: r.score,
        reasons: vec![result.to_string(), r.why.clone()],
        summary: format!("Login of user {user_id} from {} refused ({result}: {})", ctx.client_ip, r.why),
        geo: r.geo,
        ..Default::default()
    };
    st.alerts.raise(Trigger::LoginRefused, &facts);
    st.audit.record(Event::new(r.refusal.kind()).user(user_id).ip(ctx.client_ip).actor("client").details(details));
    crate::backend::revoke::revoke_unowned(
        st.upstream.clone(),
        st.config.load_full(),
        format!("refused-login:{result}"),
        issued.access,
        issued.refresh,
    );
    r.refusal.error()
}

pub(super) async fn refresh(
    st: &AppState,
    ctx: &mut RequestCtx,
    creds: &Creds,
    issued: Issued,
) -> Result<(), GatewayError> {
    // A refresh that presents no refresh credential of its own rotates the session of its access
    // credential when the backend accepts it (Directus's session mode: the session cookie is
    // both); the refresh token it replaces is then that credential's refresh claim.
    let by_access = creds.refresh.is_empty().then(|| ctx.session.clone()).flatten();
    match ctx.refresh_session.clone().or(by_access) {
        Some(live) => {
            let claim = st.cfg().extract.refresh_claim.clone();
            let presented = creds.bearer.as_ref().or(creds.query_token.as_ref()).or(creds.access_cookie.as_ref());
            let old = creds.refresh_winner().map(|(_, t)| tokens::hash(&t.text)).or_else(|| {
                let c = claim.as_deref()?;
                presented.and_then(|t| claim_of(&t.text, c)).map(|r| tokens::hash(&r))
            });
            st.sessions.rotate(&live, old, issued).await?;
            if st.sessions.is_ended(&live) {
                // Ended while the refresh was in flight: the new tokens are indexed under the
                // ended session (refused), and its backend revocation starts over with them.
                return Err(GatewayError::SessionTerminated);
            }
            tracing::debug!(request_id = %ctx.request_id, session = %live.sid, "tokens rotated");
            st.metrics.refresh(RefreshResult::Rotated);
            st.audit.record(
                Event::new(Kind::Refresh)
                    .user(&*live.user_id)
                    .session(live.sid.to_string())
                    .ip(ctx.client_ip)
                    .actor("client"),
            );
        }
        None => {
            // A refresh token we never saw (its session began before the gateway was in front):
            // adopt the new tokens as a session.
            let empty = Value::Object(Default::default());
            match create(st, ctx, creds, &HeaderMap::new(), &empty, issued, SessionOrigin::Refresh).await {
                Ok(live) => {
                    st.metrics.refresh(RefreshResult::Adopted);
                    ctx.refresh_session = Some(live);
                }
                Err(GatewayError::BadAuthResponse(why)) => {
                    tracing::warn!(request_id = %ctx.request_id, "refresh response not adopted: {why}");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

pub(super) async fn credential_change(
    st: &AppState,
    ctx: &mut RequestCtx,
    creds: &Creds,
    matched: Option<&RouteMatch<'_>>,
    json: Option<&Value>,
    issued: Option<Issued>,
) -> Result<(), GatewayError> {
    if let Some(users) = &creds.users {
        // A batch change (`PATCH /users` with `keys`, `update_users_items`): each named user.
        for user in users {
            end_for_credentials(st, ctx, user).await?;
        }
        return Ok(());
    }
    let x = &st.cfg().extract;
    let user = x
        .credential_user_param
        .as_deref()
        .and_then(|p| matched.and_then(|m| m.param(p)))
        .map(str::to_string)
        .or_else(|| x.user_id.as_deref().and_then(|p| json.and_then(|j| fields::pointer_str(j, p))))
        .or_else(|| ctx.session.as_ref().map(|s| s.user_id.to_string()));
    let Some(user) = user else {
        tracing::warn!(request_id = %ctx.request_id, "credential change succeeded but names no user; no session ended");
        return Ok(());
    };
    end_for_credentials(st, ctx, &user).await?;
    if let (Some(issued), Some(json)) = (issued, json) {
        ctx.session =
            Some(create(st, ctx, creds, &HeaderMap::new(), json, issued, SessionOrigin::CredentialChange).await?);
    }
    Ok(())
}

/// Ends every session of a user whose credentials (password, status) changed.
async fn end_for_credentials(st: &AppState, ctx: &RequestCtx, user: &str) -> Result<(), GatewayError> {
    let ending = Ending::new(EndReason::PasswordChange, Audit::Once(Kind::PasswordChange), "client")
        .user(user)
        .ip(ctx.client_ip)
        .alert(Trigger::PasswordChange, "password changed");
    let ended = st.sessions.end_user(user, &ending).await?;
    tracing::info!(request_id = %ctx.request_id, user = %user, sessions = ended.len(), "credentials changed: sessions ended");
    Ok(())
}

/// Writes where a session was last used from, off the request path (a failure is logged: the
/// index already holds it, and the next new address writes again).
pub(super) fn write_seen(st: &AppState, live: &Live, seen: Seen, changed: bool, threat: Option<u32>) {
    let (sessions, live) = (st.sessions.clone(), live.clone());
    tokio::spawn(async move {
        if let Err(e) = sessions.record_seen(&live, seen, changed, threat).await {
            tracing::warn!(session = %live.sid, error = %e, "could not record where the session was last used from");
        }
    });
}

/// A live session was used from another country, network or browser family: it is re-scored
/// as a login from there would be, audited and alerted (`session_changed`), and under
/// `on_change = "terminate"` ended — the request gets 401 `session_changed`.
pub(super) async fn session_changed(
    st: &AppState,
    ctx: &RequestCtx,
    live: &Live,
    agent: &str,
    change: Change,
    policy: Policy,
) -> Result<(), GatewayError> {
    let role = st.sessions.role(live);
    let device = crate::device::parse(agent);
    let assessment = st.risk.enabled().then(|| {
        st.risk.assess(&LoginFacts {
            user_id: &live.user_id,
            ip: ctx.client_ip,
            geo: &change.geo,
            device: &device,
            user_agent: agent,
            role: role.as_deref(),
            now_ms: st.sessions.clock().now_ms(),
        })
    });
    let score = assessment.as_ref().map(|a| a.score);
    let terminate = policy.on_change == OnChange::Terminate;
    let details = serde_json::json!({
        "what": change.what,
        "from": change.from,
        "to": change.to,
        "ip": ctx.client_ip.to_string(),
        "score": score,
        "action": if terminate { "terminate" } else { "alert" },
    });
    let why = format!("used from another {}", change.what.join(" and "));
    tracing::warn!(request_id = %ctx.request_id, session = %live.sid, user = %live.user_id, client = %ctx.client_ip, what = ?change.what, terminate, "session changed mid-session");
    write_seen(st, live, change.seen.clone(), true, score);
    if terminate {
        let ending = Ending::new(EndReason::SessionChanged, Audit::EachSession(Kind::SessionChanged), "system")
            .ip(ctx.client_ip)
            .details(details)
            .alert(Trigger::SessionChanged, why);
        st.sessions.end(&[live.id], &ending).await?;
        return Err(GatewayError::SessionChanged);
    }
    st.audit.record(
        Event::new(Kind::SessionChanged)
            .user(&*live.user_id)
            .session(live.sid.to_string())
            .ip(ctx.client_ip)
            .actor("system")
            .details(details),
    );
    let facts = crate::alerts::Facts {
        user_id: Some(live.user_id.to_string()),
        session: Some(live.sid.to_string()),
        ip: Some(ctx.client_ip.to_string()),
        geo: Some(change.geo),
        score,
        reasons: change.what.iter().map(|w| w.to_string()).collect(),
        summary: format!("Session {} of user {} {why} ({})", live.sid, live.user_id, ctx.client_ip),
        ..Default::default()
    };
    st.alerts.raise(Trigger::SessionChanged, &facts);
    Ok(())
}
