//! The `sessiongate` binary: CLI → config → bind → start → wait for a signal → drain. The admin
//! subcommands live in `sessiongate::cli`.

use clap::Parser;
use sessiongate::cli::{self, Cli, Command, EX_USAGE};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Keygen => {
            println!("{}", sessiongate::session::crypto::generate_key());
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => {
            let path = file.unwrap_or(cli.config);
            match sessiongate::startup::load_config(&path) {
                Ok(cfg) => {
                    print!("{}", sessiongate::config::describe(&cfg));
                    // Every file and secret `run` would read, read the same way.
                    let problems = sessiongate::startup::preflight(&cfg);
                    if problems.is_empty() {
                        println!("{}: OK", path.display());
                        return ExitCode::SUCCESS;
                    }
                    eprintln!("{}: the configuration is valid, but `run` would fail:", path.display());
                    for p in &problems {
                        eprintln!("  - {p}");
                    }
                    ExitCode::from(EX_USAGE)
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    ExitCode::from(EX_USAGE)
                }
            }
        }
        Command::Run => run(&cli.config),
        Command::Geoip { op } => cli::geoip(&cli.config, op),
        Command::Health { ready, admin_url, timeout } => cli::health(&cli.config, ready, admin_url, timeout),
        Command::Completions { shell } => cli::completions(shell),
        admin @ (Command::Sessions { .. }
        | Command::Users { .. }
        | Command::Audit { .. }
        | Command::Cluster { .. }
        | Command::RotateKey { .. }
        | Command::Import { .. }
        | Command::Export { .. }) => cli::admin_command(admin, &cli.config),
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let cfg = match sessiongate::startup::load_config(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EX_USAGE);
        }
    };
    let (_log_guard, log) = sessiongate::telemetry::init(&cfg.log);
    let rt = match runtime(cfg.server.worker_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listeners = match sessiongate::Listeners::bind(&cfg) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        };
        let running = match sessiongate::start_with_log(cfg, listeners, log).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        };
        // systemd (`Type=notify`): ready once both listeners serve and the index is loaded. A
        // no-op without NOTIFY_SOCKET; a failed send only loses the notification.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// The async runtime: `threads` workers (0: one per CPU available to the process). With one,
/// a single-threaded scheduler, which spends less CPU per request than a work-stealing one
/// with a single worker (BENCHMARKS.md, round 3). Blocking work goes to the blocking pool
/// either way.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}
