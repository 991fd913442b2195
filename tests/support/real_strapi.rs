//! A real Strapi 5 (the app in `tests/strapi-app`, pinned by its lockfile) for the end-to-end
//! suite.
//!
//! `node_modules` (≈1 400 packages, minutes to install, better-sqlite3 compiled from source) is
//! installed once into a cache outside the clone, keyed by the lockfile's hash:
//! `$SESSIONGATE_CACHE_DIR` or `~/.cache/sessiongate`, then `strapi-<hash>/node_modules`. Each
//! test binary starts one Strapi on a free port in a fresh temporary app directory (a new
//! SQLite database) and shares it between its tests. The server is wrapped in a shell that
//! kills it and removes its directory when the test process exits (its stdin closes).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The signing secret the app is started with (for `[jwt]` in gateway configs).
pub const JWT_SECRET: &str = "e2e-strapi-jwt-secret-0123456789";
pub const PASSWORD: &str = "Password1!";

/// A running real Strapi.
pub struct RealStrapi {
    pub url: String,
    pub dir: PathBuf,
    /// Held open: closing it (the process ends) stops the server.
    _stdin: std::process::ChildStdin,
}

fn app_source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/strapi-app")
}

/// The installed `node_modules` for the app's lockfile (installing it the first time).
/// Blocking: call it off the async threads (see [`shared_async`]).
pub fn node_modules() -> PathBuf {
    super::npm::node_modules("strapi")
}

pub(super) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Starts a Strapi (blocking: npm install the first time, then ~5–15 s to `/_health`).
#[allow(clippy::disallowed_methods)] // polls the health route, on a blocking thread
pub fn start() -> RealStrapi {
    let modules = node_modules();
    let dir =
        std::env::temp_dir().join(format!("sessiongate-strapi-{}-{:x}", std::process::id(), rand::random::<u32>()));
    for part in ["config", "src", "public"] {
        copy_dir(&app_source().join(part), &dir.join(part));
    }
    std::fs::copy(app_source().join("package.json"), dir.join("package.json")).expect("package.json");
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).expect("link node_modules");
    let port = super::free_port();
    let log = dir.join("strapi.log");
    let script = format!(
        "node node_modules/@strapi/strapi/bin/strapi.js start > '{}' 2>&1 & s=$!; cat > /dev/null; kill $s; wait $s; rm -rf '{}'",
        log.display(),
        dir.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .current_dir(&dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("NODE_ENV", "production")
        .env("APP_KEYS", "e2eKeyA,e2eKeyB,e2eKeyC,e2eKeyD")
        .env("API_TOKEN_SALT", "e2e-api-token-salt")
        .env("ADMIN_JWT_SECRET", "e2e-admin-jwt-secret")
        .env("TRANSFER_TOKEN_SALT", "e2e-transfer-salt")
        .env("ENCRYPTION_KEY", "e2e-encryption-key")
        .env("JWT_SECRET", JWT_SECRET)
        .env("DATABASE_FILENAME", dir.join("data.db"))
        .env("STRAPI_TELEMETRY_DISABLED", "true")
        .env("STRAPI_DISABLE_UPDATE_NOTIFICATION", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Strapi");
    let stdin = child.stdin.take().expect("stdin");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(180);
    let started = Instant::now();
    loop {
        if health(port) {
            eprintln!("real Strapi up on {url} after {:?}", started.elapsed());
            break;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&log) {
                let _ = f.read_to_string(&mut text);
            }
            panic!("Strapi did not become healthy:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // The shell owns the server; it ends when the test process exits.
    drop(child);
    RealStrapi { url, dir, _stdin: stdin }
}

/// `GET /_health` answers 204.
fn health(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"204")
}

/// The Strapi shared by the tests of this binary.
pub fn shared() -> &'static RealStrapi {
    static STRAPI: OnceLock<RealStrapi> = OnceLock::new();
    STRAPI.get_or_init(start)
}

/// [`shared`] from async code.
pub async fn shared_async() -> &'static RealStrapi {
    tokio::task::spawn_blocking(shared).await.expect("start Strapi")
}
