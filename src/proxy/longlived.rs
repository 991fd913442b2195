//! Long-lived exchanges obey revocation: a protocol switch (HTTP/1.1 `Upgrade`, e.g. WebSocket)
//! is tunnelled, and a tunnel, a streamed response (SSE, chunked long streams) or a request
//! still waiting for the backend's answer (a long poll) that was opened with a session's token
//! is closed once that session ends — here or on another instance — within the moment it takes
//! the ending to reach this instance's index (`Sessions::until_ended`). The session check of
//! the upgrade request is the ordinary one; nothing else is read from the tunnel.

use crate::error::{Body, BoxError, GatewayError};
use crate::metrics::Metrics;
use crate::session::{Live, Sessions};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A client's request to switch protocols: what it asks for, and its side of the connection
/// once switched.
pub(super) struct Ask {
    pub(super) protocol: HeaderValue,
    pub(super) on: OnUpgrade,
    /// The connection's share of the listener's limits, held while the tunnel is open.
    slot: Option<super::HeldSlot>,
}

/// The switch a request asks for: HTTP/1.1 with `Connection: upgrade` and an `Upgrade` header
/// (HTTP/2 has no `Upgrade`; its extended CONNECT is not proxied).
pub(super) fn ask(parts: &mut http::request::Parts) -> Option<Ask> {
    if parts.version != http::Version::HTTP_11 {
        return None;
    }
    let wants = super::headers::connection_options(&parts.headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let protocol = parts.headers.get(header::UPGRADE).filter(|_| wants)?.clone();
    let on = parts.extensions.remove::<OnUpgrade>()?;
    Some(Ask { protocol, on, slot: parts.extensions.remove::<super::HeldSlot>() })
}

/// Puts the switch back on a request the backend gets (hop-by-hop headers were removed).
pub(super) fn forward_ask(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::UPGRADE, protocol.clone());
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// The backend switched protocols: the client gets the 101 (with the backend's handshake
/// headers), and a task joins both sides until either closes — or the session ends.
pub(super) fn tunnel(
    sessions: &Arc<Sessions>,
    metrics: &Arc<Metrics>,
    live: Option<Live>,
    client: Option<Ask>,
    mut res: Response<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let Some(client) = client else {
        return Err(GatewayError::UpstreamUnavailable("the backend switched protocols unasked".into()));
    };
    let upstream = hyper::upgrade::on(&mut res);
    let (mut parts, _) = res.into_parts();
    super::headers::strip_hop_by_hop(&mut parts.headers);
    super::headers::strip_gateway_headers(&mut parts.headers);
    let protocol = parts.headers.get(header::UPGRADE).cloned().unwrap_or(client.protocol.clone());
    forward_ask(&mut parts.headers, &protocol);
    let (sessions, metrics) = (sessions.clone(), metrics.clone());
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client.on, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "protocol switch did not complete");
                return;
            }
        };
        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
        let _slot = client.slot;
        metrics.upgrades_open.inc();
        let ended = async {
            match &live {
                Some(l) => sessions.until_ended(l).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                }
            }
            _ = ended => {
                metrics.exchanges_closed.with_label_values(&["websocket"]).inc();
                if let Some(l) = &live {
                    tracing::info!(session = %l.sid, "session ended: its tunnel is closed");
                }
            }
        }
        metrics.upgrades_open.dec();
    });
    Ok(Response::from_parts(parts, crate::error::full(Bytes::new())))
}

/// Waits for the backend's answer unless the session ends first (a long poll of a logged-out
/// session gets 401 `session_terminated` at once).
pub(super) async fn answer_or_end<F>(
    sessions: &Sessions,
    metrics: &Metrics,
    live: Option<&Live>,
    answer: F,
) -> Result<Response<Incoming>, GatewayError>
where
    F: Future<Output = Result<Response<Incoming>, GatewayError>>,
{
    let Some(live) = live else { return answer.await };
    tokio::select! {
        biased;
        r = answer => r,
        _ = sessions.until_ended(live) => {
            metrics.exchanges_closed.with_label_values(&["waiting"]).inc();
            Err(GatewayError::SessionTerminated)
        }
    }
}

/// A streamed response body (no `Content-Length`: SSE, chunked streams) that ends with an
/// error — the client sees the stream cut, not a clean end — once its session ends.
pub(super) struct UntilEnded {
    inner: Body,
    ended: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
    metrics: Arc<Metrics>,
}

impl UntilEnded {
    pub(super) fn wrap(inner: Body, sessions: Arc<Sessions>, live: Live, metrics: Arc<Metrics>) -> Body {
        use http_body_util::BodyExt;
        let ended = Box::pin(async move { sessions.until_ended(&live).await });
        UntilEnded { inner, ended: Some(ended), metrics }.boxed()
    }

    /// Whether a response streams (is worth guarding): no length declared, not a HEAD-like
    /// empty body.
    pub(super) fn streams(status: StatusCode, headers: &HeaderMap) -> bool {
        !headers.contains_key(header::CONTENT_LENGTH)
            && status != StatusCode::NO_CONTENT
            && status != StatusCode::NOT_MODIFIED
    }
}

impl hyper::body::Body for UntilEnded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(ended) = self.ended.as_mut() {
            if ended.as_mut().poll(cx).is_ready() {
                self.ended = None;
                self.metrics.exchanges_closed.with_label_values(&["stream"]).inc();
                return Poll::Ready(Some(Err("the session ended: stream closed".into())));
            }
        } else {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ended.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
