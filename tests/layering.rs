//! Pins the module layering (README, "Architecture"): every `crate::` reference points down the
//! order below, so there is no import cycle and nothing below the wiring layer sees `state`; and
//! each outside dependency is named by exactly one module.
//!
//! The order is total (a module may use only modules listed before it), which is stricter than
//! "layers point down" and is what makes cycles impossible. Read from source text: `use` lines
//! and paths in code, with comments removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first: (layer, top-level module).
const ORDER: &[(&str, &str)] = &[
    ("L0", "routes"),
    ("L0", "clock"),
    ("L0", "sync"),
    ("L0", "retry"),
    ("L0", "device"),
    ("L0", "config"),
    ("L0", "error"),
    ("L0", "metrics"),
    ("L0", "telemetry"),
    ("L1", "geo"),
    ("L1", "risk"),
    ("L1", "store"),
    ("L1", "audit"),
    ("L1", "backend"),
    ("L1", "alerts"),
    ("L2", "session"),
    ("L3", "cluster"),
    ("L4", "state"),
    ("L5", "startup"),
    ("L5", "reload"),
    ("L5", "proxy"),
    ("L5", "admin"),
    ("L5", "lib"),
    ("L6", "cli"),
];

/// Outside crates and the one file (or folder) allowed to name each.
const OWNERS: &[(&str, &str)] = &[
    ("sled", "store/sled.rs"),
    ("postcard", "store/codec.rs"),
    ("redis", "cluster/redis.rs"),
    ("maxminddb", "geo/mod.rs"),
    ("cel", "risk/rules.rs"),
    ("lettre", "alerts/channels.rs"),
    ("rustls", "backend/tls.rs"),
    ("hyper_rustls", "backend/tls.rs"),
    ("backon", "retry.rs"),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Source without `//` comments (doc comments name modules freely) and without string
/// literals that might contain `::`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("source is readable");
    text.lines()
        .map(|l| {
            let l = match l.find("//") {
                Some(i) if !l[..i].contains('"') => &l[..i],
                _ => l,
            };
            l.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code refers to through `crate::`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(at) = code[i..].find("crate::") {
        let start = i + at + "crate::".len();
        i = start;
        if code[start..].starts_with('{') {
            // `use crate::{a, b::c, d::{e}}`: the names at depth one.
            let mut depth = 0;
            let mut cur = String::new();
            for &b in &bytes[start + 1..] {
                match b {
                    b'{' => depth += 1,
                    b'}' if depth == 0 => break,
                    b'}' => depth -= 1,
                    b',' if depth == 0 => {
                        out.insert(cur.trim().split("::").next().unwrap_or("").to_string());
                        cur.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    cur.push(b as char);
                }
            }
            out.insert(cur.trim().split("::").next().unwrap_or("").to_string());
        } else {
            let name: String = code[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
    }
    out.remove("");
    out
}

/// Every source file: its path below `src/` and its code (comments removed).
fn sources() -> Vec<(PathBuf, String)> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    all.iter().map(|p| (p.strip_prefix(src()).expect("under src").to_path_buf(), code(p))).collect()
}

/// The top-level module a file belongs to (`lib` for `lib.rs`).
fn top(rel: &Path) -> String {
    let first = rel.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or("");
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn every_crate_reference_points_down_the_layer_order() {
    let rank: BTreeMap<&str, usize> = ORDER.iter().enumerate().map(|(i, (_, m))| (*m, i)).collect();
    let mut wrong = Vec::new();
    for (rel, code) in sources() {
        let rel = rel.as_path();
        if rel == Path::new("main.rs") {
            continue; // The binary: above everything.
        }
        let me = top(rel);
        let Some(&mine) = rank.get(me.as_str()) else {
            wrong.push(format!("{}: module `{me}` is not in the layer order", rel.display()));
            continue;
        };
        for used in crate_refs(&code) {
            if used == me {
                continue;
            }
            match rank.get(used.as_str()) {
                Some(&r) if r < mine => {}
                Some(_) => wrong.push(format!(
                    "{} ({} {me}) uses `{used}` ({}): arrows must point down",
                    rel.display(),
                    ORDER[mine].0,
                    ORDER[rank[used.as_str()]].0
                )),
                None => wrong.push(format!("{}: uses unknown module `{used}`", rel.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "layering violations:\n{}", wrong.join("\n"));
}

#[test]
fn each_outside_dependency_is_named_by_one_module() {
    let all = sources();
    let mut wrong = Vec::new();
    for (krate, owner) in OWNERS {
        let mut users = BTreeSet::new();
        for (rel, c) in &all {
            let named = c.match_indices(&format!("{krate}::")).any(|(i, _)| {
                // Not a suffix of a longer path segment (`tokio_rustls::` is not `rustls::`).
                i == 0
                    || !c.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && c.as_bytes()[i - 1] != b'_'
                        && c.as_bytes()[i - 1] != b':'
            });
            if named {
                users.insert(rel.display().to_string());
            }
        }
        let expected: BTreeSet<String> = [owner.to_string()].into();
        if users != expected {
            wrong.push(format!("`{krate}` should be named only in {owner}; named in {users:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every std lock is taken through `src/sync.rs` (the one, fail-closed, policy for a poisoned
/// lock); tokio's async locks (`.lock().await`) are not std locks.
#[test]
fn std_locks_are_taken_through_the_one_policy() {
    let mut wrong = Vec::new();
    for (rel, code) in sources() {
        let rel = rel.display().to_string();
        if rel == "sync.rs" {
            continue;
        }
        for (i, line) in code.lines().enumerate() {
            let raw = [".lock()", ".read().", ".write()."]
                .iter()
                .any(|p| line.match_indices(p).any(|(at, _)| !line[at..].starts_with(".lock().await")));
            if raw {
                wrong.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "take std locks with crate::sync::{{lock, read, write}}:\n{}", wrong.join("\n"));
}

/// No state lives in process statics: every gateway in one process (the test binaries run many)
/// has its own. Constants (`static` tables of header names) are fine.
#[test]
fn no_state_in_process_statics() {
    let mut wrong = Vec::new();
    for (rel, code) in sources() {
        for line in code.lines() {
            let t = line.trim_start();
            let is_static =
                t.starts_with("static ") || t.starts_with("pub static ") || t.starts_with("pub(crate) static ");
            let stateful = ["Mutex", "RwLock", "Atomic", "OnceLock", "OnceCell", "Cell<", "LazyLock", "Notify"]
                .iter()
                .any(|s| t.contains(s));
            if is_static && stateful {
                wrong.push(format!("{}: {}", rel.display(), t));
            }
        }
    }
    assert!(wrong.is_empty(), "process statics holding state:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_inline_references() {
    let refs = crate_refs("use crate::{a::{b, c}, d};\nfn f() { crate::e::g(); }\n");
    assert_eq!(refs, ["a", "d", "e"].iter().map(|s| s.to_string()).collect());
}
