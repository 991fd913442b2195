//! The `sessiongate` binary: subcommands, exit codes, logs.

mod support;

use support::process::admin_cli;

use serde_json::{json, Value};
use std::process::Command;
use support::MockStrapi;

const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

#[test]
fn check_config_reports_every_error_at_once_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "preset = \"strapi-v5\"\nlisten = 1\n[server]\nlisten = \"x\"\n[upstream]\nurl = \"ftp://nope\"\n[sessions]\nidle_policy = \"maybe\"\n").expect("write");
    let out = Command::new(BIN).arg("check-config").arg(&file).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["listen: unknown key", "server.listen", "upstream.url", "sessions.idle_policy"] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    let out = Command::new(BIN).args(["run", "--config"]).arg(&file).output().expect("run");
    assert_eq!(out.status.code(), Some(64), "run refuses a bad config too");
    let out = Command::new(BIN).args(["check-config", "/nonexistent.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_config_accepts_the_example_and_never_prints_secrets() {
    let key = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml.example");
    let out = Command::new(BIN)
        .args(["check-config", example])
        .env("SESSION_ENCRYPTION_KEY", key)
        .env("SESSIONGATE_UPSTREAM__URL", "http://env-backend:1337")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("env SESSION_ENCRYPTION_KEY") && text.contains("OK"), "{text}");
    assert!(text.contains("upstream.url from env SESSIONGATE_UPSTREAM__URL"), "overrides are shown: {text}");
    assert!(text.contains("http://env-backend:1337"), "and in force: {text}");
    assert!(!text.contains(key) && !String::from_utf8_lossy(&out.stderr).contains(key));
}

/// check-config reads every file and secret `run` would, and says what `run` would fail on —
/// all of it, not one problem per restart.
#[test]
fn check_config_resolves_every_file_and_secret_as_run_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let file = d.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "preset = \"strapi-v5\"\n[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{0}/cert.pem\"\ntls_key = \"{0}/key.pem\"\n\
             [upstream]\nurl = \"http://127.0.0.1:1\"\n[store]\ndata_dir = \"{0}/data\"\n\
             [sessions]\nencryption_key_file = \"{0}/enc.key\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntokens = [{{ name = \"ops\", env = \"SG_CLI_TEST_TOKEN\" }}]\n\
             [geo]\ncity_db = \"{0}/city.mmdb\"\nvpn_list = \"{0}/vpn.txt\"\n",
            d.display()
        ),
    )
    .expect("write");
    let check = |token: &str| {
        let out =
            Command::new(BIN).arg("check-config").arg(&file).env("SG_CLI_TEST_TOKEN", token).output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, err, _) = check("short");
    assert_eq!(code, Some(64), "{err}");
    for key in
        ["sessions.encryption_key", "admin.tokens[0]", "at least 16", "server.tls_cert", "geo.city_db", "geo.vpn_list"]
    {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    assert!(!err.contains("short"), "the token is not echoed: {err}");
    // `run` fails on the first of them.
    let out =
        Command::new(BIN).args(["run", "--config"]).arg(&file).env("SG_CLI_TEST_TOKEN", "short").output().expect("run");
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sessions.encryption_key"));

    // Provide every file: OK.
    let key = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
    std::fs::write(d.join("enc.key"), key).expect("key");
    let city = support::geoip_test_db("GeoIP2-City-Test.mmdb");
    std::fs::copy(city, d.join("city.mmdb")).expect("city");
    std::fs::write(d.join("vpn.txt"), "10.9.0.0/16\n").expect("list");
    support::self_signed(d);
    let (code, err, out) = check("a-long-enough-admin-token");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("OK"), "{out}");
    assert!(!out.contains(key) && !out.contains("a-long-enough-admin-token"), "no secret printed: {out}");
}

/// The admin CLI and `health` find the admin port and its token through `--config`, as an
/// operator on the gateway's host runs them; their errors say what to fix.
#[test]
fn the_cli_reads_the_config_probes_health_and_refuses_unknown_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "preset = \"strapi-v5\"\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [store]\ndata_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\nready_requires_upstream = false\n[log]\nformat = \"json\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write");
    let support::process::Spawned { child, logs, .. } = support::process::spawn_binary(&file);
    let mut child = support::process::KillOnDrop(child);
    // The startup log: version, dashboard URL, and a warning that the backend does not answer.
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("the backend does not answer")) {
        match logs.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("no warning about the unreachable backend in:\n{}", lines.join("\n")),
        }
    }
    let listening = lines.iter().find(|l| l.contains("sessiongate listening")).expect("listening line");
    let v: Value = serde_json::from_str(listening).expect("JSON log");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{listening}");
    assert_eq!(v["dashboard"], format!("http://127.0.0.1:{port}/dashboard/"), "{listening}");
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&file)
            .env_remove("SESSIONGATE_ADMIN_URL")
            .env_remove("SESSIONGATE_ADMIN_TOKEN")
            .env_remove("SESSIONGATE_ADMIN_TOKEN_FILE")
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["health"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("http://127.0.0.1:{port}/healthz")) && out.contains("ok"), "{out}");
    let (code, out, err) = cli(&["health", "--ready"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"ready\":true"), "{out}");
    // No URL or token given: both come from the config (the generated data_dir/admin.token).
    let (code, out, err) = cli(&["sessions", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("0 sessions"), "{out}");
    // A reload's log line lists its sections as a JSON array, not as Debug text.
    let (code, _, err) = cli(&["health"]);
    assert_eq!(code, Some(0), "{err}");
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).expect("generated token");
    let reload = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H"])
        .arg(format!("authorization: Bearer {}", token.trim()))
        .arg(format!("http://127.0.0.1:{port}/reload"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&reload.stdout), "200");
    let reloaded = loop {
        let l = logs.recv_timeout(std::time::Duration::from_secs(10)).expect("a reload line");
        if l.contains("configuration reloaded") {
            break serde_json::from_str::<Value>(&l).expect("JSON");
        }
    };
    assert!(reloaded["applied"].is_array() && reloaded["restart_required"].is_array(), "{reloaded}");
    let (code, _, err) = cli(&["users", "block", "nosuchuser"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404") && err.contains("nosuchuser") && err.contains("force"), "{err}");
    let (code, out, err) = cli(&["users", "block", "nosuchuser", "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("blocked"), "{out}");
    let _ = child.0.kill();
    let _ = child.0.wait();

    let (code, _, err) = cli(&["health", "--admin-url", "http://127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("http://127.0.0.1:1"), "the URL tried is named: {err}");
    let (code, _, err) = cli(&["sessions", "list", "--admin-url", "http://127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the admin API at http://127.0.0.1:1"), "{err}");
    let (code, _, err) = cli(&["export", "--format", "xml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("possible values: json, csv"), "{err}");
    let out = Command::new(BIN).args(["completions", "bash"]).output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_sessiongate()"));
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), concat!("sessiongate ", env!("CARGO_PKG_VERSION")));
}

#[test]
fn keygen_prints_fresh_32_byte_keys() {
    use base64::Engine;
    let run = || String::from_utf8(Command::new(BIN).arg("keygen").output().expect("run").stdout).expect("utf8");
    let (a, b) = (run(), run());
    assert_ne!(a, b);
    let bytes = base64::engine::general_purpose::STANDARD.decode(a.trim()).expect("base64");
    assert_eq!(bytes.len(), 32);
}

/// Starts the binary; returns the child, its public address and the stderr lines read so far.
fn spawn(config: &std::path::Path) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    let s = support::process::spawn_binary(config);
    (s.child, s.public, s.logs)
}

#[tokio::test]
async fn the_binary_serves_drains_on_sigterm_and_never_logs_tokens() {
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "preset = \"strapi-v5\"\n[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n[store]\ndata_dir = \"{}\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
            backend.url(),
            data.display()
        ),
    )
    .expect("write");
    let (mut child, addr, logs) = spawn(&config);
    let base = format!("http://{addr}");
    let req = |m: http::Method, p: &str| support::Req::new(m, &format!("{base}{p}"));
    let login = req(http::Method::POST, "/api/auth/local")
        .json(json!({"identifier": "alice", "password": support::PASSWORD}))
        .send()
        .await;
    assert_eq!(login.status, 200);
    let v = login.json();
    let (jwt, refresh) =
        (v["jwt"].as_str().expect("jwt").to_string(), v["refreshToken"].as_str().expect("rt").to_string());
    let r = req(http::Method::POST, "/api/auth/refresh").json(json!({"refreshToken": refresh})).send().await.json();
    let jwt2 = r["jwt"].as_str().expect("jwt").to_string();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    req(http::Method::GET, "/api/articles").bearer(&jwt2).header("traceparent", trace).send().await;
    let seen = backend.seen();
    let forwarded = seen.iter().rev().find(|r| r.path == "/api/articles").expect("forwarded");
    assert_eq!(forwarded.headers["traceparent"], trace, "traceparent passes through");
    req(http::Method::POST, "/api/auth/logout").bearer(&jwt2).send().await;
    assert_eq!(req(http::Method::GET, "/api/articles").bearer(&jwt).send().await.status, 401);

    // With no key configured, one was generated into the data directory, owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("encryption.key")).expect("key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert_eq!(exit.code(), Some(0), "clean exit after SIGTERM");
    let all: Vec<String> = logs.try_iter().collect();
    let text = all.join("\n");
    assert!(text.contains("session created") && text.contains("no encryption key configured"), "{text}");
    assert!(text.contains("stopped"), "drained and stopped: {text}");
    for t in [&jwt, &refresh, &jwt2] {
        let sig = t.rsplit('.').next().expect("sig");
        assert!(!text.contains(sig), "a raw token reached the logs");
    }
    // The access log (on by default with JSON logs): one line per request, in order.
    let access: Vec<Value> = all
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "sessiongate::access")
        .collect();
    let summary: Vec<(String, String, u64, String)> = access
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (s("method"), s("route"), v["status"].as_u64().unwrap_or(0), s("decision"))
        })
        .collect();
    let expect = [
        ("POST", "login", 200, "allow"),
        ("POST", "refresh", 200, "allow"),
        ("GET", "other", 200, "allow"),
        ("POST", "logout", 200, "allow"),
        ("GET", "other", 401, "session_terminated"),
    ];
    let expect: Vec<(String, String, u64, String)> =
        expect.iter().map(|(m, r, s, d)| (m.to_string(), r.to_string(), *s, d.to_string())).collect();
    assert_eq!(summary, expect, "{access:#?}");
    let traced = &access[2];
    assert_eq!(traced["traceparent"], trace);
    assert!(traced["session"].as_str().is_some_and(|s| s.starts_with("sess_")), "{traced}");
    assert_eq!(traced["client"], "127.0.0.1");
    assert!(traced["upstream_ms"].as_f64().is_some() && traced["added_ms"].as_f64().is_some(), "{traced}");
    assert!(traced["request_id"].as_str().is_some_and(|r| !r.is_empty()));
}

#[test]
fn a_port_in_use_is_exit_1_and_a_bad_tls_file_exit_64() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("g.toml");
    let base = format!(
        "preset = \"strapi-v5\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[store]\ndata_dir = \"{}\"\n",
        dir.path().join("d").display()
    );
    std::fs::write(&config, format!("{base}[server]\nlisten = \"{}\"\n", taken.local_addr().expect("addr")))
        .expect("write");
    let out = Command::new(BIN).args(["run", "-c"]).arg(&config).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&config, format!("{base}[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"\n")).expect("write");
    let out = Command::new(BIN).args(["run", "-c"]).arg(&config).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls_cert"));
}

#[tokio::test]
async fn the_admin_subcommands_drive_the_admin_api() {
    let backend = MockStrapi::start().await;
    let gw = support::Gateway::with_defaults(&backend).await;
    let a = gw.login("alice").await;
    gw.login("bob").await;
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();

    let out = admin_cli(&gw, &["sessions", "list"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = text(&out);
    assert!(
        t.starts_with("ID")
            && t.contains("1 (alice)")
            && t.contains("2 (bob)")
            && t.contains("page 1 of 1 (2 sessions)"),
        "{t}"
    );

    let out = admin_cli(&gw, &["sessions", "list", "--user", "alice", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["meta"]["pagination"]["total"], 1);
    let sid = v["data"][0]["sessionId"].as_str().expect("sid").to_string();

    let out = admin_cli(&gw, &["sessions", "show", &sid]).await;
    assert!(
        text(&out).contains("EVENT") && text(&out).contains("login"),
        "{}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );

    let out = admin_cli(&gw, &["sessions", "terminate", &sid, "--reason", "cli test"]).await;
    assert_eq!(text(&out), format!("session {sid} terminated\n"));
    assert_eq!(gw.get("/api/articles").bearer(&a.jwt).send().await.status, 401);

    let out = admin_cli(&gw, &["users", "block", "2", "--reason", "abuse"]).await;
    assert_eq!(text(&out), "user 2 blocked; 1 session(s) terminated\n");
    let blocked =
        gw.post("/api/auth/local").json(json!({"identifier": "bob", "password": support::PASSWORD})).send().await;
    assert_eq!(blocked.status, 403);
    assert_eq!(text(&admin_cli(&gw, &["users", "unblock", "2"]).await), "user 2 unblocked\n");
    gw.login("bob").await;
    assert_eq!(text(&admin_cli(&gw, &["users", "terminate-all", "2"]).await), "user 2: 1 session(s) terminated\n");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.csv");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let rows = loop {
        let out =
            admin_cli(&gw, &["audit", "export", "--format", "csv", "--output", file.to_str().expect("path")]).await;
        assert!(out.status.success());
        let data = std::fs::read(&file).expect("exported");
        let rows: Vec<csv::StringRecord> =
            csv::Reader::from_reader(data.as_slice()).records().collect::<Result<_, _>>().expect("csv");
        if rows.iter().any(|r| &r[1] == "terminate_all") || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let kinds: Vec<&str> = rows.iter().map(|r| &r[1]).collect();
    for k in ["login", "terminate", "user_blocked", "login_blocked", "user_unblocked", "terminate_all"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let terminate = rows.iter().find(|r| &r[1] == "terminate").expect("terminate row");
    assert_eq!(&terminate[5], "admin:test");

    // No token: usage error. Wrong token: the API's message, exit 1.
    let url = format!("http://{}", gw.admin_addr);
    let no_token = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            Command::new(BIN)
                .args(["sessions", "list", "--admin-url", &url])
                .env_remove("SESSIONGATE_ADMIN_TOKEN")
                .output()
                .expect("run")
        }
    })
    .await
    .expect("join");
    assert_eq!(no_token.status.code(), Some(64));
    let wrong = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["sessions", "list", "--admin-url", &url])
            .env("SESSIONGATE_ADMIN_TOKEN", "wrong-token-wrong-token")
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"), "{}", String::from_utf8_lossy(&wrong.stderr));
}

#[tokio::test]
async fn sighup_reloads_geo_databases_and_the_configuration() {
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = |name: &str| std::fs::read(format!("{}/geoip/test/{name}", env!("CARGO_MANIFEST_DIR"))).expect("test db");
    let city = dir.path().join("city.mmdb");
    std::fs::write(&city, db("GeoIP2-Country-Test.mmdb")).expect("write");
    let config = dir.path().join("gateway.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "preset = \"strapi-v5\"\n[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n[store]\ndata_dir = \"{}\"\n[geo]\ncity_db = \"{}\"\nreload_interval = \"0s\"\n[log]\nformat = \"json\"\n",
            backend.url(),
            data.display(),
            city.display()
        ),
    )
    .expect("write");
    let (mut child, addr, logs) = spawn(&config);
    let login = || {
        support::Req::new(http::Method::POST, &format!("http://{addr}/api/auth/local"))
            .header("x-forwarded-for", "81.2.69.142")
            .json(json!({"identifier": "alice", "password": support::PASSWORD}))
            .send()
    };
    let city_of = |r: support::Resp| {
        let jwt = r.json()["jwt"].as_str().expect("jwt").to_string();
        let url = format!("http://{addr}/api/magic-sessionmanager/current-session");
        async move {
            support::Req::new(http::Method::GET, &url).bearer(&jwt).send().await.json()["data"]["geoLocation"]["city"]
                .clone()
        }
    };
    assert_eq!(city_of(login().await).await, Value::Null, "a Country database has no cities");
    let tmp = dir.path().join("incoming.mmdb");
    std::fs::write(&tmp, db("GeoIP2-City-Test.mmdb")).expect("write");
    std::fs::rename(&tmp, &city).expect("rename");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(city_of(login().await).await, Value::Null, "polling is off: nothing reloads without a signal");
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().expect("kill").success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if city_of(login().await).await == "London" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "SIGHUP did not reload the database");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // SIGHUP re-reads the configuration file too: a broken edit is refused (logged, nothing
    // changes), a good one is applied.
    let original = std::fs::read_to_string(&config).expect("read");
    let big = || {
        support::Req::new(http::Method::POST, &format!("http://{addr}/api/auth/local"))
            .json(json!({"identifier": "alice", "password": support::PASSWORD, "pad": "x".repeat(4000)}))
            .send()
    };
    assert_eq!(big().await.status, 200);
    std::fs::write(&config, original.replace("[server]\n", "[server]\nmax_body_bytes = \"lots\"\n")).expect("write");
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().expect("kill").success());
    let refused = logs_until(&logs, "configuration reload refused");
    assert!(refused.contains("server"), "{refused}");
    assert_eq!(big().await.status, 200, "the previous configuration stays in force");
    std::fs::write(&config, original.replace("[server]\n", "[server]\nmax_body_bytes = 1024\n")).expect("write");
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().expect("kill").success());
    logs_until(&logs, "configuration reloaded");
    assert_eq!(big().await.status, 413);

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert_eq!(exit.code(), Some(0), "SIGHUP did not stop the gateway; SIGTERM did, cleanly");
}

/// Waits (up to 5 s) for a log line containing `needle`; returns it.
fn logs_until(logs: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = logs.recv_timeout(std::time::Duration::from_millis(100)) {
            if line.contains(needle) {
                return line;
            }
        }
    }
    panic!("no log line with {needle:?}");
}
