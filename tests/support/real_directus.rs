//! A real Directus 11.3.5 (the app in `tests/directus-app`, pinned by its lockfile; 11.3.5 is the
//! newest that runs on Node 20) for the end-to-end suite.
//!
//! `node_modules` (≈1 100 packages, sqlite3 compiled from source) is cached outside the clone
//! (`support::npm`). Each test binary bootstraps one Directus on a free port in a fresh
//! temporary directory (a new SQLite database, its admin from `ADMIN_EMAIL`) and shares it
//! between its tests, which create their own users. The server runs under a shell that kills it
//! and removes its directory when the test process exits (its stdin closes).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const SECRET: &str = "directus-e2e-secret-0123456789abcdef";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const PASSWORD: &str = "Password1!";

/// A running real Directus.
pub struct RealDirectus {
    pub url: String,
    pub dir: PathBuf,
    /// Held open: closing it (the process ends) stops the server.
    _stdin: std::process::ChildStdin,
}

/// Bootstraps and starts a Directus (blocking: npm install the first time, then ~10 s of
/// migrations and a few seconds to `/server/health`).
pub fn start() -> RealDirectus {
    let modules = super::npm::node_modules("directus");
    let dir =
        std::env::temp_dir().join(format!("sessiongate-directus-{}-{:x}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(dir.join("uploads")).expect("mkdir");
    std::fs::create_dir_all(dir.join("extensions")).expect("mkdir");
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).expect("link node_modules");
    let port = super::free_port();
    let log = dir.join("directus.log");
    let script = format!(
        "node node_modules/directus/cli.js bootstrap > '{log}' 2>&1 && {{ node node_modules/directus/cli.js start >> '{log}' 2>&1 & s=$!; cat > /dev/null; kill $s; wait $s; }}; rm -rf '{dir}'",
        log = log.display(),
        dir = dir.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("KEY", "directus-e2e-key")
        .env("SECRET", SECRET)
        .env("DB_CLIENT", "sqlite3")
        .env("DB_FILENAME", dir.join("data.db"))
        .env("ADMIN_EMAIL", ADMIN_EMAIL)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("STORAGE_LOCAL_ROOT", dir.join("uploads"))
        .env("EXTENSIONS_PATH", dir.join("extensions"))
        .env("TELEMETRY", "false")
        .env("LOG_LEVEL", "warn")
        // Many logins from one address: the default rate limits are off, as they are by default.
        .env("RATE_LIMITER_ENABLED", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Directus");
    let stdin = child.stdin.take().expect("stdin");
    let url = format!("http://127.0.0.1:{port}");
    super::npm::wait_healthy("Directus", &mut child, port, ("/server/health", b"200"), &log, 240);
    drop(child);
    RealDirectus { url, dir, _stdin: stdin }
}

/// The Directus shared by the tests of this binary.
pub fn shared() -> &'static RealDirectus {
    static DIRECTUS: OnceLock<RealDirectus> = OnceLock::new();
    DIRECTUS.get_or_init(start)
}

/// [`shared`] from async code.
pub async fn shared_async() -> &'static RealDirectus {
    tokio::task::spawn_blocking(shared).await.expect("start Directus")
}

impl RealDirectus {
    /// A request straight to Directus (not through a gateway).
    pub fn direct(&self, method: http::Method, path: &str) -> super::Req {
        super::Req::new(method, &format!("{}{path}", self.url))
    }

    /// The admin's access token, logged in directly.
    pub async fn admin_token(&self) -> String {
        let r = self
            .direct(http::Method::POST, "/auth/login")
            .json(serde_json::json!({"email": ADMIN_EMAIL, "password": PASSWORD}))
            .send()
            .await;
        assert_eq!(r.status, 200, "admin login: {}", r.text());
        r.json()["data"]["access_token"].as_str().expect("admin token").to_string()
    }

    /// Creates an active user with no role (it can log in and read `/users/me`); its id.
    pub async fn create_user(&self, email: &str) -> String {
        let admin = self.admin_token().await;
        let r = self
            .direct(http::Method::POST, "/users")
            .bearer(&admin)
            .json(serde_json::json!({"email": email, "password": PASSWORD, "status": "active"}))
            .send()
            .await;
        assert_eq!(r.status, 200, "create {email}: {}", r.text());
        r.json()["data"]["id"].as_str().expect("user id").to_string()
    }
}
