//! A real Strapi 5 (the app in `tests/strapi-app`, pinned by its lockfile) for the end-to-end
//! suite.
//!
//! `node_modules` (≈1 400 packages, minutes to install, better-sqlite3 compiled from source) is
//! installed once into a cache outside the clone, keyed by the lockfile's hash:
//! `$SESSIONGATE_CACHE_DIR` or `~/.cache/sessiongate`, then `strapi-<hash>/node_modules`. Each
//! test binary starts one Strapi on a free port in a fresh temporary app directory (a new
//! SQLite database) and shares it between its tests. The server is wrapped in a shell that
//! kills it and removes its directory when the test process exits (its stdin closes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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
    super::npm::wait_healthy("Strapi", &mut child, port, ("/_health", b"204"), &log, 180);
    drop(child);
    RealStrapi { url, dir, _stdin: stdin }
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
