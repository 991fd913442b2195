//! The real `sessiongate` binary as a child process (signals, crashes, exit codes, logs).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

pub const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

/// A started binary: its process, the addresses it reported, and its stderr lines.
pub struct Spawned {
    pub child: Child,
    pub public: String,
    /// `off` when the admin port is disabled.
    pub admin: String,
    pub logs: Receiver<String>,
}

/// Kills the child when dropped: a test that fails half-way leaves no gateway running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sessiongate run --config <config>` (JSON logs expected) and waits for the line that
/// reports its addresses. The lines read meanwhile stay available in `logs`.
pub fn spawn_binary(config: &std::path::Path) -> Spawned {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env_remove("SESSION_ENCRYPTION_KEY")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut addrs = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut early = Vec::new();
    while addrs.is_none() && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let (Some(p), Some(a)) = (v["public"].as_str(), v["admin"].as_str()) {
                    addrs = Some((p.to_string(), a.to_string()));
                }
            }
            early.push(line);
        }
    }
    let (public, admin) =
        addrs.unwrap_or_else(|| panic!("gateway did not report its addresses:\n{}", early.join("\n")));
    let (tx2, rx2) = std::sync::mpsc::channel();
    for l in early {
        let _ = tx2.send(l);
    }
    std::thread::spawn(move || {
        for l in rx {
            if tx2.send(l).is_err() {
                break;
            }
        }
    });
    Spawned { child, public, admin, logs: rx2 }
}

/// Sends `signal` (e.g. `-KILL`) to the process.
pub fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill {signal} failed");
}

/// Runs an admin subcommand of the binary against `gw`'s admin port with the test token
/// (a blocking call, off the async threads).
pub async fn admin_cli(gw: &super::Gateway, args: &[&str]) -> std::process::Output {
    let url = format!("http://{}", gw.admin_addr);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .args(["--admin-url", &url])
            .env("SESSIONGATE_ADMIN_TOKEN", super::ADMIN_TOKEN)
            .output()
            .expect("run the binary")
    })
    .await
    .expect("join")
}
