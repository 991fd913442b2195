//! The admin port: a separate listener (loopback by default) with health and readiness,
//! Prometheus metrics, and the admin API behind named bearer tokens. None of these routes
//! exist on the public port.

pub mod auth;
pub mod client;
mod dashboard;
pub mod maintenance;
mod probes;
pub(crate) use probes::upstream_reachable;
mod reports;
mod router;
mod sessions;

use crate::error::{full, Body, BoxError, GatewayError};
use crate::proxy::HandlerFn;
use crate::state::AppState;
use auth::AdminAuth;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use std::sync::Arc;

pub struct AdminState {
    pub app: Arc<AppState>,
    pub auth: AdminAuth,
    /// Fires at shutdown, so long-lived responses (the event stream) end and the drain is quick.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Background maintenance jobs (key rotation).
    pub jobs: maintenance::Jobs,
}

/// The admin listener's handler.
pub fn handler(st: Arc<AdminState>) -> HandlerFn {
    Arc::new(move |req, peer, _tls| {
        let st = st.clone();
        Box::pin(async move {
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            let res = match router::route(&st, req, peer).await {
                Ok(r) => r,
                Err(e) => {
                    if e.side() != crate::error::Side::Client {
                        tracing::error!(%method, %path, reason = e.reason(), "admin request failed: {e}");
                    }
                    e.into_response(crate::config::ErrorShape::Plain)
                }
            };
            tracing::debug!(%method, %path, status = res.status().as_u16(), client = %peer, "admin request");
            res
        })
    })
}

/// Serves the admin listener while the session index loads (a cold start of millions of
/// sessions takes seconds): liveness (`/healthz`, `/ping`) answers 200, readiness (`/readyz`) 503
/// `{"checks": {"index": "loading"}}`, anything else 503 `starting`. Each connection serves one
/// request. Returns the listener, for the admin API, once `loaded` fires.
pub async fn while_loading(
    listener: tokio::net::TcpListener,
    mut loaded: tokio::sync::oneshot::Receiver<()>,
) -> tokio::net::TcpListener {
    async fn answer(req: http::Request<hyper::body::Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
        let res = match req.uri().path() {
            "/healthz" => ok(serde_json::json!({"status": "ok"})),
            "/ping" => probes::ping(),
            "/readyz" => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"ready": false, "checks": {"index": "loading"}}),
            ),
            _ => GatewayError::Starting.into_response(crate::config::ErrorShape::Plain),
        };
        Ok(res)
    }
    loop {
        tokio::select! {
            _ = &mut loaded => return listener,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let svc = hyper::service::service_fn(answer);
                    let conn = hyper::server::conn::http1::Builder::new().keep_alive(false).serve_connection(io, svc);
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), conn).await;
                });
            }
        }
    }
}

pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut res = Response::new(full(v.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub(crate) fn ok(v: serde_json::Value) -> Response<Body> {
    json(StatusCode::OK, v)
}

/// A streamed body from a stream of chunks. A task drives the stream into a small bounded
/// channel, so a slow client slows the producer down (back-pressure) and memory stays bounded.
pub(crate) fn stream_body<S, E>(s: S) -> Body
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    use futures_util::StreamExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, BoxError>>(4);
    tokio::spawn(async move {
        let mut s = std::pin::pin!(s);
        while let Some(item) = s.next().await {
            let failed = item.is_err();
            if tx.send(item.map(hyper::body::Frame::data).map_err(|e| Box::new(e) as BoxError)).await.is_err() || failed
            {
                break;
            }
        }
    });
    let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames))
}

pub(crate) fn not_found() -> GatewayError {
    GatewayError::NotFound
}
