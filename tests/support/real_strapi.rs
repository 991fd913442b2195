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

fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("SESSIONGATE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache/sessiongate")
}

fn lock_hash() -> String {
    use sha2::{Digest, Sha256};
    let lock = std::fs::read(app_source().join("package-lock.json")).expect("tests/strapi-app/package-lock.json");
    let pkg = std::fs::read(app_source().join("package.json")).expect("tests/strapi-app/package.json");
    let digest = Sha256::digest([lock, pkg].concat());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The installed `node_modules` for the app's lockfile (installing it the first time).
/// Blocking: call it off the async threads (see [`shared_async`]).
#[allow(clippy::disallowed_methods)] // waits for another process's install, on a blocking thread
pub fn node_modules() -> PathBuf {
    let dir = cache_root().join(format!("strapi-{}", lock_hash()));
    let done = dir.join(".installed");
    if done.exists() {
        return dir.join("node_modules");
    }
    std::fs::create_dir_all(&dir).expect("create the npm cache dir");
    // One installer at a time across processes.
    let lock = dir.join(".installing");
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        if done.exists() {
            return dir.join("node_modules");
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_secs(2)),
            Err(_) => {
                let _ = std::fs::remove_file(&lock);
            }
        }
    }
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(app_source().join(f), dir.join(f)).expect("copy the app's package files");
    }
    eprintln!("installing the real Strapi's node_modules into {} (once per lockfile)", dir.display());
    let started = Instant::now();
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&dir);
    // better-sqlite3 has no prebuilt binary offline; it compiles against the local Node headers.
    if Path::new("/usr/include/node/node.h").exists() {
        cmd.env("npm_config_nodedir", "/usr");
    }
    let out = cmd.output().expect("run npm (Node.js and npm must be installed; .ci/test installs them)");
    let _ = std::fs::remove_file(&lock);
    assert!(
        out.status.success(),
        "npm install failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&done, format!("{:?}\n", started.elapsed())).expect("mark the install done");
    eprintln!("npm install took {:?}", started.elapsed());
    dir.join("node_modules")
}

fn copy_dir(from: &Path, to: &Path) {
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
