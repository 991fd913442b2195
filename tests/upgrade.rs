//! A data directory written by the release before the compact encoding (JSON records; the
//! fixture `tests/fixtures/v1-data.tar.gz` was made by `tests/fixtures/make-v1-fixture.rs.txt`
//! built against that release, commit 64198a1) is upgraded in place at the first start, and
//! everything in it holds afterwards: live sessions stay live, an ended one stays refused, a
//! rotated-out refresh token is still reuse, blocks and queued revocations are kept, and the
//! sessions are found by `sid` and `documentId`.

mod support;

use http::Method;
use sessiongate::session::{tokens::hash, Check};
use support::{strapi::MockStrapi, Gateway};

const ADMIN: &str = "/magic-sessionmanager";

async fn upgraded(backend: &MockStrapi) -> Gateway {
    let mut gw = Gateway::with_defaults(backend).await;
    gw.stop().await;
    let dir = gw.data_dir();
    std::fs::remove_dir_all(&dir).expect("clear the data directory");
    let parent = dir.parent().expect("parent");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-data.tar.gz");
    let out = std::process::Command::new("tar").arg("xzf").arg(fixture).arg("-C").arg(parent).output().expect("tar");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(parent.join("data"), &dir).expect("fixture in place");
    gw.restart().await;
    gw
}

fn assert_state(gw: &Gateway) {
    let s = &gw.state().sessions;
    let now = sessiongate::clock::now_ms();
    assert_eq!(s.counts(), (3, 2, 5), "sessions, active, tokens");
    assert!(matches!(s.check(&hash("fixture-access-1"), now), Check::Live(l, _) if l.id == 1));
    assert!(matches!(s.check(&hash("fixture-refresh-3"), now), Check::Live(l, _) if l.id == 3));
    assert!(matches!(s.check(&hash("fixture-access-2"), now), Check::Ended(l) if l.id == 2));
    assert!(matches!(s.check(&hash("fixture-refresh-3-old"), now), Check::Reuse(l) if l.id == 3));
    assert!(s.is_blocked("mallory"));
    let mut alice = s.user_session_ids("alice");
    alice.sort_unstable();
    assert_eq!(alice, vec![1, 3]);
    assert!(matches!(s.by_alias("bs-alice-1"), Some(l) if l.id == 1));
}

#[tokio::test]
async fn a_data_directory_of_the_json_release_is_upgraded_and_keeps_every_guarantee() {
    let backend = MockStrapi::start().await;
    let mut gw = upgraded(&backend).await;
    assert_state(&gw);

    // Through the gateway: the ended session's token is refused before the backend sees it.
    let res = gw.get("/api/articles").bearer("fixture-access-2").send().await;
    assert_eq!((res.status.as_u16(), res.reason().as_deref()), (401, Some("session_terminated")));

    // The admin finds sessions by sid and documentId (the new key index was filled), with
    // every field of the old record and the last-seen time of the old `touches` tree.
    let sid = format!("sess_{:032x}", 1);
    let v = gw.admin(Method::GET, &format!("{ADMIN}/sessions/{sid}")).send().await.json();
    assert_eq!(v["data"]["sessionId"], sid.as_str(), "{v}");
    assert_eq!(v["data"]["ipAddress"], "203.0.113.7", "{v}");
    assert_eq!(v["data"]["user"]["email"], "alice@example.com", "{v}");
    assert_eq!(v["data"]["tokens"]["backendSessionIds"][0], "bs-alice-1", "{v}");
    let by_doc = gw.admin(Method::GET, &format!("{ADMIN}/sessions/doc{:021}", 2)).send().await.json();
    assert_eq!(by_doc["data"]["endReason"], "logout", "{by_doc}");
    // The queued revocation survived with its attempts: the worker takes it up (and, as the
    // fixture holds no sealed tokens, gives it up, saying how many attempts it had).
    let mut attempts = by_doc["data"]["backendRevocation"]["attempts"].clone();
    for _ in 0..100 {
        if attempts == 2 {
            break;
        }
        let audit = gw.admin(Method::GET, &format!("{ADMIN}/audit?type=backend_revoke_failed")).send().await.json();
        attempts = audit["data"][0]["details"]["attempts"].clone();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(attempts, 2, "the queued revocation survived: {by_doc}");
    let listed = gw.admin(Method::GET, &format!("{ADMIN}/sessions?user=alice&sort=id")).send().await.json();
    assert_eq!(listed["meta"]["pagination"]["total"], 2, "{listed}");
    assert_eq!(listed["data"][0]["lastActive"], sessiongate::clock::iso(1_764_000_009_000), "{listed}");

    // A second start finds the directory upgraded (nothing left to convert) and the same state.
    gw.restart().await;
    assert_state(&gw);
}
