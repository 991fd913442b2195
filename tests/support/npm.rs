//! The npm apps of the end-to-end suites (`tests/<name>-app`, pinned by their lockfiles):
//! `node_modules` is installed once into a cache outside the clone, keyed by the lockfile's
//! hash — `$SESSIONGATE_CACHE_DIR` or `~/.cache/sessiongate`, then `<name>-<hash>/node_modules` —
//! so a CI run installs it only when the lockfile changes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn app_source(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/{name}-app"))
}

fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("SESSIONGATE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache/sessiongate")
}

fn lock_hash(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let src = app_source(name);
    let lock = std::fs::read(src.join("package-lock.json")).expect("the app's package-lock.json");
    let pkg = std::fs::read(src.join("package.json")).expect("the app's package.json");
    let digest = Sha256::digest([lock, pkg].concat());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The installed `node_modules` of `tests/<name>-app` (installing it the first time; one
/// installer at a time across processes). Blocking: call it off the async threads.
#[allow(clippy::disallowed_methods)] // waits for another process's install, on a blocking thread
pub fn node_modules(name: &str) -> PathBuf {
    let dir = cache_root().join(format!("{name}-{}", lock_hash(name)));
    let done = dir.join(".installed");
    if done.exists() {
        return dir.join("node_modules");
    }
    std::fs::create_dir_all(&dir).expect("create the npm cache dir");
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
        std::fs::copy(app_source(name).join(f), dir.join(f)).expect("copy the app's package files");
    }
    eprintln!("installing the {name} app's node_modules into {} (once per lockfile)", dir.display());
    let started = Instant::now();
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&dir);
    // Native modules (better-sqlite3, sqlite3) have no prebuilt binary offline; they compile
    // against the local Node headers.
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

/// Waits until `GET path` on the port answers `status` (a started app), at most `secs`; panics
/// with the app's log if it does not, or if its process ends first.
#[allow(clippy::disallowed_methods)] // polls the health route, on a blocking thread
pub fn wait_healthy(
    app: &str,
    child: &mut std::process::Child,
    port: u16,
    (path, status): (&str, &[u8; 3]),
    log: &Path,
    secs: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    loop {
        if health(port, path, status) {
            eprintln!("real {app} up on port {port} after {:?}", started.elapsed());
            return;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(log) {
                let _ = f.read_to_string(&mut text);
            }
            panic!("{app} did not become healthy:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn health(port: u16, path: &str, status: &[u8; 3]) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == status)
}
