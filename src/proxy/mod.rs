//! Where a request is proxied. This file: listeners — accept loop, optional TLS, HTTP/1.1 +
//! HTTP/2 serving, idle closing and graceful drain, shared by the public port and the admin
//! port. The accept loop never dies: accept errors are logged and followed by a short pause.
//!
//! `handler` is the request path as a list of phases; `credentials`, `body` and `form` read a
//! request the way the backend does (`graphql`: mutations on a GraphQL endpoint); `headers` forwards and strips; `learn` takes what the
//! backend's answers teach (sessions, rotations, endings); `user_api` answers the plugin API.
//! Decisions are not made here: `session::enforce` and `session::admission` make them.

pub mod body;
pub mod credentials;
pub mod form;
pub mod graphql;
pub mod handler;
pub mod headers;
mod learn;
mod longlived;
pub mod user_api;

use crate::clock::now_ms;
use crate::config::ServerConfig;
use crate::error::Body;
use crate::metrics::ListenerMetrics;
use crate::state::AppState;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// The HTTP/1 + HTTP/2 connection builder with the configured limits.
fn builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so it also bounds
        // how long an idle keep-alive connection is kept (and defeats slowloris).
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes)
        .max_headers(cfg.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(cfg.h2_keepalive_interval)
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(cfg.max_header_bytes as u32)
        .max_concurrent_streams(256);
    b
}

/// Open connections per client address, for `server.max_connections_per_ip`. Peers that are
/// trusted proxies are not counted: a load balancer carries many clients.
struct PerIp {
    max: usize,
    trusted: Vec<ipnet::IpNet>,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One counted connection; released when the connection task ends.
struct IpSlot(Arc<PerIp>, std::net::IpAddr);

impl PerIp {
    /// `Ok(None)`: not counted; `Err(())`: the address is at its limit.
    fn acquire(self: &Arc<Self>, ip: std::net::IpAddr) -> Result<Option<IpSlot>, ()> {
        let ip = ip.to_canonical();
        if self.max == 0 || headers::trusted(ip, &self.trusted) {
            return Ok(None);
        }
        let mut open = crate::sync::lock(&self.open);
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return Err(());
        }
        *n += 1;
        Ok(Some(IpSlot(self.clone(), ip)))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = crate::sync::lock(&self.0.open);
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Requests in flight on one connection and when the last one finished.
struct Activity {
    inflight: AtomicUsize,
    last_ms: AtomicI64,
}

/// Decrements the in-flight counts when a request's handling ends, however it ends.
struct InFlight(Arc<Activity>, IntGauge);

impl InFlight {
    fn start(a: &Arc<Activity>, gauge: &IntGauge) -> InFlight {
        a.inflight.fetch_add(1, Ordering::AcqRel);
        gauge.inc();
        InFlight(a.clone(), gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_ms.store(now_ms(), Ordering::Release);
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
        self.1.dec();
    }
}

/// Counts a connection open for as long as it lives.
struct Open(IntGauge);

impl Open {
    fn new(g: &IntGauge) -> Open {
        g.inc();
        Open(g.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What one connection holds of the listener's limits: its connection permit, its place in its
/// address's count, and its place in `connections_open`. Released when the last holder drops:
/// the connection task, or the tunnel a protocol switch hands the socket to (so an open
/// WebSocket still counts against `server.max_connections` and the per-address cap).
struct ConnectionSlot {
    _held: (tokio::sync::OwnedSemaphorePermit, Option<IpSlot>, Open),
}

/// A request's share of its connection's [`ConnectionSlot`] (put in the extensions of requests
/// that ask to switch protocols).
#[derive(Clone)]
struct HeldSlot {
    _slot: Arc<ConnectionSlot>,
}

/// Who a connection is with, what it holds, and the listener's in-flight gauge.
struct Peer {
    addr: SocketAddr,
    tls: bool,
    in_flight: IntGauge,
    slot: Arc<ConnectionSlot>,
}

/// Serves one connection until it ends. It is closed gracefully (HTTP/1.1: after the current
/// response; HTTP/2: GOAWAY, open streams finish) when the gateway shuts down or when no
/// request has been in flight for `idle_timeout`.
async fn serve_connection<I>(
    handler: HandlerFn,
    idle: Duration,
    builder: auto::Builder<TokioExecutor>,
    io: I,
    conn: Peer,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Peer { addr: peer, tls, in_flight, slot } = conn;
    let idle_ms = idle.as_millis() as i64;
    let activity = Arc::new(Activity { inflight: AtomicUsize::new(0), last_ms: AtomicI64::new(now_ms()) });
    let svc_activity = activity.clone();
    let svc = service_fn(move |mut req: Request<Incoming>| {
        if req.headers().contains_key(http::header::UPGRADE) {
            // A tunnel may outlive this connection task: it takes the slot along.
            req.extensions_mut().insert(HeldSlot { _slot: slot.clone() });
        }
        let guard = InFlight::start(&svc_activity, &in_flight);
        let fut = handler(req, peer, tls);
        async move {
            let res = fut.await;
            drop(guard);
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    // With upgrades: a WebSocket handshake the backend accepts becomes a tunnel (`longlived`).
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_millis((idle_ms / 4).clamp(50, 5_000) as u64));
    let mut closing = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !closing => {
                let idle = activity.inflight.load(Ordering::Acquire) == 0
                    && now_ms() - activity.last_ms.load(Ordering::Acquire) > idle_ms;
                if idle {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// What a listener calls for each request: (request, peer, over TLS) → response.
pub type HandlerFn =
    Arc<dyn Fn(Request<Incoming>, SocketAddr, bool) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// The public port's handler.
pub fn public_handler(st: Arc<AppState>) -> HandlerFn {
    Arc::new(move |req, peer, tls| {
        let st = st.clone();
        Box::pin(async move {
            match handler::handle(st, peer, tls, req).await {
                Ok(res) => res,
                Err(never) => match never {},
            }
        })
    })
}

/// Serves a listener until `shutdown` flips, then drains open connections for up to
/// `server.drain_timeout`. `cfg` supplies the limits and timeouts.
pub async fn serve(
    cfg: ServerConfig,
    handler: HandlerFn,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    metrics: ListenerMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = builder(&cfg);
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let per_ip = Arc::new(PerIp {
        max: cfg.max_connections_per_ip,
        trusted: cfg.trusted_proxies.clone(),
        open: Default::default(),
    });
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.rejected_total.inc();
            tracing::warn!(%peer, max = cfg.max_connections, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let Ok(ip_slot) = per_ip.acquire(peer.ip()) else {
            metrics.rejected_per_ip.inc();
            tracing::warn!(%peer, max = cfg.max_connections_per_ip, "per-address connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (h, builder, tls, shutdown) = (handler.clone(), builder.clone(), tls.clone(), shutdown.clone());
        let (handshake_timeout, idle) = (cfg.tls_handshake_timeout, cfg.idle_timeout);
        let (open, in_flight) = (Open::new(&metrics.open), metrics.in_flight.clone());
        connections.spawn(async move {
            let slot = Arc::new(ConnectionSlot { _held: (permit, ip_slot, open) });
            match tls {
                None => {
                    let p = Peer { addr: peer, tls: false, in_flight, slot };
                    serve_connection(h, idle, builder, TokioIo::new(stream), p, shutdown).await
                }
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let p = Peer { addr: peer, tls: true, in_flight, slot };
                        serve_connection(h, idle, builder, TokioIo::new(s), p, shutdown).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    tracing::info!(connections = connections.len(), "draining connections");
    let drained =
        tokio::time::timeout(cfg.drain_timeout, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(remaining = connections.len(), "drain timeout reached; closing remaining connections");
        connections.shutdown().await;
    }
}
