//! The pooled keep-alive client to the backend.

use super::tls;
use crate::config::UpstreamConfig;
use crate::error::{Body, GatewayError, StartupError};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

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
    // A connect timeout surfaces as a connect error whose source chain holds a timeout.
    let mut src: Option<&(dyn Error + 'static)> = e.source();
    while let Some(s) = src {
        if s.to_string().contains("timed out") {
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
