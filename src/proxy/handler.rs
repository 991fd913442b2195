//! The request path. `handle` is the only place errors become responses; `handle_inner` reads
//! top to bottom as the list of phases every request goes through.
//!
//! The rule that keeps enforcement honest (STYLE 13b): the credentials of a request are parsed
//! here once — at least as leniently as the backend parses them — every one of them is checked,
//! and the backend receives exactly what was checked, in one canonical form: `Authorization:
//! Bearer <checked token>` (or none), token cookies once each, auth-route bodies as the JSON the
//! gateway parsed. A request the gateway cannot read unambiguously is refused, never passed.

use super::body::{self, AuthBody};
use super::credentials::{self, Cookies, Token};
use super::graphql::{self, Watched};
use super::headers;
use super::learn;
use super::longlived::{self, UntilEnded};
use super::user_api;
use crate::audit::{Event, Kind};
use crate::backend::fields;
use crate::config::{AccessLog, Config, OnChange, RefreshMode, RefreshPrecedence};
use crate::error::{full, Body, BoxError, GatewayError, Side};
use crate::metrics::{LoginResult, RefreshResult};
use crate::routes::{self, RouteClass, RouteMatch};
use crate::session::enforce::{Decision, Enforcer, Presented, Refusal};
use crate::session::seen::Sighting;
use crate::session::{tokens, Audit, EndReason, Ending, Live, SessionOrigin};
use crate::state::AppState;
use crate::store::{SessionRecord, TokenEntry, TokenKind};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest user agent stored with a session.
const MAX_USER_AGENT: usize = 512;

/// Headers that describe a request body's bytes; they go when the body is re-serialized.
static BODY_HEADERS: [header::HeaderName; 5] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::HeaderName::from_static("content-md5"),
    header::HeaderName::from_static("digest"),
    header::HeaderName::from_static("content-digest"),
];

/// Per-request context, filled in as the phases run.
pub struct RequestCtx {
    pub peer: SocketAddr,
    pub tls: bool,
    pub client_ip: IpAddr,
    pub request_id: String,
    pub route: RouteClass,
    pub user_agent: String,
    /// Live session of the presented access token.
    pub session: Option<Live>,
    /// `exp` (unix seconds) of the presented access token, when known.
    pub access_exp: Option<i64>,
    /// Live session of the refresh token the backend will read (refresh and logout routes).
    pub refresh_session: Option<Live>,
    /// Time spent waiting for the backend's response head.
    pub upstream_elapsed: Option<Duration>,
    /// The protocol a client asked to switch to (`Upgrade`, other routes only).
    pub upgrade: Option<HeaderValue>,
    /// The answer key of the watched mutation, on a `[graphql]` endpoint.
    pub graphql_key: Option<String>,
}

/// Where a refresh credential was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum From {
    Cookie,
    Body,
    /// The access cookie's refresh claim (`extract.refresh_claim`), which the backend reads in
    /// its `session` mode; forwarded as the access cookie it is part of.
    Claim,
}

/// The credentials a request presents, and what is forwarded of them.
#[derive(Default)]
pub(super) struct Creds {
    /// Access tokens: the bearer, then the access cookie (when configured). Each is checked;
    /// the first that belongs to a live session is the request's session.
    pub(super) bearer: Option<Token>,
    /// The access token of `extract.access_query` (Directus's `?access_token=`).
    pub(super) query_token: Option<Token>,
    pub(super) access_cookie: Option<Token>,
    /// Refresh credentials in the backend's precedence order (refresh and logout routes). The
    /// first one is the one the backend reads — the only one forwarded.
    pub(super) refresh: Vec<(From, Token)>,
    /// Refresh credentials the request presents where the backend will not read them (another
    /// place than the mode names): checked like the others, never forwarded.
    pub(super) unread: Vec<Token>,
    /// Whether the first refresh credential belongs to a live session (as a refresh token).
    pub(super) refresh_tracked: bool,
    /// Whether the bearer is a tracked access token (its claims were seen in a backend answer).
    pub(super) bearer_tracked: bool,
    /// Only strings count, as in Strapi (`typeof deviceId === 'string'`).
    pub(super) device_id: Option<String>,
    /// The login identifier (login routes), recorded with failed logins.
    pub(super) identifier: Option<String>,
    pub(super) logout_all: bool,
    pub(super) cookies: Option<Cookies>,
    /// The body field the refresh token was read from (to drop it when another place wins).
    pub(super) refresh_field: Option<String>,
    /// The users a credential change names (its rule's `for` pointer); `None`: the rule names
    /// none, and the user is the path parameter's, the answer's or the session's.
    pub(super) users: Option<Vec<String>>,
}

impl Creds {
    pub(super) fn refresh_winner(&self) -> Option<&(From, Token)> {
        self.refresh.first()
    }
}

enum ReqBody {
    Stream(Incoming),
    Buffered(Bytes),
}

/// Sessions a logout ended before it was forwarded, settled once the backend answered.
#[derive(Default)]
struct LogoutEnded {
    records: Vec<SessionRecord>,
}

/// A W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), the only form logged.
fn is_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)
}

/// Entry point for every public request.
pub async fn handle(
    st: Arc<AppState>,
    peer: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128 && headers_from_trusted(&st, peer))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let mut ctx = RequestCtx {
        peer,
        tls,
        client_ip: peer.ip(),
        request_id,
        route: RouteClass::Other,
        user_agent: String::new(),
        session: None,
        access_exp: None,
        refresh_session: None,
        upstream_elapsed: None,
        upgrade: None,
        graphql_key: None,
    };
    let method = req.method().clone();
    // Read only for the access log (the header itself is forwarded unchanged).
    let traceparent = st
        .log
        .as_ref()
        .and(req.headers().get("traceparent"))
        .and_then(|v| v.to_str().ok())
        .filter(|t| is_traceparent(t))
        .map(str::to_string);
    let (mut res, decision) = match handle_inner(&st, &mut ctx, req).await {
        Ok(res) => (res, "allow"),
        Err(e) => {
            match e.side() {
                Side::Client => {
                    tracing::info!(request_id = %ctx.request_id, route = ctx.route.as_str(), reason = e.reason(), "request denied: {e}")
                }
                Side::Upstream => {
                    tracing::warn!(request_id = %ctx.request_id, route = ctx.route.as_str(), reason = e.reason(), "upstream failure: {e}")
                }
                Side::Internal => {
                    tracing::error!(request_id = %ctx.request_id, route = ctx.route.as_str(), reason = e.reason(), "gateway failure: {e}")
                }
            }
            let reason = e.reason();
            (e.into_response(st.cfg().backend.error_shape), reason)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        res.headers_mut().insert("x-request-id", v);
    }
    // `decision` is "allow" or a reason code of `GatewayError`: a closed set of label values.
    let added = started.elapsed().saturating_sub(ctx.upstream_elapsed.unwrap_or_default());
    st.metrics.record_request(ctx.route, res.status().as_u16(), decision, ctx.upstream_elapsed, added);
    if let Some(sink) = &st.log {
        let status = res.status().as_u16();
        let log = &st.cfg().log;
        let logged = match log.access {
            AccessLog::Off => false,
            AccessLog::All => true,
            AccessLog::Sample => decision != "allow" || status >= 500 || rand::random::<f64>() < log.access_sample,
        };
        if logged {
            let session = ctx.session.as_ref().map(|s| s.sid.to_string());
            sink.access(&crate::telemetry::Access {
                request_id: &ctx.request_id,
                method: method.as_str(),
                route: ctx.route.as_str(),
                status,
                decision,
                session: session.as_deref().unwrap_or("-"),
                client: ctx.client_ip,
                upstream_ms: ctx.upstream_elapsed.map(|d| d.as_secs_f64() * 1e3),
                added_ms: added.as_secs_f64() * 1e3,
                traceparent: traceparent.as_deref(),
            });
        }
    }
    Ok(res)
}

fn headers_from_trusted(st: &AppState, peer: SocketAddr) -> bool {
    headers::trusted(peer.ip(), &st.cfg().server.trusted_proxies)
}

async fn handle_inner(
    st: &AppState,
    ctx: &mut RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    // The route match borrows from this snapshot, so a reload landing meanwhile cannot free
    // the rule it points to (later phases read the configuration in force when they run).
    let cfg = st.config.load_full();
    let (mut parts, body) = req.into_parts();
    let normalized = routes::normalize_path(parts.uri.path());
    let matched = classify(&cfg, ctx, &parts, &normalized);
    let on_graphql = ctx.route == RouteClass::Other
        && cfg.graphql.endpoints.iter().any(|e| e.matches_at_or_below(&parts.method, &normalized));
    // Only plain routes switch protocols: auth routes' bodies are read, the user API is ours.
    let upgrade = if ctx.route == RouteClass::Other && !on_graphql { longlived::ask(&mut parts) } else { None };
    ctx.upgrade = upgrade.as_ref().map(|u| u.protocol.clone());
    let body = read_body(&cfg, ctx.route.is_auth() || on_graphql, &parts.headers, body).await?;
    let auth_body = parse_auth_body(&cfg, &parts, &body)?;
    let watched = if on_graphql { mutation(&cfg, ctx, &parts.headers, auth_body.json())? } else { None };
    let matched = apply_body_condition(&cfg, ctx, matched, (&parts.method, &normalized), auth_body.json());
    // What the auth phases read: a watched mutation's arguments, else the body.
    let fields = watched.as_ref().map(|w| &w.args).or(auth_body.json());
    // The route's own refresh-token field (`reads /token`), else the configured one.
    let refresh_field = matched.as_ref().and_then(|m| m.rule.refresh_at.as_deref());
    let refresh_field = refresh_field.or(cfg.extract.request_refresh_token.as_deref());
    let mut creds = credentials(&cfg, ctx, &parts.headers, (parts.uri.query(), refresh_field), fields)?;
    let users_at = match &watched {
        Some(w) => w.rule.users.as_deref(),
        None => matched.as_ref().and_then(|m| m.rule.users.as_deref()),
    };
    creds.users = named_users(ctx.route, users_at, fields)?;
    enforce(st, ctx, &mut creds).await?;
    sight(st, &cfg, ctx, &parts.headers).await?;
    if ctx.route == RouteClass::UserApi {
        let rest = &normalized[cfg.user_api.prefix.len()..];
        // The gateway answers these itself, so it checks the access token's expiry itself.
        let expired = ctx.access_exp.is_some_and(|exp| exp < st.sessions.clock().now_ms() / 1000);
        let current = ctx.session.clone().filter(|_| !expired);
        return Box::pin(user_api::handle(st, &parts.method, rest, parts.uri.query(), current)).await;
    }
    // The rare paths (logouts, learning from auth answers, endings) are boxed: their futures are
    // large, and inline they would make every request's future kilobytes bigger to move.
    let ended = match ctx.route {
        RouteClass::Logout => Box::pin(end_before_forward(st, ctx, &creds)).await?,
        _ => LogoutEnded::default(),
    };
    let up = upstream_request(st, &cfg, ctx, parts, body, auth_body, &creds)?;
    let sent = Instant::now();
    // A plain request of a session waits for the backend only while the session lasts (a long
    // poll of a logged-out session is answered at once). Auth routes are never cut: a logout
    // ends its own session before it is forwarded.
    let racing = ctx.session.as_ref().filter(|_| ctx.route == RouteClass::Other);
    let res = longlived::answer_or_end(&st.sessions, &st.metrics, racing, st.upstream.send(up)).await;
    ctx.upstream_elapsed = Some(sent.elapsed());
    if !ended.records.is_empty() {
        // No answer (an upstream failure) proves nothing: the logout's revocations go ahead. Nor
        // does a GraphQL status: errors come with 200.
        let status = res.as_ref().ok().map(|r| r.status()).filter(|_| ctx.graphql_key.is_none());
        Box::pin(settle_logout(st, ctx, &creds, &ended, status)).await;
    }
    let res = res?;
    if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        return longlived::tunnel(&st.sessions, &st.metrics, ctx.session.clone(), upgrade, res);
    }
    observe(st, ctx, matched.as_ref(), &creds, res).await
}

/// Phase 1: decide the route class from method and path alone; note client IP (and agent, on
/// auth routes).
fn classify<'a>(
    cfg: &'a Config,
    ctx: &mut RequestCtx,
    parts: &http::request::Parts,
    normalized: &str,
) -> Option<RouteMatch<'a>> {
    ctx.client_ip = headers::client_ip(ctx.peer.ip(), &parts.headers, &cfg.server.trusted_proxies);
    let prefix = &cfg.user_api.prefix;
    if cfg.user_api.enabled
        && normalized.starts_with(prefix.as_str())
        && (normalized.len() == prefix.len() || normalized.as_bytes().get(prefix.len()) == Some(&b'/'))
    {
        ctx.route = RouteClass::UserApi;
        return None;
    }
    let m = cfg.routes.find(&parts.method, normalized);
    ctx.route = m.as_ref().map(|m| m.rule.class).unwrap_or(RouteClass::Other);
    if ctx.route.is_auth() {
        note_user_agent(ctx, &parts.headers);
    }
    m
}

/// Only sessions record the agent; other requests skip the copy.
fn note_user_agent(ctx: &mut RequestCtx, headers: &HeaderMap) {
    ctx.user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(MAX_USER_AGENT).collect())
        .unwrap_or_default();
}

/// Phase 2: auth routes and GraphQL endpoints have their body buffered (capped); all others
/// stream.
async fn read_body(cfg: &Config, buffered: bool, headers: &HeaderMap, body: Incoming) -> Result<ReqBody, GatewayError> {
    if !buffered {
        return Ok(ReqBody::Stream(body));
    }
    let max = cfg.server.max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(GatewayError::BodyTooLarge);
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(c) => Ok(ReqBody::Buffered(c.to_bytes())),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(GatewayError::BodyTooLarge),
        Err(_) => Err(GatewayError::BadRequest("request body could not be read")),
    }
}

/// Phase 3: an auth route's body, parsed in every format the backend reads (see `body`).
fn parse_auth_body(cfg: &Config, parts: &http::request::Parts, body: &ReqBody) -> Result<AuthBody, GatewayError> {
    match body {
        ReqBody::Buffered(b) => {
            let methods = (&parts.method, cfg.backend.body_methods.as_slice());
            body::parse(methods, &parts.headers, b, &cfg.backend.body_formats, cfg.server.max_body_bytes)
        }
        ReqBody::Stream(_) => Ok(AuthBody::None),
    }
}

/// Phase 3b (GraphQL endpoints): the watched mutation the request runs, if any, makes it an
/// auth route of that mutation's class (`graphql`).
fn mutation<'a>(
    cfg: &'a Config,
    ctx: &mut RequestCtx,
    headers: &HeaderMap,
    json: Option<&Value>,
) -> Result<Option<Watched<'a>>, GatewayError> {
    let watched = graphql::read(&cfg.graphql, json)?;
    if let Some(w) = &watched {
        ctx.route = w.class();
        ctx.graphql_key = Some(w.key.clone());
        note_user_agent(ctx, headers);
    }
    Ok(watched)
}

/// The users a credential change names where its rule says (`for /keys`); a rule that says
/// and a body that names nobody there is refused (which sessions to end would be a guess).
fn named_users(
    route: RouteClass,
    pointer: Option<&str>,
    fields: Option<&Value>,
) -> Result<Option<Vec<String>>, GatewayError> {
    let Some(pointer) = pointer.filter(|_| route == RouteClass::CredentialChange) else { return Ok(None) };
    let mut users = routes::users_at(fields, pointer);
    // A path parameter is matched lower-cased; a key in the body is taken both ways (a UUID
    // column may compare either way), so no spelling of an id escapes.
    let lower: Vec<String> = users.iter().map(|u| u.to_lowercase()).filter(|l| !users.contains(l)).collect();
    users.extend(lower);
    if users.is_empty() {
        return Err(GatewayError::UsersUnnamed("this change of credentials must name its users by key"));
    }
    Ok(Some(users))
}

/// A rule with `if /pointer` (or `if /pointer != value`) applies only when the body satisfies
/// it; the next rule of the same route is tried then, and with none the request is a plain one.
fn apply_body_condition<'a>(
    cfg: &'a Config,
    ctx: &mut RequestCtx,
    m: Option<RouteMatch<'a>>,
    (method, normalized): (&http::Method, &str),
    json: Option<&Value>,
) -> Option<RouteMatch<'a>> {
    let cond = m.as_ref().and_then(|m| m.rule.body_condition.as_ref());
    match cond {
        Some(c) if !c.holds(json) => {
            let next = cfg.routes.find_for_body(method, normalized, json);
            ctx.route = next.as_ref().map_or(RouteClass::Other, |n| n.rule.class);
            next
        }
        _ => m,
    }
}

/// Phase 4: every credential the request presents, read as the backend reads it. Several
/// `Authorization` headers, or one token cookie with two values, are refused.
fn credentials(
    cfg: &Config,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    (query, refresh_field): (Option<&str>, Option<&str>),
    json: Option<&Value>,
) -> Result<Creds, GatewayError> {
    let route = ctx.route;
    let x = &cfg.extract;
    let mut c = Creds { bearer: credentials::bearer(headers)?, ..Default::default() };
    if let Some(name) = x.access_query.as_deref() {
        c.query_token = credentials::query_token(query, name)?;
        if c.query_token.is_some() && c.bearer.is_some() {
            // Directus refuses this too (400): two places, no telling which one counts.
            return Err(GatewayError::AmbiguousCredentials("an access token in both the query and Authorization"));
        }
    }
    let reads_refresh = matches!(route, RouteClass::Refresh | RouteClass::Logout);
    let wants_cookies = x.access_cookie.is_some() || (reads_refresh && x.refresh_cookie.is_some());
    if wants_cookies && headers.contains_key(header::COOKIE) {
        let cookies = Cookies::parse(headers);
        if let Some(name) = x.access_cookie.as_deref() {
            c.access_cookie = cookies.token(name)?;
        }
        if let (true, Some(name)) = (reads_refresh, x.refresh_cookie.as_deref()) {
            if let Some(t) = cookies.token(name)? {
                c.refresh.push((From::Cookie, t));
            }
        }
        c.cookies = Some(cookies);
    }
    if reads_refresh {
        let body_token = refresh_field.and_then(|p| json.and_then(|j| fields::pointer_string(j, p)));
        c.refresh_field = refresh_field.map(str::to_string);
        let default = if ctx.graphql_key.is_some() { cfg.graphql.default_mode } else { None };
        let mode = refresh_mode(cfg, json, default)?;
        if mode.is_some() {
            // The backend reads the one place the request names: that one is the refresh
            // credential; the others are only checked.
            c.unread.extend(c.refresh.drain(..).map(|(_, t)| t));
        }
        match mode {
            Some(RefreshMode::Body) => c.refresh.extend(body_token.map(|t| (From::Body, Token::from_text(t)))),
            Some(RefreshMode::Cookie) => {
                c.refresh.extend(c.unread.drain(..).map(|t| (From::Cookie, t)));
                c.unread.extend(body_token.map(Token::from_text));
            }
            Some(RefreshMode::Claim) => {
                let claim = x.refresh_claim.as_deref().and_then(|name| {
                    let claims = c.access_cookie.as_ref().and_then(|t| tokens::response_claims(&t.text));
                    claims.and_then(|m| tokens::claim_str(&m, name))
                });
                c.refresh.extend(claim.map(|t| (From::Claim, Token::from_text(t))));
                c.unread.extend(body_token.map(Token::from_text));
            }
            None => {
                if let Some(t) = body_token {
                    let token = Token::from_text(t);
                    match x.refresh_precedence {
                        RefreshPrecedence::CookieFirst => c.refresh.push((From::Body, token)),
                        RefreshPrecedence::BodyFirst => c.refresh.insert(0, (From::Body, token)),
                    }
                }
            }
        }
    }
    if matches!(route, RouteClass::Login | RouteClass::Logout) {
        c.device_id = x.request_device_id.as_deref().and_then(|p| json.and_then(|j| fields::pointer_string(j, p)));
    }
    if route == RouteClass::Login {
        c.identifier = x
            .request_identifier
            .as_deref()
            .and_then(|p| json.and_then(|j| fields::pointer_string(j, p)))
            .map(|s| s.chars().take(256).collect());
    }
    if route == RouteClass::Logout {
        c.logout_all = x
            .logout_all
            .as_ref()
            .is_some_and(|(p, v)| json.and_then(|j| fields::pointer_string(j, p)).is_some_and(|got| got == *v));
    }
    Ok(c)
}

/// The refresh place a refresh or logout request names (`extract.refresh_mode`), as Directus
/// reads it: a truthy value there is the mode (`body.mode || …`); one that names no place is
/// refused, as the backend refuses it. Absent: `default` (GraphQL's `json`), else precedence.
fn refresh_mode(
    cfg: &Config,
    json: Option<&Value>,
    default: Option<RefreshMode>,
) -> Result<Option<RefreshMode>, GatewayError> {
    let Some(pointer) = cfg.extract.refresh_mode.as_deref() else { return Ok(None) };
    match json.and_then(|j| j.pointer(pointer)) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(default),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(default),
        Some(Value::String(s)) => RefreshMode::named(s)
            .map(Some)
            .ok_or(GatewayError::MalformedBody("the refresh mode must be json, cookie or session")),
        Some(_) => Err(GatewayError::MalformedBody("the refresh mode must be json, cookie or session")),
    }
}

/// Phase 5: every presented credential is decided (`session::enforce`) and the request acts on
/// the decisions: any refused one refuses the request — ending its session first when the
/// refusal says so (reuse, idleness) — and the live ones name the request's sessions and are
/// touched. Login routes refuse nothing — a stale token sent along with a fresh login must not
/// stop the user from logging in again — but drop refused tokens from what is forwarded.
async fn enforce(st: &AppState, ctx: &mut RequestCtx, creds: &mut Creds) -> Result<(), GatewayError> {
    let now = st.sessions.clock().now_ms();
    if ctx.route == RouteClass::Login {
        let cfg = st.cfg();
        let enforcer = enforcer(st, &cfg);
        for slot in [&mut creds.bearer, &mut creds.query_token, &mut creds.access_cookie] {
            let refused = slot.as_ref().is_some_and(|t| {
                matches!(
                    enforcer.decide(&t.text, Presented::Access, now),
                    Decision::Refuse(Refusal::Ended | Refusal::Reuse(..) | Refusal::Idle(_) | Refusal::MaxAge(_))
                )
            });
            if refused {
                *slot = None;
            }
        }
        return Ok(());
    }
    let lives = match decide_all(st, creds, now) {
        Ok(lives) => lives,
        Err(refusal) => {
            if let Some((live, ending)) = refusal.ends() {
                if let Refusal::Reuse(_, token) = &refusal {
                    tracing::warn!(session = %live.sid, user = %live.user_id, %token, "refresh token reuse: ending the session");
                    st.metrics.reuse_detected.inc();
                }
                Box::pin(st.sessions.end(&[live.id], &ending)).await?;
            }
            return Err(refusal.error());
        }
    };
    for (first, presented, live, entry) in lives.into_iter().flatten() {
        match (presented, entry.kind) {
            // A refresh token presented as a bearer is checked, but it is not an access
            // credential (Strapi answers 401 for it): it names no session of the request.
            (Presented::Access, TokenKind::Access) => {
                creds.bearer_tracked |= first;
                if ctx.session.is_none() {
                    st.sessions.touch(&live, now);
                    ctx.session = Some(live);
                    ctx.access_exp = entry.exp;
                }
            }
            (Presented::Refresh, TokenKind::Refresh) if first => {
                st.sessions.touch(&live, now);
                ctx.refresh_session = Some(live);
                creds.refresh_tracked = true;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Phase 5b: where the request's session is used from (`session::seen`). A change of
/// country, network or browser family is handed to [`learn::session_changed`]; a new address
/// in the same place is kept (written off the request path, at most once per last-seen
/// interval).
async fn sight(st: &AppState, cfg: &Config, ctx: &RequestCtx, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(live) = ctx.session.as_ref().or(ctx.refresh_session.as_ref()) else { return Ok(()) };
    let policy = *st.sessions.policy(&cfg.policies, live);
    if policy.on_change == OnChange::Off {
        return Ok(());
    }
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = st.sessions.clock().now_ms();
    match st.sessions.sight(live, ctx.client_ip, agent, &st.geo, now) {
        Sighting::Same { write: None } => Ok(()),
        Sighting::Same { write: Some(seen) } => {
            learn::write_seen(st, live, seen, false, None);
            Ok(())
        }
        Sighting::Changed(change) => Box::pin(learn::session_changed(st, ctx, live, agent, *change, policy)).await,
    }
}

/// The most credentials a request can present: the bearer, the query token, the access cookie,
/// and the refresh cookie, body field and access cookie claim.
const MAX_CREDENTIALS: usize = 6;

/// A live credential: whether it is the first of its kind, as what it was presented, its session.
type LiveCredential = (bool, Presented, Live, TokenEntry);

/// Decides every presented credential in order (access ones, then refresh ones in the
/// backend's precedence); the first refusal is the answer.
fn decide_all(st: &AppState, creds: &Creds, now: i64) -> Result<[Option<LiveCredential>; MAX_CREDENTIALS], Refusal> {
    let cfg = st.cfg();
    let enforcer = enforcer(st, &cfg);
    let access =
        [creds.bearer.as_ref(), creds.query_token.as_ref(), creds.access_cookie.as_ref()].into_iter().enumerate();
    let access = access.filter_map(|(i, t)| t.map(|t| (i == 0, Presented::Access, t)));
    let refresh = creds.refresh.iter().enumerate().map(|(i, (_, t))| (i == 0, Presented::Refresh, t));
    let refresh = refresh.chain(creds.unread.iter().map(|t| (false, Presented::Refresh, t)));
    let mut lives: [Option<LiveCredential>; MAX_CREDENTIALS] = Default::default();
    for (slot, (first, presented, t)) in access.chain(refresh).enumerate() {
        match enforcer.decide(&t.text, presented, now) {
            Decision::Refuse(r) => return Err(r),
            Decision::Live(live, entry) => {
                if let Some(s) = lives.get_mut(slot) {
                    *s = Some((first, presented, live, entry));
                }
            }
            Decision::Unknown => {}
        }
    }
    Ok(lives)
}

fn enforcer<'a>(st: &'a AppState, cfg: &'a Config) -> Enforcer<'a> {
    Enforcer {
        sessions: &st.sessions,
        verifier: st.verifier.as_ref(),
        session_id_claim: cfg.extract.session_id_claim.as_deref(),
        policies: &cfg.policies,
    }
}

/// Phase 6 (logout routes): end the session(s) locally and durably *before* forwarding, so the
/// logout holds whatever the backend answers. Which sessions follows the backend's own rules
/// (Strapi `revokeLogoutSessions`): `scope: "all"` ends every session of the user; else a
/// string `deviceId` that device's sessions; else the session of the refresh token the backend
/// reads; else the bearer's session. Their backend revocations are held until the answer shows
/// whether the backend itself revoked them (see [`settle_logout`]).
async fn end_before_forward(st: &AppState, ctx: &RequestCtx, creds: &Creds) -> Result<LogoutEnded, GatewayError> {
    let Some(user) = ctx.session.as_ref().or(ctx.refresh_session.as_ref()).map(|s| s.user_id.clone()) else {
        return Ok(LogoutEnded::default());
    };
    let (ids, reason, what) = if creds.logout_all {
        (st.sessions.user_session_ids(&user), EndReason::LogoutAll, Kind::LogoutAll)
    } else if let Some(dev) = &creds.device_id {
        (st.sessions.user_device_sessions(&user, dev).await?, EndReason::Logout, Kind::Logout)
    } else if let Some(s) = ctx.refresh_session.as_ref().filter(|_| creds.refresh_tracked) {
        (vec![s.id], EndReason::Logout, Kind::Logout)
    } else if creds.bearer_tracked && bearer_names_no_backend_session(st, creds) {
        // Strapi: a logout that finds no session of its own revokes every session of the user.
        (st.sessions.user_session_ids(&user), EndReason::LogoutAll, Kind::LogoutAll)
    } else {
        (ctx.session.iter().map(|s| s.id).collect(), EndReason::Logout, Kind::Logout)
    };
    let hold = st.cfg().upstream.response_timeout + Duration::from_secs(5);
    let ending = Ending::new(reason, Audit::EachSession(what), "user").ip(ctx.client_ip);
    let records = st.sessions.end_pending_proof(&ids, &ending, hold).await?;
    tracing::info!(request_id = %ctx.request_id, user = %user, sessions = records.len(), "logout");
    Ok(LogoutEnded { records })
}

/// Whether the bearer (a tracked access token: its claims are the backend's) lacks the backend
/// session id claim, so the backend's logout finds no session for it.
fn bearer_names_no_backend_session(st: &AppState, creds: &Creds) -> bool {
    let Some(claim) = st.cfg().extract.session_id_claim.clone() else { return false };
    creds
        .bearer
        .as_ref()
        .and_then(|b| tokens::response_claims(&b.text))
        .is_some_and(|c| tokens::claim_str(&c, &claim).is_none())
}

/// After a logout's backend answer: a revocation is *proven* when the backend answered 2xx to a
/// logout that, by its own rules, revoked exactly that session's current backend session — all
/// sessions (`scope: "all"`), or the session of the refresh token it read, or the bearer's
/// session when no refresh token was sent, each naming the session's latest backend session id.
/// Every other ended session is revoked by the gateway with its stored tokens (a rotated-out
/// access jwt, an expired one the backend answered 401, a device id the backend ignored …).
async fn settle_logout(
    st: &AppState,
    ctx: &RequestCtx,
    creds: &Creds,
    ended: &LogoutEnded,
    status: Option<http::StatusCode>,
) {
    let success = status.is_some_and(|s| s.is_success());
    let claim = st.cfg().extract.session_id_claim.clone();
    let backend_session = |t: &Token| {
        claim.as_deref().and_then(|c| tokens::response_claims(&t.text).and_then(|m| tokens::claim_str(&m, c)))
    };
    let named = match (creds.refresh_winner(), &creds.bearer) {
        (Some((_, t)), _) if creds.refresh_tracked => backend_session(t),
        (None, Some(b)) if creds.bearer_tracked => backend_session(b),
        _ => None,
    };
    let named = named.filter(|_| creds.device_id.is_none());
    let (proven, due) = split_proven(&ended.records, |r| {
        success && (creds.logout_all || names_current_backend_session(r, named.as_deref()))
    });
    if let Err(e) = st.sessions.settle_revocations(&proven, &due).await {
        tracing::warn!(request_id = %ctx.request_id, error = %e, "could not settle logout revocations (they run when their hold expires)");
    }
}

/// Whether `named` (a backend session id the backend's answer acted on) is the session's
/// current backend session (its latest alias).
pub(super) fn names_current_backend_session(rec: &SessionRecord, named: Option<&str>) -> bool {
    named.is_some() && named == rec.aliases.last().map(String::as_str)
}

/// The ids of `records`, split into those the backend's answer proves revoked and the others.
pub(super) fn split_proven(records: &[SessionRecord], proves: impl Fn(&SessionRecord) -> bool) -> (Vec<u64>, Vec<u64>) {
    let (proven, due): (Vec<&SessionRecord>, Vec<&SessionRecord>) = records.iter().partition(|r| proves(r));
    (proven.iter().map(|r| r.id).collect(), due.iter().map(|r| r.id).collect())
}

/// Phase 7: the request as the backend gets it — hop-by-hop and forwarding headers, and the
/// credentials exactly as they were checked.
fn upstream_request(
    st: &AppState,
    cfg: &Config,
    ctx: &RequestCtx,
    mut parts: http::request::Parts,
    body: ReqBody,
    auth_body: AuthBody,
    creds: &Creds,
) -> Result<Request<Body>, GatewayError> {
    let host = parts
        .headers
        .get(header::HOST)
        .cloned()
        .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    headers::forward_request_headers(
        &mut parts.headers,
        ctx.peer.ip(),
        &cfg.server.trusted_proxies,
        ctx.tls,
        host.as_ref(),
    );
    let upstream_host = if cfg.upstream.preserve_host { host } else { None };
    match upstream_host.or_else(|| HeaderValue::from_str(st.upstream.authority().as_str()).ok()) {
        Some(h) => parts.headers.insert(header::HOST, h),
        None => parts.headers.remove(header::HOST),
    };
    if let Some(protocol) = &ctx.upgrade {
        longlived::forward_ask(&mut parts.headers, protocol);
    }
    credentials::set_bearer(&mut parts.headers, creds.bearer.as_ref());
    forward_cookies(cfg, ctx.route, &mut parts.headers, creds);
    if ctx.route.is_auth() {
        // The gateway reads these responses; ask for them uncompressed.
        parts.headers.remove(header::ACCEPT_ENCODING);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        parts.headers.insert("x-request-id", v);
    }
    let pq: std::borrow::Cow<'_, str> = match cfg.extract.access_query.as_deref() {
        // The query token goes out as checked (or not at all, when a login route dropped it).
        Some(name) => {
            let query = credentials::set_query_token(parts.uri.query(), name, creds.query_token.as_ref());
            let path = parts.uri.path();
            if query.is_empty() {
                path.to_string().into()
            } else {
                format!("{path}?{query}").into()
            }
        }
        None => parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").into(),
    };
    parts.uri = st.upstream.uri(&pq)?;
    parts.version = http::Version::HTTP_11;
    let body = match (body, auth_body) {
        (ReqBody::Stream(b), _) => b.map_err(|e| Box::new(e) as BoxError).boxed(),
        (ReqBody::Buffered(_), AuthBody::Json(mut json)) => {
            // Only the refresh credential the backend reads is forwarded (a GraphQL mutation's
            // arguments are in its query text, which goes as checked).
            if let (Some((From::Cookie | From::Claim, _)), Some(ptr), None) =
                (creds.refresh_winner(), creds.refresh_field.as_deref(), &ctx.graphql_key)
            {
                remove_pointer(&mut json, ptr);
            }
            let (bytes, media) = if cfg.backend.sends_forms() {
                (fields::to_urlencoded(&json).into_bytes(), "application/x-www-form-urlencoded")
            } else {
                let bytes = serde_json::to_vec(&json)
                    .map_err(|e| GatewayError::Internal(format!("re-serializing a body: {e}")))?;
                (bytes, "application/json")
            };
            strip_body_headers(&mut parts.headers);
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            full(bytes)
        }
        (ReqBody::Buffered(raw), AuthBody::None) => {
            if !raw.is_empty() {
                // A body the backend does not read on this method: not forwarded.
                strip_body_headers(&mut parts.headers);
                parts.headers.remove(header::CONTENT_TYPE);
            }
            full(Bytes::new())
        }
    };
    Ok(Request::from_parts(parts, body))
}

/// Token cookies go out once each, exactly as checked; the refresh cookie only when it is the
/// refresh credential the backend reads.
fn forward_cookies(cfg: &Config, route: RouteClass, headers: &mut HeaderMap, creds: &Creds) {
    let Some(cookies) = &creds.cookies else { return };
    let x = &cfg.extract;
    let mut names: Vec<&str> = Vec::new();
    let mut keep: Vec<(&str, &Token)> = Vec::new();
    if let Some(name) = x.access_cookie.as_deref() {
        names.push(name);
        if let Some(t) = &creds.access_cookie {
            keep.push((name, t));
        }
    }
    if let (true, Some(name)) = (matches!(route, RouteClass::Refresh | RouteClass::Logout), x.refresh_cookie.as_deref())
    {
        names.push(name);
        if let Some((From::Cookie, t)) = creds.refresh_winner() {
            keep.push((name, t));
        }
    }
    cookies.rewrite(headers, &names, &keep);
}

/// Removes the headers that describe the client's body bytes (replaced or dropped).
fn strip_body_headers(headers: &mut HeaderMap) {
    for h in &BODY_HEADERS {
        headers.remove(h);
    }
}

/// Removes the value at a JSON pointer, if there is one.
fn remove_pointer(json: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let key = last.replace("~1", "/").replace("~0", "~");
    let target = if parent.is_empty() { Some(json) } else { json.pointer_mut(parent) };
    if let Some(Value::Object(m)) = target {
        m.remove(&key);
    }
}

/// Phase 8: learn sessions from successful login, refresh and credential-change responses,
/// and end the session a backend-native session route revoked. Every other response streams
/// back untouched (minus hop-by-hop and `x-sessiongate-*` headers).
async fn observe(
    st: &AppState,
    ctx: &mut RequestCtx,
    matched: Option<&RouteMatch<'_>>,
    creds: &Creds,
    res: Response<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let (mut parts, body) = res.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::strip_gateway_headers(&mut parts.headers);
    if ctx.route == RouteClass::SessionRevoke && parts.status.is_success() {
        Box::pin(learn::backend_session_revoked(st, ctx, matched)).await?;
    }
    let learns = matches!(ctx.route, RouteClass::Login | RouteClass::Refresh | RouteClass::CredentialChange);
    if !learns || !parts.status.is_success() {
        failed_at_backend(st, ctx, creds, parts.status);
        let body = body.map_err(|e| Box::new(e) as BoxError).boxed();
        // A streamed answer to a session's request ends when the session does.
        let body = match &ctx.session {
            Some(live) if ctx.route == RouteClass::Other && UntilEnded::streams(parts.status, &parts.headers) => {
                UntilEnded::wrap(body, st.sessions.clone(), live.clone(), st.metrics.clone())
            }
            _ => body,
        };
        return Ok(Response::from_parts(parts, body));
    }
    let bytes = http_body_util::Limited::new(body, st.cfg().upstream.max_response_body_bytes)
        .collect()
        .await
        .map_err(|_| GatewayError::BadAuthResponse("response body too large or unreadable"))?
        .to_bytes();
    let mut json: Option<Value> = serde_json::from_slice(&bytes).ok();
    if let Some(key) = &ctx.graphql_key {
        // A mutation's outcome is in its field, not the status: `null` there (with `errors`) is
        // a failure, and the field's value is the REST answer the pointers read.
        json = json.as_ref().and_then(|j| graphql::result_as_rest(&st.cfg().graphql, key, j));
        if json.is_none() {
            failed_at_backend(st, ctx, creds, parts.status);
            return Ok(Response::from_parts(parts, full(bytes)));
        }
    }
    let issued = learn::issued_from(st, &parts.headers, json.as_ref());
    match ctx.route {
        RouteClass::Login => {
            let json = json.as_ref().ok_or(GatewayError::BadAuthResponse("login response is not JSON"))?;
            let issued = issued.ok_or(GatewayError::BadAuthResponse("login response carries no access token"))?;
            let live =
                Box::pin(learn::create(st, ctx, creds, &parts.headers, json, issued, SessionOrigin::Login)).await?;
            st.metrics.login(LoginResult::Success);
            ctx.session = Some(live);
        }
        RouteClass::Refresh => {
            let issued = issued.ok_or(GatewayError::BadAuthResponse("refresh response carries no access token"))?;
            Box::pin(learn::refresh(st, ctx, creds, issued)).await?;
        }
        RouteClass::CredentialChange => {
            Box::pin(learn::credential_change(st, ctx, creds, matched, json.as_ref(), issued)).await?;
        }
        _ => {}
    }
    Ok(Response::from_parts(parts, full(bytes)))
}

/// A login or refresh the backend refused: counted, and a login failure recorded for the
/// risk engine and the audit log.
fn failed_at_backend(st: &AppState, ctx: &RequestCtx, creds: &Creds, status: http::StatusCode) {
    match ctx.route {
        RouteClass::Login => {
            tracing::info!(request_id = %ctx.request_id, status = status.as_u16(), client = %ctx.client_ip, "login failed at the backend");
            st.metrics.login(LoginResult::Failed);
            let now = st.sessions.clock().now_ms();
            st.logins.add_failure(now);
            st.risk.record_failure(ctx.client_ip, now);
            st.audit.record(
                Event::new(Kind::LoginFailed)
                    .ip(ctx.client_ip)
                    .actor("client")
                    .details(serde_json::json!({"identifier": creds.identifier, "status": status.as_u16()})),
            );
        }
        RouteClass::Refresh => st.metrics.refresh(RefreshResult::Rejected),
        _ => {}
    }
}
