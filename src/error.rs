//! The gateway's error type and its single mapping to HTTP: status, side and a stable `reason`
//! code used in bodies, the `x-sessiongate-reason` header, logs and metric labels.

use crate::config::ErrorShape;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Builds a complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Who is at fault: the client, the upstream backend, or the gateway itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Session has been terminated")]
    SessionTerminated,
    #[error("Refresh token reuse detected; session terminated")]
    RefreshTokenReuse,
    #[error("Session expired due to inactivity")]
    SessionInactive,
    #[error("Session has reached its maximum age; please log in again")]
    SessionMaxAge,
    #[error("Session was used from another location or browser; please log in again")]
    SessionChanged,
    #[error("Too many active sessions; log out of another device first")]
    SessionLimit,
    #[error("Token is not tracked by the gateway")]
    UnknownToken,
    #[error("User is blocked")]
    UserBlocked,
    #[error("Login from this location is not allowed")]
    GeoBlocked,
    #[error("Login refused as too risky")]
    RiskDenied,
    #[error("Admin authentication required")]
    AdminUnauthorized,
    #[error("Too many failed attempts; try again later")]
    RateLimited,
    #[error("{0}")]
    InvalidParameter(String),
    #[error("missing or invalid credentials")]
    Unauthenticated,
    #[error("not found")]
    NotFound,
    #[error("Method not allowed on this path")]
    MethodNotAllowed,
    /// An admin action names a user no session was ever seen of (a typo, or a username where
    /// the id was meant); `force` acts anyway.
    #[error("no session of user {0:?} is known to the gateway; pass \"force\": true to block a user before their first login")]
    UnknownUser(String),
    #[error("Cannot terminate current session. Use /logout instead.")]
    CannotTerminateCurrent,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("Request body exceeds the configured limit")]
    BodyTooLarge,
    /// The request carries credentials that could be read in more than one way (two
    /// `Authorization` headers, one token cookie with two values): refused, never guessed.
    #[error("{0}")]
    AmbiguousCredentials(&'static str),
    /// An auth-route body the gateway cannot parse unambiguously the way the backend would.
    #[error("{0}")]
    MalformedBody(&'static str),
    /// A GraphQL request the gateway cannot read the way the backend would (a syntax error,
    /// a watched mutation under a directive, two watched mutations in one operation).
    #[error("{0}")]
    UnreadableGraphql(&'static str),
    /// A credential change whose body does not name the users it acts on where the rule says
    /// (`for /keys`): which sessions to end is unknown, so it is not forwarded.
    #[error("{0}")]
    UsersUnnamed(&'static str),
    /// An auth-route body in a content type or content coding the gateway does not read.
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// The operation is already running (admin maintenance jobs).
    #[error("{0}")]
    Conflict(&'static str),
    #[error("backend unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error("Backend did not answer in time")]
    UpstreamTimeout,
    #[error("backend answered an auth route with a response the gateway cannot read: {0}")]
    BadAuthResponse(&'static str),
    #[error("session store failure: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
    /// The admin port while the session index loads: only liveness answers.
    #[error("Starting: the session index is still loading")]
    Starting,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            SessionTerminated | RefreshTokenReuse | SessionInactive | SessionMaxAge | SessionChanged | UnknownToken
            | Unauthenticated => StatusCode::UNAUTHORIZED,
            AdminUnauthorized => StatusCode::UNAUTHORIZED,
            UserBlocked | GeoBlocked | RiskDenied | SessionLimit => StatusCode::FORBIDDEN,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            NotFound | UnknownUser(_) => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            CannotTerminateCurrent
            | BadRequest(_)
            | InvalidParameter(_)
            | AmbiguousCredentials(_)
            | UnreadableGraphql(_)
            | UsersUnnamed(_)
            | MalformedBody(_) => StatusCode::BAD_REQUEST,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Conflict(_) => StatusCode::CONFLICT,
            UpstreamUnavailable(_) | BadAuthResponse(_) => StatusCode::BAD_GATEWAY,
            UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Store(_) | Starting => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn side(&self) -> Side {
        use GatewayError::*;
        match self {
            SessionTerminated
            | RefreshTokenReuse
            | SessionInactive
            | SessionMaxAge
            | SessionChanged
            | SessionLimit
            | UnknownToken
            | Unauthenticated
            | NotFound
            | UnknownUser(_)
            | MethodNotAllowed
            | CannotTerminateCurrent
            | BadRequest(_)
            | AmbiguousCredentials(_)
            | MalformedBody(_)
            | UnreadableGraphql(_)
            | UsersUnnamed(_)
            | UnsupportedMediaType(_)
            | BodyTooLarge
            | Conflict(_)
            | UserBlocked
            | GeoBlocked
            | RiskDenied
            | AdminUnauthorized
            | RateLimited
            | InvalidParameter(_) => Side::Client,
            UpstreamUnavailable(_) | UpstreamTimeout | BadAuthResponse(_) => Side::Upstream,
            Store(_) | Internal(_) | Starting => Side::Internal,
        }
    }

    /// Stable snake_case code; never changes once released.
    pub fn reason(&self) -> &'static str {
        use GatewayError::*;
        match self {
            SessionTerminated => "session_terminated",
            RefreshTokenReuse => "refresh_token_reuse",
            SessionInactive => "session_inactive",
            SessionMaxAge => "session_max_age",
            SessionChanged => "session_changed",
            SessionLimit => "session_limit",
            UnknownToken => "unknown_token",
            UserBlocked => "user_blocked",
            GeoBlocked => "geo_blocked",
            RiskDenied => "risk_denied",
            AdminUnauthorized => "admin_unauthorized",
            RateLimited => "rate_limited",
            InvalidParameter(_) => "invalid_parameter",
            Unauthenticated => "unauthenticated",
            NotFound => "not_found",
            UnknownUser(_) => "unknown_user",
            MethodNotAllowed => "method_not_allowed",
            CannotTerminateCurrent => "cannot_terminate_current",
            BadRequest(_) => "bad_request",
            BodyTooLarge => "body_too_large",
            AmbiguousCredentials(_) => "ambiguous_credentials",
            MalformedBody(_) => "malformed_body",
            UnreadableGraphql(_) => "unreadable_graphql",
            UsersUnnamed(_) => "users_unnamed",
            UnsupportedMediaType(_) => "unsupported_media_type",
            Conflict(_) => "conflict",
            UpstreamUnavailable(_) => "upstream_unavailable",
            UpstreamTimeout => "upstream_timeout",
            BadAuthResponse(_) => "bad_auth_response",
            Store(_) => "store_unavailable",
            Internal(_) => "internal_error",
            Starting => "starting",
        }
    }

    /// The message shown to clients: short, with no internal details (those go to logs).
    pub fn public_message(&self) -> String {
        use GatewayError::*;
        match self {
            UpstreamUnavailable(_) => "Backend unavailable".into(),
            BadAuthResponse(_) => "Backend sent an unreadable authentication response".into(),
            Store(_) => "Session store unavailable".into(),
            Internal(_) => "Internal gateway error".into(),
            Unauthenticated => "Missing or invalid credentials".into(),
            NotFound => "Not Found".into(),
            other => other.to_string(),
        }
    }

    /// Renders the error in the backend's error shape with the `x-sessiongate-reason` header.
    pub fn into_response(self, shape: ErrorShape) -> Response<Body> {
        error_response(shape, self.status(), self.reason(), &self.public_message())
    }
}

/// Strapi's error `name` for a status.
fn strapi_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequestError",
        401 => "UnauthorizedError",
        403 => "ForbiddenError",
        404 => "NotFoundError",
        405 => "MethodNotAllowedError",
        413 => "PayloadTooLargeError",
        415 => "UnsupportedMediaTypeError",
        429 => "RateLimitError",
        502 => "BadGatewayError",
        503 => "ServiceUnavailableError",
        504 => "GatewayTimeoutError",
        _ => "ApplicationError",
    }
}

/// Directus's `extensions.code` for a status: the code its own answers use for the same
/// condition, so a Directus client (the SDK refreshes or logs out on `INVALID_CREDENTIALS` and
/// `TOKEN_EXPIRED`) reacts as it would to Directus.
fn directus_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_PAYLOAD",
        401 => "INVALID_CREDENTIALS",
        403 => "FORBIDDEN",
        404 => "ROUTE_NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        413 => "CONTENT_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        429 => "REQUESTS_EXCEEDED",
        502..=504 => "SERVICE_UNAVAILABLE",
        _ => "INTERNAL_SERVER_ERROR",
    }
}

/// A JSON error response in the configured shape.
pub fn error_response(shape: ErrorShape, status: StatusCode, reason: &'static str, message: &str) -> Response<Body> {
    let body = match shape {
        ErrorShape::Strapi => serde_json::json!({
            "data": null,
            "error": {
                "status": status.as_u16(),
                "name": strapi_name(status),
                "message": message,
                "details": { "reason": reason },
            }
        }),
        ErrorShape::Plain => serde_json::json!({
            "error": { "status": status.as_u16(), "reason": reason, "message": message }
        }),
        ErrorShape::Directus => serde_json::json!({
            "errors": [{ "message": message, "extensions": { "code": directus_code(status), "reason": reason } }]
        }),
    };
    let mut res = Response::new(full(body.to_string()));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    h.insert("x-sessiongate-reason", HeaderValue::from_static(reason));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A failure of the session store (`store/`); defined here, below every layer that reports it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(String),
    #[error("blocking task failed: {0}")]
    Join(String),
    #[error("record encoding: {0}")]
    Codec(String),
}

/// Failures before the gateway serves: bad config (exit 64) or anything else (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigErrors),
    #[error("{0}")]
    Secret(String),
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("geo data: {0}")]
    Geo(String),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
}

impl StartupError {
    /// Process exit code: 64 (EX_USAGE) for configuration problems, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartupError::Config(_) | StartupError::Secret(_) | StartupError::Tls(_) | StartupError::Geo(_) => 64,
            StartupError::Store(_) | StartupError::Bind { .. } | StartupError::Cluster(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_pinned() {
        let cases: Vec<(GatewayError, u16, Side, &str)> = vec![
            (GatewayError::SessionTerminated, 401, Side::Client, "session_terminated"),
            (GatewayError::RefreshTokenReuse, 401, Side::Client, "refresh_token_reuse"),
            (GatewayError::SessionInactive, 401, Side::Client, "session_inactive"),
            (GatewayError::SessionMaxAge, 401, Side::Client, "session_max_age"),
            (GatewayError::SessionChanged, 401, Side::Client, "session_changed"),
            (GatewayError::SessionLimit, 403, Side::Client, "session_limit"),
            (GatewayError::UnknownToken, 401, Side::Client, "unknown_token"),
            (GatewayError::Unauthenticated, 401, Side::Client, "unauthenticated"),
            (GatewayError::NotFound, 404, Side::Client, "not_found"),
            (GatewayError::CannotTerminateCurrent, 400, Side::Client, "cannot_terminate_current"),
            (GatewayError::BadRequest("x"), 400, Side::Client, "bad_request"),
            (GatewayError::BodyTooLarge, 413, Side::Client, "body_too_large"),
            (GatewayError::AmbiguousCredentials("x"), 400, Side::Client, "ambiguous_credentials"),
            (GatewayError::MalformedBody("x"), 400, Side::Client, "malformed_body"),
            (GatewayError::UnreadableGraphql("x"), 400, Side::Client, "unreadable_graphql"),
            (GatewayError::UsersUnnamed("x"), 400, Side::Client, "users_unnamed"),
            (GatewayError::UnsupportedMediaType("x"), 415, Side::Client, "unsupported_media_type"),
            (GatewayError::Conflict("x"), 409, Side::Client, "conflict"),
            (GatewayError::UserBlocked, 403, Side::Client, "user_blocked"),
            (GatewayError::GeoBlocked, 403, Side::Client, "geo_blocked"),
            (GatewayError::RiskDenied, 403, Side::Client, "risk_denied"),
            (GatewayError::AdminUnauthorized, 401, Side::Client, "admin_unauthorized"),
            (GatewayError::RateLimited, 429, Side::Client, "rate_limited"),
            (GatewayError::InvalidParameter("x".into()), 400, Side::Client, "invalid_parameter"),
            (GatewayError::UpstreamUnavailable("x".into()), 502, Side::Upstream, "upstream_unavailable"),
            (GatewayError::UpstreamTimeout, 504, Side::Upstream, "upstream_timeout"),
            (GatewayError::BadAuthResponse("x"), 502, Side::Upstream, "bad_auth_response"),
            (GatewayError::Internal("x".into()), 500, Side::Internal, "internal_error"),
        ];
        for (e, status, side, reason) in cases {
            assert_eq!((e.status().as_u16(), e.side(), e.reason()), (status, side, reason), "{e:?}");
        }
    }

    #[test]
    fn strapi_shape_carries_reason() {
        let res = GatewayError::SessionTerminated.into_response(ErrorShape::Strapi);
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["x-sessiongate-reason"], "session_terminated");
    }

    #[tokio::test]
    async fn directus_shape_uses_directus_codes() {
        use http_body_util::BodyExt;
        let res = GatewayError::SessionTerminated.into_response(ErrorShape::Directus);
        assert_eq!(res.status(), 401);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"errors": [{"message": "Session has been terminated",
                "extensions": {"code": "INVALID_CREDENTIALS", "reason": "session_terminated"}}]})
        );
        assert_eq!(directus_code(StatusCode::FORBIDDEN), "FORBIDDEN");
        assert_eq!(directus_code(StatusCode::GATEWAY_TIMEOUT), "SERVICE_UNAVAILABLE");
    }

    #[test]
    fn internal_details_are_not_shown_to_clients() {
        let e = GatewayError::UpstreamUnavailable("connect 10.1.2.3:1337 refused".into());
        assert!(!e.public_message().contains("10.1.2.3"));
    }
}
