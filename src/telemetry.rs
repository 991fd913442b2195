//! Logging setup. Tokens never reach a log line: sessions are logged by their gateway id and
//! tokens, when at all, by a short prefix of their hash (`session::tokens::log_id`).

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// The log's writer, for what the gateway writes itself (access lines) and the count of lines
/// dropped. One per process (the subscriber is global); the gateway holds it in its state.
#[derive(Clone)]
pub struct LogSink {
    writer: tracing_appender::non_blocking::NonBlocking,
    format: LogFormat,
    dropped: tracing_appender::non_blocking::ErrorCounter,
}

/// One access log line. Never a token: the session by its id, the client by its address.
#[derive(serde::Serialize)]
pub struct Access<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    /// `allow`, or the refusal's reason code.
    pub decision: &'a str,
    pub session: &'a str,
    pub client: std::net::IpAddr,
    pub upstream_ms: Option<f64>,
    pub added_ms: f64,
    pub traceparent: Option<&'a str>,
}

impl LogSink {
    /// Lines dropped since start because the log's consumer could not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.dropped_lines() as u64
    }

    /// Writes an INFO event whose fields include lists, so that JSON logs carry them as JSON
    /// arrays (`tracing` records a list as its Debug text). Written when the log filter lets
    /// INFO events of this crate through. In text format, lists are written comma-separated.
    pub fn info_with_lists(&self, target: &'static str, message: &str, fields: &[(&str, serde_json::Value)]) {
        use std::io::Write;
        // The filter was built from log.level / RUST_LOG: ask it, as a tracing event would.
        if !tracing::enabled!(target: "sessiongate", tracing::Level::INFO) {
            return;
        }
        let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let mut buf = Vec::with_capacity(256);
        match self.format {
            LogFormat::Json => {
                let mut line = serde_json::Map::new();
                line.insert("timestamp".into(), ts.to_string().into());
                line.insert("level".into(), "INFO".into());
                line.insert("message".into(), message.into());
                for (k, v) in fields {
                    line.insert((*k).into(), v.clone());
                }
                line.insert("target".into(), target.into());
                if serde_json::to_writer(&mut buf, &line).is_err() {
                    return;
                }
                buf.push(b'\n');
            }
            LogFormat::Text => {
                let _ = write!(buf, "{ts}  INFO {target}: {message}");
                for (k, v) in fields {
                    let text = match v {
                        serde_json::Value::Array(a) => a
                            .iter()
                            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(","),
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let _ = write!(buf, " {k}={text}");
                }
                buf.push(b'\n');
            }
        }
        let _ = self.writer.clone().write_all(&buf);
    }

    /// Writes an access line, formatted here rather than through `tracing`: it is written once
    /// per request, and the generic JSON formatter costs several microseconds a line. The JSON
    /// shape is the one of every other line (`timestamp`, `level`, `target`, `message`, then the
    /// fields). It goes through the same writer as every other line, so lines never interleave.
    pub fn access(&self, line: &Access<'_>) {
        use std::io::Write;
        let format = &self.format;
        let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let mut buf = Vec::with_capacity(320);
        match format {
            LogFormat::Json => {
                #[derive(serde::Serialize)]
                struct Line<'a> {
                    timestamp: String,
                    level: &'static str,
                    message: &'static str,
                    #[serde(flatten)]
                    fields: &'a Access<'a>,
                    target: &'static str,
                }
                let line = Line {
                    timestamp: ts.to_string(),
                    level: "INFO",
                    message: "request",
                    fields: line,
                    target: ACCESS_TARGET,
                };
                if serde_json::to_writer(&mut buf, &line).is_err() {
                    return;
                }
                buf.push(b'\n');
            }
            LogFormat::Text => {
                let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
                let _ = writeln!(
                buf,
                "{ts}  INFO {ACCESS_TARGET}: request request_id={:?} method={} route={} status={} decision={} session={} client={} upstream_ms={} added_ms={:.3} traceparent={}",
                line.request_id,
                line.method,
                line.route,
                line.status,
                line.decision,
                line.session,
                line.client,
                ms(line.upstream_ms),
                line.added_ms,
                line.traceparent.unwrap_or("-"),
            );
            }
        }
        let _ = self.writer.clone().write_all(&buf);
    }
}

/// The `target` of access lines (`log.access` decides which requests get one).
pub const ACCESS_TARGET: &str = "sessiongate::access";

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level` (the access log
/// is `log.access`'s alone, whatever the level, and a reload can change it). Lines go to stderr through a background writer, so a request never
/// waits on a slow log consumer: when its buffer is full, lines are dropped and counted.
/// Keep the guard until exit: dropping it flushes what is buffered. The sink goes to
/// [`crate::start_with_log`].
pub fn init(cfg: &LogConfig) -> (tracing_appender::non_blocking::WorkerGuard, LogSink) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    use std::io::IsTerminal;
    // The writer thread flushes whenever its queue is empty: lines reach stderr at once when the
    // gateway is quiet, in 64 KiB writes under load (one syscall for hundreds of access lines).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 * 1024)
        .thread_name("log writer")
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let sink = LogSink { writer: writer.clone(), format: cfg.format, dropped: writer.error_counter() };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    (guard, sink)
}
