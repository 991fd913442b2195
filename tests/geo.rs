//! Geolocation, risk scoring, rules and geo-fencing through the real gateway, with MaxMind's
//! test databases (`geoip/test/`) and client addresses set through a trusted proxy.

mod support;

use http::Method;
use serde_json::{json, Value};
use support::strapi::{Status, API_TOKEN};
use support::{eventually, Gateway, MockStrapi};

const LONDON: &str = "81.2.69.142"; // GB; VPN + hosting + public proxy + residential proxy + TOR
const MILTON: &str = "216.160.83.56"; // US
const LINKOPING: &str = "89.160.20.112"; // SE
const CHANGCHUN: &str = "175.16.199.1"; // CN
const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36";
const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:130.0) Gecko/20100101 Firefox/130.0";

use support::geoip_test_db as db;

/// Config with the three test databases, a trusted local proxy, and `extra` merged in.
fn geo_config(extra: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[geo]\ncity_db = \"{}\"\nasn_db = \"{}\"\nanonymous_db = \"{}\"\n{extra}",
        db("GeoIP2-City-Test.mmdb"),
        db("GeoLite2-ASN-Test.mmdb"),
        db("GeoIP2-Anonymous-IP-Test.mmdb")
    )
}

async fn login_from(gw: &Gateway, user: &str, ip: &str, ua: &str) -> support::Resp {
    gw.post("/api/auth/local")
        .header("x-forwarded-for", ip)
        .header("user-agent", ua)
        .json(json!({"identifier": user, "password": support::PASSWORD}))
        .send()
        .await
}

/// The admin view of the session created by a successful login response.
async fn admin_session(gw: &Gateway, login: &support::Resp) -> Value {
    let jwt = login.json()["jwt"].as_str().expect("jwt").to_string();
    let cur = gw.get("/api/magic-sessionmanager/current-session").bearer(&jwt).send().await.json();
    let sid = cur["data"]["sessionId"].as_str().expect("sid").to_string();
    gw.admin(Method::GET, &format!("/magic-sessionmanager/sessions/{sid}")).send().await.json()["data"].clone()
}

#[tokio::test]
async fn sessions_carry_location_network_and_threat_flags() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), &geo_config("")).await;
    let res = login_from(&gw, "alice", LONDON, CHROME_MAC).await;
    assert_eq!(res.status, 200);
    let jwt = res.json()["jwt"].as_str().expect("jwt").to_string();
    let s = gw.get("/api/magic-sessionmanager/current-session").bearer(&jwt).send().await.json()["data"].clone();
    assert_eq!(s["ipAddress"], LONDON);
    let g = &s["geoLocation"];
    assert_eq!(
        (g["countryCode"].clone(), g["country"].clone(), g["city"].clone()),
        (json!("GB"), json!("United Kingdom"), json!("London"))
    );
    assert_eq!(g["flag"], "🇬🇧");
    assert_eq!((g["lat"].clone(), g["lon"].clone()), (json!(51.5142), json!(-0.0931)));
    assert_eq!(g["timezone"], "Europe/London");
    assert_eq!(
        (s["isVpn"].clone(), s["isProxy"].clone(), s["isTor"].clone(), s["isDatacenter"].clone()),
        (json!(true), json!(true), json!(true), json!(true))
    );

    let telstra = login_from(&gw, "bob", "1.128.0.1", CHROME_MAC).await;
    let s = admin_session(&gw, &telstra).await;
    assert_eq!(
        (s["geoLocation"]["asn"].clone(), s["geoLocation"]["isp"].clone()),
        (json!(1221), json!("Telstra Pty Ltd"))
    );
    assert_eq!(s["isVpn"], false);

    for (ip, flag) in [("71.160.223.1", "isDatacenter"), ("186.30.236.1", "isProxy"), ("1.2.3.4", "isVpn")] {
        let s = admin_session(&gw, &login_from(&gw, "carol", ip, CHROME_MAC).await).await;
        for f in ["isVpn", "isProxy", "isTor", "isDatacenter"] {
            assert_eq!(s[f], f == flag, "{ip}: {f}");
        }
    }
    // Private and loopback addresses are local, never an error.
    let local =
        gw.post("/api/auth/local").json(json!({"identifier": "bob", "password": support::PASSWORD})).send().await;
    let s = admin_session(&gw, &local).await;
    assert_eq!(s["geoLocation"]["country"], "Local");
    assert_eq!(s["geoLocation"]["countryCode"], Value::Null);
    // The admin list filters by country now.
    let gb = gw.admin(Method::GET, "/magic-sessionmanager/sessions?country=GB").send().await.json();
    assert_eq!(gb["meta"]["pagination"]["total"], 1);
}

#[tokio::test]
async fn every_signal_adds_its_weight_to_the_threat_score() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), &geo_config("[risk]\nalert_at = 50\n")).await;
    let first = login_from(&gw, "alice", MILTON, CHROME_MAC).await;
    let s = admin_session(&gw, &first).await;
    assert_eq!((s["threatScore"].clone(), s["securityScore"].clone()), (json!(0), json!(100)));
    assert_eq!(s["riskSignals"], json!([]));
    // A failed attempt from London, then a login from there, minutes later, on another browser.
    let failed = gw
        .post("/api/auth/local")
        .header("x-forwarded-for", LONDON)
        .json(json!({"identifier": "alice", "password": "guess"}))
        .send()
        .await;
    assert_eq!(failed.status, 400);
    let risky = login_from(&gw, "alice", LONDON, FIREFOX_WIN).await;
    assert_eq!(risky.status, 200, "no deny_at configured: scored, not refused");
    let s = admin_session(&gw, &risky).await;
    let signals: Vec<(String, i64)> = s["riskSignals"]
        .as_array()
        .expect("signals")
        .iter()
        .map(|x| (x["name"].as_str().expect("name").to_string(), x["points"].as_i64().expect("points")))
        .collect();
    let expected = [
        ("vpn", 25),
        ("proxy", 25),
        ("tor", 40),
        ("residential_proxy", 15),
        ("datacenter", 15),
        ("new_country", 20),
        ("new_device", 10),
        ("impossible_travel", 40),
        ("failed_logins", 5),
    ];
    assert_eq!(signals, expected.iter().map(|(n, p)| (n.to_string(), *p)).collect::<Vec<_>>());
    assert_eq!((s["threatScore"].clone(), s["securityScore"].clone()), (json!(100), json!(0)), "capped at 100");
    // Only the risky login (score ≥ alert_at = 50) raised an alert.
    let alerts = audit_of(&gw, "risk_alert", 1).await;
    assert_eq!(alerts[0]["details"]["score"], 100);
    assert_eq!(alerts[0]["ip"], LONDON);
}

/// Waits until the audit log holds `n` events of `kind`, and returns them.
async fn audit_of(gw: &Gateway, kind: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let ev = gw.admin(Method::GET, &format!("/magic-sessionmanager/audit?type={kind}")).send().await.json();
        let data = ev["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n {
            assert_eq!(data.len(), n, "{ev}");
            return data;
        }
        assert!(std::time::Instant::now() < deadline, "expected {n} {kind} events: {ev}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn impossible_travel_needs_speed_above_the_threshold() {
    let backend = MockStrapi::start().await;
    // Weights zeroed except travel, to read the signal alone.
    let weights = "[risk.weights]\nvpn = 0\nproxy = 0\ntor = 0\nresidential_proxy = 0\ndatacenter = 0\nnew_country = 0\nnew_device = 0\n";
    let gw =
        Gateway::start(&backend.url(), &geo_config(&format!("[risk]\nimpossible_travel_kmh = 900\n{weights}"))).await;
    login_from(&gw, "alice", LONDON, CHROME_MAC).await;
    let s = admin_session(&gw, &login_from(&gw, "alice", MILTON, CHROME_MAC).await).await;
    assert_eq!(s["riskSignals"], json!([{"name": "impossible_travel", "points": 40}]), "London → Milton in seconds");
    // Same place again: no travel.
    let s = admin_session(&gw, &login_from(&gw, "alice", MILTON, CHROME_MAC).await).await;
    assert_eq!(s["riskSignals"], json!([]));
    // A threshold above any speed turns the signal off.
    let relaxed =
        Gateway::start(&backend.url(), &geo_config(&format!("[risk]\nimpossible_travel_kmh = 1e12\n{weights}"))).await;
    login_from(&relaxed, "bob", LONDON, CHROME_MAC).await;
    let s = admin_session(&relaxed, &login_from(&relaxed, "bob", MILTON, CHROME_MAC).await).await;
    assert_eq!(s["riskSignals"], json!([]));
}

#[tokio::test]
async fn custom_rules_add_points_tag_and_deny() {
    let backend = MockStrapi::start().await;
    let rules = r#"
[[risk.rules]]
name = "nordics"
when = "country in ['SE', 'NO', 'FI']"
tag = "nordic"
[[risk.rules]]
name = "telstra"
when = "asn == 1221"
add = 33
[[risk.rules]]
name = "no-chinese-editors"
when = "country == 'CN' && role == 'Editor'"
action = "deny"
[roles]
lookup = "GET /api/users/:id?populate=role"
token_env = "SG_TEST_ROLES_TOKEN_RULES"
"#;
    std::env::set_var("SG_TEST_ROLES_TOKEN_RULES", API_TOKEN);
    let gw = Gateway::start(&backend.url(), &geo_config(rules)).await;
    let s = admin_session(&gw, &login_from(&gw, "alice", LINKOPING, CHROME_MAC).await).await;
    assert_eq!(s["tags"], json!(["nordic"]));
    let s = admin_session(&gw, &login_from(&gw, "bob", "1.128.0.1", CHROME_MAC).await).await;
    assert_eq!(s["threatScore"], 33);
    assert_eq!(s["riskSignals"], json!([{"name": "rule:telstra", "points": 33}]));
    assert_eq!(login_from(&gw, "alice", CHANGCHUN, CHROME_MAC).await.status, 200, "not an editor");
    let denied = login_from(&gw, "carol", CHANGCHUN, CHROME_MAC).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.reason().as_deref(), Some("risk_denied"));
    assert_eq!(denied.json()["error"]["name"], "ForbiddenError");
    // The backend session the denied login opened was revoked at once.
    assert!(
        eventually(5, || backend
            .with(|st| !st.sessions.values().any(|x| x.user_id == 3 && x.status == Status::Active)))
        .await,
        "carol's refused backend session is still active"
    );
}

#[tokio::test]
async fn the_deny_threshold_refuses_risky_logins() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), &geo_config("[risk]\ndeny_at = 70\n")).await;
    let res = login_from(&gw, "alice", LONDON, CHROME_MAC).await;
    assert_eq!(res.status, 403, "VPN + proxy + TOR + … ≥ 70");
    assert_eq!(res.reason().as_deref(), Some("risk_denied"));
    assert_eq!(login_from(&gw, "alice", MILTON, CHROME_MAC).await.status, 200);
    let denied = audit_of(&gw, "login_denied", 1).await;
    assert_eq!(denied[0]["details"]["reason"], "risk_denied");
    assert_eq!(denied[0]["details"]["why"], "denied by score");
    let st = gw.state().clone();
    assert!(eventually(5, || st.metrics.logins.with_label_values(&["risk_denied"]).get() == 1).await);
}

#[test]
fn rule_errors_are_reported_at_load_with_their_key() {
    let base = "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let err = sessiongate::startup::parse_config(&format!(
        "{base}[[risk.rules]]\nwhen = \"score >\"\nadd = 1\n[[risk.rules]]\nwhen = \"scroe > 1\"\nadd = 1\n[[risk.rules]]\nwhen = \"is_vpn\"\naction = \"block\"\n[[risk.rules]]\nwhen = \"is_vpn\"\n"
    ))
    .expect_err("invalid rules");
    let msgs: Vec<String> = err.0.iter().map(|i| i.to_string()).collect();
    assert!(msgs.iter().any(|m| m.starts_with("risk.rules[0].when: syntax error")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("risk.rules[1].when: unknown variable(s) scroe")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("risk.rules[2].action")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("risk.rules[3]: set exactly one")), "{msgs:?}");
}

/// A configuration built without the checks owned above `config` (a library user calling
/// `Config::from_toml_str` directly) cannot start with a rule that does not compile: it would
/// never hold, and a deny rule that never holds denies nothing.
#[tokio::test]
async fn the_gateway_refuses_to_start_with_a_rule_that_does_not_compile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = support::config_text(
        "http://127.0.0.1:1",
        dir.path(),
        "[[risk.rules]]\nwhen = \"is_tor ||\"\naction = \"deny\"\n",
    );
    let cfg = sessiongate::config::Config::from_toml_str(&text, &[]).expect("structurally valid");
    let listeners = sessiongate::Listeners::bind(&cfg).expect("bind");
    match sessiongate::start(cfg, listeners).await {
        Err(sessiongate::error::StartupError::Config(e)) => {
            assert!(e.0.iter().any(|i| i.key == "risk.rules[0].when"), "{e}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("started with a rule that does not compile"),
    }
}

#[tokio::test]
async fn countries_are_fenced_globally_with_an_allow_list_bypass() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(
        &backend.url(),
        &geo_config("[geofence]\nblocked_countries = [\"CN\"]\nallow_ips = [\"175.16.199.7\"]\n"),
    )
    .await;
    let denied = login_from(&gw, "alice", CHANGCHUN, CHROME_MAC).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.reason().as_deref(), Some("geo_blocked"));
    assert!(denied.json().get("jwt").is_none());
    assert!(
        eventually(5, || backend
            .with(|st| !st.sessions.values().any(|x| x.user_id == 1 && x.status == Status::Active)))
        .await
    );
    assert_eq!(login_from(&gw, "alice", "175.16.199.7", CHROME_MAC).await.status, 200, "allow-listed address");
    assert_eq!(login_from(&gw, "alice", LINKOPING, CHROME_MAC).await.status, 200);
    let ev = audit_of(&gw, "login_denied", 1).await;
    assert_eq!(ev[0]["details"]["reason"], "geo_blocked");
    assert_eq!(ev[0]["details"]["country"], "CN");
    assert_eq!(ev[0]["ip"], CHANGCHUN);
    let metrics = gw.admin_anon(Method::GET, "/metrics").send().await.text();
    assert!(metrics.contains("sessiongate_logins_total{result=\"geo_blocked\"} 1"), "{metrics}");
}

#[tokio::test]
async fn roles_are_fenced_using_one_cached_lookup_at_the_backend() {
    let backend = MockStrapi::start().await;
    std::env::set_var("SG_TEST_ROLES_TOKEN", API_TOKEN);
    let cfg = "[roles]\nlookup = \"GET /api/users/:id?populate=role\"\ntoken_env = \"SG_TEST_ROLES_TOKEN\"\ncache_ttl = \"1m\"\n[geofence.roles.Editor]\nallowed_countries = [\"SE\"]\n";
    let gw = Gateway::start(&backend.url(), &geo_config(cfg)).await;
    // carol is an Editor: Sweden only.
    let denied = login_from(&gw, "carol", LONDON, CHROME_MAC).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.reason().as_deref(), Some("geo_blocked"));
    let ok = login_from(&gw, "carol", LINKOPING, CHROME_MAC).await;
    assert_eq!(ok.status, 200);
    assert_eq!(admin_session(&gw, &ok).await["role"], "Editor");
    // alice is Authenticated: no role fence.
    assert_eq!(login_from(&gw, "alice", LONDON, CHROME_MAC).await.status, 200);
    // The look-up went to the backend with the API token, once per user (cached).
    let lookups: Vec<_> = backend.seen().into_iter().filter(|r| r.path.starts_with("/api/users/3")).collect();
    assert_eq!(lookups.len(), 1, "cached");
    assert_eq!(lookups[0].path, "/api/users/3?populate=role");
    assert_eq!(lookups[0].headers["authorization"], format!("Bearer {API_TOKEN}"));
}

#[tokio::test]
async fn databases_reload_during_traffic_and_a_broken_file_keeps_the_old_one() {
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("city.mmdb");
    let put = |src: &str| {
        let tmp = dir.path().join("incoming.mmdb");
        std::fs::write(&tmp, std::fs::read(db(src)).expect("read")).expect("write");
        std::fs::rename(&tmp, &live).expect("rename");
    };
    put("GeoIP2-Country-Test.mmdb");
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[geo]\ncity_db = \"{}\"\nreload_interval = \"100ms\"\n",
        live.display()
    );
    let gw = Gateway::start(&backend.url(), &cfg).await;
    let before = admin_session(&gw, &login_from(&gw, "alice", LONDON, CHROME_MAC).await).await;
    assert_eq!(
        (before["geoLocation"]["countryCode"].clone(), before["geoLocation"]["city"].clone()),
        (json!("GB"), Value::Null)
    );

    // Traffic keeps flowing while the file is swapped.
    let (jwt, _) = backend.issue_direct(2);
    let url = gw.url("/api/articles");
    let traffic = tokio::spawn(async move {
        let mut ok = 0;
        for _ in 0..100 {
            let r = support::Req::new(Method::GET, &url).bearer(&jwt).send().await;
            assert_eq!(r.status, 200);
            ok += 1;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        ok
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    put("GeoIP2-City-Test.mmdb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = admin_session(&gw, &login_from(&gw, "alice", LONDON, CHROME_MAC).await).await;
        if s["geoLocation"]["city"] == "London" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new database was not picked up: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(traffic.await.expect("traffic"), 100, "no request failed during the reload");
    put("GeoIP2-City-Test-Broken-Double-Format.mmdb");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let s = admin_session(&gw, &login_from(&gw, "alice", LONDON, CHROME_MAC).await).await;
    assert_eq!(s["geoLocation"]["city"], "London", "the broken file was refused, the previous database stays");
}

#[tokio::test]
async fn stats_show_vpn_country_and_threat_figures() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::start(&backend.url(), &geo_config("")).await;
    login_from(&gw, "alice", LONDON, CHROME_MAC).await;
    login_from(&gw, "bob", LINKOPING, CHROME_MAC).await;
    login_from(&gw, "carol", LINKOPING, CHROME_MAC).await;
    let s = gw.admin(Method::GET, "/magic-sessionmanager/stats").send().await.json();
    assert_eq!(s["vpnLoginsLast24h"], 1);
    assert_eq!(s["loginsByCountry"], json!({"GB": 1, "SE": 2}));
    assert_eq!(s["threatScoreDistribution"], json!({"0-20": 2, "20-40": 0, "40-60": 0, "60-80": 0, "80-100": 1}));
}

#[test]
fn a_missing_or_broken_database_stops_startup_with_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("g.toml");
    std::fs::write(
        &config,
        format!(
            "preset = \"strapi-v5\"\n[admin]\nenabled = false\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = \"{}\"\n[geo]\ncity_db = \"{}\"\n",
            dir.path().join("d").display(),
            db("GeoIP2-City-Test-Broken-Double-Format.mmdb")
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("geo.city_db"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A configuration reload (here `POST /reload`, the same path SIGHUP takes) re-reads the geo
/// files at once, without waiting for `geo.reload_interval`.
#[tokio::test]
async fn a_configuration_reload_re_reads_the_geo_files() {
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tor = dir.path().join("tor.txt");
    std::fs::write(&tor, "203.0.113.0/24\n").expect("write");
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[geo]\ntor_list = \"{}\"\nreload_interval = \"1h\"\n",
        tor.display()
    );
    let gw = Gateway::start(&backend.url(), &cfg).await;
    let s = admin_session(&gw, &login_from(&gw, "alice", "203.0.113.9", CHROME_MAC).await).await;
    assert_eq!(s["isTor"], true);
    let tmp = dir.path().join("tor.new");
    std::fs::write(&tmp, "192.0.2.0/24\n").expect("write");
    std::fs::rename(&tmp, &tor).expect("rename");
    assert_eq!(gw.admin(Method::POST, "/reload").send().await.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = admin_session(&gw, &login_from(&gw, "bob", "203.0.113.9", CHROME_MAC).await).await;
        if s["isTor"] == false {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the reload did not re-read the edited list");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cidr_lists_flag_addresses_and_reload_when_edited() {
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tor = dir.path().join("tor.txt");
    let dc = dir.path().join("dc.txt");
    std::fs::write(&tor, "# exits\n203.0.113.0/24\n").expect("write");
    std::fs::write(&dc, "198.51.100.7\n").expect("write");
    let cfg = format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[geo]\ntor_list = \"{}\"\ndatacenter_list = \"{}\"\nreload_interval = \"100ms\"\n",
        tor.display(),
        dc.display()
    );
    let gw = Gateway::start(&backend.url(), &cfg).await;
    let s = admin_session(&gw, &login_from(&gw, "alice", "203.0.113.9", CHROME_MAC).await).await;
    assert_eq!((s["isTor"].clone(), s["isDatacenter"].clone()), (json!(true), json!(false)));
    assert_eq!(s["riskSignals"][0]["name"], "tor");
    let s = admin_session(&gw, &login_from(&gw, "bob", "198.51.100.7", CHROME_MAC).await).await;
    assert_eq!((s["isTor"].clone(), s["isDatacenter"].clone()), (json!(false), json!(true)));
    // Edit the list: the address is no longer a TOR exit once the file is reloaded.
    let tmp = dir.path().join("tor.new");
    std::fs::write(&tmp, "192.0.2.0/24\n").expect("write");
    std::fs::rename(&tmp, &tor).expect("rename");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = admin_session(&gw, &login_from(&gw, "carol", "203.0.113.9", CHROME_MAC).await).await;
        if s["isTor"] == false {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the edited list was not reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
