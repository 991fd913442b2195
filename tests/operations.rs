//! Operations through the `sessiongate` binary against a running gateway: online key rotation,
//! session import (the plugin's migration fields) and export.

mod support;

use support::process::admin_cli as cli;

use http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{direct, Gateway, MockStrapi, PASSWORD};

/// Waits (up to 5 s: the audit log is written in the background) until the audit events of
/// `kind` satisfy `check`.
async fn audited(gw: &Gateway, kind: &str, check: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit =
            gw.admin(Method::GET, &format!("/magic-sessionmanager/audit?type={kind}&format=json")).send().await.json();
        if check(audit["data"].as_array().map(Vec::as_slice).unwrap_or(&[])) {
            return;
        }
        assert!(Instant::now() < deadline, "{kind} not audited as expected: {audit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test]
async fn rotate_key_reseals_every_stored_token_online() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    let mut logins = Vec::new();
    for u in ["alice", "bob", "carol"] {
        logins.push(gw.login(u).await);
    }
    gw.post("/api/auth/logout").bearer(&logins[2].jwt).send().await;

    // New current key; the old one only opens.
    let dir = gw.dir.path().to_path_buf();
    let old = std::fs::read_to_string(dir.join("test.key")).expect("old key");
    let new = sessiongate::session::crypto::generate_key();
    std::fs::write(dir.join("new.key"), &new).expect("write");
    std::fs::write(dir.join("previous.keys"), &old).expect("write");
    gw.reconfigure(&format!(
        "[sessions]\nencryption_key_file = \"{}\"\nprevious_keys_file = \"{}\"\n",
        dir.join("new.key").display(),
        dir.join("previous.keys").display()
    ));
    gw.restart().await;
    let keys = gw.admin(Method::GET, "/magic-sessionmanager/keys").send().await.json();
    assert_eq!(keys["data"]["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(keys["data"]["rotation"]["state"], "idle");
    let new_kid = keys["data"]["currentKey"].as_str().expect("kid").to_string();

    let out = cli(&gw, &["rotate-key", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    let r = &status["rotation"];
    assert_eq!(
        (r["state"].as_str(), r["scanned"].as_u64(), r["resealed"].as_u64()),
        (Some("done"), Some(3), Some(3)),
        "{status}"
    );
    assert_eq!(r["unreadable"], 0);
    assert_eq!(r["key"], new_kid.as_str());
    // Idempotent: a second run finds nothing to do.
    let out = cli(&gw, &["rotate-key"]).await;
    assert!(out.status.success() && text(&out).contains("0 re-sealed"), "{}", text(&out));
    audited(&gw, "key_rotation", |events| events.iter().filter(|e| e["details"]["state"] == "done").count() >= 2).await;

    // The old key can go: sessions and their stored tokens survive.
    gw.reconfigure("[sessions]\nprevious_keys_file = \"\"\n");
    gw.restart().await;
    let keys = gw.admin(Method::GET, "/magic-sessionmanager/keys").send().await.json();
    assert_eq!(keys["data"]["keys"], json!([new_kid]));
    let out = cli(&gw, &["rotate-key", "--json"]).await;
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["rotation"]["unreadable"], 0, "every token opens with the new key alone: {status}");
    let me = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&logins[0].jwt).send().await;
    assert_eq!(me.status, 200);
    assert_eq!(
        gw.get("/api/articles").bearer(&logins[2].jwt).send().await.reason().as_deref(),
        Some("session_terminated")
    );
    // The stored tokens decrypt with the new key (the admin's revocation at the backend uses them).
    let sessions = &gw.state().sessions;
    let hash = sessiongate::session::tokens::hash(&logins[1].jwt);
    let sessiongate::session::Check::Live(live, _) = sessions.check(&hash, sessiongate::clock::now_ms()) else {
        panic!("bob's session is live")
    };
    let rec = sessions.store().get(live.id).await.expect("read").expect("record");
    let (access, _) = sessions.open_tokens(&rec);
    assert_eq!(access.as_deref(), Some(logins[1].jwt.as_str()));
    assert_eq!(rec.access.as_ref().map(|s| s.kid.as_str()), Some(new_kid.as_str()));

    // Without the old key configured, an un-rotated store reports its unreadable tokens
    // (access and refresh of the one session).
    let backend2 = MockStrapi::start().await;
    let mut gw2 = Gateway::with_defaults(&backend2).await;
    gw2.login("alice").await;
    std::fs::write(gw2.dir.path().join("other.key"), sessiongate::session::crypto::generate_key()).expect("write");
    gw2.reconfigure(&format!("[sessions]\nencryption_key_file = \"{}\"\n", gw2.dir.path().join("other.key").display()));
    gw2.restart().await;
    let out = cli(&gw2, &["rotate-key"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 token(s) unreadable") && text(&out).contains("warning"), "{}", text(&out));
}

/// Logs in at the backend directly (as another session manager's users did): a token the
/// gateway has never seen.
async fn backend_login(backend: &MockStrapi, user: &str) -> String {
    let res = direct(backend, Method::POST, "/api/auth/local")
        .json(json!({"identifier": user, "password": PASSWORD}))
        .send()
        .await;
    res.json()["jwt"].as_str().expect("jwt").to_string()
}

#[tokio::test]
async fn import_migrates_plugin_sessions_idempotently_and_export_lists_them_without_tokens() {
    let backend = MockStrapi::start().await;
    let gw = Gateway::with_defaults(&backend).await;
    let (alice, bob) = (backend_login(&backend, "alice").await, backend_login(&backend, "bob").await);
    let user_id = |name: &str| backend.with(|s| s.users.iter().find(|u| u.username == name).map(|u| u.id.to_string()));
    let (alice_id, bob_id) = (user_id("alice").expect("alice"), user_id("bob").expect("bob"));
    let dir = tempfile::tempdir().expect("tempdir");
    // The plugin's migration fields; one bad row with three problems.
    let csv = format!(
        "userId,ip,userAgent,token,createdAt,lastSeen\n\
         {alice_id},203.0.113.7,\"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36\",{alice},2026-11-01T08:00:00.000Z,2026-11-02T09:30:00.000Z\n\
         ,not-an-ip,curl/8,x.y.z,yesterday,\n"
    );
    let csv_file = dir.path().join("sessions.csv");
    std::fs::write(&csv_file, csv).expect("write");
    let out = cli(&gw, &["import", "--format", "csv", csv_file.to_str().expect("path")]).await;
    assert_eq!(out.status.code(), Some(1), "invalid rows make the run fail: {}", text(&out));
    let t = text(&out);
    assert!(t.contains("1 session(s) imported, 0 already present, 1 invalid row(s)"), "{t}");
    assert!(t.contains("row 2: userId: missing; ip: not an IP address") && t.contains("createdAt: expected"), "{t}");

    // JSON in the node-auth store's field names; the CSV's row again (already present).
    let json_rows = json!([
        {"userId": alice_id, "ipAddress": "203.0.113.7", "token": alice, "createdAt": "2026-11-01T08:00:00.000Z"},
        {"userId": bob_id, "ipAddress": "198.51.100.4", "userAgent": "curl/8.5", "token": bob,
         "createdAt": 1761984000000_i64, "lastActiveAt": 1762070400000_i64, "username": "bob"},
    ]);
    let json_file = dir.path().join("sessions.json");
    std::fs::write(&json_file, json_rows.to_string()).expect("write");
    let out = cli(&gw, &["import", "--json", json_file.to_str().expect("path")]).await;
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary, json!({"created": 1, "exists": 1, "invalid": 0, "errors": []}));
    let out = cli(&gw, &["import", json_file.to_str().expect("path")]).await;
    assert!(text(&out).contains("0 session(s) imported, 2 already present"), "re-run is idempotent: {}", text(&out));

    // Imported sessions are tracked: listed to their user, enforced after a termination.
    let mine = gw.get("/api/magic-sessionmanager/my-sessions").bearer(&alice).send().await;
    assert_eq!(mine.status, 200);
    let s = &mine.json()["data"][0];
    assert_eq!(
        (s["ipAddress"].as_str(), s["loginTime"].as_str()),
        (Some("203.0.113.7"), Some("2026-11-01T08:00:00.000Z"))
    );
    assert_eq!(s["lastActive"].as_str().map(|t| t >= "2026-11-02T09:30:00.000Z"), Some(true));
    assert_eq!(s["browserName"], "Chrome 120");
    assert_eq!(gw.get("/api/articles").bearer(&bob).send().await.status, 200, "the backend accepts the token");
    let sid = gw.get("/api/magic-sessionmanager/current-session").bearer(&bob).send().await.json()["data"]["sessionId"]
        .as_str()
        .expect("sid")
        .to_string();
    let res = gw.admin(Method::POST, &format!("/magic-sessionmanager/sessions/{sid}/terminate")).send().await;
    assert_eq!(res.status, 200);
    assert_eq!(gw.get("/api/articles").bearer(&bob).send().await.reason().as_deref(), Some("session_terminated"));

    // The API validates on its own too, and bounds a call.
    let res = gw
        .admin(Method::POST, "/magic-sessionmanager/import")
        .json(json!({"rows": [{"userId": "1", "ip": "1.2.3.4", "token": "t t", "createdAt": "1000"}]}))
        .send()
        .await;
    assert_eq!(res.json()["data"][0]["status"], "invalid");
    let many: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    let res = gw.admin(Method::POST, "/magic-sessionmanager/import").json(json!({"rows": many})).send().await;
    assert_eq!((res.status.as_u16(), res.reason().as_deref()), (400, Some("invalid_parameter")));

    // Export: both sessions, as CSV and as JSON lines, never a token.
    let csv_out = dir.path().join("export.csv");
    let out = cli(&gw, &["export", "--format", "csv", "-o", csv_out.to_str().expect("path")]).await;
    assert!(out.status.success(), "{}", text(&out));
    let exported = std::fs::read_to_string(&csv_out).expect("read");
    let mut r = csv::Reader::from_reader(exported.as_bytes());
    let header = r.headers().expect("header").clone();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.expect("record")).collect();
    assert_eq!(rows.len(), 2);
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    assert_eq!(&rows[1][col("userId")], bob_id.as_str());
    assert_eq!(&rows[1][col("isActive")], "false");
    assert_eq!(&rows[1][col("endReason")], "admin_terminated");
    assert!(!exported.contains(&alice) && !exported.contains(&bob), "tokens are never exported");
    let out = cli(&gw, &["export"]).await;
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["ip"], "203.0.113.7");
    assert_eq!(lines[0]["createdAt"], "2026-11-01T08:00:00.000Z");
}

/// Sends one HTTP/1.1 request on an open keep-alive connection; returns the status.
async fn on_connection(conn: &mut tokio::net::TcpStream, path: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the connection was closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                return text[9..12].parse().expect("status");
            }
        }
    }
}

#[tokio::test]
async fn reload_applies_routes_rules_and_limits_keeps_connections_and_refuses_bad_files() {
    let backend = MockStrapi::start().await;
    let mut gw = Gateway::with_defaults(&backend).await;
    let alice = gw.login("alice").await;
    let bob = gw.login("bob").await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    assert_eq!(on_connection(&mut conn, "/api/articles", &alice.jwt).await, 200);
    let big_login = json!({"identifier": "carol", "password": PASSWORD, "pad": "x".repeat(3000)});
    assert_eq!(gw.post("/api/auth/local").json(big_login.clone()).send().await.status, 200);

    gw.reconfigure(
        "[server]\nmax_body_bytes = 2048\n\
         [routes]\nlogout = [\"POST /api/auth/logout\", \"POST /api/custom/signout\"]\n\
         [risk]\nenabled = true\n[[risk.rules]]\nname = \"no-evil\"\nwhen = \"user_agent == 'evil'\"\naction = \"deny\"\n\
         [store]\nsweep_interval = \"7m\"\n",
    );
    let res = gw.admin(Method::POST, "/reload").send().await;
    assert_eq!(res.status, 200, "{}", res.text());
    let data = &res.json()["data"];
    for s in ["server.trusted_proxies, server.max_body_bytes", "routes", "risk"] {
        assert!(data["applied"].as_array().is_some_and(|a| a.iter().any(|x| x == s)), "{s} not applied: {data}");
    }
    assert_eq!(data["restartRequired"], json!(["store"]), "a store change waits for a restart: {data}");

    // The same connection and sessions carry on.
    assert_eq!(on_connection(&mut conn, "/api/articles", &alice.jwt).await, 200);
    // Limits: the auth-route body cap is now 2 KiB.
    let res = gw.post("/api/auth/local").json(big_login).send().await;
    assert_eq!((res.status.as_u16(), res.reason().as_deref()), (413, Some("body_too_large")));
    // Routes: the new logout spelling ends the session before the backend (which does not know it) answers.
    gw.post("/api/custom/signout").bearer(&bob.jwt).send().await;
    assert_eq!(gw.get("/api/articles").bearer(&bob.jwt).send().await.reason().as_deref(), Some("session_terminated"));
    // Rules: the new deny rule refuses a matching login.
    let res = gw
        .post("/api/auth/local")
        .header("user-agent", "evil")
        .json(json!({"identifier": "alice", "password": PASSWORD}))
        .send()
        .await;
    assert_eq!((res.status.as_u16(), res.reason().as_deref()), (403, Some("risk_denied")));
    let settings = gw.admin(Method::GET, "/magic-sessionmanager/settings").send().await.json();
    assert!(
        settings["data"]["effective"].as_str().is_some_and(|t| !t.contains("7m")),
        "restart-only values stay as running"
    );

    // A broken file: every error reported, nothing changes.
    let good = std::fs::read_to_string(gw.config_path()).expect("read");
    std::fs::write(gw.config_path(), format!("bogus = 1\n{good}")).expect("write");
    let text = std::fs::read_to_string(gw.config_path())
        .expect("read")
        .replace("max_body_bytes = 2048", "max_body_bytes = \"big\"");
    std::fs::write(gw.config_path(), text).expect("write");
    let res = gw.admin(Method::POST, "/reload").send().await;
    assert_eq!(res.status, 400);
    let body = res.json();
    assert_eq!(body["error"]["reason"], "invalid_config");
    let errors = body["error"]["errors"].to_string();
    assert!(
        errors.contains("bogus: unknown key") && errors.contains("server.max_body_bytes: invalid type"),
        "{errors}"
    );
    let res = gw
        .post("/api/auth/local")
        .json(json!({"identifier": "carol", "password": PASSWORD, "pad": "x".repeat(3000)}))
        .send()
        .await;
    assert_eq!(res.status, 413, "the previous configuration stays in force");
    assert_eq!(on_connection(&mut conn, "/api/articles", &alice.jwt).await, 200);

    audited(&gw, "config_reload", |events| {
        let results: Vec<&str> = events.iter().filter_map(|e| e["details"]["result"].as_str()).collect();
        results.contains(&"applied") && results.contains(&"refused")
    })
    .await;
}
