//! The upstream of the benchmarks (`bench/run.sh`): as little work per request as a hyper
//! server can do, so the numbers measure what sits in front of it.
//!
//!     cargo run --release --example bench-upstream -- 127.0.0.1:18080
//!
//! `GET` anything → a small JSON body. `POST /api/auth/local` and `POST /api/auth/refresh` →
//! Strapi v5-shaped token responses with fresh, unique tokens (unsigned JWT shape: the gateway
//! reads `exp` and `sessionId` from them; signatures are not checked without `[jwt]`).
//! `GET /_health` → 204. No state besides a counter.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(1);
const SMALL: &[u8] = br#"{"data":[{"id":1,"documentId":"a1b2c3","title":"Hello"}],"meta":{}}"#;

fn jwt(user: u64, sid: &str, kind: &str, exp_in: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = B64.encode(
        format!(
            r#"{{"userId":{user},"sessionId":"{sid}","type":"{kind}","iat":{now},"exp":{},"n":{n}}}"#,
            now + exp_in
        )
        .as_bytes(),
    );
    format!("{header}.{payload}.{}", B64.encode(n.to_be_bytes()))
}

fn tokens(user: u64) -> Response<Full<Bytes>> {
    let sid = format!("bsid{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let body = format!(
        r#"{{"jwt":"{}","refreshToken":"{}","user":{{"id":{user},"documentId":"user{user}","username":"user{user}","email":"user{user}@example.com"}}}}"#,
        jwt(user, &sid, "access", 1800),
        jwt(user, &sid, "refresh", 1_209_600)
    );
    json(StatusCode::OK, Bytes::from(body))
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let res = match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/_health") => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        (&Method::POST, "/api/auth/local") | (&Method::POST, "/api/auth/refresh") => {
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            // Users 1..=1000, spread by the identifier's bytes.
            let user = body.iter().map(|b| *b as u64).sum::<u64>() % 1000 + 1;
            tokens(user)
        }
        _ => json(StatusCode::OK, Bytes::from_static(SMALL)),
    };
    Ok(res)
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18080".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-upstream: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("bench upstream on {addr}");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}
