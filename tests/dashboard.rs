//! The admin dashboard in real headless Chromium: login, live updates, detail, force logout,
//! blocking, statistics, audit CSV download, settings, languages. Screenshots of the main pages
//! go to `docs/screenshots/` (shown in the README).

mod support;

use fantoccini::{Client, Locator};
use http::Method;
use std::path::PathBuf;
use std::time::Duration;
use support::browser::Browser;
use support::{Gateway, MockStrapi, ADMIN_TOKEN};

const WAIT: Duration = Duration::from_secs(10);

async fn wait_css(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

/// Waits until the element's text contains `needle`.
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = match c.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(needle) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{css} never contained {needle:?} (last: {text:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

async fn click(c: &Client, css: &str) {
    wait_css(c, css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn confirm(c: &Client) {
    wait_css(c, "dialog#confirm[open]").await;
    click(c, "#confirm-ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let backend = MockStrapi::start().await;
    // Geo data (MaxMind's test databases) and a trusted local proxy, so logins can come "from"
    // real places: the table shows flags and cities, and one login is risky.
    let db = support::geoip_test_db;
    let gw = Gateway::start(
        &backend.url(),
        &format!(
            "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[geo]\ncity_db = \"{}\"\nasn_db = \"{}\"\nanonymous_db = \"{}\"\n",
            db("GeoIP2-City-Test.mmdb"),
            db("GeoLite2-ASN-Test.mmdb"),
            db("GeoIP2-Anonymous-IP-Test.mmdb")
        ),
    )
    .await;
    let base = format!("http://{}/dashboard/", gw.admin_addr);

    // Served with a strict policy: own scripts and styles only, no framing.
    let page = gw.admin_anon(Method::GET, "/dashboard/").send().await;
    assert_eq!(page.status, 200);
    let csp = page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!page.text().contains("<script>"), "no inline scripts");
    assert_eq!(gw.admin_anon(Method::GET, "/dashboard").send().await.status, 301);
    assert_eq!(gw.admin_anon(Method::GET, "/dashboard/nope.js").send().await.status, 404);
    assert_eq!(
        gw.admin_anon(Method::GET, "/magic-sessionmanager/events").send().await.status,
        401,
        "the event stream needs the token"
    );

    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&base).await.expect("open the dashboard");
    wait_css(c, "#token").await;
    assert!(!c.current_url().await.expect("url").as_str().contains(ADMIN_TOKEN));
    wait_text(c, "#login-title", "Sign in").await;
    screenshot(c, "login").await;

    // A wrong token is refused.
    wait_css(c, "#token").await.send_keys("not-the-admin-token-000").await.expect("type");
    click(c, "#login-submit").await;
    wait_text(c, "#login-error", "refused").await;

    // The right one opens the sessions page; the token is in session storage, not the URL.
    let field = wait_css(c, "#token").await;
    field.send_keys(ADMIN_TOKEN).await.expect("type");
    click(c, "#login-submit").await;
    wait_css(c, "#sessions-table").await;
    assert!(!c.current_url().await.expect("url").as_str().contains(ADMIN_TOKEN));
    let stored = c.execute("return sessionStorage.getItem('sg.token')", vec![]).await.expect("js");
    assert_eq!(stored.as_str(), Some(ADMIN_TOKEN));
    wait_text(c, "#live", "Live").await;

    // A login through the gateway appears without a reload.
    let marker = c.execute("window.__noReload = 1; return 1", vec![]).await.expect("js");
    assert_eq!(marker.as_i64(), Some(1));
    let s = gw.login("alice").await;
    let sid = gw.get("/api/magic-sessionmanager/current-session").bearer(&s.jwt).send().await.json()["data"]
        ["sessionId"]
        .as_str()
        .expect("sid")
        .to_string();
    let row = format!("tr[data-session='{sid}']");
    wait_css(c, &row).await;
    let same_page = c.execute("return window.__noReload === 1", vec![]).await.expect("js");
    assert_eq!(same_page.as_bool(), Some(true), "the row came through the event stream, not a reload");
    wait_text(c, &row, "alice").await;
    wait_text(c, &row, "127.0.0.1").await;
    wait_text(c, &row, "active").await;
    for (user, ip, ua) in [
        ("bob", "216.160.83.56", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:130.0) Gecko/20100101 Firefox/130.0"),
        ("carol", "89.160.20.112", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"),
        ("bob", "81.2.69.142", "curl/8.5.0"),
    ] {
        let r = gw
            .post("/api/auth/local")
            .header("x-forwarded-for", ip)
            .header("user-agent", ua)
            .json(serde_json::json!({"identifier": user, "password": support::PASSWORD}))
            .send()
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_text(c, "#sessions-table", "Milton").await;
    wait_text(c, "#sessions-table", "London").await;
    screenshot(c, "sessions").await;

    // "Risky only" keeps the London login (VPN, Tor, hosting) and drops the clean ones.
    click(c, "#f-risky").await;
    click(c, "form.filters button[type='submit']").await;
    wait_text(c, "#sessions-table caption", "1 in total").await;
    wait_text(c, "#sessions-table tbody", "London").await;
    click(c, "form.filters button.secondary").await;
    wait_text(c, "#sessions-table caption", "4 in total").await;

    // Detail, then force logout: the proxied request with that token gets 401.
    click(c, &format!("{row} td:nth-child(5) a")).await;
    wait_css(c, "#force-logout").await;
    wait_text(c, "main", "Chrome").await;
    screenshot(c, "session-detail").await;
    click(c, "#force-logout").await;
    confirm(c).await;
    wait_css(c, "#logout-done").await;
    let res = gw.get("/api/articles").bearer(&s.jwt).send().await;
    assert_eq!((res.status.as_u16(), res.reason().as_deref()), (401, Some("session_terminated")));

    // The user view blocks the user: a login through the gateway is then refused.
    c.goto(&format!("{base}#/user/{}", s.user_id)).await.expect("user view");
    wait_text(c, "#toggle-block", "Block").await;
    click(c, "#toggle-block").await;
    confirm(c).await;
    wait_css(c, "#blocked-badge").await;
    let again = gw
        .post("/api/auth/local")
        .json(serde_json::json!({"identifier": "alice", "password": support::PASSWORD}))
        .send()
        .await;
    assert_eq!((again.status.as_u16(), again.reason().as_deref()), (403, Some("user_blocked")));
    wait_text(c, "#toggle-block", "Unblock").await;

    // Statistics.
    c.goto(&format!("{base}#/stats")).await.expect("stats");
    wait_css(c, "#stat-online").await;
    wait_css(c, "svg.chart rect.bar").await;
    screenshot(c, "stats").await;

    // Audit log, and its CSV downloaded through the browser.
    c.goto(&format!("{base}#/audit")).await.expect("audit");
    wait_text(c, "#audit-table", "terminate").await;
    screenshot(c, "audit").await;
    click(c, "#download-csv").await;
    let csv_path = browser.downloads.path().join("sessiongate-audit.csv");
    let deadline = std::time::Instant::now() + WAIT;
    while !csv_path.exists() {
        assert!(std::time::Instant::now() < deadline, "the CSV was not downloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let csv = std::fs::read_to_string(&csv_path).expect("csv");
    assert!(csv.lines().next().is_some_and(|h| h.contains("type")), "{csv}");
    assert!(csv.contains("user_blocked") && csv.contains("terminate"), "{csv}");

    // Settings: the effective configuration without secrets, and a key generator.
    c.goto(&format!("{base}#/settings")).await.expect("settings");
    let cfg = wait_text(c, "#effective-config", "server.listen").await;
    assert!(!cfg.contains(ADMIN_TOKEN));
    click(c, "#keygen").await;
    let key = c.execute("return document.getElementById('keygen-out').value", vec![]).await.expect("js");
    let key = key.as_str().unwrap_or_default().to_string();
    assert_eq!(key.len(), 44, "base64 of 32 bytes: {key}");
    screenshot(c, "settings").await;

    // Alerts page renders (no channels configured: empty).
    c.goto(&format!("{base}#/alerts")).await.expect("alerts");
    wait_css(c, "#alerts-table").await;

    // Every language has every label; every form control has a label.
    let missing = c
        .execute(
            "const en = Object.keys(SG_I18N.en); return ['de','fr','es','pt']\
             .flatMap(l => en.filter(k => !(k in SG_I18N[l])).map(k => l + ':' + k));",
            vec![],
        )
        .await
        .expect("js");
    assert_eq!(missing, serde_json::json!([]), "untranslated labels");
    c.goto(&format!("{base}#/sessions")).await.expect("sessions");
    wait_css(c, "#sessions-table").await;
    let unlabeled = c
        .execute(
            "return [...document.querySelectorAll('input, select')].filter(e => \
             !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id)",
            vec![],
        )
        .await
        .expect("js");
    assert_eq!(unlabeled, serde_json::json!([]), "form controls without a label");

    // Switching the language relabels everything and localizes dates.
    wait_css(c, "#lang").await.select_by_value("de").await.expect("select German");
    wait_text(c, "nav", "Sitzungen").await;
    wait_text(c, "#sessions-table thead", "Zuletzt aktiv").await;
    wait_text(c, "#sessions-table tbody", "Vereinigtes Königreich").await;
    let lang = c.execute("return document.documentElement.lang", vec![]).await.expect("js");
    assert_eq!(lang.as_str(), Some("de"));
    screenshot(c, "sessions-de").await;
    for (code, word) in [("fr", "Sessions"), ("es", "Sesiones"), ("pt", "Sessões"), ("en", "Sessions")] {
        wait_css(c, "#lang").await.select_by_value(code).await.expect("select");
        wait_text(c, "main h1", word).await;
    }

    // Logging out forgets the token.
    click(c, "#logout").await;
    wait_css(c, "#token").await;
    let gone = c.execute("return sessionStorage.getItem('sg.token')", vec![]).await.expect("js");
    assert!(gone.is_null());
    browser.close().await;
}
