//! A real `redis-server` on a free loopback port, in a temporary directory, with the
//! append-only file fsynced on every write (so a kill and restart keeps what was acknowledged,
//! as a production Redis configured for durability does). `.ci/test` installs redis-server.

use super::free_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Server arguments before the common ones (config file, TLS, password).
    extra: Vec<String>,
    /// Speaks TLS only: readiness is "listening", not a plain PING.
    tls: bool,
    /// The port is set by `extra` (TLS port, Sentinel config), not by `--port`.
    port_in_extra: bool,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_with(vec![], false).await
    }

    /// TLS only (no plain port), with the given certificate, and a password.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path, password: &str) -> RedisServer {
        let port = free_port();
        let args = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &key.display().to_string(),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .map(str::to_string)
        .to_vec();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = RedisServer { port, dir, child: None, extra: args, tls: true, port_in_extra: true };
        r.spawn().await;
        r
    }

    /// A Sentinel monitoring the master on `master_port` as `mymaster`.
    pub async fn start_sentinel(master_port: u16) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 2000\n"
            ),
        )
        .expect("sentinel.conf");
        // The config file comes first; Sentinel rewrites it, so it lives in the temp dir.
        let extra = vec![conf.display().to_string(), "--sentinel".to_string()];
        let mut r = RedisServer { port, dir, child: None, extra, tls: false, port_in_extra: true };
        r.spawn().await;
        r
    }

    async fn start_with(extra: Vec<String>, tls: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = RedisServer { port: free_port(), dir, child: None, extra, tls, port_in_extra: false };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let plain = if self.port_in_extra { vec![] } else { vec!["--port", port.as_str()] };
        let child = Command::new("redis-server")
            .args(&self.extra)
            .args(plain)
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (bash .ci/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// The server answers (it may still be loading its append-only file otherwise).
    pub async fn ping(&self) -> bool {
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            if self.tls {
                // Listening is enough here; the gateway's own handshake is what the test checks.
                return Some(true);
            }
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).await.ok()?;
            Some(buf[..n].starts_with(b"+PONG"))
        };
        tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().unwrap_or(false)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill").args([sig, &c.id().to_string()]).status().is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGSTOP: the server keeps its connections open and stops answering.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Runs a command with redis-cli (for assertions on what the gateway wrote).
    pub fn cli(&self, args: &[&str]) -> String {
        let out =
            Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill();
    }
}
