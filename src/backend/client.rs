//! The pooled keep-alive client to the backend: client requests go through [`Upstream::send`],
//! the gateway's own calls (revocations, role lookups) through [`Upstream::call_json`].

use super::tls;
use crate::config::UpstreamConfig;
use crate::error::{Body, GatewayError, StartupError};
use http::{header, HeaderMap, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;
use std::time::Duration;

/// The header marking the gateway's own backend calls (client requests never carry it to the
/// backend: `x-sessiongate-*` is stripped from them).
pub const INTERNAL_HEADER: &str = "x-sessiongate-internal";

/// One of the gateway's own backend calls.
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub bearer: Option<&'a str>,
    /// One cookie, `(name, value)`.
    pub cookie: Option<(&'a str, &'a str)>,
    /// A JSON body (sent with `Content-Type: application/json`).
    pub json: Option<Value>,
    /// Send `json` urlencoded instead (a backend that reads forms only).
    pub form: bool,
    /// The value of [`INTERNAL_HEADER`], naming why the gateway calls.
    pub internal: Option<&'static str>,
    pub max_body: usize,
}

/// A backend's answer to a [`Call`].
pub struct Answer {
    pub status: u16,
    /// The body as JSON, `Null` when it is not JSON.
    pub json: Value,
    pub headers: HeaderMap,
}

pub struct Upstream {
    client: Client<tls::UpstreamConnector, Body>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    response_timeout: Duration,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Upstream, StartupError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let https = cfg.url.scheme_str() == Some("https");
        let connector = tls::upstream_connector(http, https)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let parts = cfg.url.clone().into_parts();
        Ok(Upstream {
            client,
            scheme: parts.scheme.unwrap_or(http::uri::Scheme::HTTP),
            authority: parts.authority.ok_or_else(|| StartupError::Tls("upstream.url has no host".into()))?,
            response_timeout: cfg.response_timeout,
        })
    }

    /// The backend URI for a request's path and query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, GatewayError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| GatewayError::BadRequest("invalid request target"))
    }

    pub fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// Makes one of the gateway's own calls and reads its answer as JSON (`Null` when it is
    /// not JSON). The answer body is capped at `call.max_body` bytes.
    pub async fn call_json(&self, call: Call<'_>) -> Result<Answer, GatewayError> {
        let mut req = Request::builder()
            .method(call.method)
            .uri(self.uri(call.path)?)
            .header(header::HOST, self.authority.as_str())
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("sessiongate/", env!("CARGO_PKG_VERSION")));
        if let Some(tag) = call.internal {
            req = req.header(INTERNAL_HEADER, tag);
        }
        if let Some(b) = call.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {b}"));
        }
        if let Some((name, value)) = call.cookie {
            req = req.header(header::COOKIE, format!("{name}={value}"));
        }
        let body = match &call.json {
            Some(v) if call.form => {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                crate::error::full(super::fields::to_urlencoded(v))
            }
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                crate::error::full(v.to_string())
            }
            None => crate::error::full(""),
        };
        let req = req.body(body).map_err(|e| GatewayError::Internal(format!("building a backend call: {e}")))?;
        let res = self.send(req).await?;
        let status = res.status().as_u16();
        let (parts, body) = res.into_parts();
        let bytes = http_body_util::Limited::new(body, call.max_body)
            .collect()
            .await
            .map_err(|_| GatewayError::BadAuthResponse("backend answer too large or unreadable"))?
            .to_bytes();
        Ok(Answer { status, json: serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers: parts.headers })
    }

    /// Sends a request; the timeout covers connecting and receiving the response head.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, GatewayError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) => Err(classify(e)),
            Ok(Ok(res)) => Ok(res),
        }
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> GatewayError {
    use std::error::Error;
    // A client's request body that breaks while it is streamed upstream (a bad chunk size, a
    // connection cut mid-upload) is the client's fault, not the backend's.
    let mut src: Option<&(dyn Error + 'static)> = e.source();
    while let Some(s) = src {
        if s.downcast_ref::<hyper::Error>().is_some_and(|h| h.is_user() && h.source().is_some()) {
            return GatewayError::BadRequest("request body could not be read");
        }
        src = s.source();
    }
    // A connect timeout surfaces as a connect error whose source chain holds an I/O error of
    // kind `TimedOut` (hyper-util's `HttpConnector`).
    let mut src: Option<&(dyn Error + 'static)> = e.source();
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return GatewayError::UpstreamTimeout;
        }
        src = s.source();
    }
    let mut msg = e.to_string();
    if let Some(s) = e.source() {
        msg = format!("{msg}: {s}");
    }
    GatewayError::UpstreamUnavailable(msg)
}
