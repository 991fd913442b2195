//! Command-line interface: the clap definitions and the admin subcommands, which are thin
//! clients of a running gateway's admin API (`admin::client`).

use crate::admin::client::{enc, print, sessions_table, table, AdminClient, ClientError};
use clap::{Args, Parser, Subcommand};
use http::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

pub mod ops;

/// Exit code for usage and configuration errors (EX_USAGE).
pub const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "sessiongate", version, about = "Session-aware reverse proxy for JWT backends (Strapi v5 first)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file (for `run`, the default command).
    #[arg(long, short, global = true, env = "SESSIONGATE_CONFIG", default_value = "gateway.toml")]
    pub config: PathBuf,
}

#[derive(Args, Clone)]
pub struct AdminArgs {
    /// Admin API base URL [default: from --config's admin.listen, else http://127.0.0.1:9090].
    #[arg(long, global = true, env = "SESSIONGATE_ADMIN_URL")]
    admin_url: Option<String>,
    /// Admin token (prefer the environment variable or --admin-token-file).
    #[arg(long, global = true, env = "SESSIONGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// File holding the admin token [default: from --config: its first admin token, else
    /// data_dir/admin.token].
    #[arg(long, global = true, env = "SESSIONGATE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway (default).
    Run,
    /// Validate a configuration file and print its effective settings (secrets never shown).
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<PathBuf>,
    },
    /// Print a new random encryption key (base64 of 32 bytes) for SESSION_ENCRYPTION_KEY.
    Keygen,
    /// List, show and terminate sessions (admin API client).
    Sessions {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        op: SessionsOp,
    },
    /// End or block a user's sessions (admin API client).
    Users {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        op: UsersOp,
    },
    /// Check GeoIP databases, or look an address up with the configured ones.
    Geoip {
        #[command(subcommand)]
        op: GeoipOp,
    },
    /// Export the audit log (admin API client).
    Audit {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        op: AuditOp,
    },
    /// Show this instance's replication status and the peers it sees (admin API client).
    Cluster {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Re-encrypt every stored token with the current key, online, with progress (admin API
    /// client). Configure the new key as current and the old one in previous_keys first.
    RotateKey {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Import sessions from another session store's export (admin API client). Re-runs skip
    /// sessions already imported.
    Import {
        #[command(flatten)]
        admin: AdminArgs,
        /// json (array, {"data": [...]} or one object per line) or csv (with a header line).
        #[arg(long, default_value = "json", value_parser = ["json", "csv"])]
        format: String,
        file: PathBuf,
    },
    /// Probe a running gateway's admin port: liveness (`/healthz`), or readiness with --ready.
    /// Exits 0 when it answers 200, 1 otherwise (for container health checks). The address is
    /// --admin-url, else --config's admin.listen.
    Health {
        /// Probe `/readyz` instead of `/healthz`.
        #[arg(long)]
        ready: bool,
        /// Admin API base URL [default: from --config's admin.listen].
        #[arg(long, env = "SESSIONGATE_ADMIN_URL")]
        admin_url: Option<String>,
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions { shell: clap_complete::Shell },
    /// Export every stored session, without tokens (admin API client).
    Export {
        #[command(flatten)]
        admin: AdminArgs,
        /// json (one object per line) or csv.
        #[arg(long, default_value = "json", value_parser = ["json", "csv"])]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum SessionsOp {
    /// List sessions.
    List {
        #[arg(long)]
        user: Option<String>,
        /// Only active (true) or only ended (false) sessions.
        #[arg(long)]
        active: Option<bool>,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 25)]
        page_size: usize,
        /// loginTime, lastActive, id or userId; prefix - for descending.
        #[arg(long, default_value = "-loginTime")]
        sort: String,
    },
    /// Show one session (id, documentId or sessionId) with its history.
    Show { id: String },
    /// Terminate one session.
    Terminate {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UsersOp {
    /// End every session of a user (all but one with --except).
    TerminateAll {
        user: String,
        #[arg(long)]
        reason: Option<String>,
        /// Keep this session (id, sessionId or documentId) of the user.
        #[arg(long)]
        except: Option<String>,
    },
    /// Block a user: end their sessions and refuse their logins. A user id the gateway has
    /// never seen a session of is refused (a typo?) unless --force.
    Block {
        user: String,
        #[arg(long)]
        reason: Option<String>,
        /// Block a user before their first login.
        #[arg(long)]
        force: bool,
    },
    /// Unblock a user.
    Unblock { user: String },
}

#[derive(Subcommand)]
pub enum GeoipOp {
    /// Open and fully verify MaxMind-format database files.
    Verify { files: Vec<PathBuf> },
    /// Look an address up with the databases and lists of the configuration (--config).
    Lookup { ip: std::net::IpAddr },
}

/// Runs `sessiongate geoip …`.
pub fn geoip(config: &std::path::Path, op: GeoipOp) -> ExitCode {
    match op {
        GeoipOp::Verify { files } => {
            let mut ok = !files.is_empty();
            for f in &files {
                match crate::geo::verify_file(f) {
                    Ok(desc) => println!("{}: OK, {desc}", f.display()),
                    Err(e) => {
                        eprintln!("{}: {e}", f.display());
                        ok = false;
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        GeoipOp::Lookup { ip } => {
            let cfg = match crate::startup::load_config(config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(EX_USAGE);
                }
            };
            let geo = crate::geo::Geo::new(&cfg.geo);
            let report = geo.reload_blocking(true);
            for (key, e) in &report.failed {
                eprintln!("{key}: {e}");
            }
            let info = geo.lookup(ip);
            println!("{}", serde_json::to_string_pretty(&info).unwrap_or_default());
            if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EX_USAGE)
            }
        }
    }
}

#[derive(Subcommand)]
pub enum AuditOp {
    /// Export audit events.
    Export {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Event type (login, login_failed, terminate, …).
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// csv or json.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Runs an admin subcommand; `config` is `--config`, read for the admin URL and token when
/// flags and environment do not give them.
pub fn admin_command(command: Command, config: &std::path::Path) -> ExitCode {
    match command {
        Command::Sessions { admin, op } => client(admin, config, |c, json| Box::pin(sessions(c, json, op))),
        Command::Users { admin, op } => client(admin, config, |c, json| Box::pin(users(c, json, op))),
        Command::Audit { admin, op } => client(admin, config, |c, _| Box::pin(audit(c, op))),
        Command::Cluster { admin } => client(admin, config, |c, json| Box::pin(cluster(c, json))),
        Command::RotateKey { admin } => client(admin, config, |c, json| Box::pin(ops::rotate_key(c, json))),
        Command::Import { admin, format, file } => {
            client(admin, config, move |c, json| Box::pin(async move { ops::import(c, json, &format, &file).await }))
        }
        Command::Export { admin, format, output } => {
            client(admin, config, move |c, _| Box::pin(async move { ops::export(c, &format, output.as_deref()).await }))
        }
        Command::Run
        | Command::CheckConfig { .. }
        | Command::Keygen
        | Command::Geoip { .. }
        | Command::Health { .. }
        | Command::Completions { .. } => ExitCode::from(EX_USAGE),
    }
}

type Op<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ClientError>> + 'a>>;

/// The admin API's address and token as the configuration file gives them: `admin.listen` (a
/// wildcard address is reached on loopback) and its first configured token, else the token
/// `run` generates into `data_dir/admin.token`. `None` when the file is missing or invalid.
struct FromConfig {
    url: String,
    token: Result<String, String>,
}

fn from_config(path: &std::path::Path) -> Option<FromConfig> {
    let cfg = match crate::startup::load_config(path) {
        Ok(cfg) => cfg,
        // A file that is there but invalid is worth a word: the defaults may not be what was meant.
        Err(e) if path.exists() => {
            eprintln!("not reading the admin address and token from {}: {e}", path.display());
            return None;
        }
        Err(_) => return None,
    };
    let token = match cfg.admin.tokens.first() {
        Some(t) => t.source.require("admin.tokens[0]").map(|s| String::from_utf8_lossy(s.expose()).trim().to_string()),
        None => {
            let file = cfg.store.data_dir.join("admin.token");
            std::fs::read_to_string(&file).map(|t| t.trim().to_string()).map_err(|e| format!("{}: {e}", file.display()))
        }
    };
    Some(FromConfig { url: crate::admin::client::local_url(cfg.admin.listen), token })
}

const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9090";

/// Runs one admin client operation. Flags and environment first, then the configuration file.
fn client(
    args: AdminArgs,
    config: &std::path::Path,
    op: impl for<'a> FnOnce(&'a AdminClient, bool) -> Op<'a>,
) -> ExitCode {
    let from_cfg = if args.admin_url.is_none() || (args.admin_token.is_none() && args.admin_token_file.is_none()) {
        from_config(config)
    } else {
        None
    };
    let token = match (&args.admin_token, &args.admin_token_file, &from_cfg) {
        (Some(t), _, _) => t.clone(),
        (None, Some(f), _) => match std::fs::read_to_string(f) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                eprintln!("--admin-token-file {}: {e}", f.display());
                return ExitCode::from(EX_USAGE);
            }
        },
        (None, None, Some(FromConfig { token: Ok(t), .. })) => t.clone(),
        (None, None, Some(FromConfig { token: Err(e), .. })) => {
            eprintln!("the admin token of {}: {e}", config.display());
            return ExitCode::from(EX_USAGE);
        }
        (None, None, None) => {
            eprintln!(
                "an admin token is required: --admin-token-file, SESSIONGATE_ADMIN_TOKEN, --admin-token, \
                 or a readable --config ({})",
                config.display()
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    let url = args.admin_url.clone().or(from_cfg.map(|c| c.url)).unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string());
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let c = AdminClient::new(&url, token);
    match rt.block_on(op(&c, args.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `sessiongate health [--ready]`: 0 when the probe answers 200.
pub fn health(
    config: &std::path::Path,
    ready: bool,
    admin_url: Option<String>,
    timeout: std::time::Duration,
) -> ExitCode {
    let url = match admin_url {
        Some(u) => u,
        None => match crate::startup::load_config(config) {
            Ok(cfg) => crate::admin::client::local_url(cfg.admin.listen),
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                return ExitCode::from(EX_USAGE);
            }
        },
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = if ready { "/readyz" } else { "/healthz" };
    // The probes need no token.
    let c = AdminClient::new(&url, String::new());
    match rt.block_on(async { tokio::time::timeout(timeout, c.call(Method::GET, path, None)).await }) {
        Ok(Ok(body)) => {
            println!("{url}{path}: {}", String::from_utf8_lossy(&body));
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("{url}{path}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{url}{path}: no answer within {}", humantime::format_duration(timeout));
            ExitCode::FAILURE
        }
    }
}

/// Runs `sessiongate completions <shell>`.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sessiongate", &mut out);
    print(&String::from_utf8_lossy(&out));
    ExitCode::SUCCESS
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v)))).collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

async fn sessions(c: &AdminClient, json: bool, op: SessionsOp) -> Result<(), ClientError> {
    match op {
        SessionsOp::List { user, active, ip, device, since, until, page, page_size, sort } => {
            let q = query(&[
                ("user", user),
                ("active", active.map(|a| a.to_string())),
                ("ip", ip),
                ("device", device),
                ("since", since),
                ("until", until),
                ("page", Some(page.to_string())),
                ("pageSize", Some(page_size.to_string())),
                ("sort", Some(sort)),
            ]);
            let v = c.json(Method::GET, &format!("/magic-sessionmanager/sessions{q}"), None).await?;
            if json {
                print(&format!("{v}\n"));
            } else {
                print(&sessions_table(v["data"].as_array().map(Vec::as_slice).unwrap_or(&[])));
                let p = &v["meta"]["pagination"];
                print(&format!("page {} of {} ({} sessions)\n", p["page"], p["pageCount"], p["total"]));
            }
        }
        SessionsOp::Show { id } => {
            let v = c.json(Method::GET, &format!("/magic-sessionmanager/sessions/{}", enc(&id)), None).await?;
            if json {
                print(&format!("{v}\n"));
            } else {
                let d = &v["data"];
                print(&sessions_table(std::slice::from_ref(d)));
                print(&format!(
                    "\nuser agent: {}\nrotations: {}   backend session ids: {}\n",
                    d["userAgent"].as_str().unwrap_or("-"),
                    d["tokens"]["rotationCount"],
                    d["tokens"]["backendSessionIds"]
                ));
                let rows: Vec<Vec<String>> = d["audit"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                vec![
                                    crate::clock::iso(e["time"].as_i64().unwrap_or(0)),
                                    e["type"].as_str().unwrap_or("-").to_string(),
                                    e["actor"].as_str().unwrap_or("-").to_string(),
                                    e["ip"].as_str().unwrap_or("-").to_string(),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                print(&format!("\n{}", table(&["TIME", "EVENT", "ACTOR", "IP"], &rows)));
            }
        }
        SessionsOp::Terminate { id, reason } => {
            let v = c
                .json(
                    Method::POST,
                    &format!("/magic-sessionmanager/sessions/{}/terminate", enc(&id)),
                    Some(json!({"reason": reason})),
                )
                .await?;
            if json {
                print(&format!("{v}\n"));
            } else if v["alreadyEnded"] == true {
                print(&format!("session {} had already ended\n", v["sessionId"].as_str().unwrap_or(&id)));
            } else {
                print(&format!("session {} terminated\n", v["sessionId"].as_str().unwrap_or(&id)));
            }
        }
    }
    Ok(())
}

async fn users(c: &AdminClient, json: bool, op: UsersOp) -> Result<(), ClientError> {
    let (path, body) = match &op {
        UsersOp::TerminateAll { user, reason, except } => (
            format!("/magic-sessionmanager/user/{}/terminate-all", enc(user)),
            json!({"reason": reason, "except": except}),
        ),
        UsersOp::Block { user, reason, force } => {
            (format!("/magic-sessionmanager/user/{}/block", enc(user)), json!({"reason": reason, "force": force}))
        }
        UsersOp::Unblock { user } => (format!("/magic-sessionmanager/user/{}/unblock", enc(user)), json!({})),
    };
    let v = c.json(Method::POST, &path, Some(body)).await?;
    if json {
        print(&format!("{v}\n"));
    } else {
        let user = v["userId"].as_str().unwrap_or("?");
        let text = match op {
            UsersOp::TerminateAll { .. } => format!("user {user}: {} session(s) terminated\n", v["terminated"]),
            UsersOp::Block { .. } => format!("user {user} blocked; {} session(s) terminated\n", v["terminated"]),
            UsersOp::Unblock { .. } => format!("user {user} unblocked\n"),
        };
        print(&text);
    }
    Ok(())
}

async fn cluster(c: &AdminClient, json: bool) -> Result<(), ClientError> {
    let v = c.json(Method::GET, "/magic-sessionmanager/cluster", None).await?;
    if json {
        print(&format!("{v:#}\n"));
        return Ok(());
    }
    if v["enabled"] != true {
        print("cluster: off (this instance runs alone)\n");
        return Ok(());
    }
    let d = &v["data"];
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = format!(
        "node {} (slot {}): {}, {}, applied seq {}, outbox {}, lag {} events\n",
        text(&d["node"]),
        text(&d["slot"]),
        if d["connected"] == true { "connected" } else { "ISOLATED" },
        if d["synced"] == true { "synced" } else { "not synced" },
        text(&d["appliedSeq"]),
        text(&d["outboxPending"]),
        text(&d["lagEvents"])
    );
    if let Some(e) = d["lastError"].as_str() {
        out.push_str(&format!("last error: {e}\n"));
    }
    let now = crate::clock::now_ms();
    let rows: Vec<Vec<String>> = d["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let ago = p["lastSeen"].as_i64().map(|t| format!("{:.1}s ago", (now - t) as f64 / 1000.0));
                    vec![text(&p["name"]), text(&p["slot"]), text(&p["seq"]), ago.unwrap_or_default()]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(&["PEER", "SLOT", "APPLIED SEQ", "LAST SEEN"], &rows));
    print(&out);
    Ok(())
}

async fn audit(c: &AdminClient, op: AuditOp) -> Result<(), ClientError> {
    let AuditOp::Export { since, until, kind, user, format, output } = op;
    let q = query(&[("since", since), ("until", until), ("type", kind), ("user", user), ("format", Some(format))]);
    ops::download(c, &format!("/magic-sessionmanager/audit{q}"), output.as_deref()).await
}
