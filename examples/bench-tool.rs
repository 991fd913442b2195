//! Helpers for `bench/run.sh` that a load generator cannot do:
//!
//!   bench-tool load-sessions DATA_DIR COUNT   bulk-write COUNT live sessions straight into a
//!                                             sled store (bearer token of session i: `bench-i`)
//!   bench-tool refresh-rate URL CONNS SECS    refreshes/s through the gateway, each connection
//!                                             rotating its own session's tokens
//!   bench-tool revoke-local URL ADMIN_URL ADMIN_TOKEN CONNS
//!                                             hammer one session, terminate it, and count the
//!                                             requests answered 200 that started after the
//!                                             admin's 200 (must be 0)
//!   bench-tool idle-conns ADDR COUNT SECS     open COUNT keep-alive connections, make one request
//!                                             on each, then hold them idle for SECS
//!
//! Output: one JSON object per run on stdout.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sessiongate::store::{Changes, SessionRecord, Store, TokenEntry, TokenKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build_http()
}

async fn call(c: &HttpClient, method: Method, url: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let Ok(req) = req.body(Full::new(body)) else { return (0, Value::Null) };
    match c.request(req).await {
        Ok(res) => {
            let status = res.status().as_u16();
            let bytes = res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

fn usage() -> ! {
    eprintln!("usage: bench-tool load-sessions DIR N | refresh-rate URL CONNS SECS | revoke-local URL ADMIN_URL TOKEN CONNS | idle-conns ADDR N SECS");
    std::process::exit(64)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("load-sessions") => load_sessions(&arg::<String>(&args, 1), arg(&args, 2)).await,
        Some("refresh-rate") => refresh_rate(&arg::<String>(&args, 1), arg(&args, 2), arg(&args, 3)).await,
        Some("revoke-local") => {
            revoke_local(&arg::<String>(&args, 1), &arg::<String>(&args, 2), &arg::<String>(&args, 3), arg(&args, 4))
                .await
        }
        Some("idle-conns") => idle_conns(&arg::<String>(&args, 1), arg(&args, 2), arg(&args, 3)).await,
        _ => usage(),
    };
    println!("{out}");
}

/// Live sessions 1..=n of 10 000 users, each with one access token `bench-<id>`.
async fn load_sessions(dir: &str, n: u64) -> Value {
    let started = Instant::now();
    let store = match Store::open(std::path::Path::new(dir), 256 << 20).await {
        Ok(s) => s,
        Err(e) => return json!({"error": e.to_string()}),
    };
    let now = sessiongate::clock::now_ms();
    let exp = now / 1000 + 30 * 86_400;
    let mut id = 1;
    while id <= n {
        let end = (id + 20_000).min(n + 1);
        let mut changes = Changes::default();
        for i in id..end {
            let user = (i % 10_000).to_string();
            changes.put_sessions.push(SessionRecord {
                login_time: now,
                last_active: now,
                ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                ..SessionRecord::blank(i, &user)
            });
            let hash = sessiongate::session::tokens::hash(&format!("bench-{i}"));
            changes
                .put_tokens
                .push((hash, TokenEntry { session: i, kind: TokenKind::Access, exp: Some(exp), rotated_at: None }));
        }
        if let Err(e) = store.apply(changes, false).await {
            return json!({"error": e.to_string()});
        }
        id = end;
    }
    if let Err(e) = store.flush().await {
        return json!({"error": e.to_string()});
    }
    let secs = started.elapsed().as_secs_f64();
    json!({"sessions": n, "seconds": secs, "per_second": n as f64 / secs})
}

/// Each connection logs in once, then refreshes in a loop with its latest refresh token.
async fn refresh_rate(url: &str, conns: usize, secs: u64) -> Value {
    let c = client();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (c, done, failed, stop, url) = (c.clone(), done.clone(), failed.clone(), stop.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let login = json!({"identifier": format!("user{i}"), "password": "x"});
            let (_, v) = call(&c, Method::POST, &format!("{url}/api/auth/local"), None, Some(login)).await;
            let Some(mut refresh) = v["refreshToken"].as_str().map(str::to_string) else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"refreshToken": refresh});
                let (status, v) = call(&c, Method::POST, &format!("{url}/api/auth/refresh"), None, Some(body)).await;
                match v["refreshToken"].as_str() {
                    Some(r) if status == 200 => {
                        refresh = r.to_string();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let n = done.load(Ordering::Relaxed);
    json!({"refreshes": n, "seconds": elapsed, "per_second": n as f64 / elapsed, "failed": failed.load(Ordering::Relaxed)})
}

/// Several connections send requests with one session's token; the session is then terminated
/// through the admin API. A request that *started* after the admin's 200 and was still answered
/// 200 slipped through.
async fn revoke_local(url: &str, admin: &str, admin_token: &str, conns: usize) -> Value {
    let c = client();
    let (_, v) = call(
        &c,
        Method::POST,
        &format!("{url}/api/auth/local"),
        None,
        Some(json!({"identifier": "victim", "password": "x"})),
    )
    .await;
    let Some(jwt) = v["jwt"].as_str().map(str::to_string) else { return json!({"error": "login failed"}) };
    let (_, cur) =
        call(&c, Method::GET, &format!("{url}/api/magic-sessionmanager/current-session"), Some(&jwt), None).await;
    let Some(sid) = cur["data"]["sessionId"].as_str().map(str::to_string) else {
        return json!({"error": "no session"});
    };
    let base = Instant::now();
    let acked_at = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (c, jwt, url, acked_at, stop) = (c.clone(), jwt.clone(), url.to_string(), acked_at.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut before, mut slipped, mut refused) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let started = base.elapsed().as_nanos() as u64;
                let (status, _) = call(&c, Method::GET, &format!("{url}/api/articles"), Some(&jwt), None).await;
                let acked = acked_at.load(Ordering::Acquire);
                match (status, started >= acked) {
                    (200, true) => slipped += 1,
                    (200, false) => before += 1,
                    (_, true) => refused += 1,
                    _ => {}
                }
            }
            (before, slipped, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, _) = call(
        &c,
        Method::POST,
        &format!("{admin}/magic-sessionmanager/sessions/{sid}/terminate"),
        Some(admin_token),
        None,
    )
    .await;
    acked_at.store(base.elapsed().as_nanos() as u64, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut before, mut slipped, mut refused) = (0, 0, 0);
    for t in tasks {
        if let Ok((b, s, r)) = t.await {
            before += b;
            slipped += s;
            refused += r;
        }
    }
    json!({"admin_status": status, "served_before": before, "slipped_after_ack": slipped, "refused_after_ack": refused})
}

/// Opens `n` connections, makes one keep-alive request on each, then holds them idle.
async fn idle_conns(addr: &str, n: usize, secs: u64) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(mut s) => {
                let req = format!("GET /api/articles HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                let mut buf = [0u8; 2048];
                if s.write_all(req.as_bytes()).await.is_err() || s.read(&mut buf).await.unwrap_or(0) == 0 {
                    failed += 1;
                }
                held.push(s);
            }
            Err(_) => failed += 1,
        }
    }
    eprintln!("idle-conns: {} open", held.len() - failed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    json!({"open": held.len() - failed, "failed": failed})
}
