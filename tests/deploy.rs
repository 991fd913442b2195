//! The deploy kit (deploy/): Prometheus files checked by promtool, metric names used by alerts
//! and the Grafana dashboard exist, and the shipped gateway configurations validate.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn promtool(args: &[&str]) {
    // .ci/test installs promtool (Debian's `prometheus` package); a missing one is a failure.
    let out = Command::new("promtool")
        .args(args)
        .current_dir(Path::new(ROOT).join("deploy/prometheus"))
        .output()
        .expect("promtool is installed by .ci/test");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool_and_their_unit_tests() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
}

/// `sessiongate_*` names in a text, without histogram suffixes.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("sessiongate_") {
        let tail = &rest[i + "sessiongate_".len()..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        if !name.is_empty() {
            out.push(name.to_string());
        }
        rest = &tail[end..];
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn alerts_and_dashboard_use_only_metrics_the_gateway_exports() {
    let defined = read("src/metrics.rs");
    let alerts = read("deploy/prometheus/alerts.yml");
    let dashboard = read("deploy/grafana/sessiongate-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        assert!(p["targets"].as_array().is_some_and(|t| !t.is_empty()), "panel without query: {}", p["title"]);
    }
    let used = [metric_names(&alerts), metric_names(&dashboard)].concat();
    assert!(used.len() > 20, "{used:?}");
    for name in used {
        assert!(defined.contains(&format!("\"{name}\"")), "sessiongate_{name} is not a metric of src/metrics.rs");
    }
}

fn check_config(toml: &str, what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, toml).expect("write");
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&file)
        .env("SESSION_ENCRYPTION_KEY", "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=")
        .env("SESSIONGATE_ADMIN_TOKEN", "an-admin-token-of-some-length")
        .env("REDIS_URL", "redis://redis:6379")
        .output()
        .expect("run");
    assert!(out.status.success(), "{what}:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn shipped_gateway_configurations_validate() {
    check_config(&read("deploy/gateway.toml"), "deploy/gateway.toml");
    // The ConfigMap's embedded file.
    let k8s = read("deploy/kubernetes/sessiongate.yaml");
    let start = k8s.find("gateway.toml: |\n").expect("ConfigMap entry") + "gateway.toml: |\n".len();
    let embedded: String = k8s[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(embedded.contains("[cluster]"), "{embedded}");
    check_config(&embedded, "ConfigMap gateway.toml");
    // The Kubernetes probes and the systemd unit name routes and commands that exist.
    for probe in [
        "path: /readyz",
        "path: /healthz",
        "replicas: 2",
        "kind: PodDisruptionBudget",
        "secretRef: {name: sessiongate}",
    ] {
        assert!(k8s.contains(probe), "{probe}");
    }
    // The Secret is referenced, never shipped: an `apply` must not overwrite the one the
    // instructions create with placeholders.
    assert!(!k8s.contains("kind: Secret") && !k8s.contains("REPLACE"), "no Secret template in the manifest");
    assert!(!k8s.contains(":latest"), "no unpullable :latest image");
    assert!(embedded.contains("ready_requires_upstream = false"), "a backend blip does not drain every pod");
    let unit = read("deploy/systemd/sessiongate.service");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID") && unit.contains("NoNewPrivileges=true"));
    let docker = read("deploy/Dockerfile");
    for copied in ["Cargo.toml", "Cargo.lock", "src", "examples", "deploy/gateway.toml"] {
        assert!(Path::new(ROOT).join(copied).exists(), "Dockerfile copies {copied}, which does not exist");
        assert!(docker.contains(copied));
    }
    assert!(docker.contains("USER 10001"), "the image runs as non-root");
}

#[test]
fn systemd_unit_verifies_and_scores_as_well_hardened() {
    // systemd-analyze (installed by .ci/test) checks the unit's syntax and commands; the
    // binary path is pointed at the test build.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("sessiongate.service");
    std::fs::write(&unit, read("deploy/systemd/sessiongate.service").replace("/usr/local/bin/sessiongate", BIN))
        .expect("write");
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exposure score 0 (best) … 10; the unit scores about 1.4.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for sessiongate.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    assert!(out.status.success() && score <= 2.0, "exposure {score}:\n{text}");
}

/// The image's HEALTHCHECK, run as written (the binary path pointed at the test build, the
/// config found through the Dockerfile's `SESSIONGATE_CONFIG`): healthy while the gateway
/// runs, unhealthy once it is gone.
#[tokio::test]
async fn the_image_health_check_probes_the_running_gateway() {
    let docker = read("deploy/Dockerfile");
    let line = docker.lines().skip_while(|l| !l.starts_with("HEALTHCHECK")).nth(1).expect("HEALTHCHECK … CMD");
    let cmd: Vec<String> =
        serde_json::from_str(line.trim().strip_prefix("CMD").expect("exec form").trim()).expect("JSON array");
    assert_eq!(cmd[0], "/usr/local/bin/sessiongate");
    let env = docker.lines().find_map(|l| l.strip_prefix("ENV SESSIONGATE_CONFIG=")).expect("ENV SESSIONGATE_CONFIG");
    assert!(docker.contains(&format!("COPY deploy/gateway.toml {env}")), "the config is where the ENV says");
    assert!(docker.contains("CMD [\"run\"]") && docker.contains("org.opencontainers.image.licenses"));

    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "preset = \"strapi-v5\"\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
             [store]\ndata_dir = \"{}\"\n[admin]\nlisten = \"0.0.0.0:{port}\"\ntokens = [{{ name = \"ops\", env = \"SG_DEPLOY_TOKEN\" }}]\n[log]\nformat = \"json\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write");
    let probe = || {
        Command::new(BIN)
            .args(&cmd[1..])
            .env("SESSIONGATE_CONFIG", &file)
            .env_remove("SESSIONGATE_ADMIN_URL")
            .output()
            .expect("run")
    };
    let spawned = Command::new(BIN)
        .args(["run"])
        .env("SESSIONGATE_CONFIG", &file)
        .env("SG_DEPLOY_TOKEN", "a-deploy-test-admin-token")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut child = Guard(spawned);
    let mut healthy = false;
    for _ in 0..100 {
        if probe().status.success() {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(healthy, "healthy while running (admin on 0.0.0.0 is probed on loopback)");
    let _ = child.0.kill();
    let _ = child.0.wait();
    let out = probe();
    assert_eq!(out.status.code(), Some(1), "unhealthy once stopped");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("http://127.0.0.1:{port}/healthz")));
}

/// Kills the child when the test fails half-way.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

/// The compose file as `docker compose up` reads it: images that exist or are built here, every
/// variable required with a message, Redis set up as the README asks.
#[test]
fn the_compose_file_builds_what_it_runs_and_configures_redis_as_documented() {
    let compose = read("deploy/docker-compose.yml");
    for line in compose.lines().map(str::trim).filter(|l| l.starts_with("image:")) {
        let image = line.trim_start_matches("image:").trim();
        assert!(image.starts_with("redis:7") || image == "sessiongate:local", "{image}: not pullable nor built here");
    }
    assert!(compose.contains("context: ..") && compose.contains("dockerfile: deploy/Dockerfile"));
    assert!(compose.contains("context: ${STRAPI_CONTEXT:?"), "the backend is built from the operator's project");
    // Every variable is required, with a message (`${VAR:?…}`), so `up` stops and names it.
    for (i, _) in compose.match_indices("${") {
        let rest = &compose[i + 2..];
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).expect("end");
        assert!(rest[name_end..].starts_with(":?"), "${{{}}} has no :? message", &rest[..name_end]);
    }
    for setting in ["\"--appendfsync\", \"always\"", "\"--maxmemory-policy\", \"noeviction\"", "\"--requirepass\""] {
        assert!(compose.contains(setting), "redis: {setting}");
    }
    assert!(compose.contains("REDIS_URL: redis://:${REDIS_PASSWORD"), "the gateway authenticates to Redis");
    let readme = read("README.md");
    assert!(readme.contains("`appendfsync always`") && readme.contains("`maxmemory-policy noeviction`"));
}

/// The systemd unit run the way it is installed (its header's commands), with the unit's
/// effective settings — EnvironmentFile, WorkingDirectory inside StateDirectory, ExecStartPre,
/// ExecStart, `Type=notify` — the install paths moved under a temporary root: check-config
/// passes, READY=1 arrives once it serves, the admin token file works for the API and the CLI,
/// the data lands in the state directory, SIGTERM sends STOPPING=1 and exits 0.
/// (ProtectSystem and the other sandboxing settings need systemd itself; `systemd-analyze`
/// checks them above.)
#[test]
fn the_systemd_unit_starts_the_gateway_as_installed() {
    let unit = read("deploy/systemd/sessiongate.service");
    let service: Vec<(&str, &str)> = unit
        .lines()
        .skip_while(|l| *l != "[Service]")
        .take_while(|l| *l != "[Install]")
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| service.iter().find(|(key, _)| *key == k).map(|(_, v)| *v).unwrap_or_else(|| panic!("{k}"));
    assert_eq!(get("Type"), "notify");
    assert_eq!(get("WorkingDirectory"), format!("/var/lib/{}", get("StateDirectory")));
    for step in [
        "deploy/systemd/gateway.toml /etc/sessiongate/gateway.toml",
        "/etc/sessiongate/env",
        "/etc/sessiongate/admin.token",
    ] {
        assert!(unit.contains(step), "the install steps create {step}");
    }

    let root = tempfile::tempdir().expect("tempdir");
    let (etc, state) = (root.path().join("etc"), root.path().join("state"));
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::create_dir_all(&state).expect("StateDirectory, as systemd creates it");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let (public, admin) = (free(), free());
    let map = |s: &str| {
        s.replace("/etc/sessiongate", &etc.display().to_string())
            .replace("/var/lib/sessiongate", &state.display().to_string())
            .replace("/usr/local/bin/sessiongate", BIN)
    };
    let config = map(&read("deploy/systemd/gateway.toml"))
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{public}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"));
    assert!(config.contains(&format!("data_dir = \"{}\"", state.display())), "data in the state directory");
    std::fs::write(etc.join("gateway.toml"), config).expect("config");
    std::fs::write(etc.join("env"), "SESSION_ENCRYPTION_KEY=q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=\n")
        .expect("env");
    let token = "0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(etc.join("admin.token"), format!("{token}\n")).expect("token");
    let env: Vec<(String, String)> = std::fs::read_to_string(map(get("EnvironmentFile")))
        .expect("EnvironmentFile")
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let command = |line: &str| {
        let words: Vec<String> = map(line).split_whitespace().map(str::to_string).collect();
        let mut c = Command::new(&words[0]);
        c.args(&words[1..])
            .envs(env.iter().cloned())
            .env_remove("SESSIONGATE_CONFIG")
            .current_dir(map(get("WorkingDirectory")));
        c
    };
    let pre = command(get("ExecStartPre")).output().expect("ExecStartPre");
    assert!(pre.status.success(), "ExecStartPre: {}", String::from_utf8_lossy(&pre.stderr));

    let notify_path = root.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("timeout");
    let child = command(get("ExecStart"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ExecStart");
    let mut child = Guard(child);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    // Ready means serving: the admin API answers at once, with the token file's token.
    let stats = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("authorization: Bearer {token}"))
        .arg(format!("http://127.0.0.1:{admin}/magic-sessionmanager/stats"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&stats.stdout), "200");
    let cli = Command::new(BIN)
        .args(["sessions", "list", "--config"])
        .arg(etc.join("gateway.toml"))
        .env_remove("SESSIONGATE_ADMIN_URL")
        .env_remove("SESSIONGATE_ADMIN_TOKEN")
        .output()
        .expect("cli");
    assert!(cli.status.success(), "the CLI finds address and token: {}", String::from_utf8_lossy(&cli.stderr));
    assert!(std::fs::read_dir(&state).expect("state").count() > 0, "the store is in the state directory");

    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "a clean stop exits 0: {status:?}");
}

/// The Kubernetes manifest against the API schemas (kubernetes-validate, installed by .ci/test),
/// strict: unknown fields are errors. Memory: request = limit, and the limit fits the sessions
/// the header promises by the README's sizing formula.
#[test]
fn kubernetes_manifest_passes_schema_validation_and_its_memory_fits_the_sizing_formula() {
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "deploy/kubernetes/sessiongate.yaml"])
        .current_dir(ROOT)
        .output()
        .expect("kubernetes-validate is installed by .ci/test");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let k8s = read("deploy/kubernetes/sessiongate.yaml");
    assert!(k8s.contains("requests: {cpu: 250m, memory: 1Gi}") && k8s.contains("limits: {memory: 1Gi}"));
    let cache: f64 = k8s
        .lines()
        .find_map(|l| l.trim().strip_prefix("cache_capacity_bytes = "))
        .and_then(|v| v.parse().ok())
        .expect("cache_capacity_bytes in the ConfigMap");
    // README "Sizing": RSS ≈ 25 MiB + cache + 400 B a session; the limit adds 25 %.
    let mib = 1024.0 * 1024.0;
    let sessions = ((1024.0 * mib) / 1.25 - 25.0 * mib - cache) / 400.0;
    assert!((1.8e6..2.0e6).contains(&sessions), "the header's \"about 1.9 M sessions\" ({sessions:.0})");
    assert!(k8s.contains("holds about 1.9 M sessions"));
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    assert!(kustomization.contains("- sessiongate.yaml") && kustomization.contains("name: sessiongate"));
}
