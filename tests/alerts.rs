//! Security alerts delivered to real receivers on localhost: a signed webhook, Slack, Discord,
//! and e-mail through a real SMTP conversation; retries, dead letters, deduplication, the queue
//! surviving a restart, and no added login latency.

mod support;

use hmac::Mac;
use http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::receivers::{HttpReceiver, SmtpServer};
use support::{Gateway, MockStrapi};

const LONDON: &str = "81.2.69.142"; // GB, VPN/TOR/proxy/hosting
const MILTON: &str = "216.160.83.56"; // US, clean
const SECRET: &str = "webhook-signing-secret";

use support::geoip_test_db as db;

/// Geo databases, a trusted local proxy, fast retries, and `extra`.
fn config(extra: &str) -> String {
    format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[geo]\ncity_db = \"{}\"\nanonymous_db = \"{}\"\n[alerts]\nbackoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\ndashboard_url = \"https://admin.example/sg\"\n{extra}",
        db("GeoIP2-City-Test.mmdb"),
        db("GeoIP2-Anonymous-IP-Test.mmdb"),
    )
}

fn webhook(name: &str, r: &HttpReceiver, secret_file: &std::path::Path) -> String {
    format!(
        "[alerts.channels.{name}]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_file = \"{}\"\n",
        r.url("/hook"),
        secret_file.display()
    )
}

async fn login_from(gw: &Gateway, user: &str, ip: &str) -> support::Resp {
    gw.post("/api/auth/local")
        .header("x-forwarded-for", ip)
        .json(json!({"identifier": user, "password": support::PASSWORD}))
        .send()
        .await
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn secret_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("hook-secret");
    std::fs::write(&p, SECRET).expect("write");
    p
}

#[tokio::test]
async fn one_alert_reaches_webhook_slack_discord_and_email() {
    let backend = MockStrapi::start().await;
    let (hook, slack, discord) =
        (HttpReceiver::start().await, HttpReceiver::start().await, HttpReceiver::start().await);
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::env::set_var("SG_TEST_DISCORD_URL", discord.url("/api/webhooks/1/x"));
    std::env::set_var("SG_TEST_SMTP_PASSWORD", "smtp-secret");
    let extra = format!(
        "{}[alerts.channels.slack]\ntype = \"slack\"\nurl = \"{}\"\n[alerts.channels.discord]\ntype = \"discord\"\nurl_env = \"SG_TEST_DISCORD_URL\"\n\
         [alerts.channels.mail]\ntype = \"email\"\nto = [\"security@example.com\", \"ops@example.com\"]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n\
         smtp_user = \"alerts\"\nsmtp_password_env = \"SG_TEST_SMTP_PASSWORD\"\nfrom = \"sessiongate@example.com\"\n\
         [alerts.triggers]\nnew_country = [\"hook\", \"slack\", \"discord\", \"mail\"]\n",
        webhook("hook", &hook, &secret_file(&dir)),
        slack.url("/services/T/B/X"),
        smtp.addr.port()
    );
    let gw = Gateway::start(&backend.url(), &config(&extra)).await;
    assert_eq!(login_from(&gw, "alice", MILTON).await.status, 200);
    let res = login_from(&gw, "alice", LONDON).await;
    assert_eq!(res.status, 200);
    wait_for("all four deliveries", 10, || {
        hook.hits().len() == 1 && slack.hits().len() == 1 && discord.hits().len() == 1 && smtp.mails().len() == 1
    })
    .await;

    // Generic webhook: the event JSON, signed over "timestamp.body".
    let h = &hook.hits()[0];
    let ts = h.headers["x-sessiongate-timestamp"].to_str().expect("ts");
    let sig = h.headers["x-sessiongate-signature"].to_str().expect("sig");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&h.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(sig, format!("sha256={expected}"), "signature verifies");
    let e = h.json();
    assert_eq!(e["type"], "new_country");
    assert_eq!(e["user"]["id"], "1");
    assert_eq!(e["user"]["email"], "alice@example.com");
    assert_eq!(e["ip"], LONDON);
    assert_eq!(e["geo"]["countryCode"], "GB");
    assert_eq!(e["flags"]["isVpn"], true);
    assert!(e["score"].as_u64().is_some_and(|s| s > 0));
    assert!(e["session"].as_str().is_some_and(|s| s.starts_with("sess_")));

    // Slack Block Kit: fields and a Force logout button to the session in the dashboard.
    let s = slack.hits()[0].json();
    assert_eq!(slack.hits()[0].path, "/services/T/B/X");
    let fields: Vec<String> = s["blocks"][2]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        fields[..4],
        [
            "*User*\nalice@example.com".to_string(),
            format!("*IP*\n{LONDON}"),
            "*Country*\n🇬🇧 GB, London".into(),
            "*VPN*\nyes".into()
        ]
    );
    let button = &s["blocks"][3]["elements"][0];
    assert_eq!(button["text"]["text"], "Force logout");
    assert_eq!(button["url"], format!("https://admin.example/sg/#/sessions/{}", e["session"].as_str().expect("sid")));

    // Discord embed with the same fields.
    let d = discord.hits()[0].json();
    assert_eq!(d["embeds"][0]["fields"][0], json!({"name": "User", "value": "alice@example.com", "inline": true}));
    assert_eq!(d["embeds"][0]["fields"][3]["value"], "yes");

    // E-mail: authenticated, to both recipients, plain text and HTML.
    let m = &smtp.mails()[0];
    assert_eq!(m.auth.as_deref(), Some("\0alerts\0smtp-secret"));
    assert_eq!(m.from, "sessiongate@example.com");
    assert_eq!(m.to, vec!["security@example.com", "ops@example.com"]);
    assert!(m.data.contains("Subject: [sessiongate] Login of user 1 from 81.2.69.142 (GB)"), "{}", m.data);
    assert!(m.data.contains("multipart/alternative") && m.data.contains("text/plain") && m.data.contains("text/html"));
    assert!(m.data.contains("IP: 81.2.69.142"));

    // Delivery status in the admin API, and metrics.
    let list = gw.admin(Method::GET, "/magic-sessionmanager/alerts").send().await.json();
    assert_eq!(list["meta"]["count"], 4);
    assert!(list["data"].as_array().expect("data").iter().all(|a| a["status"] == "delivered" && a["attempts"] == 1));
    let metrics = gw.admin_anon(Method::GET, "/metrics").send().await.text();
    assert!(
        metrics.contains("sessiongate_alerts_total{channel=\"mail\",result=\"delivered\",trigger=\"new_country\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_deliveries_are_retried_then_dead_lettered_and_can_be_retried_by_an_admin() {
    let backend = MockStrapi::start().await;
    let (flaky, down) = (HttpReceiver::start().await, HttpReceiver::start().await);
    flaky.behaviour.fail_first.store(2, std::sync::atomic::Ordering::SeqCst);
    down.behaviour.always_fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = secret_file(&dir);
    let extra = format!(
        "max_attempts = 3\n{}{}[alerts.triggers]\nanonymizer = [\"flaky\", \"down\"]\n",
        webhook("flaky", &flaky, &s),
        webhook("down", &down, &s)
    );
    let gw = Gateway::start(&backend.url(), &config(&extra)).await;
    login_from(&gw, "bob", LONDON).await;
    wait_for("the flaky receiver to accept the third attempt", 10, || flaky.hits().len() == 1).await;
    assert_eq!(flaky.failures.load(std::sync::atomic::Ordering::SeqCst), 2);
    let dead = loop {
        let v = gw.admin(Method::GET, "/magic-sessionmanager/alerts?status=dead").send().await.json();
        if v["meta"]["count"] == 1 {
            break v["data"][0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (dead["channel"].clone(), dead["attempts"].clone(), dead["lastError"].clone()),
        (json!("down"), json!(3), json!("HTTP 500"))
    );
    let delivered = gw.admin(Method::GET, "/magic-sessionmanager/alerts?status=delivered").send().await.json();
    assert_eq!(delivered["data"][0]["attempts"], 3);
    // The receiver is fixed; an admin retries the dead alert.
    down.behaviour.always_fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let id = dead["id"].as_u64().expect("id");
    let r = gw.admin(Method::POST, &format!("/magic-sessionmanager/alerts/{id}/retry")).send().await;
    assert_eq!(r.status, 200);
    wait_for("the retried alert", 10, || down.hits().len() == 1).await;
    assert_eq!(gw.admin(Method::POST, "/magic-sessionmanager/alerts/999999/retry").send().await.status, 404);
    assert_eq!(gw.admin(Method::GET, "/magic-sessionmanager/alerts?status=lost").send().await.status, 400);
}

#[tokio::test]
async fn repeats_of_a_trigger_for_a_user_are_merged_within_the_window() {
    let backend = MockStrapi::start().await;
    let hook = HttpReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "dedupe_window = \"1h\"\n{}[alerts.triggers]\nanonymizer = [\"hook\"]\n",
        webhook("hook", &hook, &secret_file(&dir))
    );
    let gw = Gateway::start(&backend.url(), &config(&extra)).await;
    for _ in 0..3 {
        login_from(&gw, "alice", LONDON).await;
    }
    login_from(&gw, "bob", LONDON).await;
    wait_for("two alerts", 10, || hook.hits().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.hits().len(), 2, "one per user");
    let users: Vec<Value> = hook.hits().iter().map(|h| h.json()["user"]["id"].clone()).collect();
    assert!(users.contains(&json!("1")) && users.contains(&json!("2")));
    let metrics = gw.admin_anon(Method::GET, "/metrics").send().await.text();
    assert!(
        metrics.contains("sessiongate_alerts_total{channel=\"hook\",result=\"deduplicated\",trigger=\"anonymizer\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn undelivered_alerts_survive_a_restart() {
    let backend = MockStrapi::start().await;
    // A port with nothing listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "max_attempts = 1000\n[alerts.channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_file = \"{}\"\n[alerts.triggers]\nanonymizer = [\"hook\"]\n",
        secret_file(&dir).display()
    );
    let mut gw = Gateway::start(&backend.url(), &config(&extra)).await;
    login_from(&gw, "alice", LONDON).await;
    loop {
        let v = gw.admin(Method::GET, "/magic-sessionmanager/alerts?status=pending").send().await.json();
        if v["data"][0]["attempts"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
    let hook = HttpReceiver::start_on(format!("127.0.0.1:{port}").parse().expect("addr")).await;
    gw.restart().await;
    wait_for("the queued alert after the restart", 10, || hook.hits().len() == 1).await;
    assert_eq!(hook.hits()[0].json()["type"], "anonymizer");
}

#[tokio::test]
async fn a_slow_receiver_adds_no_latency_to_logins() {
    let backend = MockStrapi::start().await;
    let hook = HttpReceiver::start().await;
    *hook.behaviour.delay.lock().expect("lock") = Some(Duration::from_secs(3));
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "timeout = \"10s\"\n{}[alerts.triggers]\nanonymizer = [\"hook\"]\n",
        webhook("hook", &hook, &secret_file(&dir))
    );
    let gw = Gateway::start(&backend.url(), &config(&extra)).await;
    let started = Instant::now();
    for user in ["alice", "bob", "carol"] {
        assert_eq!(login_from(&gw, user, LONDON).await.status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(1), "logins waited for the receiver: {:?}", started.elapsed());
    wait_for("the slow deliveries", 10, || hook.hits().len() == 3).await;
}

#[tokio::test]
async fn every_trigger_and_a_custom_condition_raise_alerts() {
    let backend = MockStrapi::start().await;
    let hook = HttpReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let all = "[\"hook\"]";
    let extra = format!(
        "score_threshold = 50\n{}[alerts.triggers]\nnew_country = {all}\nanonymizer = {all}\nhigh_score = {all}\nlogin_refused = {all}\nrefresh_reuse = {all}\nadmin_termination = {all}\npassword_change = {all}\n\
         [[alerts.custom]]\nname = \"us-login\"\nwhen = \"country == 'US'\"\nchannels = {all}\n[sessions]\nrefresh_reuse_grace = \"0s\"\n",
        webhook("hook", &hook, &secret_file(&dir))
    );
    let gw = Gateway::start(&backend.url(), &config(&extra)).await;
    let a = login_from(&gw, "alice", MILTON).await.json(); // custom:us-login
    login_from(&gw, "alice", LONDON).await; // new_country, anonymizer, high_score
                                            // refresh_reuse
    let rt = a["refreshToken"].as_str().expect("rt").to_string();
    gw.refresh(&rt).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    gw.post("/api/auth/refresh").json(json!({"refreshToken": rt})).send().await;
    // admin_termination, then login_refused for the blocked user
    assert_eq!(login_from(&gw, "bob", MILTON).await.status, 200);
    gw.admin(Method::POST, "/magic-sessionmanager/user/2/toggle-block").send().await;
    assert_eq!(login_from(&gw, "bob", MILTON).await.status, 403);
    // password_change
    let c = login_from(&gw, "carol", MILTON).await.json();
    gw.post("/api/auth/change-password")
        .bearer(c["jwt"].as_str().expect("jwt"))
        .json(json!({"currentPassword": support::PASSWORD, "password": "Newpass-123", "passwordConfirmation": "Newpass-123"}))
        .send()
        .await;
    let expected = [
        "custom:us-login",
        "new_country",
        "anonymizer",
        "high_score",
        "refresh_reuse",
        "admin_termination",
        "login_refused",
        "password_change",
    ];
    let kinds =
        || -> Vec<String> { hook.hits().iter().map(|h| h.json()["type"].as_str().unwrap_or("").to_string()).collect() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !expected.iter().all(|k| kinds().iter().any(|x| x == k)) {
        assert!(Instant::now() < deadline, "missing triggers; got {:?}", kinds());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = hook.hits().into_iter().map(|h| h.json()).find(|e| e["type"] == "login_refused").expect("refused");
    assert_eq!(refused["reasons"][0], "blocked");
}

#[tokio::test]
async fn an_admin_can_send_a_test_alert_to_a_channel() {
    let backend = MockStrapi::start().await;
    let hook = HttpReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start(&backend.url(), &config(&webhook("hook", &hook, &secret_file(&dir)))).await;
    let res = gw.admin(Method::POST, "/magic-sessionmanager/alerts/test").json(json!({"channel": "hook"})).send().await;
    assert_eq!(res.status, 202);
    wait_for("the test alert", 10, || hook.hits().len() == 1).await;
    let e = hook.hits()[0].json();
    assert_eq!(e["type"], "test");
    assert!(e["summary"].as_str().is_some_and(|s| s.contains("admin:test")));
    let bad = gw.admin(Method::POST, "/magic-sessionmanager/alerts/test").json(json!({"channel": "nope"})).send().await;
    assert_eq!(bad.status, 400);
    assert_eq!(gw.admin(Method::POST, "/magic-sessionmanager/alerts/test").send().await.status, 400);
}

#[test]
fn alert_configuration_errors_name_their_keys() {
    let err = sessiongate::startup::parse_config(
        "preset = \"strapi-v5\"\n[upstream]\nurl = \"http://b:1\"\n[alerts.channels.a]\ntype = \"pager\"\n[alerts.channels.m]\ntype = \"email\"\n\
         [alerts.triggers]\nnew_country = [\"ghost\"]\nsolar_flare = []\n[[alerts.custom]]\nwhen = \"scoer > 1\"\nchannels = []\n",
    )
    .expect_err("invalid");
    let msgs: Vec<String> = err.0.iter().map(|i| i.to_string()).collect();
    for k in [
        "alerts.channels.a.type",
        "alerts.channels.m.to",
        "alerts.triggers.new_country: unknown channel \"ghost\"",
        "alerts.triggers.solar_flare: unknown trigger",
        "alerts.custom[0].when",
    ] {
        assert!(msgs.iter().any(|m| m.starts_with(k)), "{k} missing from {msgs:?}");
    }
}
