//! Test harness: the real gateway on an ephemeral port with a temporary sled directory, in
//! front of the Strapi-like mock backend, and a small HTTP client.
#![allow(dead_code)]

pub mod browser;
pub mod directus;
pub mod npm;
pub mod oauth2;
pub mod process;
pub mod real_directus;
pub mod real_strapi;
pub mod receivers;
pub mod redis;
pub mod strapi;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
pub use strapi::{MockStrapi, PASSWORD};

/// A running gateway plus the directory its state lives in.
///
/// When it runs in front of a [`MockStrapi`], dropping it asserts the product's promise on
/// everything the test did: no token of a session this gateway had ended was accepted by the
/// backend, through this gateway, after the ending (see [`Gateway::assert_nothing_ended_got_through`]).
pub struct Gateway {
    pub running: Option<sessiongate::Running>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub dir: tempfile::TempDir,
    toml: String,
    /// The test backend behind this gateway, when it is a [`MockStrapi`].
    backend: Option<std::sync::Arc<std::sync::Mutex<strapi::MockState>>>,
    /// Every public address this gateway had (a restart binds a new port).
    addrs: Vec<SocketAddr>,
    /// Ended sessions' tokens seen by earlier runs of this gateway, with when they ended.
    /// Token hash prefixes (as the gateway's index keys them) of ended sessions.
    ended: std::collections::HashMap<[u8; 16], i64>,
    /// The clock the gateway's session decisions read: the system clock until a test moves it
    /// forward with [`Gateway::advance`] (kept across restarts).
    clock: sessiongate::clock::Clock,
}

/// How late a request may reach the backend after the ending it raced with: it was checked
/// before the ending and was still on its way (forwarding takes well under this).
const IN_FLIGHT_SLACK_MS: i64 = 200;

impl Drop for Gateway {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_nothing_ended_got_through();
        }
    }
}

/// Writes a fresh encryption key file into `dir` (a file, not the environment, so parallel
/// tests cannot see each other's keys).
fn key_file(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("test.key");
    if !p.exists() {
        std::fs::write(&p, sessiongate::session::crypto::generate_key()).expect("write key");
    }
    p
}

/// Deep-merges `extra` into `base` (tables merge, other values replace).
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Path of one of MaxMind's test databases in `geoip/test/`.
pub fn geoip_test_db(name: &str) -> String {
    format!("{}/geoip/test/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The admin token every test gateway accepts (as actor `test`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub fn config_text(upstream: &str, dir: &std::path::Path, extra: &str) -> String {
    let key = key_file(dir);
    let admin_token = dir.join("admin-token");
    std::fs::write(&admin_token, ADMIN_TOKEN).expect("write admin token");
    let mut base: toml::Table = format!(
        "preset = \"strapi-v5\"\n[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n[upstream]\nurl = \"{upstream}\"\n[store]\ndata_dir = \"{}\"\n[sessions]\nencryption_key_file = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntokens = [{{ name = \"test\", file = \"{}\" }}]\n",
        dir.join("data").display(),
        key.display(),
        admin_token.display()
    )
    .parse()
    .expect("base config");
    let mut extra = extra.parse::<toml::Table>().expect("extra TOML");
    // `preset = "none"` (harness only): a generic configuration, with no preset under it.
    if extra.get("preset").and_then(|p| p.as_str()) == Some("none") {
        extra.remove("preset");
        base.remove("preset");
    }
    merge(&mut base, extra);
    toml::to_string(&base).expect("serialise config")
}

impl Gateway {
    /// Starts the gateway in front of `upstream`. `extra` is TOML deep-merged into the harness's
    /// base config (ephemeral port, temporary data directory, key file).
    pub async fn start(upstream: &str, extra: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = config_text(upstream, dir.path(), extra);
        let zero = SocketAddr::from(([127, 0, 0, 1], 0));
        let backend = upstream
            .strip_prefix("http://")
            .and_then(|a| a.trim_end_matches('/').parse::<SocketAddr>().ok())
            .and_then(strapi::lookup);
        let mut gw = Gateway {
            running: None,
            addr: zero,
            admin_addr: zero,
            dir,
            toml,
            backend,
            addrs: Vec::new(),
            ended: Default::default(),
            clock: sessiongate::clock::Clock::driven(),
        };
        gw.boot().await;
        gw
    }

    pub async fn with_defaults(backend: &MockStrapi) -> Gateway {
        Self::start(&backend.url(), "").await
    }

    /// Moves the gateway's decision clock forward (idleness, expiry, retention) without waiting.
    pub fn advance(&self, by: std::time::Duration) {
        self.clock.advance(by);
    }

    /// The configuration file the gateway was started from (what a reload re-reads).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    async fn boot(&mut self) {
        std::fs::write(self.config_path(), &self.toml).expect("write config");
        let cfg = sessiongate::startup::load_config(&self.config_path())
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{}", self.toml));
        let listeners = sessiongate::Listeners::bind(&cfg).expect("bind");
        let running = sessiongate::start_with_clock(cfg, listeners, self.clock.clone()).await.expect("gateway starts");
        self.addr = running.public_addr;
        self.addrs.push(running.public_addr);
        self.admin_addr = running.admin_addr.unwrap_or(self.admin_addr);
        self.running = Some(running);
    }

    /// Keeps what the running instance knows of ended sessions (before it stops).
    fn remember_endings(&mut self) {
        if let Some(r) = &self.running {
            for (h, at) in r.state.sessions.ended_tokens() {
                let e = self.ended.entry(h).or_insert(at);
                *e = (*e).min(at);
            }
        }
    }

    /// The invariant every test checks at its end: the backend never accepted a token of a
    /// session this gateway had ended, in a request this gateway forwarded after the ending
    /// (the gateway's own revocation calls excepted: they use the session's tokens to end it at
    /// the backend).
    pub fn assert_nothing_ended_got_through(&mut self) {
        self.remember_endings();
        let Some(backend) = &self.backend else { return };
        let hosts: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
        let state = backend.lock().unwrap_or_else(|p| p.into_inner());
        let bad: Vec<String> = state
            .accepted
            .iter()
            .filter(|a| matches!(&a.via, strapi::Via::Gateway(h) if hosts.contains(h)))
            .filter_map(|a| {
                let prefix: [u8; 16] = a.hash[..16].try_into().ok()?;
                let ended = self.ended.get(&prefix)?;
                (a.at_ms > ended + IN_FLIGHT_SLACK_MS).then(|| {
                    format!("{} token accepted on {} {} ms after its session ended", a.kind, a.route, a.at_ms - ended)
                })
            })
            .collect();
        drop(state);
        assert!(
            bad.is_empty(),
            "a token of an ended session reached the backend through the gateway:\n{}",
            bad.join("\n")
        );
    }

    /// Deep-merges `extra` into the configuration file, used from the next (re)start or
    /// reload on.
    pub fn reconfigure(&mut self, extra: &str) {
        let mut base: toml::Table = self.toml.parse().expect("current config");
        let mut extra = extra.parse::<toml::Table>().expect("extra TOML");
        // `preset = "none"` (harness only): a generic configuration, with no preset under it.
        if extra.get("preset").and_then(|p| p.as_str()) == Some("none") {
            extra.remove("preset");
            base.remove("preset");
        }
        merge(&mut base, extra);
        self.toml = toml::to_string(&base).expect("serialise config");
        std::fs::write(self.config_path(), &self.toml).expect("write config");
    }

    /// Stops the gateway (draining) and starts it again on the same data directory.
    pub async fn restart(&mut self) {
        self.remember_endings();
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.boot().await;
    }

    pub async fn stop(&mut self) {
        self.remember_endings();
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn get(&self, path: &str) -> Req {
        Req::new(Method::GET, &self.url(path))
    }

    /// A request to the admin port carrying the test admin token.
    pub fn admin(&self, method: Method, path: &str) -> Req {
        Req::new(method, &format!("http://{}{}", self.admin_addr, path)).bearer(ADMIN_TOKEN)
    }

    /// A request to the admin port without credentials.
    pub fn admin_anon(&self, method: Method, path: &str) -> Req {
        Req::new(method, &format!("http://{}{}", self.admin_addr, path))
    }

    /// The gateway's state (for waiting on background work in tests).
    pub fn state(&self) -> &std::sync::Arc<sessiongate::state::AppState> {
        &self.running.as_ref().expect("running").state
    }
    pub fn post(&self, path: &str) -> Req {
        Req::new(Method::POST, &self.url(path))
    }
    pub fn delete(&self, path: &str) -> Req {
        Req::new(Method::DELETE, &self.url(path))
    }
    pub fn put(&self, path: &str) -> Req {
        Req::new(Method::PUT, &self.url(path))
    }
    pub fn patch(&self, path: &str) -> Req {
        Req::new(Method::PATCH, &self.url(path))
    }

    /// A GraphQL request to Directus's `/graphql/system` through the gateway.
    pub async fn graphql(&self, bearer: Option<&str>, query: &str, variables: Value) -> Resp {
        let mut req = self.post("/graphql/system").json(serde_json::json!({"query": query, "variables": variables}));
        if let Some(b) = bearer {
            req = req.bearer(b);
        }
        req.send().await
    }

    /// Logs `user` in through the gateway.
    pub async fn login(&self, user: &str) -> Login {
        let res = self
            .post("/api/auth/local")
            .header("user-agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36")
            .json(serde_json::json!({"identifier": user, "password": PASSWORD}))
            .send()
            .await;
        assert_eq!(res.status, 200, "login of {user} failed: {}", res.text());
        let v = res.json();
        Login {
            jwt: v["jwt"].as_str().expect("jwt").to_string(),
            refresh: v["refreshToken"].as_str().expect("refreshToken").to_string(),
            user_id: v["user"]["id"].as_u64().expect("user id"),
        }
    }

    /// Refreshes through the gateway, asserting success.
    pub async fn refresh(&self, refresh: &str) -> Login {
        let res = self.post("/api/auth/refresh").json(serde_json::json!({"refreshToken": refresh})).send().await;
        assert_eq!(res.status, 200, "refresh failed: {}", res.text());
        let v = res.json();
        Login {
            jwt: v["jwt"].as_str().expect("jwt").to_string(),
            refresh: v["refreshToken"].as_str().expect("refreshToken").to_string(),
            user_id: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Login {
    pub jwt: String,
    pub refresh: String,
    pub user_id: u64,
}

/// Request builder for the test client.
pub struct Req {
    req: http::request::Builder,
    body: Bytes,
    http2: bool,
}

impl Req {
    pub fn new(method: Method, url: &str) -> Req {
        Req { req: Request::builder().method(method).uri(url), body: Bytes::new(), http2: false }
    }
    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.req = self.req.header(k, v);
        self
    }
    /// A header with arbitrary bytes (e.g. a raw 0xA0, which `header` cannot carry).
    pub fn header_bytes(mut self, k: &str, v: &[u8]) -> Req {
        self.req = self.req.header(k, http::HeaderValue::from_bytes(v).expect("valid header bytes"));
        self
    }
    /// Sends over HTTP/2 (prior knowledge, cleartext) instead of HTTP/1.1.
    pub fn http2(mut self) -> Req {
        self.http2 = true;
        self
    }
    pub fn bearer(self, token: &str) -> Req {
        self.header("authorization", &format!("Bearer {token}"))
    }
    pub fn json(mut self, v: Value) -> Req {
        self.req = self.req.header(header::CONTENT_TYPE, "application/json");
        self.body = Bytes::from(v.to_string());
        self
    }
    pub fn body(mut self, b: impl Into<Bytes>) -> Req {
        self.body = b.into();
        self
    }
    pub async fn send(self) -> Resp {
        self.send_result().await.expect("request sent and answered")
    }

    /// Like `send`, but a connection failure (e.g. the server was killed) is an `Err`.
    pub async fn send_result(self) -> Result<Resp, String> {
        // Without TCP_NODELAY an HTTP/2 body waits ~40 ms behind its HEADERS frame (Nagle and
        // delayed ACKs).
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).http2_only(self.http2).build(connector);
        let req = self.req.body(Full::new(self.body)).expect("request");
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp { status: parts.status, headers: parts.headers, body })
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn reason(&self) -> Option<String> {
        self.headers.get("x-sessiongate-reason").and_then(|v| v.to_str().ok()).map(str::to_string)
    }
    /// The value a `Set-Cookie` header of the answer gives the cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap_or("").to_string()))
    }
}

/// Direct request to the backend, bypassing the gateway.
pub fn direct(backend: &MockStrapi, method: Method, path: &str) -> Req {
    Req::new(method, &format!("{}{}", backend.url(), path))
}

/// A test HTTP server on a free loopback port (HTTP/1.1 and HTTP/2), answering each request
/// with `handler`; it stops when this is dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Served {
    pub async fn start<F, Fut>(handler: F) -> Served
    where
        F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a test server");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let answer = handler(req);
                        async move { Ok::<_, std::convert::Infallible>(answer.await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                });
            }
        });
        Served { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Waits until `f` holds (polling), at most `secs` seconds.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    f()
}

/// A self-signed certificate for `localhost` / 127.0.0.1 (cert.pem, key.pem in `dir`).
pub fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    (cert, key)
}

/// A port that was free a moment ago (for child processes that cannot take port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Unix milliseconds now (the clock the test backend stamps its records with).
pub fn strapi_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
