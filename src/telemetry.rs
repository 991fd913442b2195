//! Logging setup. Tokens never reach a log line: sessions are logged by their gateway id and
//! tokens, when at all, by a short prefix of their hash (`session::tokens::log_id`).

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

static DROPPED: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> = std::sync::OnceLock::new();

/// Lines dropped since start because the log's consumer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// The target of the access log's lines: `RUST_LOG=sessiongate::access=off` silences it too.
pub const ACCESS_TARGET: &str = "sessiongate::access";

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`; otherwise the
/// access log is enabled whatever the level (`log.access` decides what it records, and a
/// reload can change that). Lines go to stderr through a background writer, so a request never
/// waits on a slow log consumer: when its buffer is full, lines are dropped and counted.
/// Keep the guard until exit: dropping it flushes what is buffered.
pub fn init(cfg: &LogConfig) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => {
            let f = EnvFilter::new(&cfg.level);
            match format!("{ACCESS_TARGET}=info").parse() {
                Ok(d) => f.add_directive(d),
                Err(_) => f,
            }
        }
    };
    use std::io::IsTerminal;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 * 1024)
        .thread_name("log writer")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}
