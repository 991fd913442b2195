//! The `sessiongate` binary: CLI → config → bind → start → wait for a signal → drain.

use clap::{Parser, Subcommand};
use sessiongate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sessiongate", version, about = "Session-aware reverse proxy for JWT backends (Strapi v5 first)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (for `run`, the default command).
    #[arg(long, short, global = true, env = "SESSIONGATE_CONFIG", default_value = "gateway.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (default).
    Run,
    /// Validate a configuration file and print its effective settings (secrets never shown).
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Print a new random encryption key (base64 of 32 bytes) for SESSION_ENCRYPTION_KEY.
    Keygen,
}

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Keygen => {
            println!("{}", sessiongate::session::crypto::generate_key());
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => {
            let path = file.unwrap_or(cli.config);
            match Config::from_file(&path) {
                Ok(cfg) => {
                    print!("{}", sessiongate::config::describe(&cfg));
                    println!("{}: OK", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    ExitCode::from(EX_USAGE)
                }
            }
        }
        Command::Run => run(&cli.config),
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let cfg = match Config::from_file(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EX_USAGE);
        }
    };
    sessiongate::telemetry::init(&cfg.log);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
        let running = match sessiongate::start(cfg, listeners).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
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
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
