//! Property tests (proptest, stable toolchain) of the parsers that see untrusted input: the
//! configuration parser, token and cookie extraction, JWT claim reading, login-response
//! extraction, forwarding headers, path normalisation and route matching, the import row
//! parser and CSV export quoting. Ten properties of `CASES` generated inputs each.

use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use sessiongate::backend::fields;
use sessiongate::proxy::credentials::{self, Cookies};
use sessiongate::proxy::headers;
use sessiongate::routes::{normalize_path, RouteClass, RouteRule, Router};
use sessiongate::session::{maintenance, tokens, Issued};
use std::net::IpAddr;

/// Cases per property: 10 000 each, about half a second per property in a debug build.
const CASES: u32 = 10_000;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// Text that mixes TOML-ish structure with arbitrary characters.
fn tomlish() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("[server]\n".to_string()),
        Just("[upstream]\n".to_string()),
        Just("[sessions]\n".to_string()),
        Just("[[risk.rules]]\n".to_string()),
        Just("url = \"http://127.0.0.1:1\"\n".to_string()),
        Just("listen = \"127.0.0.1:0\"\n".to_string()),
        Just("preset = \"strapi-v5\"\n".to_string()),
        Just("max_body_bytes = 0\n".to_string()),
        Just("idle_policy = \"x\"\n".to_string()),
        Just("when = \"score >\"\n".to_string()),
        "[a-z_]{1,12} = [0-9]{1,5}\n",
        "[a-z_]{1,12} = \"[^\"\\\\]{0,12}\"\n",
        any::<String>(),
    ];
    proptest::collection::vec(atom, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_config_parser_never_panics_and_every_error_names_a_key(text in tomlish()) {
        if let Err(e) = sessiongate::startup::parse_config(&text) {
            prop_assert!(!e.0.is_empty());
            for issue in &e.0 {
                prop_assert!(!issue.key.is_empty() && !issue.message.is_empty(), "{issue:?}");
            }
        }
    }

    #[test]
    fn normalized_paths_have_no_empty_dot_or_upper_case_segments(path in "(/|[a-zA-Z]|%2[eEfF]|%[0-9a-fA-F]{2}|\\.|\\\\|\\?|;){0,40}") {
        let n = normalize_path(&path);
        prop_assert!(n.starts_with('/'));
        prop_assert!(!n.contains("//"), "{n}");
        prop_assert!(n.split('/').all(|s| s != "." && s != ".."), "{n}");
        prop_assert_eq!(n.to_lowercase(), n.clone());
        if !path.contains('%') {
            prop_assert_eq!(normalize_path(&n), n.clone(), "idempotent without escapes");
        }
    }

    #[test]
    fn every_decoration_of_a_watched_route_still_matches(
        flips in proptest::collection::vec(any::<bool>(), 17),
        extra_slashes in proptest::collection::vec(0usize..3, 3),
        dot in 0usize..3,
        trailing in any::<bool>(),
        query in proptest::option::of("[a-z=&]{0,8}"),
        escape in proptest::option::of(0usize..17),
    ) {
        let router = Router::new(vec![RouteRule::parse(RouteClass::Refresh, "POST /api/auth/refresh").expect("rule")]);
        let base = "/api/auth/refresh";
        let mut chars: Vec<String> = base
            .chars()
            .zip(flips.iter())
            .map(|(c, up)| if *up { c.to_ascii_uppercase().to_string() } else { c.to_string() })
            .collect();
        if let Some(i) = escape.filter(|i| chars[*i] != "/") {
            chars[i] = format!("%{:02X}", chars[i].as_bytes()[0]);
        }
        let mut path = String::new();
        let mut slash = 0;
        for c in chars {
            if c == "/" {
                path.push_str(&"/".repeat(1 + extra_slashes.get(slash).copied().unwrap_or(0)));
                if slash == dot { path.push_str("./"); }
                slash += 1;
            } else {
                path.push_str(&c);
            }
        }
        if trailing { path.push('/'); }
        if let Some(q) = query { path.push('?'); path.push_str(&q); }
        let m = router.find(&Method::POST, &normalize_path(&path));
        prop_assert!(m.is_some(), "{path} did not match");
    }

    #[test]
    fn bearer_and_cookie_extraction_never_panic_and_find_the_token(
        token in "[A-Za-z0-9._~+/=-]{1,200}",
        noise in any::<String>(),
        name in "[a-zA-Z][a-zA-Z0-9_]{0,10}",
    ) {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("value"));
        h.insert("cookie", HeaderValue::from_str(&format!("x-pre=1; {name}={token}; x-post=2")).expect("value"));
        prop_assert_eq!(credentials::bearer(&h).ok().flatten().map(|t| t.text), Some(token.clone()));
        prop_assert_eq!(Cookies::parse(&h).token(&name).ok().flatten().map(|t| t.text), Some(token.clone()));
        let mut junk = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&noise) {
            junk.insert("authorization", v.clone());
            junk.insert("cookie", v);
        }
        let _ = (credentials::bearer(&junk), Cookies::parse(&junk).token(&name), fields::set_cookie(&junk, &name));
    }

    #[test]
    fn claims_are_read_from_any_jwt_shape_without_panicking(
        s in any::<String>(),
        id in any::<i64>(),
        exp in 0i64..10_000_000_000,
        sid in "[a-z0-9]{0,20}",
    ) {
        let _ = (tokens::response_claims(&s), tokens::is_jwt_shaped(&s));
        let _ = Issued::new(s.clone(), Some(s.clone()), Some("sid"));
        use base64::Engine;
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let jwt = format!(
            "{}.{}.sig",
            b64(&serde_json::json!({"alg": "HS256"})),
            b64(&serde_json::json!({"id": id, "exp": exp, "sid": sid}))
        );
        let claims = tokens::response_claims(&jwt).expect("claims");
        prop_assert_eq!(tokens::claim_exp(&claims), Some(exp));
        let got = tokens::claim_str(&claims, "sid");
        if !sid.is_empty() {
            prop_assert_eq!(got.as_deref(), Some(sid.as_str()));
        }
        prop_assert!(tokens::is_jwt_shaped(&jwt));
    }

    #[test]
    fn login_response_pointers_never_panic(json in arb_json(), pointer in "(/[a-z0-9~]{0,6}){0,4}") {
        let _ = fields::pointer_str(&json, &pointer);
    }

    #[test]
    fn the_client_address_is_the_peer_or_an_address_from_the_header(
        xff in proptest::collection::vec(prop_oneof![any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()), "[ -~]{0,12}"], 0..6),
        trusted in any::<bool>(),
    ) {
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        let nets = if trusted { vec!["10.0.0.0/8".parse().expect("net")] } else { vec![] };
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&xff.join(", ")) {
            h.insert("x-forwarded-for", v);
        }
        let ip = headers::client_ip(peer, &h, &nets);
        // An address of the header as sent: its comma-separated items (a generated element may
        // itself hold a comma, e.g. "::," is the address "::" and an empty item).
        let joined = xff.join(", ");
        let in_header = joined.split(',').any(|x| x.trim().parse::<IpAddr>().ok() == Some(ip));
        prop_assert!(ip == peer || in_header, "{ip} from {xff:?}");
        if !trusted {
            prop_assert_eq!(ip, peer, "an untrusted peer cannot choose its address");
        }
    }

    #[test]
    fn forwarded_requests_carry_no_hop_by_hop_or_connection_named_header(
        names in proptest::collection::vec("[a-z][a-z0-9-]{0,10}", 0..6),
        hop in proptest::collection::vec(prop_oneof![
            Just("connection"), Just("keep-alive"), Just("te"), Just("trailer"), Just("transfer-encoding"),
            Just("upgrade"), Just("proxy-authorization"), Just("proxy-connection"), Just("x-sessiongate-reason"),
        ], 0..5),
    ) {
        let mut h = HeaderMap::new();
        for n in names.iter().chain(hop.iter().map(|s| s.to_string()).collect::<Vec<_>>().iter()) {
            h.append(http::header::HeaderName::from_bytes(n.as_bytes()).expect("name"), HeaderValue::from_static("v"));
        }
        h.insert("connection", HeaderValue::from_str(&names.join(", ")).expect("value"));
        headers::forward_request_headers(&mut h, "203.0.113.1".parse().expect("ip"), &[], false, None);
        for n in names.iter().map(String::as_str).chain(hop.iter().copied()) {
            prop_assert!(!h.contains_key(n) || n.starts_with("x-forwarded"), "{n} was forwarded");
        }
        prop_assert_eq!(h.get("x-forwarded-for").map(|v| v.to_str().unwrap_or("")), Some("203.0.113.1"));
    }

    #[test]
    fn import_rows_either_parse_and_revalidate_or_list_their_errors(
        fields in proptest::collection::btree_map(
            prop_oneof![Just("userId"), Just("ip"), Just("token"), Just("createdAt"), Just("lastSeen"), Just("isActive"), Just("userAgent")],
            prop_oneof![any::<String>(), "[0-9]{1,13}", Just("1.2.3.4".to_string()), Just("2026-01-02T03:04:05Z".to_string())],
            0..7,
        ),
    ) {
        match maintenance::parse_row(|names| names.iter().find_map(|n| fields.get(n).cloned())) {
            Ok(row) => prop_assert!(maintenance::revalidate(&row).is_ok()),
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn audit_csv_cells_round_trip_through_a_csv_reader(cells in proptest::collection::vec(any::<String>(), 4)) {
        let rec = sessiongate::store::AuditRecord {
            time: 0,
            kind: cells[0].clone(),
            user: Some(cells[1].clone()),
            session: Some(cells[2].clone()),
            ip: None,
            actor: Some(cells[3].clone()),
            details: serde_json::Value::Null,
        };
        let bytes = sessiongate::audit::csv_rows(&[rec], true);
        let mut r = csv::Reader::from_reader(bytes.as_slice());
        let rows: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>().expect("valid CSV");
        prop_assert_eq!(rows.len(), 1);
        for (i, idx) in [(0usize, 1usize), (1, 2), (2, 3), (3, 5)] {
            let got = &rows[0][idx];
            let want = sessiongate::audit::csv_safe(&cells[i]);
            // The csv reader trims nothing; only a leading formula character gains an apostrophe.
            prop_assert_eq!(got, want.as_ref());
            prop_assert!(!got.starts_with(['=', '+', '-', '@']), "{got:?} would run as a formula");
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z0-9~]{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
