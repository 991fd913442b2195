//! Public listener: accept loop, optional TLS, HTTP/1.1 + HTTP/2 serving and graceful drain.
//! The accept loop never dies: accept errors are logged and followed by a short pause.

pub mod handler;
pub mod headers;
pub mod tls;
pub mod upstream;

use crate::config::ServerConfig;
use crate::state::AppState;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
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

/// Serves the public port until `shutdown` flips, then drains open connections for up to
/// `server.drain_timeout`.
pub async fn serve(
    st: Arc<AppState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = st.cfg.server.clone();
    let builder = builder(&cfg);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    loop {
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
            tracing::warn!(%peer, max = cfg.max_connections, "connection limit reached; closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let st = st.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let handshake_timeout = cfg.tls_handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let is_tls = tls.is_some();
            let svc_state = st.clone();
            let svc = service_fn(move |req| handler::handle(svc_state.clone(), peer, is_tls, req));
            let result = match tls {
                None => watcher.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned()).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        watcher.watch(builder.serve_connection(TokioIo::new(tls_stream), svc).into_owned()).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "draining public connections");
    if tokio::time::timeout(cfg.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timeout reached; closing remaining connections");
    }
}
