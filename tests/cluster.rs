//! Several gateway instances sharing sessions through a real `redis-server`: replication of
//! logins, terminations, blocks and last-seen; Redis outages; catch-up; snapshots for instances
//! that fell behind a trimmed stream and for new, empty ones.

mod support;

use http::Method;
use serde_json::json;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::redis::RedisServer;
use support::{Gateway, Login, MockStrapi};

const ADMIN: &str = "/magic-sessionmanager";
const API: &str = "/api/magic-sessionmanager";

/// One Redis, one backend (with extra users) and one shared key.
struct Setup {
    redis: RedisServer,
    backend: MockStrapi,
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Setup {
    async fn new() -> Setup {
        let redis = RedisServer::start().await;
        let backend = MockStrapi::start().await;
        backend.add_users((0..50).map(|i| format!("user{i}")).chain(["mallory".into(), "late".into()]));
        let dir = tempfile::tempdir().expect("tempdir");
        let key = shared_key(dir.path());
        Setup { redis, backend, dir, key }
    }
}

/// One encryption key for all instances (a cluster requires it).
fn shared_key(dir: &Path) -> PathBuf {
    let p = dir.join("cluster.key");
    std::fs::write(&p, sessiongate::session::crypto::generate_key()).expect("write key");
    p
}

/// Config of one cluster member; `cluster_extra` goes into the `[cluster]` table.
fn member(redis: &RedisServer, key: &Path, name: &str, cluster_extra: &str) -> String {
    format!(
        "[sessions]\nencryption_key_file = \"{}\"\nlast_seen_interval = \"50ms\"\n\
         [cluster]\nredis_url = \"{}\"\nnode_name = \"{name}\"\nheartbeat_interval = \"200ms\"\n\
         touch_interval = \"50ms\"\nsnapshot_timeout = \"3s\"\nconnect_timeout = \"500ms\"\n\
         command_timeout = \"1s\"\n{cluster_extra}\n",
        key.display(),
        redis.url()
    )
}

/// Polls an async condition every few milliseconds for at most `secs`.
async fn until<F: Future<Output = bool>>(secs: u64, f: impl FnMut() -> F) -> bool {
    poll_every(Duration::from_millis(5), secs, f).await
}

async fn poll_every<F: Future<Output = bool>>(every: Duration, secs: u64, mut f: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(every).await;
    }
    f().await
}

/// The gateway itself refuses the token as belonging to an ended session.
async fn refuses(gw: &Gateway, jwt: &str) -> bool {
    gw.get("/api/articles").bearer(jwt).send().await.reason().as_deref() == Some("session_terminated")
}

async fn sid_of(gw: &Gateway, jwt: &str) -> String {
    gw.get(&format!("{API}/current-session")).bearer(jwt).send().await.json()["data"]["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string()
}

/// The instance holds the session (by `sid`) in its replica.
async fn knows(gw: &Gateway, sid: &str) -> bool {
    gw.state().sessions.find(sid).await.expect("store").is_some()
}

/// A session of the instance by `sid`.
async fn find(gw: &Gateway, sid: &str) -> Option<sessiongate::session::Live> {
    gw.state().sessions.find(sid).await.expect("store")
}

fn cluster_status(gw: &Gateway) -> sessiongate::cluster::Status {
    gw.state().cluster.as_ref().expect("cluster configured").status()
}

fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = gw.state().metrics.render();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn terminate(gw: &Gateway, sid: &str) {
    let res = gw.admin(Method::POST, &format!("{ADMIN}/sessions/{sid}/terminate")).send().await;
    assert_eq!(res.status, 200, "terminate {sid}: {}", res.text());
}

fn logs() {
    let _ = tracing_subscriber::fmt().with_env_filter("sessiongate=info").with_test_writer().try_init();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// Several worker threads, so the instances and the probing client do not take turns on one
// thread (that would inflate the measured propagation time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_agree_on_sessions_revocations_blocks_and_last_seen() {
    logs();
    let Setup { redis, backend, dir: _dir, key } = Setup::new().await;
    let a = Gateway::start(&backend.url(), &member(&redis, &key, "A", "")).await;
    let b = Gateway::start(&backend.url(), &member(&redis, &key, "B", "")).await;
    let c = Gateway::start(&backend.url(), &member(&redis, &key, "C", "")).await;
    let slots: std::collections::HashSet<u64> = [&a, &b, &c].iter().map(|g| cluster_status(g).slot).collect();
    assert_eq!(slots.len(), 3, "each instance gets its own id class");
    assert!(until(5, || async { [&a, &b, &c].iter().all(|g| cluster_status(g).synced) }).await);

    // A login through A is a session on B: the user API there lists it.
    let s = a.login("alice").await;
    let mine = || async {
        let r = b.get(&format!("{API}/my-sessions")).bearer(&s.jwt).send().await;
        r.status == 200 && r.json()["meta"] == json!({"count": 1, "active": 1})
    };
    assert!(until(5, mine).await, "B lists the session created on A");
    // Sessions created concurrently on different instances never share an id.
    let logins = [a.login("carol").await, b.login("carol").await, c.login("carol").await];
    let mut ids = Vec::new();
    for (gw, l) in [&a, &b, &c].iter().zip(&logins) {
        ids.push(find(gw, &sid_of(gw, &l.jwt).await).await.expect("own session").id);
    }
    assert_eq!(ids.iter().map(|i| i % 1024).collect::<std::collections::HashSet<_>>().len(), 3, "{ids:?}");

    // Terminations on C: A and B refuse the tokens. Measure how long that takes after C's 200.
    let mut delays = Vec::new();
    for i in 0..40 {
        let l = a.login(&format!("user{}", i % 7)).await;
        let sid = sid_of(&a, &l.jwt).await;
        assert!(
            until(5, || async { knows(&b, &sid).await && knows(&c, &sid).await }).await,
            "session {sid} replicated"
        );
        terminate(&c, &sid).await;
        let acked = Instant::now();
        // Polled without pause (each probe is an HTTP round trip through A and B).
        let both = || async { refuses(&a, &l.jwt).await && refuses(&b, &l.jwt).await };
        assert!(poll_every(Duration::ZERO, 5, both).await);
        delays.push(acked.elapsed());
        if i == 0 {
            let r = a.post("/api/auth/refresh").json(json!({"refreshToken": l.refresh})).send().await;
            assert_eq!(r.status, 401, "the refresh token of a session ended elsewhere is refused too");
            assert_eq!(r.reason().as_deref(), Some("session_terminated"));
        }
    }
    delays.sort();
    let (p50, p99, max) = (percentile(&delays, 0.5), percentile(&delays, 0.99), delays[delays.len() - 1]);
    println!(
        "cross-instance revocation (terminate on C → refused on A and B, {} runs, measured through HTTP): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    assert!(max < Duration::from_secs(2), "propagation stays bounded: {max:?}");

    // A block on C refuses logins on A; an unblock on B lifts it everywhere.
    let m = a.login("mallory").await;
    // C refuses to block a user it has seen no session of: wait for the login to replicate.
    let sessions_on_c = format!("{ADMIN}/users/{}/sessions", m.user_id);
    assert!(
        until(5, || async { c.admin(Method::GET, &sessions_on_c).send().await.json()["meta"]["count"] == 1 }).await
    );
    let res = c.admin(Method::POST, &format!("{ADMIN}/user/{}/block", m.user_id)).send().await;
    assert_eq!(res.status, 200);
    assert!(until(5, || async { refuses(&a, &m.jwt).await }).await, "the blocked user's session ends everywhere");
    let attempt = || async {
        a.post("/api/auth/local").json(json!({"identifier": "mallory", "password": support::PASSWORD})).send().await
    };
    assert!(until(5, || async { attempt().await.reason().as_deref() == Some("user_blocked") }).await);
    assert_eq!(b.admin(Method::POST, &format!("{ADMIN}/user/{}/unblock", m.user_id)).send().await.status, 200);
    assert!(until(5, || async { attempt().await.status == 200 }).await, "unblocked on B, accepted on A");

    // Activity served by B moves lastActive on A.
    let l = a.login("bob").await;
    let sid = sid_of(&a, &l.jwt).await;
    assert!(until(5, || async { knows(&b, &sid).await }).await);
    let on_a = find(&a, &sid).await.expect("on A");
    let created = a.state().sessions.last_active(&on_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let used_on_b = sessiongate::clock::now_ms();
    assert_eq!(b.get("/api/articles").bearer(&l.jwt).send().await.status, 200);
    assert!(
        until(5, || async { a.state().sessions.last_active(&on_a) >= used_on_b }).await,
        "last-seen from B reaches A (created at {created}, used on B at {used_on_b})"
    );
    let listed = a.get(&format!("{API}/my-sessions")).bearer(&l.jwt).send().await.json();
    let last = listed["data"][0]["lastActive"].as_str().expect("lastActive").to_string();
    let last_ms =
        humantime::parse_rfc3339(&last).expect("iso").duration_since(std::time::UNIX_EPOCH).expect("after epoch");
    assert!(last_ms.as_millis() as i64 >= used_on_b, "user API on A shows B's activity: {last}");

    // The admin API reports the cluster; metrics count what was replicated.
    let v = a.admin(Method::GET, &format!("{ADMIN}/cluster")).send().await.json();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["data"]["connected"], true);
    assert_eq!(v["data"]["peers"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(metric(&a, "sessiongate_cluster_events_total{direction=\"applied\",kind=\"ended\"}") >= 40.0);
    assert!(metric(&c, "sessiongate_cluster_events_total{direction=\"published\",kind=\"ended\"}") >= 40.0);
    assert_eq!(metric(&a, "sessiongate_cluster_connected"), 1.0);

    // The CLI shows the same, as a table.
    let url = format!("http://{}", a.admin_addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .args(["cluster", "--admin-url", &url])
            .env("SESSIONGATE_ADMIN_TOKEN", support::ADMIN_TOKEN)
            .output()
            .expect("run the binary")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("node A") && text.contains("connected, synced"), "{text}");
    assert!(text.contains("PEER") && text.contains('B') && text.contains('C'), "{text}");
}

#[tokio::test]
async fn redis_outage_keeps_enforcing_locally_and_catches_up() {
    logs();
    let Setup { mut redis, backend, dir: _dir, key } = Setup::new().await;
    let a = Gateway::start(&backend.url(), &member(&redis, &key, "A", "")).await;
    let b = Gateway::start(&backend.url(), &member(&redis, &key, "B", "ready_when_isolated = false")).await;
    let s = a.login("alice").await;
    let sid = sid_of(&a, &s.jwt).await;
    assert!(until(5, || async { knows(&b, &sid).await }).await);

    redis.kill();
    terminate(&a, &sid).await;
    assert!(refuses(&a, &s.jwt).await, "the instance that ended the session enforces it at once");
    assert!(until(10, || async { !cluster_status(&a).connected && !cluster_status(&b).connected }).await);
    let ready_a = a.admin_anon(Method::GET, "/readyz").send().await;
    assert_eq!(ready_a.status, 200, "ready while isolated by default: {}", ready_a.text());
    assert_eq!(ready_a.json()["checks"]["cluster"], "isolated");
    assert_eq!(b.admin_anon(Method::GET, "/readyz").send().await.status, 503, "ready_when_isolated = false");
    assert_eq!(metric(&a, "sessiongate_cluster_connected"), 0.0);
    // B cannot know yet: it still forwards the token (the isolation is visible, not hidden).
    assert_eq!(b.get("/api/articles").bearer(&s.jwt).send().await.reason(), None);
    let s2 = a.login("bob").await;

    redis.restart().await;
    assert!(until(15, || async { refuses(&b, &s.jwt).await }).await, "B catches up after Redis returns");
    let sid2 = sid_of(&a, &s2.jwt).await;
    assert!(until(5, || async { knows(&b, &sid2).await }).await, "the login made during the outage reaches B");
    assert!(until(5, || async { cluster_status(&a).connected && cluster_status(&a).outbox_pending == 0 }).await);
    // B is ready again once both its publisher and its follower have reached Redis (the
    // publisher's next heartbeat): asynchronous, so waited for.
    assert!(
        until(10, || async { b.admin_anon(Method::GET, "/readyz").send().await.status == 200 }).await,
        "B ready again after Redis returns"
    );
    assert!(metric(&a, "sessiongate_cluster_publish_failures_total") >= 1.0);
}

#[tokio::test]
async fn a_redis_that_lost_acknowledged_writes_gets_the_state_again() {
    logs();
    let Setup { redis, backend, dir: _dir, key } = Setup::new().await;
    let a = Gateway::start(&backend.url(), &member(&redis, &key, "A", "")).await;
    let mut b = Gateway::start(&backend.url(), &member(&redis, &key, "B", "")).await;
    assert!(until(5, || async { cluster_status(&a).synced && cluster_status(&b).synced }).await);
    b.stop().await;
    a.login("alice").await;
    // The session's id from the admin list: a request with its token would touch it, and the
    // touch's event would follow the login's (the one this test makes vanish).
    let list = a.admin(Method::GET, "/magic-sessionmanager/sessions?user=1").send().await.json();
    let sid = list["data"][0]["sessionId"].as_str().expect("sessionId").to_string();
    // The login's event is published in the background after its 200: wait for it.
    assert!(until(5, || async { redis.cli(&["GET", "{sessiongate}:seq"]).parse::<u64>().is_ok() }).await);
    let seq: u64 = redis.cli(&["GET", "{sessiongate}:seq"]).parse().expect("seq");
    assert!(until(5, || async { cluster_status(&a).applied_seq == Some(seq) }).await);
    assert_eq!(seq, 1, "the login's event is the only one");
    // The login's event vanishes from Redis (as with `appendfsync everysec` and a crash).
    let last = redis.cli(&["XREVRANGE", "{sessiongate}:events", "+", "-", "COUNT", "1"]);
    let id = last.lines().next().expect("an entry").to_string();
    assert_eq!(redis.cli(&["XDEL", "{sessiongate}:events", &id]), "1");
    redis.cli(&["SET", "{sessiongate}:seq", &(seq - 1).to_string()]);
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    b.restart().await;
    assert!(until(10, || async { knows(&b, &sid).await }).await, "A noticed and published its state again");
}

/// Logs `n` sessions in through `gw`, a few at a time.
async fn many_logins(gw: &Gateway, n: usize) -> Vec<Login> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let batch = futures_util::future::join_all(chunk.iter().map(|i| {
            let name = format!("user{}", i % 50);
            async move { gw.login(&name).await }
        }))
        .await;
        out.extend(batch);
    }
    out
}

#[tokio::test]
async fn stopped_and_new_instances_converge_through_catch_up_and_snapshots() {
    logs();
    let Setup { redis, backend, dir: _dir, key } = Setup::new().await;
    let small = "stream_max_len = 100";
    let a = Gateway::start(&backend.url(), &member(&redis, &key, "A", small)).await;
    let mut b = Gateway::start(&backend.url(), &member(&redis, &key, "B", small)).await;
    assert!(until(5, || async { cluster_status(&a).synced && cluster_status(&b).synced }).await);

    // A short absence: B resumes from its stored position in the stream.
    b.stop().await;
    let few = many_logins(&a, 5).await;
    b.restart().await;
    assert!(until(10, || async { b.state().sessions.counts() == a.state().sessions.counts() }).await);
    assert!(metric(&b, "sessiongate_cluster_catchup_runs_total") >= 1.0);
    assert_eq!(metric(&b, "sessiongate_cluster_snapshot_loads_total"), 0.0);
    assert!(until(5, || async { b.get("/api/articles").bearer(&few[0].jwt).send().await.status == 200 }).await);

    // A long one: 1 000 changes while B is down, far more than the stream keeps.
    b.stop().await;
    let logins = many_logins(&a, 600).await;
    let mut ended = Vec::new();
    for l in logins.iter().take(400) {
        terminate(&a, &sid_of(&a, &l.jwt).await).await;
        ended.push(l.clone());
    }
    let xlen: usize = redis.cli(&["XLEN", "{sessiongate}:events"]).parse().expect("XLEN");
    assert!(xlen < 1000, "the stream was trimmed (XLEN {xlen})");
    let (total, active, _) = a.state().sessions.counts();
    assert_eq!((total, active), (605, 205));
    b.restart().await;
    assert!(
        until(20, || async { b.state().sessions.counts().0 == total && b.state().sessions.counts().1 == active }).await,
        "B converges: {:?} vs {:?}",
        b.state().sessions.counts(),
        a.state().sessions.counts()
    );
    // The snapshot's last chunk is counted after its sessions are applied: wait for it too.
    assert!(
        until(5, || async { metric(&b, "sessiongate_cluster_snapshot_loads_total{result=\"loaded\"}") >= 1.0 }).await
    );
    assert!(metric(&a, "sessiongate_cluster_snapshots_served_total") >= 1.0);
    for l in ended.iter().step_by(50) {
        assert!(refuses(&b, &l.jwt).await, "a session ended while B was down is refused by B");
    }
    assert_eq!(b.get("/api/articles").bearer(&logins[599].jwt).send().await.status, 200);

    // A new, empty instance bootstraps from a peer.
    let d = Gateway::start(&backend.url(), &member(&redis, &key, "D", small)).await;
    assert!(
        until(20, || async { d.state().sessions.counts().0 == total && d.state().sessions.counts().1 == active }).await,
        "D bootstraps: {:?}",
        d.state().sessions.counts()
    );
    assert!(refuses(&d, &ended[0].jwt).await);
    // Changes after the bootstrap still flow to every instance.
    let late = d.login("late").await;
    let sid = sid_of(&d, &late.jwt).await;
    assert!(until(5, || async { knows(&a, &sid).await && knows(&b, &sid).await }).await);
    terminate(&b, &sid).await;
    assert!(until(5, || async { refuses(&a, &late.jwt).await && refuses(&d, &late.jwt).await }).await);
}

#[tokio::test]
async fn tls_and_password_from_a_secret_file_and_an_unreachable_redis_at_startup() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = support::self_signed(dir.path());
    let redis = RedisServer::start_tls(&cert, &key, "s3cret-pass").await;
    let backend = MockStrapi::start().await;
    let shared = shared_key(dir.path());
    let url_file = dir.path().join("redis.url");
    std::fs::write(&url_file, format!("rediss://:s3cret-pass@localhost:{}/0\n", redis.port)).expect("url file");
    let secure = |name: &str, ca: &Path| {
        format!(
            "[sessions]\nencryption_key_file = \"{}\"\n[cluster]\nredis_url_file = \"{}\"\ntls_ca_file = \"{}\"\n\
             node_name = \"{name}\"\nheartbeat_interval = \"200ms\"\nconnect_timeout = \"500ms\"\ncommand_timeout = \"1s\"\n",
            shared.display(),
            url_file.display(),
            ca.display()
        )
    };
    let a = Gateway::start(&backend.url(), &secure("A", &cert)).await;
    let b = Gateway::start(&backend.url(), &secure("B", &cert)).await;
    let s = a.login("alice").await;
    let sid = sid_of(&a, &s.jwt).await;
    assert!(until(5, || async { knows(&b, &sid).await }).await, "replication over TLS with a password");
    let described = sessiongate::config::describe(&a.state().cfg());
    assert!(described.contains("from file") && !described.contains("s3cret-pass"), "{described}");

    // A certificate the gateway does not trust: no slot can be allocated, startup says why.
    let (other, _) = support::self_signed(&mkdir(dir.path().join("other")));
    let cfg = sessiongate::startup::parse_config(&support::config_text(
        &backend.url(),
        &mkdir(dir.path().join("c")),
        &secure("C", &other),
    ))
    .expect("config");
    let listeners = sessiongate::Listeners::bind(&cfg).expect("bind");
    let err = sessiongate::start(cfg, listeners).await.err().expect("refused");
    assert!(err.to_string().contains("node slot"), "{err}");
    assert!(!err.to_string().contains("s3cret-pass"), "{err}");

    // With a fixed slot it starts anyway — isolated, enforcing locally, and saying why.
    let d = Gateway::start(&backend.url(), &format!("{}node_slot = 77\n", secure("D", &other))).await;
    assert!(until(5, || async { cluster_status(&d).last_error.is_some() }).await);
    assert!(!cluster_status(&d).connected);
    let l = d.login("bob").await;
    assert_eq!(d.get("/api/articles").bearer(&l.jwt).send().await.status, 200);
    let sid = sid_of(&d, &l.jwt).await;
    terminate(&d, &sid).await;
    assert!(refuses(&d, &l.jwt).await);
    assert!(!knows(&a, &sid).await, "nothing crossed an untrusted connection");
}

#[tokio::test]
async fn sentinel_names_the_master() {
    logs();
    let master = RedisServer::start().await;
    let sentinel = RedisServer::start_sentinel(master.port).await;
    let backend = MockStrapi::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = shared_key(dir.path());
    let via_sentinel = |name: &str| {
        format!(
            "[sessions]\nencryption_key_file = \"{}\"\n[cluster]\nsentinels = [\"redis://127.0.0.1:{}\"]\n\
             sentinel_master = \"mymaster\"\nnode_name = \"{name}\"\nheartbeat_interval = \"200ms\"\n",
            key.display(),
            sentinel.port
        )
    };
    let a = Gateway::start(&backend.url(), &via_sentinel("A")).await;
    let b = Gateway::start(&backend.url(), &via_sentinel("B")).await;
    let s = a.login("alice").await;
    let sid = sid_of(&a, &s.jwt).await;
    assert!(until(5, || async { knows(&b, &sid).await }).await, "replication through the master Sentinel named");
    let xlen: usize = master.cli(&["XLEN", "{sessiongate}:events"]).parse().expect("XLEN");
    assert!(xlen >= 1, "the events are on the master");
}

#[tokio::test]
async fn acl_user_and_database_number() {
    logs();
    let Setup { redis, backend, dir, key } = Setup::new().await;
    assert_eq!(redis.cli(&["ACL", "SETUSER", "gw", "on", ">gw-pass-123", "~*", "&*", "+@all"]), "OK");
    let url_file = dir.path().join("redis.url");
    std::fs::write(&url_file, format!("redis://gw:gw-pass-123@127.0.0.1:{}/3", redis.port)).expect("url file");
    let cfg = |name: &str| {
        format!(
            "[sessions]\nencryption_key_file = \"{}\"\n[cluster]\nredis_url_file = \"{}\"\nnode_name = \"{name}\"\n",
            key.display(),
            url_file.display()
        )
    };
    let a = Gateway::start(&backend.url(), &cfg("A")).await;
    let b = Gateway::start(&backend.url(), &cfg("B")).await;
    let s = a.login("alice").await;
    let sid = sid_of(&a, &s.jwt).await;
    assert!(until(5, || async { knows(&b, &sid).await }).await);
    assert!(redis.cli(&["-n", "3", "XLEN", "{sessiongate}:events"]).parse::<u64>().expect("XLEN") >= 1);
    assert_eq!(redis.cli(&["-n", "0", "EXISTS", "{sessiongate}:events"]), "0", "nothing in the default database");
}

fn mkdir(p: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&p).expect("mkdir");
    p
}

/// Redis chaos under traffic: paused (SIGSTOP), killed and restarted while two instances serve
/// requests, log users in and end sessions. No request waits on Redis beyond the configured
/// command timeout (in fact none waits on it at all), and both instances end up agreeing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_killed_and_restarted_during_traffic_blocks_no_request_and_instances_converge() {
    logs();
    let Setup { mut redis, backend, dir: _dir, key } = Setup::new().await;
    let command_timeout = Duration::from_secs(1);
    let a = std::sync::Arc::new(Gateway::start(&backend.url(), &member(&redis, &key, "A", "")).await);
    let b = std::sync::Arc::new(Gateway::start(&backend.url(), &member(&redis, &key, "B", "")).await);
    let mut live: Vec<Login> = Vec::new();
    for i in 0..12 {
        live.push(a.login(&format!("user{i}")).await);
    }
    assert!(until(5, || async { b.state().sessions.counts().0 == 12 }).await);

    // Traffic on both instances until told to stop; the slowest request is kept.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tokens: Vec<String> = live.iter().map(|l| l.jwt.clone()).collect();
    let mut traffic = Vec::new();
    for gw in [a.clone(), b.clone()] {
        let (stop, tokens) = (stop.clone(), tokens.clone());
        traffic.push(tokio::spawn(async move {
            let (mut slowest, mut n) = (Duration::ZERO, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = Instant::now();
                gw.get("/api/articles").bearer(&tokens[n as usize % tokens.len()]).send().await;
                slowest = slowest.max(t0.elapsed());
                n += 1;
            }
            (slowest, n)
        }));
    }
    let timed = |d: Duration, what: &str| assert!(d < command_timeout, "{what} took {d:?} while Redis was down");
    let mut ended: Vec<String> = Vec::new();
    // Session ids of logins made during the chaos (read on the instance that made them).
    let mut new_logins: Vec<String> = Vec::new();

    // 1. Paused: connections stay open, nothing answers.
    redis.pause();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for l in &live[0..3] {
        let t0 = Instant::now();
        terminate(&b, &sid_of(&b, &l.jwt).await).await;
        timed(t0.elapsed(), "a termination");
        ended.push(l.jwt.clone());
    }
    let t0 = Instant::now();
    let l = a.login("user20").await;
    timed(t0.elapsed(), "a login");
    new_logins.push(sid_of(&a, &l.jwt).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.resume();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. Killed, with changes on both sides, then restarted.
    redis.kill();
    for l in &live[3..6] {
        let t0 = Instant::now();
        terminate(&a, &sid_of(&a, &l.jwt).await).await;
        timed(t0.elapsed(), "a termination");
        ended.push(l.jwt.clone());
    }
    let t0 = Instant::now();
    let l = b.login("user21").await;
    timed(t0.elapsed(), "a login");
    new_logins.push(sid_of(&b, &l.jwt).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.restart().await;

    // 3. A short pause again right after the restart.
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.pause();
    terminate(&b, &sid_of(&b, &live[6].jwt).await).await;
    ended.push(live[6].jwt.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.resume();

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in traffic {
        let (slowest, n) = t.await.expect("join");
        assert!(n > 20, "traffic ran ({n} requests)");
        timed(slowest, "a proxied request");
    }
    // Converged: every ending refused everywhere, every login known everywhere.
    for jwt in &ended {
        for gw in [&a, &b] {
            assert!(until(20, || async { refuses(gw, jwt).await }).await, "an ending did not reach every instance");
        }
    }
    for sid in &new_logins {
        assert!(
            until(10, || async { knows(&a, sid).await && knows(&b, sid).await }).await,
            "a login did not reach every instance"
        );
    }
    assert!(
        until(10, || async { a.state().sessions.counts() == b.state().sessions.counts() }).await,
        "counts differ: {:?} vs {:?}",
        a.state().sessions.counts(),
        b.state().sessions.counts()
    );
    for l in &live[7..] {
        assert_eq!(b.get("/api/articles").bearer(&l.jwt).send().await.status, 200, "untouched sessions stay live");
    }
}

/// A WebSocket opened on one instance closes within a second of a logout on another: the
/// replicated ending marks that instance's index like a local one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_on_one_instance_closes_when_the_session_ends_on_another() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Setup::new().await;
    let a = Gateway::start(&s.backend.url(), &member(&s.redis, &s.key, "a", "")).await;
    let b = Gateway::start(&s.backend.url(), &member(&s.redis, &s.key, "b", "")).await;
    let alice = a.login("alice").await;
    let sid = sid_of(&a, &alice.jwt).await;
    assert!(until(5, || knows(&b, &sid)).await, "the session reaches b");
    // The handshake must name the session on b: wait until b tracks the token itself (under
    // load, b has been seen to list the session a moment before its tokens answer).
    let tracked = || async { b.get(&format!("{API}/current-session")).bearer(&alice.jwt).send().await.status == 200 };
    assert!(until(5, tracked).await, "b tracks the token");
    let mut ws = tokio::net::TcpStream::connect(b.addr).await.expect("connect");
    let handshake = format!(
        "GET /ws/echo HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        alice.jwt
    );
    ws.write_all(handshake.as_bytes()).await.expect("write");
    let mut head = vec![0u8; 512];
    let n = ws.read(&mut head).await.expect("head");
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head[..n]));
    let t0 = Instant::now();
    assert_eq!(a.post(&format!("{API}/logout")).bearer(&alice.jwt).send().await.status, 200);
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match ws.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "b's tunnel still open a second after the logout on a");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(metric(&b, "sessiongate_exchanges_closed_total{kind=\"websocket\"}"), 1.0);
}
