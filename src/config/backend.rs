//! `[routes]`, `[extract]`, `[backend]` and `[user_api]`: how the backend's auth routes are
//! recognised and read, how it is told about endings, and where the user API lives.

use super::raw::*;
use super::validate::V;
use crate::routes::{FieldRule, RouteClass, RouteRule};

#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub refresh_cookie: Option<String>,
    pub access_cookie: Option<String>,
    /// A query parameter carrying an access token (Directus: `access_token`).
    pub access_query: Option<String>,
    pub user_id: Option<String>,
    pub user_id_claim: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub session_id_claim: Option<String>,
    /// A claim of the access token that holds the session's refresh token when the response
    /// carries none (Directus's session mode: the `session` claim is its session row's token).
    pub refresh_claim: Option<String>,
    pub request_refresh_token: Option<String>,
    pub request_device_id: Option<String>,
    /// The login identifier in login request bodies (recorded with failed logins).
    pub request_identifier: Option<String>,
    /// `(pointer, value)`: a logout body with this value ends every session of the user.
    pub logout_all: Option<(String, String)>,
    pub credential_user_param: Option<String>,
    /// Which refresh credential the backend reads when a request carries both.
    pub refresh_precedence: RefreshPrecedence,
    /// Where a refresh or logout request names the place of its refresh token (Directus:
    /// `/mode`, `json` | `cookie` | `session`); the backend reads only that place.
    pub refresh_mode: Option<String>,
}

/// The place a refresh token is read from, named by the request (`extract.refresh_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// `json`: the body field (GraphQL: the argument) `extract.request_refresh_token`.
    Body,
    /// `cookie`: the refresh cookie.
    Cookie,
    /// `session`: the access cookie's `extract.refresh_claim`.
    Claim,
}

impl RefreshMode {
    pub const NAMES: [(&'static str, RefreshMode); 3] =
        [("json", RefreshMode::Body), ("cookie", RefreshMode::Cookie), ("session", RefreshMode::Claim)];

    pub fn named(name: &str) -> Option<RefreshMode> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }
}

/// `[graphql]`: GraphQL endpoints whose mutations are auth routes (Directus's
/// `/graphql/system`: `auth_login`, `auth_refresh`, `auth_logout`, `update_users_*`).
#[derive(Debug, Clone, Default)]
pub struct GraphqlConfig {
    /// `POST /graphql/system`: requests there have their JSON body read as GraphQL.
    pub endpoints: Vec<RouteRule>,
    /// Watched mutation fields, in order (`auth_login`, `update_users_item if /data/password for /id`).
    pub fields: Vec<FieldRule>,
    /// Where a login or refresh field's result sits in the REST answer the `[extract]`
    /// pointers read (Directus: `/data`, so `/data/access_token` reads both).
    pub result_at: String,
    /// The refresh place when the mutation names no mode (Directus: `json`, the argument).
    pub default_mode: Option<RefreshMode>,
}

/// Where the backend looks first for a refresh token (Strapi: the cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshPrecedence {
    CookieFirst,
    BodyFirst,
}

/// A request body format the backend parses on its auth routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Urlencoded,
    Multipart,
}

impl BodyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyFormat::Json => "json",
            BodyFormat::Urlencoded => "urlencoded",
            BodyFormat::Multipart => "multipart",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"data":null,"error":{"status","name","message","details":{"reason"}}}`
    Strapi,
    /// `{"error":{"status","reason","message"}}`
    Plain,
    /// Directus: `{"errors":[{"message","extensions":{"code","reason"}}]}`
    Directus,
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub error_shape: ErrorShape,
    /// Body formats read (and re-serialized as JSON) on auth routes; others are refused (415).
    pub body_formats: Vec<BodyFormat>,
    /// Methods whose bodies the backend reads (Strapi's koa-body: POST, PUT, PATCH; Directus's
    /// express.json: DELETE too). Other methods' bodies are neither read nor forwarded.
    pub body_methods: Vec<http::Method>,
    pub revoke_on_end: bool,
    /// Fields added to the body of the gateway's revocation calls (an OAuth2 client's
    /// `client_id`, RFC 7009's `token_type_hint`).
    pub revoke_fields: Vec<(String, String)>,
    pub revoke_logout: Option<RouteRule>,
    pub revoke_refresh: Option<RouteRule>,
}

impl BackendConfig {
    /// Whether bodies the gateway sends (auth routes as checked, its own revocation calls) are
    /// urlencoded: when the backend reads forms and no JSON (an OAuth2 token endpoint).
    pub fn sends_forms(&self) -> bool {
        !self.body_formats.contains(&BodyFormat::Json) && self.body_formats.contains(&BodyFormat::Urlencoded)
    }

    /// Whether ended sessions are revoked at the backend (the revocation queue is on).
    pub fn revokes(&self) -> bool {
        self.revoke_on_end && self.revoke_logout.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct UserApiConfig {
    pub enabled: bool,
    /// Normalised prefix, e.g. `/api/magic-sessionmanager`.
    pub prefix: String,
}

/// `[routes]`: the rules of every route class.
pub(super) fn routes(v: &mut V<'_>, r: RawRoutes) -> Vec<RouteRule> {
    let mut rules = Vec::new();
    v.rules("routes.login", RouteClass::Login, r.login, &mut rules);
    v.rules("routes.refresh", RouteClass::Refresh, r.refresh, &mut rules);
    v.rules("routes.logout", RouteClass::Logout, r.logout, &mut rules);
    v.rules("routes.credential_change", RouteClass::CredentialChange, r.credential_change, &mut rules);
    let first_revoke = rules.len();
    v.rules("routes.session_revoke", RouteClass::SessionRevoke, r.session_revoke, &mut rules);
    for (i, rule) in rules[first_revoke..].iter().enumerate() {
        if rule.param_names().len() != 1 {
            v.err(
                &format!("routes.session_revoke[{i}]"),
                format!("{:?} must name the backend session id as its one path parameter (e.g. /api/auth/sessions/:sessionId)", rule.source),
            );
        }
    }
    // A login rule refused above was already reported; "none given" would be a second, false error.
    let refused = v.issues.iter().any(|i| i.key.starts_with("routes.login["));
    if !refused && !rules.iter().any(|r| r.class == RouteClass::Login) {
        v.err("routes.login", "at least one login route is required (or set preset = \"strapi-v5\")");
    }
    rules
}

/// `[extract]`.
pub(super) fn extract(v: &mut V<'_>, e: RawExtract) -> ExtractConfig {
    let access_token = v.pointer("extract.access_token", e.access_token).unwrap_or_else(|| {
        v.err("extract.access_token", "required: JSON pointer to the access token in login responses");
        "/jwt".into()
    });
    let logout_all = e.logout_all.filter(|s| !s.is_empty()).and_then(|s| match s.split_once('=') {
        Some((p, val)) if p.starts_with('/') => Some((p.to_string(), val.to_string())),
        _ => {
            v.err("extract.logout_all", format!("{s:?}: expected \"/json/pointer=value\""));
            None
        }
    });
    let extract = ExtractConfig {
        access_token,
        refresh_token: v.pointer("extract.refresh_token", e.refresh_token),
        refresh_cookie: e.refresh_cookie.filter(|s| !s.is_empty()),
        access_cookie: e.access_cookie.filter(|s| !s.is_empty()),
        access_query: e.access_query.filter(|s| !s.is_empty()),
        user_id: v.pointer("extract.user_id", e.user_id),
        user_id_claim: e.user_id_claim.filter(|s| !s.is_empty()),
        username: v.pointer("extract.username", e.username),
        email: v.pointer("extract.email", e.email),
        session_id_claim: e.session_id_claim.filter(|s| !s.is_empty()),
        refresh_claim: e.refresh_claim.filter(|s| !s.is_empty()),
        request_refresh_token: v.pointer("extract.request_refresh_token", e.request_refresh_token),
        request_device_id: v.pointer("extract.request_device_id", e.request_device_id),
        request_identifier: v.pointer("extract.request_identifier", e.request_identifier),
        logout_all,
        credential_user_param: e.credential_user_param.filter(|s| !s.is_empty()),
        refresh_precedence: v.choice(
            "extract.refresh_precedence",
            e.refresh_precedence.as_deref(),
            RefreshPrecedence::CookieFirst,
            &[("cookie", RefreshPrecedence::CookieFirst), ("body", RefreshPrecedence::BodyFirst)],
        ),
        refresh_mode: v.pointer("extract.refresh_mode", e.refresh_mode),
    };
    if extract.user_id.is_none() && extract.user_id_claim.is_none() {
        v.err("extract.user_id", "set extract.user_id (JSON pointer) or extract.user_id_claim (JWT claim)");
    }
    extract
}

/// `[backend]`.
pub(super) fn backend(v: &mut V<'_>, b: RawBackend) -> BackendConfig {
    let error_shape = v.choice(
        "backend.error_shape",
        b.error_shape.as_deref(),
        ErrorShape::Plain,
        &[("strapi", ErrorShape::Strapi), ("plain", ErrorShape::Plain), ("directus", ErrorShape::Directus)],
    );
    let mut body_formats = Vec::new();
    for (i, f) in b
        .body_formats
        .unwrap_or_else(|| vec!["json".into(), "urlencoded".into(), "multipart".into()])
        .iter()
        .enumerate()
    {
        match f.as_str() {
            "json" => body_formats.push(BodyFormat::Json),
            "urlencoded" => body_formats.push(BodyFormat::Urlencoded),
            "multipart" => body_formats.push(BodyFormat::Multipart),
            other => v.err(
                &format!("backend.body_formats[{i}]"),
                format!("{other:?}: expected \"json\", \"urlencoded\" or \"multipart\""),
            ),
        }
    }
    let mut body_methods = Vec::new();
    for (i, m) in b.body_methods.unwrap_or_else(|| vec!["POST".into(), "PUT".into(), "PATCH".into()]).iter().enumerate()
    {
        match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => body_methods.push(m),
            Err(_) => v.err(&format!("backend.body_methods[{i}]"), format!("{m:?} is not an HTTP method")),
        }
    }
    let backend = BackendConfig {
        error_shape,
        body_formats,
        body_methods,
        revoke_on_end: b.revoke_on_end.unwrap_or(false),
        revoke_fields: b.revoke_fields.unwrap_or_default().into_iter().collect(),
        revoke_logout: v.one_rule("backend.revoke_logout", RouteClass::Logout, b.revoke_logout),
        revoke_refresh: v.one_rule("backend.revoke_refresh", RouteClass::Refresh, b.revoke_refresh),
    };
    if backend.revoke_on_end && backend.revoke_logout.is_none() {
        v.err("backend.revoke_logout", "required when backend.revoke_on_end = true");
    }
    backend
}

/// `[graphql]`. Endpoints are plain `METHOD /path` rules; fields are mutation field names with
/// the same `if` / `for` suffixes as route rules, reading the field's arguments.
pub(super) fn graphql(v: &mut V<'_>, g: RawGraphql, extract: &ExtractConfig) -> GraphqlConfig {
    let mut endpoints = Vec::new();
    v.rules("graphql.endpoints", RouteClass::Other, g.endpoints, &mut endpoints);
    for (i, e) in endpoints.iter().enumerate() {
        if e.body_condition.is_some() || e.users.is_some() || e.refresh_at.is_some() || !e.param_names().is_empty() {
            v.err(&format!("graphql.endpoints[{i}]"), format!("{:?}: an endpoint is `METHOD /path` only", e.source));
        }
    }
    let mut fields = Vec::new();
    for (key, class, raw) in [
        ("graphql.login", RouteClass::Login, g.login),
        ("graphql.refresh", RouteClass::Refresh, g.refresh),
        ("graphql.logout", RouteClass::Logout, g.logout),
        ("graphql.credential_change", RouteClass::CredentialChange, g.credential_change),
    ] {
        for (i, text) in raw.unwrap_or_default().iter().enumerate() {
            match FieldRule::parse(class, text) {
                Ok(r) => fields.push(r),
                Err(e) => v.err(&format!("{key}[{i}]"), e),
            }
        }
    }
    if !endpoints.is_empty() && fields.is_empty() {
        v.err("graphql.endpoints", "set the watched mutations too (graphql.login, refresh, logout, credential_change)");
    }
    let default_mode = g.default_mode.filter(|s| !s.is_empty()).and_then(|m| {
        let mode = RefreshMode::named(&m);
        if mode.is_none() {
            v.err("graphql.default_mode", format!("{m:?}: expected \"json\", \"cookie\" or \"session\""));
        }
        mode
    });
    if !endpoints.is_empty() && extract.refresh_mode.is_none() && fields.iter().any(|f| f.class != RouteClass::Login) {
        // Without it a mutation's refresh place is guessed by REST precedence, which need not be
        // the resolver's: say so rather than read it differently from the backend.
        v.err("extract.refresh_mode", "required with [graphql] refresh or logout fields (Directus: \"/mode\")");
    }
    let result_at = v.pointer("graphql.result_at", g.result_at).unwrap_or_default();
    GraphqlConfig { endpoints, fields, result_at, default_mode }
}

/// `[user_api]`; its prefix must not overlap a route rule.
pub(super) fn user_api(v: &mut V<'_>, ua: RawUserApi, rules: &[RouteRule]) -> UserApiConfig {
    let prefix_text = ua.prefix.unwrap_or_else(|| "/api/magic-sessionmanager".into());
    if !prefix_text.starts_with('/') {
        v.err("user_api.prefix", "must start with '/'");
    }
    let prefix = crate::routes::normalize_path(&prefix_text);
    if rules.iter().any(|r| crate::routes::normalize_path(r.path()).starts_with(&prefix)) {
        v.err("user_api.prefix", format!("{prefix_text:?} overlaps a watched auth route"));
    }
    UserApiConfig { enabled: ua.enabled.unwrap_or(true), prefix }
}
